#pragma once
// The per-record passes of calibration, isolated so a CUDA backend can replace them one by one:
//   RowAccumulator  S = A w, reduced over records in fixed granules (batch-invariant, bitwise)
//   transpose_apply (Aᵀ c)_i, per record (no cross-record reduction)
//   accumulate_newton_matrix  T = A diag(v) Aᵀ over the active rows, O(Σ_i nnz_i²)
#include <algorithm>
#include <cstdint>
#include <vector>

#include "otcal/csr.hpp"
#include "otcal/memory.hpp"
#include "otcal/types.hpp"

namespace otcal::calib {

// Below this many records per batch the passes run on one thread (no result depends on it).
inline constexpr index_t kParallelMinRecords = 4096;

// S_r = Σ_i A_ri w_i for every row, fed by record batches [b0, b1) in increasing order. Each row
// keeps a cursor into its (ascending) record indices, a partial sum of the current granule of
// kReductionGranule records and the ordered sum of completed granules: the summation order is
// fixed by the granules alone, so S is bitwise identical for every batch size and thread count.
class RowAccumulator {
 public:
  RowAccumulator(MemoryResource& mr, const CsrMatrix& A)
      : A_(A), cursor_(mr, static_cast<std::size_t>(A.rows)), granule_(mr, static_cast<std::size_t>(A.rows)),
        sum_(mr, static_cast<std::size_t>(A.rows)), partial_(mr, static_cast<std::size_t>(A.rows)) {
    reset();
  }
  static std::size_t bytes(index_t rows) { return 4 * align_up(static_cast<std::size_t>(rows) * 8); }

  void reset() {
    for (index_t r = 0; r < A_.rows; ++r) {
      cursor_[r] = A_.indptr[static_cast<std::size_t>(r)];
      granule_[r] = 0;
      sum_[r] = 0;
      partial_[r] = 0;
    }
  }

  // w_batch[i - b0] is the weight of record i.
  void add_batch(index_t b0, index_t b1, const double* w_batch) {
    const bool wide = A_.wide_indices();
    // small batches run serially: a parallel region per tiny batch costs more than it saves
#pragma omp parallel for schedule(dynamic, 16) if (b1 - b0 >= kParallelMinRecords)
    for (index_t r = 0; r < A_.rows; ++r) {
      std::int64_t p = cursor_[r];
      const std::int64_t end = A_.indptr[static_cast<std::size_t>(r) + 1];
      std::int64_t g = granule_[r];
      double s = sum_[r], part = partial_[r];
      for (; p < end; ++p) {
        const std::int64_t i = wide ? A_.indices64[p] : A_.indices32[p];
        if (i >= b1) break;
        const std::int64_t gi = i / kReductionGranule;
        if (gi != g) {
          s += part;
          part = 0;
          g = gi;
        }
        part += A_.values[p] * w_batch[i - b0];
      }
      cursor_[r] = p;
      granule_[r] = g;
      sum_[r] = s;
      partial_[r] = part;
    }
  }

  void finish(double* S) const {
    for (index_t r = 0; r < A_.rows; ++r) S[r] = sum_[r] + partial_[r];
  }

 private:
  const CsrMatrix& A_;
  Buffer<std::int64_t> cursor_, granule_;
  Buffer<double> sum_, partial_;
};

// out[i - b0] = Σ_j At_ij c_j for records i in [b0, b1); At is the n x k transpose.
inline void transpose_apply(const CsrMatrix& At, const double* c, index_t b0, index_t b1, double* out) {
  const bool wide = At.wide_indices();
#pragma omp parallel for schedule(static) if (b1 - b0 >= kParallelMinRecords)
  for (index_t i = b0; i < b1; ++i) {
    double s = 0;
    for (std::int64_t p = At.indptr[i]; p < At.indptr[i + 1]; ++p)
      s += At.values[p] * c[wide ? At.indices64[p] : At.indices32[p]];
    out[i - b0] = s;
  }
}

// T[a][b] = Σ_i A_{row(a), i} v_i A_{row(b), i} over active rows (active_of[r] = a or -1), row-major
// ka x ka. Rows of T are independent (parallel, no atomics); each sums records in ascending order,
// so T is bitwise symmetric and deterministic.
inline void accumulate_newton_matrix(const CsrMatrix& A, const CsrMatrix& At, const std::vector<index_t>& active_rows,
                                     const std::vector<index_t>& active_of, const double* v, double* T) {
  const index_t ka = static_cast<index_t>(active_rows.size());
  const bool wide = A.wide_indices();
  const bool wide_t = At.wide_indices();
#pragma omp parallel for schedule(dynamic, 4)
  for (index_t a = 0; a < ka; ++a) {
    double* Trow = T + a * ka;
    std::fill(Trow, Trow + ka, 0.0);
    const index_t r = active_rows[static_cast<std::size_t>(a)];
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t i = wide ? A.indices64[p] : A.indices32[p];
      const double wi = A.values[p] * v[i];
      if (wi == 0) continue;
      for (std::int64_t q = At.indptr[i]; q < At.indptr[i + 1]; ++q) {
        const index_t b = active_of[static_cast<std::size_t>(wide_t ? At.indices64[q] : At.indices32[q])];
        if (b >= 0) Trow[b] += wi * At.values[q];
      }
    }
  }
}

}  // namespace otcal::calib
