// The sparsify host loop (spec/sparsify.md), written once against the block primitives of
// sparsify/sparsify_backend.hpp. One block of [bs, m] plan rows lives in the budgeted workspace;
// thresholds come from exact minima or integer histogram counts, so the output is bitwise
// independent of bs.
#include "otcal/sparsify.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "otcal/errors.hpp"
#include "sinkhorn/problem.hpp"
#include "sparsify/cost_quantile.hpp"
#include "sparsify/radix_select.hpp"
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

// Spec §5, in the spec's order, before anything is planned or allocated.
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

// Peak-memory formula (spec §7.3):
//   fixed   = resident inputs + histogram bins (percentile) + sampled-row workspace + alignment slack
//   per row = m * sizeof(T)                 dense block
//           + m * sizeof(idx)               mass: the per-row selection order
//           + sizeof(T) + 2 * 8             row max, kept count, output offset
//   + the backend's own bytes (a device backend: staging buffers, sort scratch; none on the CPU)
// The CSR pieces go straight to the host result arrays and are not workspace.
template <class T>
ByteModel sparsify_model(index_t n, index_t m, const SparsifyOptions& o, std::size_t resident_bytes,
                         const SparsifyBackend<T>& be) {
  const bool wide = m >= (index_t{1} << 31);
  std::size_t fixed = resident_bytes + 12 * kDefaultAlignment;
  if (needs_histogram(o)) fixed += 2 * detail::kHistogramBins * sizeof(std::uint64_t);
  if (sampled(o)) {
    const auto k = static_cast<std::size_t>(sample_count(o, n));
    fixed += k * (sizeof(std::pair<std::uint64_t, index_t>) + sizeof(index_t));
  }
  std::size_t per_row = static_cast<std::size_t>(m) * sizeof(T) + sizeof(T) + 2 * sizeof(std::int64_t);
  if (o.mode == SparsifyMode::mass) per_row += static_cast<std::size_t>(m) * (wide ? 8 : 4);
  fixed += be.extra_fixed_bytes(n, m, o.mode == SparsifyMode::mass);
  per_row += be.extra_bytes_per_row(m, o.mode == SparsifyMode::mass);
  return ByteModel{"sparsify", fixed, per_row, 1, 1};
}

template <class T>
class BlockLoop {
 public:
  BlockLoop(const Context& ctx, SparsifyBackend<T>& be, PlanBlockSource<T>& src, index_t bs)
      : ctx_(ctx), be_(be), src_(src), n_(src.rows()), m_(src.cols()), bs_(std::max<index_t>(bs, 1)) {
    MemoryResource& mr = ctx.workspace();
    block_ = Buffer<T>(mr, static_cast<std::size_t>(bs_ * m_));
    row_max_ = Buffer<T>(mr, static_cast<std::size_t>(bs_));
    if (!be.host_workspace()) row_max_host_.resize(static_cast<std::size_t>(bs_));
  }

