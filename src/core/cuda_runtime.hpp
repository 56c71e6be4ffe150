#pragma once
// The few CUDA-runtime services the host layer needs, behind plain C++ declarations so that
// src/ compiles without CUDA headers. Implemented in cuda/cuda_runtime.cpp (CUDA builds) or
// cuda/no_cuda.cpp (CPU-only builds).
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/memory.hpp"

namespace otcal::detail {

bool cuda_built();
std::string cuda_runtime_version();
// Number of usable devices; on failure 0 and `why` says what the runtime reported.
int cuda_device_count(std::string& why);
DeviceInfo cuda_device_info(int device);
void cuda_set_device(int device);

// cudaMallocAsync on a dedicated pool with the release threshold at its maximum. A null stream
// handle means `default_stream` (the context's compute stream), never the legacy default stream.
std::unique_ptr<MemoryResource> make_cuda_async_resource(int device, StreamHandle default_stream);
void* cuda_pinned_alloc(std::size_t bytes);  // null on failure
void cuda_pinned_free(void* p) noexcept;

StreamHandle cuda_stream_create();
void cuda_stream_destroy(StreamHandle s) noexcept;
void cuda_stream_synchronize(StreamHandle s);
// `waiter` waits for all work currently queued on `signaller` (through an event).
void cuda_stream_wait(StreamHandle waiter, StreamHandle signaller);
// Synchronous device -> host copy of a caller's device array (small reads: weights to validate).
void cuda_copy_to_host(void* host, const void* device, std::size_t bytes);
// Synchronous host -> device copy (host staging of a collective without NCCL).
void cuda_copy_to_device(void* device, const void* host, std::size_t bytes);

}  // namespace otcal::detail
