// CPU-only build: the one stand-in for the CUDA backend. Every CUDA service and factory reports that
// CUDA was not compiled in.
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
std::unique_ptr<MemoryResource> make_cuda_async_resource(int, StreamHandle) { unavailable(); }
void* cuda_pinned_alloc(std::size_t) { return nullptr; }
void cuda_pinned_free(void*) noexcept {}
StreamHandle cuda_stream_create() { unavailable(); }
void cuda_stream_destroy(StreamHandle) noexcept {}
void cuda_stream_synchronize(StreamHandle) {}
void cuda_stream_wait(StreamHandle, StreamHandle) {}
void cuda_copy_to_host(void*, const void*, std::size_t) { unavailable(); }
void cuda_copy_to_device(void*, const void*, std::size_t) { unavailable(); }

}  // namespace otcal::detail

#include "core/backend.hpp"
#include "sparsify/sparsify_backend.hpp"

namespace otcal::detail {
template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const Context&) {
  unavailable();
}
template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cuda_sparsify_backend(const Context&, std::int64_t) {
  unavailable();
}
template std::unique_ptr<Backend<float>> make_cuda_backend<float>(const Context&);
template std::unique_ptr<Backend<double>> make_cuda_backend<double>(const Context&);
template std::unique_ptr<SparsifyBackend<float>> make_cuda_sparsify_backend<float>(const Context&, std::int64_t);
template std::unique_ptr<SparsifyBackend<double>> make_cuda_sparsify_backend<double>(const Context&, std::int64_t);
}  // namespace otcal::detail

// ---- calibration (src/calibration/calib_backend.hpp) -------------------------------------------
// A CUDA context cannot be made in this build, so these are reached only by a direct call; they
// refuse with the same DeviceError as every other CUDA service here.
#include "calibration/calib_backend.hpp"

namespace otcal::calib {
namespace {
[[noreturn]] void calibration_unavailable() {
  throw DeviceError("calibrate: this otcal was built without CUDA (OTCAL_CUDA=OFF or no nvcc found); use --device cpu");
}
}  // namespace

CudaExactIds declare_cuda_exact_workspace(WorkspaceDecl&, const CsrMatrix&, index_t, bool) { calibration_unavailable(); }
std::unique_ptr<ExactPasses> make_cuda_exact_passes(const Context&, const detail::Workspace&, const CudaExactIds&,
                                                    const CsrMatrix&, const CsrMatrix&, const std::vector<index_t>&,
                                                    const std::vector<double>&, const std::vector<double>&,
                                                    const detail::DistanceMath&) {
  calibration_unavailable();
}
CudaGradientIds declare_cuda_gradient_workspace(WorkspaceDecl&, const CsrMatrix&, bool) { calibration_unavailable(); }
GradientDeviceRun run_gradient_cuda(const Context&, const detail::Workspace&, const CudaGradientIds&, const CsrMatrix&,
                                    const CsrMatrix&, const std::vector<double>&, const GradientOptions&,
                                    const LossFunction&,
                                    const std::function<std::vector<double>(const std::vector<double>&)>&,
                                    const std::function<void(index_t)>&, std::vector<double>*) {
  calibration_unavailable();
}
}  // namespace otcal::calib
