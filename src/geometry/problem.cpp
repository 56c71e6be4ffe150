// Problem::upload: the inputs are checked and uploaded once, into the declared resident layout.
#include "otcal/problem.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>

#include "core/collective.hpp"
#include "core/cuda_runtime.hpp"
#include "core/operation.hpp"
#include "geometry/problem_impl.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

template <class T>
std::unique_ptr<detail::Resident<T>> upload_resident(Problem::Impl& p, const PointCloud& geom) {
  detail::Backend<T>& be = p.backend<T>();
  detail::ResidentLayout<T> layout = detail::resident_layout<T>(p.shape, geom.options.cost, p.same, p.shards);
  layout.decl.resident_bytes = p.ctx.limiter().allocated_bytes();
  // BudgetTooSmall before anything is allocated, on every rank when one rank's shard does not fit.
  detail::agreed(p.ctx.communicator(), [&] { return plan_tiles(0, layout.decl, p.ctx.memory_budget()); });

  detail::OperationScope scope(p.ctx);
  auto r = std::make_unique<detail::Resident<T>>();
  r->buffers = detail::Workspace(p.ctx.workspace(), layout.decl, 0, p.ctx.compute_stream());
  const detail::Workspace& w = r->buffers;
  r->clouds = detail::upload_clouds<T>(p.ctx, be, geom, p.shape, p.shards, w, layout);
  r->a = w.get(layout.a);
  r->b = w.get(layout.b);
  be.upload(p.a.data(), r->a, p.shape.n);
  be.upload(p.b.data(), r->b, p.shape.m);
  scope.finish();
  return r;
}

}  // namespace

