#pragma once
// Non-owning, type-erased views of caller arrays (row-major, C order). Host memory unless the
// location says otherwise.
#include <cstddef>
#include <stdexcept>

#include "otcal/types.hpp"

namespace otcal {

enum class Location { host, device };

struct ConstMatrix {
  const void* data = nullptr;
  DType dtype = DType::float64;
  index_t rows = 0;
  index_t cols = 0;
  Location location = Location::host;

  template <class T>
  static ConstMatrix of(const T* p, index_t rows, index_t cols) {
    return {p, dtype_of<T>(), rows, cols, Location::host};
  }
  bool empty() const { return data == nullptr; }
  // Element (r, c) widened to double; host views only.
  double at(index_t r, index_t c) const {
    const index_t k = r * cols + c;
    return dtype == DType::float32 ? static_cast<const float*>(data)[k]
                                   : static_cast<const double*>(data)[k];
  }
};

struct ConstVector {
  const void* data = nullptr;
  DType dtype = DType::float64;
  index_t size = 0;
  Location location = Location::host;

  template <class T>
  static ConstVector of(const T* p, index_t n) {
    return {p, dtype_of<T>(), n, Location::host};
  }
  bool empty() const { return data == nullptr; }
  double at(index_t i) const {
    return dtype == DType::float32 ? static_cast<const float*>(data)[i]
                                   : static_cast<const double*>(data)[i];
  }
};

}  // namespace otcal
