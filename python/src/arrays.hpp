#pragma once
// Arrays across the Python boundary. Inputs arrive as nanobind ndarrays of any framework (numpy,
// or CuPy / PyTorch / JAX through DLPack) and become the library's non-owning views without a
// copy; the Python layer (otcal/_arrays.py) has already copied what cannot be viewed (other
// dtypes, non-contiguous layouts) and said so. Outputs leave as numpy arrays that own the
// library's vectors.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>
#include <vector>

#include "otcal/array.hpp"

namespace otcal::py {

namespace nb = nanobind;

// Any dtype, layout and device: checked here so that a bad argument raises InvalidArgument naming
// it, not nanobind's TypeError about overloads.
using AnyArray = nb::ndarray<nb::ro>;

// A C-contiguous 2-D float32/float64 array on the host or on the context's CUDA device.
ConstMatrix matrix_view(const AnyArray& a, const std::string& name);
// A contiguous 1-D float32/float64 array; `expected` >= 0 checks its length.
ConstVector vector_view(const AnyArray& a, const std::string& name, std::int64_t expected = -1);
// The address of an array's first element, as the library would read it (tests: zero copy).
std::uintptr_t data_address(const AnyArray& a);

// Hands a vector to numpy without copying it: the array owns the vector.
template <class T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> values, std::initializer_list<std::size_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(owned->data(), shape, owner);
}
template <class T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> values) {
  const std::size_t n = values.size();
  return to_numpy<T>(std::move(values), {n});
}

}  // namespace otcal::py
