#pragma once
// Primitives on dense blocks of rows of an implicit matrix (plan or cost rows): building a block,
// row maxima and key histograms. Below both the geometry layer (the exact cost quantile) and the
// sparsifier, which extends them with selection (src/sparsify/sparsify_backend.hpp).
#include <cstdint>
#include <cstring>
#include <memory>

#include "core/backend.hpp"
#include "otcal/array.hpp"

namespace otcal::detail {

// Flags returned by row_max (OR over the block).
inline constexpr unsigned kBlockNaN = 1u;       // a NaN entry
inline constexpr unsigned kBlockPosInf = 2u;    // a +inf entry
inline constexpr unsigned kBlockNegative = 4u;  // an entry < 0 (a dense input that is not a plan)

// Produces rows of a plan (or of a cost matrix) into a dense row-major block.
template <class T>
class PlanBlockSource {
 public:
  virtual ~PlanBlockSource() = default;
  virtual index_t rows() const = 0;
  virtual index_t cols() const = 0;
  // Rows r0 .. r0 + count - 1, or rows ids[0 .. count) when ids is not null, into out [count, cols].
  // Entry values are pure functions of (i, j): identical on every call, for every block shape.
  virtual void build(index_t r0, index_t count, const index_t* ids, T* out) = 0;
};

// Which entries a histogram pass counts: all entries (pass 1), or those whose key bits above
// `shift + 16` equal one of `n_prefixes` candidate prefixes. Bin = the 16 key bits at `shift`.
struct KeyHistogramQuery {
  int shift = 0;
  int n_prefixes = 0;              // 0 = count every entry
  std::uint64_t prefix[2] = {0, 0};
};
inline constexpr int kHistogramBits = 16;
inline constexpr std::size_t kHistogramBins = std::size_t{1} << kHistogramBits;

template <class T>
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  // Plan rows T_ij = exp((f_i + g_j - c_ij * inv_scale) / eps) of resident clouds; f, g resident
  // (length rows.n, cols.n). The source keeps pointers: all of them must outlive it.
  virtual std::unique_ptr<PlanBlockSource<T>> cloud_plan_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                                const CostParams& cost, double inv_scale, double eps,
                                                                const T* f, const T* g) = 0;
  // Unscaled cost rows c_ij.
  virtual std::unique_ptr<PlanBlockSource<T>> cloud_cost_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                                const CostParams& cost) = 0;
  // Rows sliced from a caller's host matrix (converted to T).
  virtual std::unique_ptr<PlanBlockSource<T>> dense_source(const ConstMatrix& host) = 0;

  // out_max[r] = max_j block[r, j] (NaN propagates); returns kBlock* flags of the block.
  virtual unsigned row_max(const T* block, index_t rows, index_t m, T* out_max) = 0;

  // bins[c * kHistogramBins + b] += entries of rows with row_max > 0 (every row when row_max is
  // null) that match prefix c (or all, c = 0) and have bin b.
  virtual void key_histogram(const T* block, index_t rows, index_t m, const T* row_max, const KeyHistogramQuery& q,
                             std::uint64_t* bins) = 0;

};

// Host memory, any context: the CPU implementation (src/cpu/sparsify_cpu.cpp).
template <class T>
std::unique_ptr<BlockBackend<T>> make_cpu_block_backend();

}  // namespace otcal::detail
