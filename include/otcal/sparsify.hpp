#pragma once
// Block-wise sparsifier of the implicit n x m transport plan (docs/sparsify.md), with moscot's
// semantics (threshold, sampled percentile, min_row, mass) plus an exact global percentile.
// Rows of the plan are recomputed block by block from (f, g, x, y, eps, s): at most one [bs, m]
// block of plan values lives in the budgeted workspace at any time.
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/csr.hpp"
#include "otcal/geometry.hpp"
#include "otcal/planner.hpp"
#include "otcal/problem.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal {

enum class SparsifyMode { threshold, percentile, min_row, mass };
enum class PercentileMethod { sampled, exact };

// "threshold", "percentile", "min_row", "mass"; anything else is InvalidArgument.
SparsifyMode parse_sparsify_mode(const std::string& text);
const char* sparsify_mode_name(SparsifyMode mode);

// One finished block of rows, handed to SparsifyOptions::sink (docs/sparsify.md §7.2): rows
// [row_offset, row_offset + rows) of the whole plan (global rows, also on a rank of a distributed
// problem, whose sink sees its own rows only), indptr relative to the piece (indptr[0] = 0, rows + 1 entries),
// columns in indices32 (or indices64 when m >= 2^31), values widened to double. Valid during the
// call only.
struct CsrPiece {
  index_t row_offset = 0;
  index_t rows = 0;
  const std::int64_t* indptr = nullptr;
  const std::int32_t* indices32 = nullptr;
  const std::int64_t* indices64 = nullptr;
  const double* values = nullptr;
  std::int64_t nnz = 0;
};

struct SparsifyOptions {
  SparsifyMode mode = SparsifyMode::threshold;
  std::optional<double> value;
  std::optional<index_t> batch_size;  // unset: planned from the memory budget (docs/sparsify.md §7.3)
  std::optional<index_t> n_samples;   // sampled percentile; default 1024 (moscot's batch_size default)
  std::uint64_t seed = 0;             // sampled percentile
  std::optional<index_t> max_k;       // mass only
  PercentileMethod percentile_method = PercentileMethod::sampled;
  // Out-of-core output: each finished block goes to the sink in row order and no entries are
  // accumulated; the result's csr then holds the shape and indptr only.
  std::function<void(const CsrPiece&)> sink;
  // CUDA: capacity `cap` (entries) of each device staging / pinned host buffer of the streamed
  // output (docs/sparsify.md §7.2); a block with more entries leaves as several pieces of whole rows. Must be
  // >= m; 0 = the default. Ignored on the CPU.
  std::int64_t staging_entries = 0;
  // Bytes the caller holds against the context's budget outside the library while the call runs
  // (a dense copy of the plan filled by `sink`): counted with the resident bytes, so the plan and
  // BudgetTooSmall's minimum cover them.
  std::size_t reserved_bytes = 0;
};

inline constexpr index_t kDefaultPercentileSamples = 1024;

// On a distributed problem (docs/sparsify.md "Distributed sparsify") each rank's result holds the
// rows it owns: csr is rows [row_offset, row_offset + csr.rows) of the rows_total x m plan (indptr
// relative to them); every other field is the whole plan's and the same on every rank.
struct SparsifyResult {
  CsrMatrix csr;
  index_t row_offset = 0;        // global row of csr's first row (0 in one process)
  index_t rows_total = 0;        // rows of the whole plan (csr.rows in one process)
  std::int64_t nnz_total = 0;    // entries of the whole plan (csr.nnz() in one process)
  double threshold = 0;          // thr used; NaN for mass
  index_t n_massless_rows = 0;
  double cost = 0;               // reg_ot_cost of the source (NaN for a bare dense matrix)
  bool converged = false;
  bool is_linear = true;
  index_t batch_size = 0;        // rows per block used
  TilePlan plan{};
  MemoryReport memory{};
  double elapsed_s = 0;
  std::vector<std::string> warnings;
};

// Metadata carried over when sparsifying a dense plan given by the caller.
struct PlanMetadata {
  double cost = std::numeric_limits<double>::quiet_NaN();
  bool converged = false;
};

// The plan T_ij = exp((f_i + g_j - c_ij / s) / eps) of potentials on a resident problem, with the s
// and eps stored in the potentials (never re-resolved). Values have the problem's precision. Any
// batch size, any number of times: nothing is uploaded again but the potentials.
SparsifyResult sparsify(const Problem& problem, const Potentials& potentials, const SparsifyOptions& options);

// The same on a fresh upload of `geom` (one call: upload, sparsify, release).
SparsifyResult sparsify(const Context& ctx, const PointCloud& geom, const Potentials& potentials,
                        const SparsifyOptions& options);

// A dense host row-major [n, m] plan (float32 or float64), rows sliced block by block.
SparsifyResult sparsify(const Context& ctx, const ConstMatrix& plan, const SparsifyOptions& options,
                        const PlanMetadata& metadata = {});

}  // namespace otcal
