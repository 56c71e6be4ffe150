// CUDA-runtime services of the host layer (docs/host-layer.md §1, §2.2, §4), compiled by the host
// compiler against the CUDA runtime. Every failure is a DeviceError naming the call.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "core/cuda_runtime.hpp"
#include "cuda_check.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

bool cuda_built() { return true; }

std::string cuda_runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return "unknown";
  }
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

int cuda_device_count(std::string& why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
    return 0;
  }
  if (count == 0) {
    why = "the CUDA driver reports no device";
    return 0;
  }
  why.clear();
  return count;
}

namespace {
// Runs `f` with `device` current and restores the caller's device afterwards.
template <class F>
void with_device(int device, F&& f) {
  int previous = 0;
  OTCAL_CUDA_CHECK(cudaGetDevice(&previous));
  OTCAL_CUDA_CHECK(cudaSetDevice(device));
  try {
    f();
  } catch (...) {
    (void)cudaSetDevice(previous);
    throw;
  }
  OTCAL_CUDA_CHECK(cudaSetDevice(previous));
}
}  // namespace

DeviceInfo cuda_device_info(int device) {
  cudaDeviceProp prop{};
  OTCAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.id = device;
  info.name = prop.name;
  info.total_bytes = prop.totalGlobalMem;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  with_device(device, [&] {
    std::size_t free_b = 0, total_b = 0;
    OTCAL_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    info.free_bytes = free_b;
    info.total_bytes = total_b;
  });
  return info;
}

void cuda_set_device(int device) {
  std::string why;
  const int count = cuda_device_count(why);
  if (device < 0 || device >= count)
    throw DeviceError("CUDA device " + std::to_string(device) + " does not exist (" +
                      (count > 0 ? std::to_string(count) + " device(s) found" : why) +
                      "); pick --device cuda:N with N < the device count, or --device cpu");
  OTCAL_CUDA_CHECK(cudaSetDevice(device));
}

namespace {

// cudaMallocAsync on a pool of its own (not the device's default pool, which other libraries
// share and may trim), with the release threshold at its maximum: freed blocks stay in the pool
// across synchronisations, so a solve loop that frees and reallocates its tiles pays no
// cudaMalloc after the first iteration.
//
// A null stream handle is the context's compute stream, the stream every kernel of the library
// runs on: `Buffer(mr, n)` and `Workspace(mr, decl, rows)` without a stream then allocate and free
// in order with the work that uses the memory. The legacy default stream (what null means to
// cudaMallocFromPoolAsync) would not wait for the non-blocking compute stream, so a free there
// could hand memory back while kernels still read it. A caller who wants the legacy stream passes
// cudaStreamLegacy explicitly.
class CudaAsyncResource final : public MemoryResource {
 public:
  CudaAsyncResource(int device, StreamHandle default_stream)
      : device_(device), default_stream_(static_cast<cudaStream_t>(default_stream)) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    OTCAL_CUDA_CHECK(cudaMemPoolCreate(&pool_, &props));
    std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
    OTCAL_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
  }
  ~CudaAsyncResource() override {
    // Outstanding frees are stream-ordered; destruction waits for them so the pool is empty.
    (void)cudaDeviceSynchronize();
    (void)cudaMemPoolDestroy(pool_);
    (void)cudaGetLastError();
  }

 private:
  void* do_allocate(StreamHandle stream, std::size_t bytes, std::size_t) override {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    // Pool allocations are at least 256-byte aligned, which covers kDefaultAlignment.
    const cudaError_t err = cudaMallocFromPoolAsync(&p, bytes, pool_, ordered_on(stream));
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw OutOfMemory("the CUDA device " + std::to_string(device_) + " could not allocate " + format_bytes(bytes) +
                        " (cudaMallocFromPoolAsync); lower the memory budget or free device memory held elsewhere");
    }
    check_cuda(err, "cudaMallocFromPoolAsync", __FILE__, __LINE__);
    return p;
  }
  void do_deallocate(StreamHandle stream, void* p, std::size_t, std::size_t) noexcept override {
    if (p == nullptr) return;
    if (cudaFreeAsync(p, ordered_on(stream)) != cudaSuccess) (void)cudaGetLastError();
  }
  bool do_is_equal(const MemoryResource& other) const noexcept override {
    const auto* o = dynamic_cast<const CudaAsyncResource*>(&other);
    return o != nullptr && o->pool_ == pool_;
  }

  cudaStream_t ordered_on(StreamHandle stream) const {
    return stream != nullptr ? static_cast<cudaStream_t>(stream) : default_stream_;
  }

  int device_;
  cudaStream_t default_stream_;
  cudaMemPool_t pool_ = nullptr;
};

}  // namespace

std::unique_ptr<MemoryResource> make_cuda_async_resource(int device, StreamHandle default_stream) {
  int previous = 0;
  OTCAL_CUDA_CHECK(cudaGetDevice(&previous));
  OTCAL_CUDA_CHECK(cudaSetDevice(device));
  auto mr = std::make_unique<CudaAsyncResource>(device, default_stream);
  OTCAL_CUDA_CHECK(cudaSetDevice(previous));
  return mr;
}

void* cuda_pinned_alloc(std::size_t bytes) {
  void* p = nullptr;
  // Portable: usable from every device; mapped: kernels may write small results straight into it.
  if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return p;
}

void cuda_pinned_free(void* p) noexcept {
  if (p != nullptr && cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}

StreamHandle cuda_stream_create() {
  cudaStream_t s = nullptr;
  // Non-blocking: no implicit synchronisation with the legacy default stream.
  OTCAL_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return static_cast<StreamHandle>(s);
}

void cuda_stream_destroy(StreamHandle s) noexcept {
  if (s != nullptr && cudaStreamDestroy(static_cast<cudaStream_t>(s)) != cudaSuccess) (void)cudaGetLastError();
}

void cuda_stream_synchronize(StreamHandle s) {
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s)));
}

void cuda_stream_wait(StreamHandle waiter, StreamHandle signaller) {
  if (waiter == signaller) return;
  cudaEvent_t ev = nullptr;
  OTCAL_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  try {
    OTCAL_CUDA_CHECK(cudaEventRecord(ev, static_cast<cudaStream_t>(signaller)));
    OTCAL_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(waiter), ev, 0));
  } catch (...) {
    (void)cudaEventDestroy(ev);
    throw;
  }
  // Destroying a recorded event is legal: its resources are released once it completes.
  OTCAL_CUDA_CHECK(cudaEventDestroy(ev));
}

void cuda_copy_to_host(void* host, const void* device, std::size_t bytes) {
  if (bytes == 0) return;
  OTCAL_CUDA_CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}

void cuda_copy_to_device(void* device, const void* host, std::size_t bytes) {
  if (bytes == 0) return;
  OTCAL_CUDA_CHECK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
}

}  // namespace otcal::detail