  // Builds every row (or the rows `ids`) block by block and calls
  // fn(block, rows, row_max, row_max_host, r0): row_max in the workspace (for the primitives),
  // row_max_host readable by the host (the same array on the CPU).
  template <class F>
  void sweep(index_t count, const index_t* ids, F&& fn) {
    unsigned flags = 0;
    T* host_max = be_.host_workspace() ? row_max_.data() : row_max_host_.data();
    for (index_t b0 = 0; b0 < count; b0 += bs_) {
      const index_t rows = std::min(bs_, count - b0);
      src_.build(b0, rows, ids ? ids + b0 : nullptr, block_.data());
      flags |= be_.row_max(block_.data(), rows, m_, row_max_.data());
      be_.download_row_max(row_max_.data(), rows, host_max);
      fn(block_.data(), rows, row_max_.data(), static_cast<const T*>(host_max), b0);
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

  const Context& ctx_;
  SparsifyBackend<T>& be_;
  PlanBlockSource<T>& src_;
  index_t n_, m_, bs_;
  Buffer<T> block_, row_max_;
  std::vector<T> row_max_host_;  // device workspace only
};

// Threshold statistics (spec §4.2, §4.3, §7.1) and the output pass (§2).
template <class T>
void run_loop(const Context& ctx, SparsifyBackend<T>& be, PlanBlockSource<T>& src, const SparsifyOptions& o,
              index_t bs, SparsifyResult& res) {
  MemoryResource& mr = ctx.workspace();
  BlockLoop<T> loop(ctx, be, src, bs);
  const index_t n = loop.n(), m = loop.m();
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
      loop.sweep(n, nullptr, [&](const T*, index_t rows, const T*, const T* row_max, index_t) {
        for (index_t r = 0; r < rows; ++r)
          if (row_max[r] > T(0)) thr = std::min(thr, static_cast<double>(row_max[r]));
      });
      break;
    }
    case SparsifyMode::percentile: {
      Buffer<std::uint64_t> bins(mr, 2 * detail::kHistogramBins);
      Buffer<index_t> ids;
      index_t count = n;
      // exact_percentile reads the bins on the host: in place on the CPU, else a host copy
      // downloaded after each pass. On a device the row sample is drawn on the host and uploaded.
      const bool on_host = be.host_workspace();
      if (o.percentile_method == PercentileMethod::sampled) {
        count = sample_count(o, n);
        ids = Buffer<index_t>(mr, static_cast<std::size_t>(count));
        if (on_host) {
          Buffer<std::pair<std::uint64_t, index_t>> heap(mr, static_cast<std::size_t>(count));
          detail::sample_rows(o.seed, n, count, heap.data(), ids.data());
        } else {
          std::vector<std::pair<std::uint64_t, index_t>> heap(static_cast<std::size_t>(count));
          std::vector<index_t> host_ids(static_cast<std::size_t>(count));
          detail::sample_rows(o.seed, n, count, heap.data(), host_ids.data());
          be.upload_ids(host_ids.data(), count, ids.data());
        }
      }
      std::vector<std::uint64_t> host_bins(on_host ? 0 : 2 * detail::kHistogramBins);
      const detail::HistogramSweep hs = [&](const detail::KeyHistogramQuery& q, std::uint64_t* b) {
        if (!on_host) be.zero_bins(bins.data(), bins.size());
        loop.sweep(count, ids.data(), [&](const T* block, index_t rows, const T* row_max, const T*, index_t) {
          be.key_histogram(block, rows, m, row_max, q, bins.data());
        });
        be.download_bins(bins.data(), bins.size(), b);
      };
      thr = detail::exact_percentile<T>(*o.value, on_host ? bins.data() : host_bins.data(), hs);
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
  Buffer<std::int64_t> counts(mr, static_cast<std::size_t>(loop.bs()));
  Buffer<std::int64_t> offsets_ws(mr, static_cast<std::size_t>(loop.bs()));
  // The loop reads the kept counts and writes the output offsets on the host: the workspace
  // arrays themselves on the CPU, host copies on a device (counts come back by download_counts).
  const bool on_host = be.host_workspace();
  std::vector<std::int64_t> counts_mirror(on_host ? 0 : static_cast<std::size_t>(loop.bs()));
  std::vector<std::int64_t> offsets_mirror(on_host ? 0 : static_cast<std::size_t>(loop.bs()));
  std::int64_t* const host_counts = on_host ? counts.data() : counts_mirror.data();
  std::int64_t* const offsets = on_host ? offsets_ws.data() : offsets_mirror.data();
  Buffer<std::int32_t> order32;
  Buffer<std::int64_t> order64;
  void* order = nullptr;
  if (o.mode == SparsifyMode::mass) {
    if (wide) {
      order64 = Buffer<std::int64_t>(mr, static_cast<std::size_t>(loop.bs() * m));
      order = order64.data();
    } else {
      order32 = Buffer<std::int32_t>(mr, static_cast<std::size_t>(loop.bs() * m));
      order = order32.data();
    }
  }
  const index_t max_k = o.max_k.value_or(0);
  std::int64_t nnz = 0;
  index_t massless = 0;
  // Writes the selected entries of a block at `offsets` into the given arrays.
  auto emit = [&](const T* block, index_t rows, const T* row_max, std::int32_t* i32, std::int64_t* i64, double* vals) {
    if (o.mode == SparsifyMode::mass)
      be.gather_selected(block, rows, m, order, wide, counts.data(), offsets, i32, i64, vals);
    else
      be.compact_at_least(block, rows, m, row_max, thr, offsets, i32, i64, vals);
  };
  // Host staging of one piece for the sink (the block's output, bounded by bs * m entries).
  std::vector<std::int64_t> piece_indptr;
  std::vector<std::int32_t> piece_idx32;
  std::vector<std::int64_t> piece_idx64;
  std::vector<double> piece_values;
  loop.sweep(n, nullptr, [&](const T* block, index_t rows, const T* row_max, const T* host_max, index_t r0) {
    for (index_t r = 0; r < rows; ++r) massless += host_max[r] > T(0) ? 0 : 1;
    if (o.mode == SparsifyMode::mass) be.mass_select(block, rows, m, row_max, *o.value, max_k, order, wide, counts.data());
    else be.count_at_least(block, rows, m, row_max, thr, counts.data());
    be.download_counts(counts.data(), rows, host_counts);
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
      piece.row_offset = r0;
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
  if (!o.sink)
    be.flush_output(wide ? nullptr : csr.indices32.data(), wide ? csr.indices64.data() : nullptr, csr.values.data());
  csr.values.shrink_to_fit();
  csr.indices32.shrink_to_fit();
  csr.indices64.shrink_to_fit();
  res.n_massless_rows = massless;
  if (massless > 0)
    warn(std::to_string(massless) +
         " row(s) of the transport plan carry no mass and are left empty; the sparsified matrix cannot be "
         "normalized into a Markov transition matrix.");
}

struct ScopedPeak {
  StatisticsAdaptor& stats;
  StatisticsAdaptor::Counter* out;
  explicit ScopedPeak(StatisticsAdaptor& s, StatisticsAdaptor::Counter* o) : stats(s), out(o) { stats.push_scope(); }
  ~ScopedPeak() {
    const auto c = stats.pop_scope();
    if (out) *out = c;
  }
};

void finish(const Context& ctx, SparsifyResult& res, const StatisticsAdaptor::Counter& peak,
            std::chrono::steady_clock::time_point start) {
  res.batch_size = res.plan.rows;
  res.memory.budget_bytes = ctx.memory_budget();
  res.memory.peak_bytes = static_cast<std::size_t>(peak.peak);
  res.memory.planned_peak_bytes = res.plan.planned_peak;
  res.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <class T>
SparsifyResult sparsify_cloud(const Context& ctx, const PointCloud& geom, const SinkhornResult& r,
                              const SparsifyOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  validate(o);
  const detail::Shape s = detail::check_geometry(geom);
  if (static_cast<index_t>(r.f.size()) != s.n || static_cast<index_t>(r.g.size()) != s.m)
    throw InvalidArgument("the Sinkhorn result has potentials of lengths " + std::to_string(r.f.size()) + " and " +
                          std::to_string(r.g.size()) + " but the geometry has " + std::to_string(s.n) + " and " +
                          std::to_string(s.m) + " points: pass the geometry the result was solved on");
  if (!(r.epsilon > 0) || !std::isfinite(r.epsilon) || !(r.scale > 0) || !std::isfinite(r.scale))
    throw InvalidArgument("the Sinkhorn result carries no valid resolved epsilon/scale (epsilon = " +
                          num(r.epsilon) + ", scale = " + num(r.scale) + "); solve first");
  if (r.cost.kind != geom.options.cost.kind || (r.cost.kind >= CostKind::pnorm && r.cost.p != geom.options.cost.p))
    throw InvalidArgument("the Sinkhorn result was solved with cost " + r.cost.name() + " but the geometry has " +
                          geom.options.cost.name() + ": pass the geometry the result was solved on");

  SparsifyResult res;
  res.cost = r.reg_ot_cost;
  res.converged = r.converged;
  const std::size_t resident = detail::cloud_bytes(s, geom.options.cost, sizeof(T)) +
                               static_cast<std::size_t>(s.n + s.m) * sizeof(T) + 2 * kDefaultAlignment;
  auto sbe = detail::make_sparsify_backend<T>(ctx, o.staging_entries);
  res.plan = plan_batch(s.n, sparsify_model<T>(s.n, s.m, o, resident, *sbe), ctx.memory_budget(), o.batch_size);

  auto be = detail::make_backend<T>(ctx);
  StatisticsAdaptor::Counter peak;
  {
    ScopedPeak scope(ctx.statistics(), &peak);
    MemoryResource& mr = ctx.workspace();
    const auto rc = detail::upload_clouds<T>(*be, mr, geom, s);
    Buffer<T> f(mr, static_cast<std::size_t>(s.n)), g(mr, static_cast<std::size_t>(s.m));
    be->upload(r.f.data(), f.data(), s.n);
    be->upload(r.g.data(), g.data(), s.m);
    auto src = sbe->cloud_plan_source(rc.cx, rc.cy, rc.cost, 1.0 / r.scale, r.epsilon, f.data(), g.data());
    run_loop<T>(ctx, *sbe, *src, o, res.plan.rows, res);
  }
  finish(ctx, res, peak, start);
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
  res.plan = plan_batch(plan.rows, sparsify_model<T>(plan.rows, plan.cols, o, 0, *sbe), ctx.memory_budget(),
                        o.batch_size);
  StatisticsAdaptor::Counter peak;
  {
    ScopedPeak scope(ctx.statistics(), &peak);
    auto src = sbe->dense_source(plan);
    run_loop<T>(ctx, *sbe, *src, o, res.plan.rows, res);
  }
  finish(ctx, res, peak, start);
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

SparsifyResult sparsify(const Context& ctx, const PointCloud& geom, const SinkhornResult& result,
                        const SparsifyOptions& options) {
  return result.precision == DType::float32 ? sparsify_cloud<float>(ctx, geom, result, options)
                                            : sparsify_cloud<double>(ctx, geom, result, options);
}

SparsifyResult sparsify(const Context& ctx, const ConstMatrix& plan, const SparsifyOptions& options,
                        const PlanMetadata& metadata) {
  return plan.dtype == DType::float32 ? sparsify_dense<float>(ctx, plan, options, metadata)
                                      : sparsify_dense<double>(ctx, plan, options, metadata);
}

namespace detail {

index_t cost_percentile_block_rows(const Shape& s, std::size_t value_size) {
  const auto row_bytes = static_cast<index_t>(static_cast<std::size_t>(s.m) * value_size);
  return std::clamp<index_t>((index_t{1} << 20) / std::max<index_t>(row_bytes, 1), 1, std::max<index_t>(s.n, 1));
}

std::size_t cost_percentile_scratch_bytes(const Shape& s, std::size_t value_size) {
  return static_cast<std::size_t>(cost_percentile_block_rows(s, value_size) * s.m) * value_size +
         2 * kHistogramBins * sizeof(std::uint64_t) + 2 * kDefaultAlignment;
}

template <class T>
double cost_percentile(Backend<T>& be, const ResidentClouds<T>& rc, const Shape& s, double q,
                       MemoryResource* host_workspace) {
  if (!(q >= 0 && q <= 100)) throw InvalidArgument("cost percentile q = " + num(q) + " must be in [0, 100]");
  Cloud<T> cx = rc.cx, cy = rc.cy;
  std::vector<T> hx, hy, nx, ny;
  HostResource plain_host;
  MemoryResource& scratch_mr = host_workspace ? *host_workspace : plain_host;
  if (host_workspace == nullptr) {
    // Device-resident clouds: host copies, dimension-major as on the device.
    auto host_copy = [&](const T* src, index_t count) {
      std::vector<double> tmp(static_cast<std::size_t>(count));
      be.download(src, tmp.data(), count);
      return std::vector<T>(tmp.begin(), tmp.end());
    };
    const bool same = rc.cy.x == rc.cx.x;
    hx = host_copy(rc.cx.x, s.n * s.d);
    if (!same) hy = host_copy(rc.cy.x, s.m * s.d);
    cx = {hx.data(), nullptr, s.n, static_cast<int>(s.d)};
    cy = {same ? hx.data() : hy.data(), nullptr, s.m, static_cast<int>(s.d)};
    if (rc.cx.norms) {
      nx = host_copy(rc.cx.norms, s.n);
      cx.norms = nx.data();
      if (rc.cy.norms == rc.cx.norms) {
        cy.norms = nx.data();
      } else {
        ny = host_copy(rc.cy.norms, s.m);
        cy.norms = ny.data();
      }
    }
  }
  auto sbe = make_cpu_sparsify_backend<T>();
  auto src = sbe->cloud_cost_source(cx, cy, rc.cost);
  const index_t bs = cost_percentile_block_rows(s, sizeof(T));
  Buffer<T> block(scratch_mr, static_cast<std::size_t>(bs * s.m));
  Buffer<std::uint64_t> bins(scratch_mr, 2 * kHistogramBins);
  const HistogramSweep hs = [&](const KeyHistogramQuery& query, std::uint64_t* b) {
    for (index_t r0 = 0; r0 < s.n; r0 += bs) {
      const index_t rows = std::min(bs, s.n - r0);
      src->build(r0, rows, nullptr, block.data());
      sbe->key_histogram(block.data(), rows, s.m, nullptr, query, b);
    }
  };
  return exact_percentile<T>(q, bins.data(), hs);
}

template double cost_percentile<float>(Backend<float>&, const ResidentClouds<float>&, const Shape&, double,
                                       MemoryResource*);
template double cost_percentile<double>(Backend<double>&, const ResidentClouds<double>&, const Shape&, double,
                                        MemoryResource*);

}  // namespace detail

namespace {
template <class T>
double cost_quantile_impl(const Context& ctx, const PointCloud& geom, double q) {
  const detail::Shape s = detail::check_geometry(geom);
  auto be = detail::make_backend<T>(ctx);
  const auto rc = detail::upload_clouds<T>(*be, ctx.workspace(), geom, s);
  return detail::cost_percentile<T>(*be, rc, s, q, ctx.kind() == DeviceKind::cpu ? &ctx.workspace() : nullptr);
}
}  // namespace

double exact_cost_quantile(const Context& ctx, const PointCloud& geom, double q, DType precision) {
  return precision == DType::float32 ? cost_quantile_impl<float>(ctx, geom, q)
                                     : cost_quantile_impl<double>(ctx, geom, q);
}

}  // namespace otcal
