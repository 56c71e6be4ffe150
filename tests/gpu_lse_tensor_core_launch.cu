// The nvcc half of tests/gpu_lse_tensor_core.cpp: the tensor-core row LSE of
// cuda/lse_tensor_core.cuh launched through its own launcher, before the backend dispatches to it.
// Built only with the CUDA backend (tests/CMakeLists.txt), into the gpu test alone.
#include <string>

#include "lse_tensor_core.cuh"

namespace lse_tc_test {

using otcal::index_t;
using otcal::detail::RowLseArgs;

// Runs launch_lse_tensor_core on the default stream with the columns cut into at most max_parts
// parts (parts_of, as lse_parts does) and waits. *applied: what the launcher returned. Returns
// "" or the CUDA error.
std::string run_lse_tensor_core(const RowLseArgs<float>& a, index_t max_parts, bool split, bool* applied) {
  namespace eng = otcal::detail::cuda_engine;
  *applied = eng::launch_lse_tensor_core(a, eng::parts_of(a.cols.n, max_parts), split, nullptr);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}

}  // namespace lse_tc_test
