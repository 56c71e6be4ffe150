#pragma once
// Error checking for CUDA runtime calls: every failure becomes an otcal::DeviceError naming the
// call, the file and line, and what the runtime said (name and description).
#include <cuda_runtime.h>

#include <string>

#include "otcal/errors.hpp"

namespace otcal::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw DeviceError(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in `" +
                    call + "` at " + file + ":" + std::to_string(line));
}

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so the next call starts clean
    throw_cuda_error(err, call, file, line);
  }
}

}  // namespace otcal::detail

#define OTCAL_CUDA_CHECK(call) ::otcal::detail::check_cuda((call), #call, __FILE__, __LINE__)
// After a kernel launch: configuration errors surface here, asynchronous faults at the next sync.
#define OTCAL_CUDA_CHECK_LAUNCH(name) ::otcal::detail::check_cuda(cudaGetLastError(), name, __FILE__, __LINE__)
