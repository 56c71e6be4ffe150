// CPU-only build: every CUDA service reports that CUDA was not compiled in.
#include "core/cuda_runtime.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

namespace {
[[noreturn]] void unavailable() {
  throw DeviceError("this otcal was built without CUDA (OTCAL_CUDA=OFF or no nvcc found); use --device cpu");
}
}  // namespace

bool cuda_built() { return false; }
std::string cuda_runtime_version() { return {}; }
int cuda_device_count(std::string& why) {
  why = "built without CUDA";
  return 0;
}
DeviceInfo cuda_device_info(int) { unavailable(); }
void cuda_set_device(int) { unavailable(); }
std::unique_ptr<MemoryResource> make_cuda_async_resource(int) { unavailable(); }
void* cuda_pinned_alloc(std::size_t) { return nullptr; }
void cuda_pinned_free(void*) noexcept {}
StreamHandle cuda_stream_create() { unavailable(); }
void cuda_stream_destroy(StreamHandle) noexcept {}
void cuda_stream_synchronize(StreamHandle) {}
void cuda_stream_wait(StreamHandle, StreamHandle) {}

}  // namespace otcal::detail

#include "core/backend.hpp"

namespace otcal::detail {
template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const Context&) {
  unavailable();
}
template std::unique_ptr<Backend<float>> make_cuda_backend<float>(const Context&);
template std::unique_ptr<Backend<double>> make_cuda_backend<double>(const Context&);
}  // namespace otcal::detail