namespace detail {

std::size_t resident_bytes_of(const Shape& shape, const Cost& cost, bool same, const RowShards& shards, DType precision) {
  const WorkspaceDecl resident = dtype_size(precision) == 4 ? resident_layout<float>(shape, cost, same, shards).decl
                                                            : resident_layout<double>(shape, cost, same, shards).decl;
  return resident.bytes(0);
}

std::shared_ptr<Problem::Impl> prepare_checked(const Context& ctx, const PointCloud& geom, const ConstVector& a,
                                               const ConstVector& b, DType precision);

std::shared_ptr<Problem::Impl> prepare_problem(const Context& ctx, const PointCloud& geom, const ConstVector& a,
                                               const ConstVector& b, DType precision) {
  // A rank that rejects its inputs makes every rank raise that error instead of waiting.
  return agreed(ctx.communicator(), [&] { return prepare_checked(ctx, geom, a, b, precision); });
}

std::shared_ptr<Problem::Impl> prepare_checked(const Context& ctx, const PointCloud& geom, const ConstVector& a,
                                               const ConstVector& b, DType precision) {
  // Device views may have been written on the caller's stream: let it finish before reading them.
  const bool any_device = geom.x.location == Location::device || a.location == Location::device ||
                          b.location == Location::device;
  if (any_device && ctx.kind() == DeviceKind::cuda && ctx.user_stream() != nullptr)
    cuda_stream_synchronize(ctx.user_stream());
  for (const auto& [w, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
    if (!w->empty() && w->location == Location::device && ctx.kind() != DeviceKind::cuda)
      throw InvalidArgument(std::string(name) + " is a device array but the context runs on the cpu: pass host "
                            "arrays or use a CUDA context");
  auto p = std::make_shared<Problem::Impl>(ctx);
  p->shape = detail::check_geometry(geom, ctx.kind());
  detail::check_cost_range(geom, precision);
  p->geometry = geom.options;
  p->precision = precision;
  p->same = geom.y.empty();
  p->a = host_weights(a, p->shape.n, "a", "x");
  p->b = host_weights(b, p->shape.m, "b", "y");
  for (double v : p->a) p->sum_a += v;
  for (double v : p->b) p->sum_b += v;
  p->shards = row_shards(ctx, p->shape, p->same);
  p->resident_bytes = resident_bytes_of(p->shape, geom.options.cost, p->same, p->shards, precision);
  return p;
}

void upload_now(Problem::Impl& p, const PointCloud& geom) {
  if (geom.options.cost.kind == CostKind::sqeuclidean) p.norms = norm_stats(geom.x, geom.y_or_x());
  if (p.precision == DType::float32) p.r32 = upload_resident<float>(p, geom);
  else p.r64 = upload_resident<double>(p, geom);
  p.uploaded = true;
}

void check_potentials(const Problem::Impl& p, const Potentials& r) {
  auto num = [](double v) {
    std::ostringstream os;
    os.precision(10);
    os << v;
    return os.str();
  };
  if (static_cast<index_t>(r.f.size()) != p.shape.n || static_cast<index_t>(r.g.size()) != p.shape.m)
    throw InvalidArgument("the potentials have lengths " + std::to_string(r.f.size()) + " and " +
                          std::to_string(r.g.size()) + " but the problem has " + std::to_string(p.shape.n) + " and " +
                          std::to_string(p.shape.m) + " points: pass the problem (or geometry) they were solved on");
  if (!(r.epsilon > 0) || !std::isfinite(r.epsilon) || !(r.scale > 0) || !std::isfinite(r.scale))
    throw InvalidArgument("the potentials carry no valid resolved epsilon/scale (epsilon = " + num(r.epsilon) +
                          ", scale = " + num(r.scale) + "); solve first, or set both");
  const Cost& c = p.geometry.cost;
  if (r.cost.kind != c.kind || (r.cost.kind >= CostKind::pnorm && r.cost.p != c.p))
    throw InvalidArgument("the potentials were solved with cost " + r.cost.name() + " but the problem has " +
                          c.name() + ": pass the problem (or geometry) they were solved on");
  if (r.precision != p.precision)
    throw InvalidArgument(std::string("the potentials are ") + dtype_name(r.precision) + " but the problem was "
                          "uploaded in " + dtype_name(p.precision) + ": upload it in the potentials' precision");
}

Problem upload_prepared(std::shared_ptr<Problem::Impl> p, const PointCloud& geom) {
  upload_now(*p, geom);
  return Problem(std::move(p));
}

}  // namespace detail

Problem Problem::upload(const Context& ctx, const PointCloud& geom, const ConstVector& a, const ConstVector& b,
                        DType precision) {
  return detail::upload_prepared(detail::prepare_problem(ctx, geom, a, b, precision), geom);
}

void Problem::set_weights(const ConstVector& a, const ConstVector& b) {
  Impl& p = *impl_;
  const Context& ctx = p.ctx;
  for (const auto& [w, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
    if (!w->empty() && w->location == Location::device && ctx.kind() != DeviceKind::cuda)
      throw InvalidArgument(std::string(name) + " is a device array but the context runs on the cpu: pass host "
                            "arrays or use a CUDA context");
  const bool any_device = a.location == Location::device || b.location == Location::device;
  if (any_device && ctx.kind() == DeviceKind::cuda && ctx.user_stream() != nullptr)
    detail::cuda_stream_synchronize(ctx.user_stream());
  // Both are validated before anything changes, so a bad b leaves the old a in place too.
  std::vector<double> wa = detail::host_weights(a, p.shape.n, "a", "x");
  std::vector<double> wb = detail::host_weights(b, p.shape.m, "b", "y");
  detail::OperationScope scope(ctx);
  if (p.precision == DType::float32) {
    p.backend<float>().upload(wa.data(), p.r32->a, p.shape.n);
    p.backend<float>().upload(wb.data(), p.r32->b, p.shape.m);
  } else {
    p.backend<double>().upload(wa.data(), p.r64->a, p.shape.n);
    p.backend<double>().upload(wb.data(), p.r64->b, p.shape.m);
  }
  scope.finish();
  p.sum_a = 0;
  p.sum_b = 0;
  for (double v : wa) p.sum_a += v;
  for (double v : wb) p.sum_b += v;
  p.a = std::move(wa);
  p.b = std::move(wb);
}

const Context& Problem::context() const { return impl_->ctx; }
index_t Problem::n() const { return impl_->shape.n; }
index_t Problem::m() const { return impl_->shape.m; }
index_t Problem::d() const { return impl_->shape.d; }
DType Problem::precision() const { return impl_->precision; }
const GeometryOptions& Problem::geometry() const { return impl_->geometry; }
const std::vector<double>& Problem::a() const { return impl_->a; }
const std::vector<double>& Problem::b() const { return impl_->b; }
bool Problem::same_clouds() const { return impl_->same; }
std::size_t Problem::resident_bytes() const { return impl_->resident_bytes; }

std::size_t Problem::minimum_budget_for(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds,
                                        const Cost& cost, DType precision) {
  const detail::Shape shape{n, same_clouds ? n : m, d};
  const detail::RowShards shards = detail::row_shards(ctx, shape, same_clouds);
  // upload_resident's declaration and planning, without the clouds.
  auto minimum = [&](auto zero) {
    detail::ResidentLayout<decltype(zero)> layout = detail::resident_layout<decltype(zero)>(shape, cost, same_clouds, shards);
    layout.decl.resident_bytes = ctx.limiter().allocated_bytes();
    return minimum_budget(layout.decl, std::max<index_t>(layout.decl.min_rows, 1));
  };
  return dtype_size(precision) == 4 ? minimum(float{}) : minimum(double{});
}

std::size_t Problem::resident_bytes_for(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds,
                                        const Cost& cost, DType precision) {
  const detail::Shape shape{n, same_clouds ? n : m, d};
  return detail::resident_bytes_of(shape, cost, same_clouds, detail::row_shards(ctx, shape, same_clouds), precision);
}

}  // namespace otcal
