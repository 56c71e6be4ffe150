#pragma once
// Host CSR matrix (SciPy's layout): int64 indptr, int32 or int64 column indices, float values.
#include <cstdint>
#include <variant>
#include <vector>

#include "otcal/types.hpp"

namespace otcal {

struct CsrMatrix {
  index_t rows = 0;
  index_t cols = 0;
  std::vector<std::int64_t> indptr;  // rows + 1
  // int32 while cols < 2^31, else int64 (exactly one of the two is used)
  std::vector<std::int32_t> indices32;
  std::vector<std::int64_t> indices64;
  DType dtype = DType::float64;
  std::vector<double> values;  // float32 values widened when dtype is float32

  bool wide_indices() const { return cols >= (index_t{1} << 31); }
  std::int64_t nnz() const { return indptr.empty() ? 0 : indptr.back(); }
  std::int64_t index(std::int64_t k) const {
    return wide_indices() ? indices64[static_cast<std::size_t>(k)] : indices32[static_cast<std::size_t>(k)];
  }
};

}  // namespace otcal
