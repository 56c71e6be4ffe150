#include "geometry/cost_quantile.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/block_backend.hpp"
#include "core/collective.hpp"
#include "core/operation.hpp"
#include "core/radix_select.hpp"
#include "geometry/resolve.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

index_t cost_percentile_block_rows(const Shape& s, std::size_t value_size) {
  const auto row_bytes = static_cast<index_t>(static_cast<std::size_t>(s.m) * value_size);
  return std::clamp<index_t>((index_t{1} << 20) / std::max<index_t>(row_bytes, 1), 1, std::max<index_t>(s.n, 1));
}

template <class T>
PercentileScratch<T> declare_percentile_scratch(WorkspaceDecl& decl, const Shape& s, bool host_backend) {
  PercentileScratch<T> p;
  const auto block = static_cast<std::size_t>(cost_percentile_block_rows(s, sizeof(T)) * s.m);
  p.block = decl.add<T>("percentile_block", host_backend ? block : 0);
  p.bins = decl.add<std::uint64_t>("percentile_bins", host_backend ? 2 * kHistogramBins : 0);
  return p;
}

template <class T>
double cost_percentile(Communicator& comm, Backend<T>& be, const ResidentClouds<T>& rc, const Shape& s, double q,
                       T* block, std::uint64_t* bins) {
  if (!(q >= 0 && q <= 100)) {
    std::ostringstream os;
    os << "cost percentile q = " << q << " must be in [0, 100]";
    throw InvalidArgument(os.str());
  }
  // This rank's rows against all columns; the histograms of every rank are summed (integers: the
  // one-process counts exactly).
  Cloud<T> cx = rc.cx_own, cy = rc.cy;
  const index_t rows_n = rc.cx_own.n;
  std::vector<T> hx, hy, nx, ny, host_block;
  std::vector<std::uint64_t> host_bins;
  if (block == nullptr) {
    // Device-resident clouds: host copies, dimension-major as on the device; host scratch.
    auto host_copy = [&](const T* src, index_t count) {
      std::vector<double> tmp(static_cast<std::size_t>(count));
      be.download(src, tmp.data(), count);
      return std::vector<T>(tmp.begin(), tmp.end());
    };
    const bool same = rc.cy.x == rc.cx_own.x;
    hx = host_copy(rc.cx_own.x, rows_n * s.d);
    if (!same) hy = host_copy(rc.cy.x, s.m * s.d);
    cx = {hx.data(), nullptr, rows_n, static_cast<int>(s.d)};
    cy = {same ? hx.data() : hy.data(), nullptr, s.m, static_cast<int>(s.d)};
    if (rc.cx_own.norms) {
      nx = host_copy(rc.cx_own.norms, rows_n);
      cx.norms = nx.data();
      if (rc.cy.norms == rc.cx_own.norms) {
        cy.norms = nx.data();
      } else {
        ny = host_copy(rc.cy.norms, s.m);
        cy.norms = ny.data();
      }
    }
    host_block.resize(static_cast<std::size_t>(cost_percentile_block_rows(s, sizeof(T)) * s.m));
    host_bins.resize(2 * kHistogramBins);
    block = host_block.data();
    bins = host_bins.data();
  }
  auto blocks = make_cpu_block_backend<T>();
  auto src = blocks->cloud_cost_source(cx, cy, rc.cost);
  const index_t bs = cost_percentile_block_rows(s, sizeof(T));
  const HistogramSweep hs = [&](const KeyHistogramQuery& query, std::uint64_t* b) {
    for (index_t r0 = 0; r0 < rows_n; r0 += bs) {
      const index_t rows = std::min(bs, rows_n - r0);
      src->build(r0, rows, nullptr, block);
      blocks->key_histogram(block, rows, s.m, nullptr, query, b);
    }
    if (comm.size() > 1) comm.all_sum(b, 2 * kHistogramBins);
  };
  return exact_percentile<T>(q, bins, hs);
}

template PercentileScratch<float> declare_percentile_scratch<float>(WorkspaceDecl&, const Shape&, bool);
template PercentileScratch<double> declare_percentile_scratch<double>(WorkspaceDecl&, const Shape&, bool);
template double cost_percentile<float>(Communicator&, Backend<float>&, const ResidentClouds<float>&, const Shape&,
                                       double, float*, std::uint64_t*);
template double cost_percentile<double>(Communicator&, Backend<double>&, const ResidentClouds<double>&,
                                        const Shape&, double, double*, std::uint64_t*);

}  // namespace otcal::detail

namespace otcal {

namespace {

template <class T>
double quantile_on(Problem::Impl& p, double q, const PointCloud* pending) {
  WorkspaceDecl decl;
  decl.operation = "exact cost quantile";
  decl.resident_bytes = p.budget_in_use();
  const bool host = p.ctx.kind() == DeviceKind::cpu;
  const auto scratch = detail::declare_percentile_scratch<T>(decl, p.shape, host);
  detail::agreed(p.ctx.communicator(), [&] { return plan_tiles(0, decl, p.ctx.memory_budget()); });
  if (pending) detail::upload_now(p, *pending);
  detail::OperationScope scope(p.ctx);
  const detail::Workspace ws(p.ctx.workspace(), decl, 0, p.ctx.compute_stream());
  const double v = detail::cost_percentile<T>(p.ctx.communicator(), p.backend<T>(), p.resident<T>().clouds, p.shape, q,
                                              host ? ws.get(scratch.block) : nullptr,
                                              host ? ws.get(scratch.bins) : nullptr);
  scope.finish();
  return v;
}

template <class T>
CostStatistics statistics_on(const Problem& problem) {
  Problem::Impl& p = problem.impl();
  WorkspaceDecl decl;
  decl.operation = "cost statistics";
  decl.resident_bytes = p.budget_in_use();
  detail::StatsNeeds needs;
  needs.moments = true;
  const auto scratch = detail::declare_stats_scratch<T>(decl, p, needs);
  const TilePlan plan = plan_tiles(p.shape.n, decl, p.ctx.memory_budget());
  detail::OperationScope scope(p.ctx);
  const detail::Workspace ws(p.ctx.workspace(), decl, plan.rows, p.ctx.compute_stream());
  const detail::CostMoments m = detail::cost_moments<T>(p, ws, scratch, plan.rows);
  scope.finish();
  const double nm = static_cast<double>(p.shape.n) * static_cast<double>(p.shape.m);
  CostStatistics s;
  s.mean = m.sum / nm;
  s.std = std::sqrt(std::max(0.0, m.sum_sq / nm - s.mean * s.mean));
  s.max_abs = m.max_abs;
  return s;
}

}  // namespace

double exact_cost_quantile(const Problem& problem, double q) {
  return problem.precision() == DType::float32 ? quantile_on<float>(problem.impl(), q, nullptr)
                                               : quantile_on<double>(problem.impl(), q, nullptr);
}

double exact_cost_quantile(const Context& ctx, const PointCloud& geom, double q, DType precision) {
  const auto p = detail::prepare_problem(ctx, geom, {}, {}, precision);
  return precision == DType::float32 ? quantile_on<float>(*p, q, &geom) : quantile_on<double>(*p, q, &geom);
}

CostStatistics cost_statistics(const Problem& problem) {
  return problem.precision() == DType::float32 ? statistics_on<float>(problem) : statistics_on<double>(problem);
}

}  // namespace otcal
