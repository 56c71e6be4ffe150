// The Sinkhorn host loop, written once against the backend primitives (spec/sinkhorn.md).
#include "otcal/sinkhorn.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "sinkhorn/problem.hpp"
#include "sparsify/cost_quantile.hpp"

namespace otcal {
namespace {

using detail::Backend;

using detail::Cloud;
using detail::Shape;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kDefaultEpsilonScale = 0.05;

std::string num(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

void check_options(const SinkhornOptions& o) {
  if (o.epsilon && !(*o.epsilon > 0 && std::isfinite(*o.epsilon)))
    throw InvalidArgument("epsilon = " + num(*o.epsilon) + " must be a finite number > 0");
  if (!(o.epsilon_init > 0 && std::isfinite(o.epsilon_init)))
    throw InvalidArgument("epsilon_init = " + num(o.epsilon_init) + " must be a finite number > 0");
  if (!(o.epsilon_decay > 0 && o.epsilon_decay <= 1))
    throw InvalidArgument("epsilon_decay = " + num(o.epsilon_decay) + " must be in (0, 1]");
  if (!(o.tau_a > 0 && o.tau_a <= 1)) throw InvalidArgument("tau_a = " + num(o.tau_a) + " must be in (0, 1]");
  if (!(o.tau_b > 0 && o.tau_b <= 1)) throw InvalidArgument("tau_b = " + num(o.tau_b) + " must be in (0, 1]");
  if (!(o.threshold >= 0 && std::isfinite(o.threshold)))
    throw InvalidArgument("threshold = " + num(o.threshold) + " must be a finite number >= 0");
  if (!(o.norm_error >= 1 && std::isfinite(o.norm_error)))
    throw InvalidArgument("norm_error = " + num(o.norm_error) + " must be a finite number >= 1");
  if (o.inner_iterations < 1)
    throw InvalidArgument("inner_iterations = " + std::to_string(o.inner_iterations) + " must be >= 1");
  if (o.min_iterations < 0 || o.min_iterations > o.max_iterations)
    throw InvalidArgument("iterations: need 0 <= min_iterations (" + std::to_string(o.min_iterations) +
                          ") <= max_iterations (" + std::to_string(o.max_iterations) + ")");
  if (o.max_iterations < 1) throw InvalidArgument("max_iterations must be >= 1");
  if (o.min_iterations == o.max_iterations && o.max_iterations % o.inner_iterations != 0)
    throw InvalidArgument("fixed-length mode (min_iterations = max_iterations = " + std::to_string(o.max_iterations) +
                          ") needs max_iterations to be a multiple of inner_iterations (" +
                          std::to_string(o.inner_iterations) + "), otherwise no error is ever computed");
  if (o.batch_size && *o.batch_size <= 0)
    throw InvalidArgument("batch_size = " + std::to_string(*o.batch_size) + " must be a positive number of rows");
}

double rho_of(double eps, double tau) { return tau >= 1 ? kInf : eps * tau / (1 - tau); }

// Host-side statistics of the inputs (O((n + m) d)): closed forms for sqeuclidean.
struct NormStats {
  double mean_sq_x = 0, mean_sq_y = 0, max_sq_x = 0, max_sq_y = 0, dot_means = 0;
};
NormStats norm_stats(const ConstMatrix& x, const ConstMatrix& y) {
  NormStats s;
  const index_t d = x.cols;
  std::vector<double> mx(static_cast<std::size_t>(d), 0.0), my(static_cast<std::size_t>(d), 0.0);
  for (index_t i = 0; i < x.rows; ++i) {
    double sq = 0;
    for (index_t k = 0; k < d; ++k) {
      const double v = x.at(i, k);
      sq += v * v;
      mx[static_cast<std::size_t>(k)] += v;
    }
    s.mean_sq_x += sq;
    s.max_sq_x = std::max(s.max_sq_x, sq);
  }
  for (index_t j = 0; j < y.rows; ++j) {
    double sq = 0;
    for (index_t k = 0; k < d; ++k) {
      const double v = y.at(j, k);
      sq += v * v;
      my[static_cast<std::size_t>(k)] += v;
    }
    s.mean_sq_y += sq;
    s.max_sq_y = std::max(s.max_sq_y, sq);
  }
  s.mean_sq_x /= static_cast<double>(x.rows);
  s.mean_sq_y /= static_cast<double>(y.rows);
  for (index_t k = 0; k < d; ++k)
    s.dot_means += mx[static_cast<std::size_t>(k)] / static_cast<double>(x.rows) * my[static_cast<std::size_t>(k)] /
                   static_cast<double>(y.rows);
  return s;
}

template <class T>
ResolvedGeometry resolve(Backend<T>& be, MemoryResource& mr, bool host_backend, const PointCloud& geom,
                         const SinkhornOptions& o,
                         const detail::ResidentClouds<T>& rc, const Shape& s, index_t tile_rows) {
  const Cost& cost = geom.options.cost;
  const ScaleCost& sc = geom.options.scale;
  const bool sq = cost.kind == CostKind::sqeuclidean;
  const double nm = static_cast<double>(s.n) * static_cast<double>(s.m);
  NormStats ns;
  if (sq) ns = norm_stats(geom.x, geom.y_or_x());

  const bool eps_needs_std = !o.epsilon ? o.relative_epsilon != RelativeEpsilon::mean
                                        : o.relative_epsilon == RelativeEpsilon::std;
  const bool eps_needs_mean = o.relative_epsilon == RelativeEpsilon::mean;
  const bool scale_needs_pass = (sc.kind == ScaleCost::Kind::mean && !sq) || sc.kind == ScaleCost::Kind::max_cost;
  const bool pass = scale_needs_pass || eps_needs_std || (eps_needs_mean && !sq);

  detail::CostMoments mom;
  if (pass) {
    Buffer<double> partials(mr, static_cast<std::size_t>(3 * s.n));
    mom = be.cost_moments(rc.cx, rc.cy, rc.cost, tile_rows, partials.data());
  }
  const double closed_mean = sq ? ns.mean_sq_x + ns.mean_sq_y - 2 * ns.dot_means : 0;
  const double mean_c = sq && !pass ? closed_mean : mom.sum / nm;

  ResolvedGeometry r;
  switch (sc.kind) {
    case ScaleCost::Kind::value: r.scale = sc.value; break;
    case ScaleCost::Kind::mean: r.scale = sq ? closed_mean : mom.sum / nm; break;
    case ScaleCost::Kind::max_cost: r.scale = mom.max_abs; break;
    case ScaleCost::Kind::max_norm:
      if (!sq)
        throw InvalidArgument("scale_cost max_norm needs a cost with a norm (sqeuclidean), not " + cost.name() +
                              "; use mean or max_cost");
      r.scale = std::max(ns.max_sq_x, ns.max_sq_y);
      break;
    case ScaleCost::Kind::max_bound:
      if (!sq)
        throw InvalidArgument("scale_cost max_bound is defined for sqeuclidean only, not " + cost.name() +
                              "; use mean or max_cost");
      r.scale = ns.max_sq_x + ns.max_sq_y + 2 * std::sqrt(ns.max_sq_x * ns.max_sq_y);
      break;
    case ScaleCost::Kind::median:  // exact numpy median of all n*m unscaled costs (sparsify.md §7.1)
      r.scale = detail::cost_percentile<T>(be, rc, s, 50.0, host_backend ? &mr : nullptr);
      break;
  }
  if (!(r.scale > 0) || !std::isfinite(r.scale))
    throw InvalidArgument("scale_cost " + sc.name() + " resolved to " + num(r.scale) +
                          " (are all points identical?); pass a positive number instead");

  const double mean_C = mean_c / r.scale;
  const double std_C = std::sqrt(std::max(0.0, mom.sum_sq / nm / (r.scale * r.scale) - mean_C * mean_C));
  if (!o.epsilon && o.relative_epsilon == RelativeEpsilon::none) r.epsilon = kDefaultEpsilonScale * std_C;
  else if (o.relative_epsilon == RelativeEpsilon::mean) r.epsilon = o.epsilon.value_or(kDefaultEpsilonScale) * mean_C;
  else if (o.relative_epsilon == RelativeEpsilon::std) r.epsilon = o.epsilon.value_or(kDefaultEpsilonScale) * std_C;
  else r.epsilon = *o.epsilon;
  if (!(r.epsilon > 0) || !std::isfinite(r.epsilon))
    throw InvalidArgument("epsilon resolved to " + num(r.epsilon) +
                          " (the scaled cost has no spread); pass an absolute --epsilon > 0");
  return r;
}

// Everything the solve keeps resident, allocated up front from the budget.
template <class T>
struct SolveState {
  Buffer<T> a, b, log_a, log_b, f, g, lse_row, lse_col;
  Buffer<double> tile_state;
};

// Workspace of the one-off resolve pass: per-row cost moments, or the median's blocks and bins
// (CPU backend; on CUDA that scratch is host memory outside the device budget).
template <class T>
std::size_t resolve_scratch_bytes(const Shape& s, const GeometryOptions& g, bool host_backend) {
  std::size_t bytes = static_cast<std::size_t>(3 * s.n) * sizeof(double);
  if (g.scale.kind == ScaleCost::Kind::median && host_backend)
    bytes = std::max(bytes, detail::cost_percentile_scratch_bytes(s, sizeof(T)));
  return bytes;
}

template <class T>
std::size_t solve_fixed_bytes(const Shape& s, const GeometryOptions& g, bool host_backend) {
  const std::size_t per_point = 8 * sizeof(T) / 2;  // a/b, log, potential, lse: 4 arrays per side
  return detail::cloud_bytes(s, g.cost, sizeof(T)) + static_cast<std::size_t>(s.n + s.m) * per_point +
         16 * kDefaultAlignment + resolve_scratch_bytes<T>(s, g, host_backend);
}

template <class T>
SinkhornResult solve(const Context& ctx, const PointCloud& geom, const ConstVector& a_in, const ConstVector& b_in,
                     const SinkhornOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  check_options(o);
  const Shape s = detail::check_geometry(geom);
  const std::vector<double> a = detail::host_weights(a_in, s.n, "a", "x");
  const std::vector<double> b = detail::host_weights(b_in, s.m, "b", "y");

  SinkhornResult res;
  res.n = s.n;
  res.m = s.m;
  res.d = s.d;
  res.cost = geom.options.cost;
  res.precision = dtype_of<T>();
  res.threshold = o.threshold;
  res.inner_iterations = o.inner_iterations;
  res.tau_a = o.tau_a;
  res.tau_b = o.tau_b;
  res.device = ctx.device_name();
  auto warn = [&](const std::string& w) {
    res.warnings.push_back(w);
    ctx.warn(w);
  };

  double sum_a = 0, sum_b = 0;
  for (double v : a) sum_a += v;
  for (double v : b) sum_b += v;
  const bool balanced = o.tau_a == 1 && o.tau_b == 1;
  if (balanced && std::fabs(sum_a - sum_b) > 1e-6 * sum_a)
    warn("balanced Sinkhorn cannot converge: a sums to " + num(sum_a) + " but b sums to " + num(sum_b) +
         "; normalise the weights or set tau_a/tau_b < 1");

  auto be = detail::make_backend<T>(ctx);
  MemoryResource& mr = ctx.workspace();
  const index_t rows_max = std::max(s.n, s.m);
  ByteModel model{"sinkhorn", solve_fixed_bytes<T>(s, geom.options, ctx.kind() == DeviceKind::cpu),
                  2 * sizeof(double) * static_cast<std::size_t>(be->lse_partials_per_row(rows_max)), 1, 1};
  res.plan = plan_batch(rows_max, model, ctx.memory_budget(), o.batch_size);
  res.batch_size = res.plan.rows;
  if (res.plan.clamped)
    warn("batch_size " + std::to_string(*o.batch_size) + " exceeds the largest cloud (" + std::to_string(rows_max) +
         " points) and was clamped");

  StatisticsAdaptor& stats = ctx.statistics();
  stats.push_scope();
  struct ScopeGuard {
    StatisticsAdaptor& st;
    StatisticsAdaptor::Counter* out;
    ~ScopeGuard() {
      const auto c = st.pop_scope();
      if (out) *out = c;
    }
  };
  StatisticsAdaptor::Counter peak;
  {
    ScopeGuard guard{stats, &peak};
    ctx.enter_user_stream();
    const detail::ResidentClouds<T> rc = detail::upload_clouds<T>(*be, mr, geom, s);
    const index_t tile = res.plan.rows;
    const ResolvedGeometry rg = resolve<T>(*be, mr, ctx.kind() == DeviceKind::cpu, geom, o, rc, s, tile);
    res.scale = rg.scale;
    res.epsilon = rg.epsilon;
    const double eps = rg.epsilon;
    const double inv_scale = 1.0 / rg.scale;
    const double rho_a = rho_of(eps, o.tau_a), rho_b = rho_of(eps, o.tau_b);

    SolveState<T> st;
    const auto N = static_cast<std::size_t>(s.n), M = static_cast<std::size_t>(s.m);
    st.a = Buffer<T>(mr, N);
    st.b = Buffer<T>(mr, M);
    st.log_a = Buffer<T>(mr, N);
    st.log_b = Buffer<T>(mr, M);
    st.f = Buffer<T>(mr, N);
    st.g = Buffer<T>(mr, M);
    st.lse_row = Buffer<T>(mr, N);
    st.lse_col = Buffer<T>(mr, M);
    st.tile_state = Buffer<double>(mr, static_cast<std::size_t>(2 * tile * be->lse_partials_per_row(rows_max)));
    be->upload(a.data(), st.a.data(), s.n);
    be->upload(b.data(), st.b.data(), s.m);
    be->log_weights(st.a.data(), st.log_a.data(), s.n);
    be->log_weights(st.b.data(), st.log_b.data(), s.m);
    {  // default initializer: 0, and -inf at zero weights (spec §7)
      std::vector<double> f0(N), g0(M);
      for (std::size_t i = 0; i < N; ++i) f0[i] = a[i] > 0 ? 0.0 : -kInf;
      for (std::size_t j = 0; j < M; ++j) g0[j] = b[j] > 0 ? 0.0 : -kInf;
      be->upload(f0.data(), st.f.data(), s.n);
      be->upload(g0.data(), st.g.data(), s.m);
    }

    // LSE of rows of x against y (h = g) or of rows of y against x (h = f).
    auto lse_x = [&](const T* g, double e) {
      be->row_lse({rc.cx, rc.cy, rc.cost, inv_scale, e, g, st.lse_row.data(), st.tile_state.data(), tile});
    };
    auto lse_y = [&](const T* f, double e) {
      be->row_lse({rc.cy, rc.cx, rc.cost, inv_scale, e, f, st.lse_col.data(), st.tile_state.data(), tile});
    };
    auto eps_at = [&](index_t t) {
      return std::max(o.epsilon_init * std::pow(o.epsilon_decay, static_cast<double>(t)), 1.0) * eps;
    };
    const double p = o.norm_error;
    auto norm = [&](double sum_p) { return p == 1.0 ? sum_p : std::pow(sum_p, 1.0 / p); };
    auto marginal_error = [&]() {
      if (balanced && !o.parallel_dual_updates) {
        lse_y(st.f.data(), eps);
        return norm(be->marginal_error(st.g.data(), st.lse_col.data(), st.b.data(), eps, rho_b, p, s.m));
      }
      lse_x(st.g.data(), eps);
      const double ea = norm(be->marginal_error(st.f.data(), st.lse_row.data(), st.a.data(), eps, rho_a, p, s.n));
      lse_y(st.f.data(), eps);
      const double eb = norm(be->marginal_error(st.g.data(), st.lse_col.data(), st.b.data(), eps, rho_b, p, s.m));
      return ea + eb;
    };
    auto iterate = [&](index_t t) {
      const double et = eps_at(t);
      if (o.parallel_dual_updates) {
        lse_y(st.f.data(), et);
        lse_x(st.g.data(), et);
        be->potential_update(st.lse_col.data(), st.log_b.data(), et, o.tau_b, st.g.data(), s.m);
        be->potential_update(st.lse_row.data(), st.log_a.data(), et, o.tau_a, st.f.data(), s.n);
      } else {
        lse_y(st.f.data(), et);
        be->potential_update(st.lse_col.data(), st.log_b.data(), et, o.tau_b, st.g.data(), s.m);
        lse_x(st.g.data(), et);
        be->potential_update(st.lse_row.data(), st.log_a.data(), et, o.tau_a, st.f.data(), s.n);
      }
    };

    const index_t inner = o.inner_iterations;
    const index_t n_blocks = (o.max_iterations + inner - 1) / inner;
    res.errors.assign(static_cast<std::size_t>(n_blocks), -1.0);
    const bool fixed_length = o.min_iterations == o.max_iterations;
    bool stopped_converged = false, diverged = false;
    double last_computed = kInf;
    bool any_computed = false;
    index_t it = 0;
    const auto loop_start = std::chrono::steady_clock::now();
    while (it < o.max_iterations) {
      for (index_t t = it; t < it + inner; ++t) iterate(t);
      const index_t t_last = it + inner - 1;
      it += inner;
      const bool compute = t_last >= o.min_iterations || t_last == o.max_iterations - 1;
      double err = kInf;
      if (compute) {
        err = marginal_error();
        last_computed = err;
        any_computed = true;
      }
      res.errors[static_cast<std::size_t>(it / inner - 1)] = err;
      const unsigned flags = be->potential_flags(st.f.data(), st.a.data(), s.n) |
                             be->potential_flags(st.g.data(), st.b.data(), s.m);
      if (o.progress && compute) {
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count();
        o.progress({it, err, secs > 0 ? static_cast<double>(it) / secs : 0.0});
      }
      if (flags != 0 || (compute && !std::isfinite(err))) {
        diverged = true;
        if (o.on_divergence == OnDivergence::error) {
          std::string what = (flags & detail::kNanValue) ? "NaN potentials"
                             : (flags & detail::kPosInfValue) ? "+inf potentials"
                             : (flags & detail::kNegInfWithMass) ? "-inf potentials at points with positive weight"
                                                                 : "a non-finite marginal error";
          throw NumericalError("Sinkhorn diverged at iteration " + std::to_string(t_last) + ": " + what +
                               " (epsilon = " + num(eps) + ", scale = " + num(rg.scale) +
                               "). Try a larger --epsilon, --scale-cost mean or max_cost, --precision float64, "
                               "or check the inputs");
        }
        break;
      }
      if (fixed_length || it >= o.max_iterations) continue;
      if (it < o.min_iterations) continue;
      if (compute && err < o.threshold) {
        stopped_converged = true;
        break;
      }
    }
    res.n_iters = it;
    res.diverged = diverged;
    res.converged = !diverged && (stopped_converged || (any_computed && std::isfinite(last_computed) &&
                                                        last_computed < o.threshold));
    if (!res.converged && !diverged)
      warn("Sinkhorn did not converge in " + std::to_string(res.n_iters) + " iterations (last error " +
           num(last_computed) + ", threshold " + num(o.threshold) +
           "); raise --max-iterations or --epsilon, or loosen --threshold");

    // Outputs and reg_ot_cost, always at the target epsilon (spec §6).
    res.f.resize(N);
    res.g.resize(M);
    be->download(st.f.data(), res.f.data(), s.n);
    be->download(st.g.data(), res.g.data(), s.m);
    lse_x(st.g.data(), eps);
    const double total = be->transported_mass(st.f.data(), st.lse_row.data(), eps, s.n);
    auto div = [&](const std::vector<double>& w, const std::vector<double>& pot, double tau, double rho) {
      double acc = 0;
      for (std::size_t i = 0; i < w.size(); ++i) {
        if (!(w[i] > 0)) continue;
        const double h = pot[i] - eps * std::log(w[i]);
        acc += tau >= 1 ? w[i] * h : -w[i] * rho * (std::exp(-h / rho) - 1);
      }
      return acc;
    };
    res.reg_ot_cost = div(a, res.f, o.tau_a, rho_a) + div(b, res.g, o.tau_b, rho_b) + eps * (sum_a * sum_b - total);
    ctx.exit_user_stream();
    ctx.synchronize();
  }
  res.memory.budget_bytes = ctx.memory_budget();
  res.memory.peak_bytes = static_cast<std::size_t>(peak.peak);
  res.memory.planned_peak_bytes = res.plan.planned_peak;
  res.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

template <class T>
ResolvedGeometry resolve_only(const Context& ctx, const PointCloud& geom, const SinkhornOptions& o) {
  check_options(o);
  const Shape s = detail::check_geometry(geom);
  auto be = detail::make_backend<T>(ctx);
  ByteModel model{"cost statistics", detail::cloud_bytes(s, geom.options.cost, sizeof(T)) +
                                         resolve_scratch_bytes<T>(s, geom.options, ctx.kind() == DeviceKind::cpu),
                  0, 1, 1};
  const TilePlan plan = plan_batch(s.n, model, ctx.memory_budget(), o.batch_size);
  const auto rc = detail::upload_clouds<T>(*be, ctx.workspace(), geom, s);
  return resolve<T>(*be, ctx.workspace(), ctx.kind() == DeviceKind::cpu, geom, o, rc, s, plan.rows);
}

void check_result(const PointCloud& geom, const SinkhornResult& r, const Shape& s) {
  if (static_cast<index_t>(r.f.size()) != s.n || static_cast<index_t>(r.g.size()) != s.m)
    throw InvalidArgument("the Sinkhorn result has potentials of lengths " + std::to_string(r.f.size()) + " and " +
                          std::to_string(r.g.size()) + " but the geometry has " + std::to_string(s.n) + " and " +
                          std::to_string(s.m) + " points: pass the geometry the result was solved on");
  if (!(r.epsilon > 0) || !(r.scale > 0))
    throw InvalidArgument("the Sinkhorn result carries no resolved epsilon/scale; solve first");
  (void)geom;
}

template <class T>
std::vector<double> apply_impl(const Context& ctx, const PointCloud& geom, const SinkhornResult& r, const ConstMatrix& v,
                               int axis, std::optional<index_t> batch) {
  const Shape s = detail::check_geometry(geom);
  check_result(geom, r, s);
  if (axis != 0 && axis != 1) throw InvalidArgument("axis must be 0 (P^T v) or 1 (P v), got " + std::to_string(axis));
  const index_t rows_n = axis == 1 ? s.n : s.m;
  const index_t cols_n = axis == 1 ? s.m : s.n;
  if (v.empty() || v.rows != cols_n || v.cols < 1)
    throw InvalidArgument("v must have " + std::to_string(cols_n) + " rows (one per " + (axis == 1 ? "y" : "x") +
                          " point) for axis " + std::to_string(axis) + ", got " + std::to_string(v.rows) + " x " +
                          std::to_string(v.cols));
  const index_t k = v.cols;
  auto be = detail::make_backend<T>(ctx);
  MemoryResource& mr = ctx.workspace();
  ByteModel model{"apply_transport",
                  detail::cloud_bytes(s, geom.options.cost, sizeof(T)) +
                      static_cast<std::size_t>(s.n + s.m + (rows_n + cols_n) * k) * sizeof(T) + 8 * kDefaultAlignment,
                  static_cast<std::size_t>(k) * sizeof(double), 1, 1};
  const TilePlan plan = plan_batch(rows_n, model, ctx.memory_budget(), batch);
  const auto rc = detail::upload_clouds<T>(*be, mr, geom, s);
  Buffer<T> f(mr, static_cast<std::size_t>(s.n)), g(mr, static_cast<std::size_t>(s.m));
  be->upload(r.f.data(), f.data(), s.n);
  be->upload(r.g.data(), g.data(), s.m);
  std::vector<double> vh(static_cast<std::size_t>(cols_n * k));
  for (index_t j = 0; j < cols_n; ++j)
    for (index_t c = 0; c < k; ++c) vh[static_cast<std::size_t>(j * k + c)] = v.at(j, c);
  Buffer<T> vd(mr, vh.size()), out(mr, static_cast<std::size_t>(rows_n * k));
  be->upload(vh.data(), vd.data(), cols_n * k);
  Buffer<double> acc(mr, static_cast<std::size_t>(plan.rows * k));
  detail::RowApplyArgs<T> args;
  args.rows = axis == 1 ? rc.cx : rc.cy;
  args.cols = axis == 1 ? rc.cy : rc.cx;
  args.cost = rc.cost;
  args.inv_scale = 1.0 / r.scale;
  args.eps = r.epsilon;
  args.row_potential = axis == 1 ? f.data() : g.data();
  args.col_potential = axis == 1 ? g.data() : f.data();
  args.v = vd.data();
  args.k = k;
  args.out = out.data();
  args.acc = acc.data();
  args.tile_rows = plan.rows;
  be->row_apply(args);
  std::vector<double> result(static_cast<std::size_t>(rows_n * k));
  be->download(out.data(), result.data(), rows_n * k);
  return result;
}

template <class T>
std::vector<double> marginal_impl(const Context& ctx, const PointCloud& geom, const SinkhornResult& r, int axis,
                                  std::optional<index_t> batch) {
  const Shape s = detail::check_geometry(geom);
  check_result(geom, r, s);
  if (axis != 0 && axis != 1) throw InvalidArgument("axis must be 0 (P^T 1) or 1 (P 1), got " + std::to_string(axis));
  auto be = detail::make_backend<T>(ctx);
  MemoryResource& mr = ctx.workspace();
  const index_t rows_n = axis == 1 ? s.n : s.m;
  const index_t parts = be->lse_partials_per_row(axis == 1 ? s.m : s.n);
  ByteModel model{"marginal",
                  detail::cloud_bytes(s, geom.options.cost, sizeof(T)) +
                      static_cast<std::size_t>(s.n + s.m + rows_n) * sizeof(T) + 8 * kDefaultAlignment,
                  2 * sizeof(double) * static_cast<std::size_t>(parts), 1, 1};
  const TilePlan plan = plan_batch(rows_n, model, ctx.memory_budget(), batch);
  const auto rc = detail::upload_clouds<T>(*be, mr, geom, s);
  Buffer<T> f(mr, static_cast<std::size_t>(s.n)), g(mr, static_cast<std::size_t>(s.m));
  Buffer<T> lse(mr, static_cast<std::size_t>(rows_n));
  Buffer<double> state(mr, static_cast<std::size_t>(2 * plan.rows * parts));
  be->upload(r.f.data(), f.data(), s.n);
  be->upload(r.g.data(), g.data(), s.m);
  const double inv_scale = 1.0 / r.scale;
  if (axis == 1)
    be->row_lse({rc.cx, rc.cy, rc.cost, inv_scale, r.epsilon, g.data(), lse.data(), state.data(), plan.rows});
  else
    be->row_lse({rc.cy, rc.cx, rc.cost, inv_scale, r.epsilon, f.data(), lse.data(), state.data(), plan.rows});
  std::vector<double> l(static_cast<std::size_t>(rows_n));
  be->download(lse.data(), l.data(), rows_n);
  const std::vector<double>& pot = axis == 1 ? r.f : r.g;
  for (std::size_t i = 0; i < l.size(); ++i) l[i] = detail::marginal_from_lse(pot[i], l[i], r.epsilon);
  return l;
}

}  // namespace

SinkhornResult sinkhorn(const Context& ctx, const PointCloud& geom, const ConstVector& a, const ConstVector& b,
                        const SinkhornOptions& options) {
  return options.precision == DType::float32 ? solve<float>(ctx, geom, a, b, options)
                                             : solve<double>(ctx, geom, a, b, options);
}

ResolvedGeometry resolve_geometry(const Context& ctx, const PointCloud& geom, const SinkhornOptions& options) {
  return options.precision == DType::float32 ? resolve_only<float>(ctx, geom, options)
                                             : resolve_only<double>(ctx, geom, options);
}

std::vector<double> apply_transport(const Context& ctx, const PointCloud& geom, const SinkhornResult& result,
                                    const ConstMatrix& v, int axis, std::optional<index_t> batch_size) {
  return result.precision == DType::float32 ? apply_impl<float>(ctx, geom, result, v, axis, batch_size)
                                            : apply_impl<double>(ctx, geom, result, v, axis, batch_size);
}

std::vector<double> marginal(const Context& ctx, const PointCloud& geom, const SinkhornResult& result, int axis,
                             std::optional<index_t> batch_size) {
  return result.precision == DType::float32 ? marginal_impl<float>(ctx, geom, result, axis, batch_size)
                                            : marginal_impl<double>(ctx, geom, result, axis, batch_size);
}

}  // namespace otcal
