// The sparsify host loop (docs/sparsify.md), written once against the block primitives of
// sparsify/sparsify_backend.hpp. One block of [bs, m] plan rows lives in the budgeted workspace;
// thresholds come from exact minima or integer histogram counts, so the output is bitwise
// independent of bs.
#include "otcal/sparsify.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/collective.hpp"
#include "core/operation.hpp"
#include "core/radix_select.hpp"
#include "core/workspace.hpp"
#include "geometry/problem_impl.hpp"
#include "otcal/errors.hpp"
#include "sparsify/row_sampling.hpp"
#include "sparsify/sparsify_backend.hpp"

namespace otcal {
namespace {

using detail::PlanBlockSource;
using detail::SparsifyBackend;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string num(double v) {
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

// docs/sparsify.md §5, in its order, before anything is planned or allocated.
void validate(const SparsifyOptions& o) {
  const SparsifyMode mode = o.mode;
  if (mode == SparsifyMode::mass && !(o.value && *o.value > 0 && *o.value <= 1))
    throw InvalidArgument("If mode='mass', value must be in (0, 1].");
  if (mode == SparsifyMode::mass && o.max_k && *o.max_k <= 0)
    throw InvalidArgument("max_k must be a positive integer, found " + std::to_string(*o.max_k) + ".");
  if ((mode == SparsifyMode::threshold || mode == SparsifyMode::percentile) && !o.value)
    throw InvalidArgument(std::string("If mode='") + sparsify_mode_name(mode) + "', value cannot be None.");
  if (mode == SparsifyMode::percentile) {
    if (!(*o.value >= 0 && *o.value <= 100))
      throw InvalidArgument("If mode='percentile', value must be in [0, 100], found " + num(*o.value) + ".");
    if (o.n_samples && *o.n_samples <= 0)
      throw InvalidArgument("n_samples must be a positive number of rows, found " + std::to_string(*o.n_samples) +
                            ".");
  }
  if (mode != SparsifyMode::threshold && mode != SparsifyMode::percentile && mode != SparsifyMode::min_row &&
      mode != SparsifyMode::mass)
    throw InvalidArgument("unknown sparsify mode " + std::to_string(static_cast<int>(mode)) +
                          ": use threshold, percentile, min_row or mass");
  if (mode != SparsifyMode::mass && o.max_k) throw InvalidArgument("max_k is only supported with mode='mass'.");
  if (o.batch_size && *o.batch_size <= 0)
    throw InvalidArgument("batch_size must be a positive number of rows, found " + std::to_string(*o.batch_size) +
                          ".");
  if (mode == SparsifyMode::threshold && std::isnan(*o.value))
    throw InvalidArgument("If mode='threshold', value must be a number, found NaN.");
}

bool needs_histogram(const SparsifyOptions& o) { return o.mode == SparsifyMode::percentile; }
bool sampled(const SparsifyOptions& o) {
  return o.mode == SparsifyMode::percentile && o.percentile_method == PercentileMethod::sampled;
}
index_t sample_count(const SparsifyOptions& o, index_t n) {
  return std::min(o.n_samples.value_or(kDefaultPercentileSamples), n);
}

// The workspace of a sparsify run, declared once (docs/sparsify.md §7.3):
//   per row  the dense block (m values), its row max, kept count and output offset, and in mass
//            mode the per-row selection order (m column ids);
//   fixed    the histogram bins (percentile) and the sampled rows (sampled percentile);
//   and whatever the backend declares (a device backend: staging, sort and scan scratch).
// The CSR pieces go straight to the host result arrays and are not workspace.
template <class T>
struct SparsifyLayout {
  WorkspaceDecl decl;
  BufferId<T> block, row_max;
  BufferId<std::int64_t> counts, offsets;
  BufferId<std::int32_t> order32;
  BufferId<std::int64_t> order64;
  BufferId<std::uint64_t> bins;
  BufferId<index_t> ids;
  BufferId<std::pair<std::uint64_t, index_t>> heap;
};

// `n` rows are built here (a rank's own rows); the row sample is drawn from all `n_total` rows.
template <class T>
SparsifyLayout<T> sparsify_layout(index_t n, index_t n_total, index_t m, const SparsifyOptions& o,
                                  SparsifyBackend<T>& be, std::size_t resident_bytes) {
  const bool wide = m >= (index_t{1} << 31);
  const bool mass = o.mode == SparsifyMode::mass;
  const auto M = static_cast<std::size_t>(m);
  const std::size_t k = sampled(o) ? static_cast<std::size_t>(sample_count(o, n_total)) : 0;
  SparsifyLayout<T> l;
  l.decl.operation = "sparsify";
  l.decl.resident_bytes = resident_bytes;
  l.block = l.decl.template add<T>("block", 0, M);
  l.row_max = l.decl.template add<T>("row_max", 0, 1);
  l.counts = l.decl.template add<std::int64_t>("counts", 0, 1);
  l.offsets = l.decl.template add<std::int64_t>("offsets", 0, 1);
  l.order32 = l.decl.template add<std::int32_t>("order32", 0, mass && !wide ? M : 0);
  l.order64 = l.decl.template add<std::int64_t>("order64", 0, mass && wide ? M : 0);
  l.bins = l.decl.template add<std::uint64_t>("bins", needs_histogram(o) ? 2 * detail::kHistogramBins : 0);
  l.ids = l.decl.template add<index_t>("sample_ids", k);
  l.heap = l.decl.template add<std::pair<std::uint64_t, index_t>>("sample_heap", be.host_workspace() ? k : 0);
  be.declare_workspace(l.decl, n, m, mass);
  return l;
}

template <class T>
class BlockLoop {
 public:
  BlockLoop(SparsifyBackend<T>& be, PlanBlockSource<T>& src, index_t bs, T* block, T* row_max)
      : be_(be), src_(src), n_(src.rows()), m_(src.cols()), bs_(std::max<index_t>(bs, 1)), block_(block),
        row_max_(row_max) {
    if (!be.host_workspace()) row_max_host_.resize(static_cast<std::size_t>(bs_));
  }

  // Builds every row (or the rows `ids`) block by block and calls
  // fn(block, rows, row_max, row_max_host, r0): row_max in the workspace (for the primitives),
  // row_max_host readable by the host (the same array on the CPU).
  template <class F>
  void sweep(index_t count, const index_t* ids, F&& fn) {
    unsigned flags = 0;
    T* host_max = be_.host_workspace() ? row_max_ : row_max_host_.data();
    for (index_t b0 = 0; b0 < count; b0 += bs_) {
      const index_t rows = std::min(bs_, count - b0);
      src_.build(b0, rows, ids ? ids + b0 : nullptr, block_);
      flags |= be_.row_max(block_, rows, m_, row_max_);
      be_.download_row_max(row_max_, rows, host_max);
      fn(static_cast<const T*>(block_), rows, static_cast<const T*>(row_max_), static_cast<const T*>(host_max), b0);
    }
    check_flags(flags);
  }

  index_t n() const { return n_; }
  index_t m() const { return m_; }
  index_t bs() const { return bs_; }

 private:
  static void check_flags(unsigned flags) {
    if (flags & detail::kBlockNaN)
      throw NumericalError("the transport plan holds NaN entries (NaN potentials or inputs); "
                           "re-run Sinkhorn with a larger epsilon or check the inputs");
    if (flags & detail::kBlockPosInf)
      throw NumericalError("the transport plan holds +inf entries (potentials too large for exp); "
                           "re-run Sinkhorn with a larger epsilon or --precision float64");
    if (flags & detail::kBlockNegative)
      throw InvalidArgument("the plan holds negative entries: a transport plan must be non-negative");
  }

  SparsifyBackend<T>& be_;
  PlanBlockSource<T>& src_;
  index_t n_, m_, bs_;
  T* block_;
  T* row_max_;
  std::vector<T> row_max_host_;  // device workspace only
};

// The rows a run builds: `begin` .. of the `total` rows of the plan (a rank's shard, or all of
// them), and the ranks the statistics are combined over (docs/sparsify.md "Distributed sparsify").
struct RowRange {
  Communicator& comm;
  index_t begin = 0;
  index_t total = 0;
};

// The rows of the global sample (drawn identically on every rank) that fall in [begin, begin +
// rows), as local row ids, ascending; returns their count. `ids` holds the global sample first.
inline index_t own_sampled_rows(index_t* ids, index_t k, index_t begin, index_t rows) {
  index_t kept = 0;
  for (index_t s = 0; s < k; ++s)
    if (ids[s] >= begin && ids[s] < begin + rows) ids[kept++] = ids[s] - begin;
  return kept;
}

// Threshold statistics (docs/sparsify.md §4.2, §4.3, §7.1) and the output pass (§2). Every
// statistic is combined across ranks exactly (minima, integer counts), so each rank's threshold is
// the single-process one; each sweep is agreed first, so an error on one rank (NaN rows) is raised
// by every rank before anyone waits in a collective.
template <class T>
void run_loop(const Context& ctx, SparsifyBackend<T>& be, PlanBlockSource<T>& src, const SparsifyOptions& o,
              index_t bs, const SparsifyLayout<T>& layout, const detail::Workspace& ws, const RowRange& range,
              SparsifyResult& res) {
  BlockLoop<T> loop(be, src, bs, ws.get(layout.block), ws.get(layout.row_max));
  const index_t n = loop.n(), m = loop.m();
  Communicator& comm = range.comm;
  auto warn = [&](const std::string& w) {
    res.warnings.push_back(w);
    ctx.warn(w);
  };

  double thr = std::numeric_limits<double>::quiet_NaN();
  switch (o.mode) {
    case SparsifyMode::threshold: thr = *o.value; break;
    case SparsifyMode::min_row: {
      if (o.value) warn("value is ignored with mode='min_row'");
      thr = kInf;
      detail::agreed(comm, [&] {
        loop.sweep(n, nullptr, [&](const T*, index_t rows, const T*, const T* row_max, index_t) {
          for (index_t r = 0; r < rows; ++r)
            if (row_max[r] > T(0)) thr = std::min(thr, static_cast<double>(row_max[r]));
        });
      });
      thr = comm.all_min(thr);
      break;
    }
    case SparsifyMode::percentile: {
      std::uint64_t* const bins = ws.get(layout.bins);
      const std::size_t n_bins = ws.count(layout.bins);
      index_t* ids = nullptr;
      index_t count = n;
      // exact_percentile reads the bins on the host: in place on the CPU, else a host copy
      // downloaded after each pass. On a device the row sample is drawn on the host and uploaded.
      const bool on_host = be.host_workspace();
      if (o.percentile_method == PercentileMethod::sampled) {
        // The sample is drawn from all rows (a function of seed, n and k only); a rank histograms
        // the sampled rows it owns.
        const index_t k = sample_count(o, range.total);
        ids = ws.get(layout.ids);
        if (on_host) {
          detail::sample_rows(o.seed, range.total, k, ws.get(layout.heap), ids);
          count = own_sampled_rows(ids, k, range.begin, n);
        } else {
          std::vector<std::pair<std::uint64_t, index_t>> heap(static_cast<std::size_t>(k));
          std::vector<index_t> host_ids(static_cast<std::size_t>(k));
          detail::sample_rows(o.seed, range.total, k, heap.data(), host_ids.data());
          count = own_sampled_rows(host_ids.data(), k, range.begin, n);
          be.upload_ids(host_ids.data(), count, ids);
        }
      }
      std::vector<std::uint64_t> host_bins(on_host ? 0 : 2 * detail::kHistogramBins);
      // One pass: this rank's counts, then every rank's summed (integers: exact, order-free).
      const detail::HistogramSweep hs = [&](const detail::KeyHistogramQuery& q, std::uint64_t* b) {
        detail::agreed(comm, [&] {
          if (!on_host) be.zero_bins(bins, n_bins);
          loop.sweep(count, ids, [&](const T* block, index_t rows, const T* row_max, const T*, index_t) {
            be.key_histogram(block, rows, m, row_max, q, bins);
          });
          be.download_bins(bins, n_bins, b);
        });
        comm.all_sum(b, n_bins);
      };
      thr = detail::exact_percentile<T>(*o.value, on_host ? bins : host_bins.data(), hs);
      break;
    }
    case SparsifyMode::mass: break;
  }
  res.threshold = thr;

  // Output pass.
  CsrMatrix& csr = res.csr;
  csr.rows = n;
  csr.cols = m;
  csr.dtype = dtype_of<T>();
  csr.indptr.assign(static_cast<std::size_t>(n) + 1, 0);
  const bool wide = csr.wide_indices();
  std::int64_t* const counts = ws.get(layout.counts);
  std::int64_t* const offsets_ws = ws.get(layout.offsets);
  // The loop reads the kept counts and writes the output offsets on the host: the workspace
  // arrays themselves on the CPU, host copies on a device (counts come back by download_counts).
  const bool on_host = be.host_workspace();
  std::vector<std::int64_t> counts_mirror(on_host ? 0 : static_cast<std::size_t>(loop.bs()));
  std::vector<std::int64_t> offsets_mirror(on_host ? 0 : static_cast<std::size_t>(loop.bs()));
  std::int64_t* const host_counts = on_host ? counts : counts_mirror.data();
  std::int64_t* const offsets = on_host ? offsets_ws : offsets_mirror.data();
  void* const order = wide ? static_cast<void*>(ws.get(layout.order64)) : static_cast<void*>(ws.get(layout.order32));
  const index_t max_k = o.max_k.value_or(0);
  std::int64_t nnz = 0;
  index_t massless = 0;
  // Writes the selected entries of a block at `offsets` into the given arrays.
  auto emit = [&](const T* block, index_t rows, const T* row_max, std::int32_t* i32, std::int64_t* i64, double* vals) {
    if (o.mode == SparsifyMode::mass)
      be.gather_selected(block, rows, m, order, wide, counts, offsets, i32, i64, vals);
    else
      be.compact_at_least(block, rows, m, row_max, thr, offsets, i32, i64, vals);
  };
  // Host staging of one piece for the sink (the block's output, bounded by bs * m entries).
  std::vector<std::int64_t> piece_indptr;
  std::vector<std::int32_t> piece_idx32;
  std::vector<std::int64_t> piece_idx64;
  std::vector<double> piece_values;
  detail::agreed(comm, [&] {
    loop.sweep(n, nullptr, [&](const T* block, index_t rows, const T* row_max, const T* host_max, index_t r0) {
      for (index_t r = 0; r < rows; ++r) massless += host_max[r] > T(0) ? 0 : 1;
      if (o.mode == SparsifyMode::mass) be.mass_select(block, rows, m, row_max, *o.value, max_k, order, wide, counts);
      else be.count_at_least(block, rows, m, row_max, thr, counts);
      be.download_counts(counts, rows, host_counts);
      for (index_t r = 0; r < rows; ++r) {
        offsets[static_cast<std::size_t>(r)] = nnz;
        nnz += host_counts[static_cast<std::size_t>(r)];
        csr.indptr[static_cast<std::size_t>(r0 + r + 1)] = nnz;
      }
      if (o.sink) {
        // Out-of-core: the piece lives only for the call; offsets restart at the piece.
        const std::int64_t base = csr.indptr[static_cast<std::size_t>(r0)];
        const auto piece_nnz = static_cast<std::size_t>(nnz - base);
        piece_indptr.resize(static_cast<std::size_t>(rows) + 1);
        for (index_t r = 0; r <= rows; ++r)
          piece_indptr[static_cast<std::size_t>(r)] = csr.indptr[static_cast<std::size_t>(r0 + r)] - base;
        for (index_t r = 0; r < rows; ++r) offsets[static_cast<std::size_t>(r)] -= base;
        piece_values.resize(piece_nnz);
        if (wide) piece_idx64.resize(piece_nnz);
        else piece_idx32.resize(piece_nnz);
        emit(block, rows, row_max, wide ? nullptr : piece_idx32.data(), wide ? piece_idx64.data() : nullptr,
             piece_values.data());
        be.flush_output(wide ? nullptr : piece_idx32.data(), wide ? piece_idx64.data() : nullptr, piece_values.data());
        CsrPiece piece;
        piece.row_offset = range.begin + r0;  // the global row
        piece.rows = rows;
        piece.indptr = piece_indptr.data();
        piece.indices32 = wide ? nullptr : piece_idx32.data();
        piece.indices64 = wide ? piece_idx64.data() : nullptr;
        piece.values = piece_values.data();
        piece.nnz = static_cast<std::int64_t>(piece_nnz);
        o.sink(piece);
        return;
      }
      const auto total = static_cast<std::size_t>(nnz);
      csr.values.resize(total);  // geometric capacity growth; shrunk at the end
      if (wide) csr.indices64.resize(total);
      else csr.indices32.resize(total);
      emit(block, rows, row_max, wide ? nullptr : csr.indices32.data(), wide ? csr.indices64.data() : nullptr,
           csr.values.data());
    });
  });
  if (!o.sink)
    be.flush_output(wide ? nullptr : csr.indices32.data(), wide ? csr.indices64.data() : nullptr, csr.values.data());
  csr.values.shrink_to_fit();
  csr.indices32.shrink_to_fit();
  csr.indices64.shrink_to_fit();
  // The totals over every rank (one collective of three counters), so the summary and the
  // warning are the same on every rank.
  std::uint64_t totals[3] = {static_cast<std::uint64_t>(massless), static_cast<std::uint64_t>(nnz),
                             static_cast<std::uint64_t>(n)};
  comm.all_sum(totals, 3);
  massless = static_cast<index_t>(totals[0]);
  res.row_offset = range.begin;
  res.nnz_total = static_cast<std::int64_t>(totals[1]);
  res.rows_total = static_cast<index_t>(totals[2]);
  res.n_massless_rows = massless;
  if (massless > 0)
    warn(std::to_string(massless) +
         " row(s) of the transport plan carry no mass and are left empty; the sparsified matrix cannot be "
         "normalized into a Markov transition matrix.");
}

void finish(const Context& ctx, SparsifyResult& res, std::size_t peak, std::chrono::steady_clock::time_point start) {
  res.batch_size = res.plan.rows;
  res.memory.budget_bytes = ctx.memory_budget();
  res.memory.peak_bytes = peak;
  res.memory.planned_peak_bytes = res.plan.planned_peak;
  res.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// On a distributed problem a rank builds only the rows it owns (p.shards.x) against all of y: the
// plan, the workspace and f are those rows' (docs/sparsify.md "Distributed sparsify").
template <class T>
SparsifyResult sparsify_problem(Problem::Impl& p, const Potentials& r, const SparsifyOptions& o,
                                const PointCloud* pending) {
  const auto start = std::chrono::steady_clock::now();
  validate(o);
  const Context& ctx = p.ctx;
  const detail::Shape s = p.shape;
  detail::check_potentials(p, r);
  Communicator& comm = ctx.communicator();
  const Shard own = p.shards.x;

  SparsifyResult res;
  res.cost = r.reg_ot_cost;
  res.converged = r.converged;
  auto sbe = detail::make_sparsify_backend<T>(ctx, o.staging_entries);
  SparsifyLayout<T> layout =
      sparsify_layout<T>(own.size(), s.n, s.m, o, *sbe, p.budget_in_use() + o.reserved_bytes);
  const auto f_id = layout.decl.template add<T>("f", static_cast<std::size_t>(own.size()));
  const auto g_id = layout.decl.template add<T>("g", static_cast<std::size_t>(s.m));
  // BudgetTooSmall on one rank is raised by every rank.
  res.plan = detail::agreed(
      comm, [&] { return plan_batch(std::max<index_t>(own.size(), 1), layout.decl, ctx.memory_budget(), o.batch_size); });
  if (pending) detail::upload_now(p, *pending);

  detail::OperationScope scope(ctx);
  const detail::Workspace ws(ctx.workspace(), layout.decl, res.plan.rows, ctx.compute_stream());
  const detail::DrainStreams drain(ctx);
  sbe->bind_workspace(ws, layout.decl, res.plan.rows);
  detail::Backend<T>& be = p.backend<T>();
  be.upload(r.f.data() + own.begin, ws.get(f_id), own.size());
  be.upload(r.g.data(), ws.get(g_id), s.m);
  const detail::ResidentClouds<T>& rc = p.resident<T>().clouds;
  auto src =
      sbe->cloud_plan_source(rc.cx_own, rc.cy, rc.cost, 1.0 / r.scale, r.epsilon, ws.get(f_id), ws.get(g_id));
  run_loop<T>(ctx, *sbe, *src, o, res.plan.rows, layout, ws, RowRange{comm, own.begin, s.n}, res);
  finish(ctx, res, scope.finish(), start);
  return res;
}

template <class T>
SparsifyResult sparsify_dense(const Context& ctx, const ConstMatrix& plan, const SparsifyOptions& o,
                              const PlanMetadata& meta) {
  const auto start = std::chrono::steady_clock::now();
  validate(o);
  if (plan.location != Location::host)
    throw InvalidArgument("a device-resident dense plan is not accepted yet: pass a host array");
  if (plan.rows < 0 || plan.cols <= 0 || (plan.rows > 0 && plan.data == nullptr))
    throw InvalidArgument("the dense plan must be a host [n, m] array with m >= 1, got " + std::to_string(plan.rows) +
                          " x " + std::to_string(plan.cols));
  SparsifyResult res;
  res.cost = meta.cost;
  res.converged = meta.converged;
  auto sbe = detail::make_sparsify_backend<T>(ctx, o.staging_entries);
  const SparsifyLayout<T> layout =
      sparsify_layout<T>(plan.rows, plan.rows, plan.cols, o, *sbe, ctx.limiter().allocated_bytes() + o.reserved_bytes);
  res.plan = plan_batch(plan.rows, layout.decl, ctx.memory_budget(), o.batch_size);
  detail::OperationScope scope(ctx);
  const detail::Workspace ws(ctx.workspace(), layout.decl, res.plan.rows, ctx.compute_stream());
  const detail::DrainStreams drain(ctx);
  sbe->bind_workspace(ws, layout.decl, res.plan.rows);
  auto src = sbe->dense_source(plan);
  // A caller's dense plan is whole on every rank: it is sparsified whole, in this process only.
  const std::shared_ptr<Communicator> alone = single_process();
  run_loop<T>(ctx, *sbe, *src, o, res.plan.rows, layout, ws, RowRange{*alone, 0, plan.rows}, res);
  finish(ctx, res, scope.finish(), start);
  return res;
}

}  // namespace

SparsifyMode parse_sparsify_mode(const std::string& text) {
  if (text == "threshold") return SparsifyMode::threshold;
  if (text == "percentile") return SparsifyMode::percentile;
  if (text == "min_row") return SparsifyMode::min_row;
  if (text == "mass") return SparsifyMode::mass;
  throw InvalidArgument("unknown sparsify mode '" + text + "': use threshold, percentile, min_row or mass");
}

const char* sparsify_mode_name(SparsifyMode mode) {
  switch (mode) {
    case SparsifyMode::threshold: return "threshold";
    case SparsifyMode::percentile: return "percentile";
    case SparsifyMode::min_row: return "min_row";
    case SparsifyMode::mass: return "mass";
  }
  return "unknown";
}

SparsifyResult sparsify(const Problem& problem, const Potentials& potentials, const SparsifyOptions& options) {
  return problem.precision() == DType::float32 ? sparsify_problem<float>(problem.impl(), potentials, options, nullptr)
                                               : sparsify_problem<double>(problem.impl(), potentials, options, nullptr);
}

// Planned before the upload, so BudgetTooSmall names the minimum of the whole call.
SparsifyResult sparsify(const Context& ctx, const PointCloud& geom, const Potentials& potentials,
                        const SparsifyOptions& options) {
  validate(options);
  const auto p = detail::prepare_problem(ctx, geom, {}, {}, potentials.precision);
  return potentials.precision == DType::float32 ? sparsify_problem<float>(*p, potentials, options, &geom)
                                                : sparsify_problem<double>(*p, potentials, options, &geom);
}

SparsifyResult sparsify(const Context& ctx, const ConstMatrix& plan, const SparsifyOptions& options,
                        const PlanMetadata& metadata) {
  return plan.dtype == DType::float32 ? sparsify_dense<float>(ctx, plan, options, metadata)
                                      : sparsify_dense<double>(ctx, plan, options, metadata);
}

}  // namespace otcal
