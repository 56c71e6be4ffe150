// The Sinkhorn host loop, written once against the backend primitives (docs/sinkhorn.md).
#include "otcal/sinkhorn.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/collective.hpp"
#include "core/operation.hpp"
#include "core/workspace.hpp"
#include "geometry/problem_impl.hpp"
#include "geometry/resolve.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "sinkhorn/initializers.hpp"

namespace otcal {
namespace {

using detail::Backend;
using detail::Shape;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string num(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

// Momentum and Anderson (docs/sinkhorn.md §8), with OTT-JAX's ranges.
void check_acceleration(const SinkhornOptions& o) {
  const Momentum& mo = o.momentum;
  if (!(mo.value > 0 && mo.value < 2))
    throw InvalidArgument("momentum value = " + num(mo.value) + " must be in (0, 2) (1 = no momentum)");
  if (mo.start < 0) throw InvalidArgument("momentum start = " + std::to_string(mo.start) + " must be >= 0");
  if (std::isnan(mo.error_threshold) || !(mo.error_threshold > 0))
    throw InvalidArgument("momentum error_threshold = " + num(mo.error_threshold) + " must be > 0 (inf allowed)");
  if (mo.start > 0 && !o.anderson) {
    // The adaptive weight reads the errors of the two blocks that ended before `start`: both must
    // exist and be computed (their last iterations at or past min_iterations).
    const index_t blocks = mo.start / o.inner_iterations;
    if (blocks < 2 || (blocks - 1) * o.inner_iterations - 1 < o.min_iterations)
      throw InvalidArgument("momentum start = " + std::to_string(mo.start) +
                            " must leave two blocks of errors before it: start >= min_iterations (" +
                            std::to_string(o.min_iterations) + ") + 2 * inner_iterations (" +
                            std::to_string(o.inner_iterations) + ")");
  }
  if (o.anderson) {
    const AndersonAcceleration& an = *o.anderson;
    if (an.memory < 1)
      throw InvalidArgument("anderson memory = " + std::to_string(an.memory) + " must be >= 1 (unset anderson to turn it off)");
    if (an.refresh_every < 1)
      throw InvalidArgument("anderson refresh_every = " + std::to_string(an.refresh_every) + " must be >= 1");
    if (!(an.ridge_identity > 0 && std::isfinite(an.ridge_identity)))
      throw InvalidArgument("anderson ridge_identity = " + num(an.ridge_identity) + " must be a finite number > 0");
  }
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
  check_acceleration(o);
}

double rho_of(double eps, double tau) { return tau >= 1 ? kInf : eps * tau / (1 - tau); }

EpsilonSpec epsilon_spec(const SinkhornOptions& o) { return {o.epsilon, o.relative_epsilon}; }

DType precision_for(const Problem& p, const std::optional<DType>& requested) {
  if (requested && *requested != p.precision())
    throw InvalidArgument(std::string("precision ") + dtype_name(*requested) + " was asked for, but the problem was "
                          "uploaded in " + dtype_name(p.precision()) + ": upload it in the precision to solve in");
  return p.precision();
}

// The workspace of a solve, declared once: everything the iterations keep, the tile state, and the
// scratch of the one-off cost-statistics pass when the problem does not hold its results yet.
template <class T>
struct SolveLayout {
  WorkspaceDecl decl;
  BufferId<T> log_a, log_b, f, g, lse_row, lse_col;
  // Anderson's history of f: `memory` residuals and `memory` mapped iterates (empty when off).
  BufferId<T> anderson_residuals, anderson_mapped;
  BufferId<double> tile_state;
  detail::StatsScratch<T> stats;
};

template <class T>
SolveLayout<T> solve_layout(Problem::Impl& p, detail::StatsNeeds needs, const SinkhornOptions& o) {
  const auto N = static_cast<std::size_t>(p.shape.n), M = static_cast<std::size_t>(p.shape.m);
  const index_t rows_max = std::max(p.shape.n, p.shape.m);
  SolveLayout<T> l;
  l.decl.operation = "sinkhorn";
  l.decl.resident_bytes = p.budget_in_use();
  l.log_a = l.decl.template add<T>("log_a", N);
  l.log_b = l.decl.template add<T>("log_b", M);
  l.f = l.decl.template add<T>("f", N);
  l.g = l.decl.template add<T>("g", M);
  l.lse_row = l.decl.template add<T>("lse_row", N);
  l.lse_col = l.decl.template add<T>("lse_col", M);
  const std::size_t history = o.anderson ? static_cast<std::size_t>(o.anderson->memory) * N : 0;
  l.anderson_residuals = l.decl.template add<T>("anderson_residuals", history);
  l.anderson_mapped = l.decl.template add<T>("anderson_mapped", history);
  l.tile_state = l.decl.template add<double>("tile_state", 0,
                                    2 * static_cast<std::size_t>(p.backend<T>().lse_partials_per_row(rows_max)));
  l.stats = detail::declare_stats_scratch<T>(l.decl, p, needs);
  return l;
}

// The initializer's cost condition, checked before any planning.
void check_initializer(const Problem::Impl& p, const SinkhornOptions& o) {
  if (o.initializer == Initializer::gaussian && p.geometry.cost.kind != CostKind::sqeuclidean)
    throw InvalidArgument("initializer gaussian is the closed form for the sqeuclidean cost, but the cost is " +
                          p.geometry.cost.name() + ": use initializer zeros");
}

// The starting f and g of a solve (docs/sinkhorn.md §7): zeros, or the Gaussian initializer's f
// (from the resident clouds, so every rank computes the same values), then -inf at zero weights.
template <class T>
Potentials starting_potentials(Problem::Impl& p, const SinkhornOptions& o, double scale) {
  const auto N = static_cast<std::size_t>(p.shape.n), M = static_cast<std::size_t>(p.shape.m);
  Potentials out;
  out.f.assign(N, 0.0);
  out.g.assign(M, 0.0);
  if (o.initializer == Initializer::gaussian) {
    const detail::ResidentClouds<T>& rc = p.resident<T>().clouds;
    const index_t d = p.shape.d;
    std::vector<double> x(N * static_cast<std::size_t>(d)), y(M * static_cast<std::size_t>(d));
    p.backend<T>().download(rc.cx.x, x.data(), p.shape.n * d);
    p.backend<T>().download(rc.cy.x, y.data(), p.shape.m * d);
    out.f = detail::gaussian_potential(x, p.shape.n, y, p.shape.m, d, p.a, p.b, scale);
  }
  for (std::size_t i = 0; i < N; ++i)
    if (!(p.a[i] > 0)) out.f[i] = -kInf;
  for (std::size_t j = 0; j < M; ++j)
    if (!(p.b[j] > 0)) out.g[j] = -kInf;
  return out;
}

// Anderson's mixing weights from the Gram matrix of its residuals (k x k, row-major), with
// OTT-JAX's recipe: G / |G|_F + ridge I, solved against 1 by conjugate gradients started at 0 and
// stopped as jax.scipy's cg stops (|r| <= 1e-5 |b|, or 10 k steps), then normalised to sum 1. A
// zero Gram matrix (every residual 0) is left unnormalised (OTT would divide by 0): equal weights.
std::vector<double> anderson_weights(std::vector<double> gram, std::size_t k, double ridge) {
  double fro = 0;
  for (double v : gram) fro += v * v;
  fro = std::sqrt(fro);
  if (fro > 0 && std::isfinite(fro))
    for (double& v : gram) v /= fro;
  for (std::size_t i = 0; i < k; ++i) gram[i * k + i] += ridge;
  auto apply = [&](const std::vector<double>& v) {
    std::vector<double> out(k, 0.0);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j < k; ++j) out[i] += gram[i * k + j] * v[j];
    return out;
  };
  auto dot = [&](const std::vector<double>& u, const std::vector<double>& v) {
    double acc = 0;
    for (std::size_t i = 0; i < k; ++i) acc += u[i] * v[i];
    return acc;
  };
  std::vector<double> w(k, 0.0), r(k, 1.0), dir(k, 1.0);
  const double stop = 1e-10 * static_cast<double>(k);  // (1e-5)^2 |1|^2
  double rr = dot(r, r);
  for (std::size_t step = 0; rr > stop && step < 10 * k; ++step) {
    const std::vector<double> Ad = apply(dir);
    const double alpha = rr / dot(dir, Ad);
    for (std::size_t i = 0; i < k; ++i) {
      w[i] += alpha * dir[i];
      r[i] -= alpha * Ad[i];
    }
    const double rr_next = dot(r, r);
    for (std::size_t i = 0; i < k; ++i) dir[i] = r[i] + (rr_next / rr) * dir[i];
    rr = rr_next;
  }
  double total = 0;
  for (double v : w) total += v;
  for (double& v : w) v /= total;
  return w;
}

// The rows every rank owns of an axis of n, in rank order.
std::vector<index_t> shard_counts(index_t n, int ranks) {
  std::vector<index_t> counts(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) counts[static_cast<std::size_t>(r)] = shard_rows(n, r, ranks).size();
  return counts;
}

// Host rows [rows_n, k] of which each rank filled the ones it owns: every rank's, on every rank.
void gather_rows(Communicator& comm, std::vector<double>& rows, index_t rows_n, index_t k) {
  if (comm.size() == 1) return;
  std::vector<index_t> counts = shard_counts(rows_n, comm.size());
  for (index_t& c : counts) c *= k;
  comm.all_gather_in_place(rows.data(), DType::float64, counts, BufferPlace::host, nullptr);
}

// `pending`: the clouds of a problem prepared but not uploaded yet (a one-call overload): the solve
// is planned first, so BudgetTooSmall names the minimum of the whole call, then they are uploaded.

template <class T>
SinkhornResult solve(Problem::Impl& p, const SinkhornOptions& o, const PointCloud* pending) {
  const auto start = std::chrono::steady_clock::now();
  check_options(o);
  check_initializer(p, o);
  const Context& ctx = p.ctx;
  const Shape s = p.shape;
  const std::vector<double>& a = p.a;
  const std::vector<double>& b = p.b;

  SinkhornResult res;
  res.n = s.n;
  res.m = s.m;
  res.d = s.d;
  res.cost = p.geometry.cost;
  res.precision = dtype_of<T>();
  res.threshold = o.threshold;
  res.inner_iterations = o.inner_iterations;
  res.tau_a = o.tau_a;
  res.tau_b = o.tau_b;
  res.momentum = o.anderson ? Momentum{} : o.momentum;
  res.anderson = o.anderson;
  res.initializer = o.initializer;
  res.device = ctx.device_name();
  auto warn = [&](const std::string& w) {
    res.warnings.push_back(w);
    ctx.warn(w);
  };

  const double sum_a = p.sum_a, sum_b = p.sum_b;
  const bool balanced = o.tau_a == 1 && o.tau_b == 1;
  if (balanced && std::fabs(sum_a - sum_b) > 1e-6 * sum_a)
    warn("balanced Sinkhorn cannot converge: a sums to " + num(sum_a) + " but b sums to " + num(sum_b) +
         "; normalise the weights or set tau_a/tau_b < 1");

  Backend<T>& be = p.backend<T>();
  Communicator& comm = ctx.communicator();
  res.ranks = comm.size();
  const detail::StatsNeeds needs = detail::stats_needs(p, epsilon_spec(o));
  const SolveLayout<T> layout = solve_layout<T>(p, needs, o);
  // A rank reduces only the rows it owns: its tiles are planned for those.
  const Shard ox = p.shards.x, oy = p.shards.y;
  const index_t rows_max = std::max<index_t>({ox.size(), oy.size(), 1});
  res.plan = detail::agreed(comm, [&] { return plan_batch(rows_max, layout.decl, ctx.memory_budget(), o.batch_size); });
  res.batch_size = res.plan.rows;
  if (res.plan.clamped)
    warn("batch_size " + std::to_string(*o.batch_size) +
         (comm.size() > 1 ? " exceeds the rows this rank owns (" : " exceeds the largest cloud (") +
         std::to_string(rows_max) + " points) and was clamped");
  if (pending) detail::upload_now(p, *pending);

  detail::OperationScope scope(ctx);
  const detail::Workspace ws(ctx.workspace(), layout.decl, res.plan.rows, ctx.compute_stream());
  const detail::Resident<T>& rs = p.resident<T>();
  const detail::ResidentClouds<T>& rc = rs.clouds;
  const index_t tile = res.plan.rows;
  const ResolvedGeometry rg = detail::resolve<T>(p, epsilon_spec(o), needs, ws, layout.stats, tile);
  res.scale = rg.scale;
  res.epsilon = rg.epsilon;
  const double eps = rg.epsilon;
  const double inv_scale = 1.0 / rg.scale;
  const double rho_a = rho_of(eps, o.tau_a), rho_b = rho_of(eps, o.tau_b);

  const auto N = static_cast<std::size_t>(s.n), M = static_cast<std::size_t>(s.m);
  T* const f = ws.get(layout.f);
  T* const g = ws.get(layout.g);
  T* const lse_row = ws.get(layout.lse_row);
  T* const lse_col = ws.get(layout.lse_col);
  T* const log_a = ws.get(layout.log_a);
  T* const log_b = ws.get(layout.log_b);
  double* const tile_state = ws.get(layout.tile_state);
  be.log_weights(rs.a, log_a, s.n);
  be.log_weights(rs.b, log_b, s.m);
  {
    const Potentials start_at = starting_potentials<T>(p, o, rg.scale);
    be.upload(start_at.f.data(), f, s.n);
    be.upload(start_at.g.data(), g, s.m);
  }
  if (o.anderson && o.momentum.enabled())
    warn("momentum is ignored when anderson is set (as OTT-JAX's Sinkhorn does)");

  // LSE of this rank's rows of x against all of y (h = g), or of its rows of y against all of x
  // (h = f), into its slice of lse_row / lse_col.
  auto lse_x = [&](const T* h, double e) {
    be.row_lse({rc.cx_own, rc.cy, rc.cost, inv_scale, e, h, lse_row + ox.begin, tile_state, tile});
  };
  auto lse_y = [&](const T* h, double e) {
    be.row_lse({rc.cy_own, rc.cx, rc.cost, inv_scale, e, h, lse_col + oy.begin, tile_state, tile});
  };
  // Every rank's new slice of a potential, on every rank (n + m values per iteration in all).
  const std::vector<index_t> counts_x = shard_counts(s.n, comm.size()), counts_y = shard_counts(s.m, comm.size());
  const BufferPlace place = ctx.kind() == DeviceKind::cuda ? BufferPlace::device : BufferPlace::host;
  // Time spent in collectives, waiting for slower ranks included (one process: none).
  double comm_s = 0;
  auto timed = [&](auto&& collective) {
    const auto t0 = std::chrono::steady_clock::now();
    auto out = collective();
    comm_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
  };
  auto gather = [&](T* pot, const std::vector<index_t>& counts) {
    if (comm.size() == 1) return;
    timed([&] {
      comm.all_gather_in_place(pot, dtype_of<T>(), counts, place, ctx.compute_stream());
      return 0;
    });
  };
  // The momentum weight of the current iteration (1: the plain update, bit for bit).
  double weight = 1.0;
  auto update_f = [&](double et) {
    if (weight == 1.0)
      be.potential_update(lse_row + ox.begin, log_a + ox.begin, et, o.tau_a, f + ox.begin, ox.size());
    else
      be.relaxed_update(lse_row + ox.begin, log_a + ox.begin, et, o.tau_a, weight, f + ox.begin, ox.size());
  };
  auto update_g = [&](double et) {
    if (weight == 1.0)
      be.potential_update(lse_col + oy.begin, log_b + oy.begin, et, o.tau_b, g + oy.begin, oy.size());
    else
      be.relaxed_update(lse_col + oy.begin, log_b + oy.begin, et, o.tau_b, weight, g + oy.begin, oy.size());
  };
  // A sum over the rows of each rank's slice, folded in rank order: the single-process sum's bits.
  auto sum_rows = [&](const detail::Partials& mine) { return timed([&] { return detail::ordered_sum(comm, mine); }); };
  auto eps_at = [&](index_t t) {
    return std::max(o.epsilon_init * std::pow(o.epsilon_decay, static_cast<double>(t)), 1.0) * eps;
  };
  const double pn = o.norm_error;
  auto norm = [&](double sum_p) { return pn == 1.0 ? sum_p : std::pow(sum_p, 1.0 / pn); };
  auto error_x = [&]() {
    return norm(sum_rows(be.marginal_error(f + ox.begin, lse_row + ox.begin, rs.a + ox.begin, eps, rho_a, pn, ox.size())));
  };
  auto error_y = [&]() {
    return norm(sum_rows(be.marginal_error(g + oy.begin, lse_col + oy.begin, rs.b + oy.begin, eps, rho_b, pn, oy.size())));
  };
  auto marginal_error = [&]() {
    if (balanced && !o.parallel_dual_updates) {
      lse_y(f, eps);
      return error_y();
    }
    lse_x(g, eps);
    const double ea = error_x();
    lse_y(f, eps);
    return ea + error_y();
  };
  // Momentum (docs/sinkhorn.md §8): OTT's weight at iteration t; Anderson turns it off.
  const Momentum momentum = res.momentum;
  auto momentum_weight = [&](index_t t) {
    if (momentum.start == 0 || t < momentum.start) return momentum.value;
    const auto block = static_cast<std::size_t>(momentum.start / o.inner_iterations);
    const double e1 = res.errors[block - 1], e2 = res.errors[block - 2];
    if (!(e1 < momentum.error_threshold)) return momentum.value;
    const double ratio = std::min(e1 / e2, 0.99);
    return 2.0 / (1.0 + std::sqrt(1.0 - std::pow(ratio, 1.0 / static_cast<double>(o.inner_iterations))));
  };
  // Anderson (docs/sinkhorn.md §8): a ring of `memory` (residual, mapped iterate) pairs of f,
  // iteration t writing slot t mod memory. Every rank holds all of f (gathered after each
  // update), so every rank runs these O(memory^2 n) steps on all n rows and gets the
  // single-process bits without a collective.
  const index_t memory = o.anderson ? o.anderson->memory : 0;
  auto residual_slot = [&](index_t k) { return ws.get(layout.anderson_residuals) + k * s.n; };
  auto mapped_slot = [&](index_t k) { return ws.get(layout.anderson_mapped) + k * s.n; };
  auto anderson_before = [&](index_t t) {
    if (t > memory && t % o.anderson->refresh_every == 0) {
      // Slots oldest first: t mod memory holds iteration t - memory.
      std::vector<index_t> order(static_cast<std::size_t>(memory));
      for (index_t k = 0; k < memory; ++k) order[static_cast<std::size_t>(k)] = (t + k) % memory;
      const auto K = static_cast<std::size_t>(memory);
      std::vector<double> gram(K * K);
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = 0; j <= i; ++j)
          gram[i * K + j] = gram[j * K + i] =
              detail::fold(be.dot(residual_slot(order[i]), residual_slot(order[j]), s.n));
      const std::vector<double> w = anderson_weights(std::move(gram), K, o.anderson->ridge_identity);
      std::vector<const T*> cols(K);
      for (std::size_t k = 0; k < K; ++k) cols[k] = mapped_slot(order[k]);
      be.anderson_combine(cols, w, f, s.n);
    }
    be.anderson_record_input(f, residual_slot(t % memory), s.n);
  };
  auto anderson_after = [&](index_t t) {
    be.anderson_record_output(f, residual_slot(t % memory), mapped_slot(t % memory), s.n);
  };
  auto iterate = [&](index_t t) {
    const double et = eps_at(t);
    weight = momentum_weight(t);
    if (memory > 0) anderson_before(t);
    if (o.parallel_dual_updates) {
      lse_y(f, et);
      lse_x(g, et);
      update_g(et);
      update_f(et);
      gather(g, counts_y);
      gather(f, counts_x);
    } else {
      lse_y(f, et);
      update_g(et);
      gather(g, counts_y);
      lse_x(g, et);
      update_f(et);
      gather(f, counts_x);
    }
    if (memory > 0) anderson_after(t);
  };

  const index_t inner = o.inner_iterations;
  // The history grows with the blocks run: a solve that converges early after a huge
  // max_iterations allocates nothing for the blocks it never ran (no -1 slots).
  res.errors.clear();
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
    res.errors.push_back(err);
    // Each rank reduces its own slices to one word; one word per rank crosses the network.
    const std::uint64_t mine = be.potential_flags(f + ox.begin, rs.a + ox.begin, ox.size()) |
                               be.potential_flags(g + oy.begin, rs.b + oy.begin, oy.size());
    const std::vector<std::uint64_t> words = timed([&] { return comm.all_gather_word(mine); });
    unsigned flags = 0;
    int flagged_rank = -1;
    for (std::size_t r = 0; r < words.size(); ++r) {
      flags |= static_cast<unsigned>(words[r]);
      if (words[r] != 0 && flagged_rank < 0) flagged_rank = static_cast<int>(r);
    }
    // Every block, computed error or not: the callback is also where a caller notices an interrupt
    // (Python's Ctrl-C), which must not wait for min_iterations.
    if (o.progress) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count();
      o.progress({it, last_computed, secs > 0 ? static_cast<double>(it) / secs : 0.0});
    }
    if (flags != 0 || (compute && !std::isfinite(err))) {
      diverged = true;
      if (o.on_divergence == OnDivergence::error) {
        std::string what = (flags & detail::kNanValue) ? "NaN potentials"
                           : (flags & detail::kPosInfValue) ? "+inf potentials"
                           : (flags & detail::kNegInfWithMass) ? "-inf potentials at points with positive weight"
                                                               : "a non-finite marginal error";
        if (comm.size() > 1 && flagged_rank >= 0)
          what += " (first in the rows of rank " + std::to_string(flagged_rank) + " of " +
                  std::to_string(comm.size()) + ")";
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

  // Outputs and reg_ot_cost, always at the target epsilon (docs/sinkhorn.md §6).
  res.f.resize(N);
  res.g.resize(M);
  be.download(f, res.f.data(), s.n);
  be.download(g, res.g.data(), s.m);
  lse_x(g, eps);
  const double total = sum_rows(be.transported_mass(f + ox.begin, lse_row + ox.begin, eps, ox.size()));
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
  res.memory.budget_bytes = ctx.memory_budget();
  res.memory.peak_bytes = scope.finish();
  res.memory.planned_peak_bytes = res.plan.planned_peak;
  res.communication_s = comm_s;
  res.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

template <class T>
ResolvedGeometry resolve_on(Problem::Impl& p, const SinkhornOptions& o, const PointCloud* pending) {
  check_options(o);
  const detail::StatsNeeds needs = detail::stats_needs(p, epsilon_spec(o));
  WorkspaceDecl decl;
  decl.operation = "cost statistics";
  decl.resident_bytes = p.budget_in_use();
  const detail::StatsScratch<T> scratch = detail::declare_stats_scratch<T>(decl, p, needs);
  const TilePlan plan = plan_batch(p.shape.n, decl, p.ctx.memory_budget(), o.batch_size);
  if (pending) detail::upload_now(p, *pending);
  detail::OperationScope scope(p.ctx);
  const detail::Workspace ws(p.ctx.workspace(), decl, plan.rows, p.ctx.compute_stream());
  const ResolvedGeometry r = detail::resolve<T>(p, epsilon_spec(o), needs, ws, scratch, plan.rows);
  scope.finish();
  return r;
}

// The apply workspace: potentials, the caller's vectors and the output in T, per-row accumulators.
template <class T>
std::vector<double> apply_on(Problem::Impl& p, const Potentials& r, const ConstMatrix& v, int axis,
                             std::optional<index_t> batch, const PointCloud* pending, TilePlan* plan_out) {
  if (axis != 0 && axis != 1) throw InvalidArgument("axis must be 0 (P^T v) or 1 (P v), got " + std::to_string(axis));
  detail::check_potentials(p, r);
  const Shape s = p.shape;
  const index_t rows_n = axis == 1 ? s.n : s.m;
  const index_t cols_n = axis == 1 ? s.m : s.n;
  if (v.empty() || v.rows != cols_n || v.cols < 1)
    throw InvalidArgument("v must have " + std::to_string(cols_n) + " rows (one per " + (axis == 1 ? "y" : "x") +
                          " point) for axis " + std::to_string(axis) + ", got " + std::to_string(v.rows) + " x " +
                          std::to_string(v.cols));
  if (v.location != Location::host) throw InvalidArgument("v must be a host array");
  const index_t k = v.cols;
  Backend<T>& be = p.backend<T>();
  // Distributed: each rank computes the output rows it owns, then they are all-gathered.
  Communicator& comm = p.ctx.communicator();
  const Shard own = axis == 1 ? p.shards.x : p.shards.y;
  WorkspaceDecl decl;
  decl.operation = "apply_transport";
  decl.resident_bytes = p.budget_in_use();
  const auto f_id = decl.add<T>("f", static_cast<std::size_t>(s.n));
  const auto g_id = decl.add<T>("g", static_cast<std::size_t>(s.m));
  const auto v_id = decl.add<T>("v", static_cast<std::size_t>(cols_n * k));
  const auto out_id = decl.add<T>("out", static_cast<std::size_t>(rows_n * k));
  const auto acc_id = decl.add<double>("acc", 0, static_cast<std::size_t>(k));
  const TilePlan plan = detail::agreed(
      comm, [&] { return plan_batch(std::max<index_t>(own.size(), 1), decl, p.ctx.memory_budget(), batch); });
  if (plan_out) *plan_out = plan;
  if (pending) detail::upload_now(p, *pending);

  detail::OperationScope scope(p.ctx);
  const detail::Workspace ws(p.ctx.workspace(), decl, plan.rows, p.ctx.compute_stream());
  be.upload(r.f.data(), ws.get(f_id), s.n);
  be.upload(r.g.data(), ws.get(g_id), s.m);
  std::vector<double> vh(static_cast<std::size_t>(cols_n * k));
  for (index_t j = 0; j < cols_n; ++j)
    for (index_t c = 0; c < k; ++c) vh[static_cast<std::size_t>(j * k + c)] = v.at(j, c);
  be.upload(vh.data(), ws.get(v_id), cols_n * k);
  const detail::ResidentClouds<T>& rc = p.resident<T>().clouds;
  detail::RowApplyArgs<T> args;
  args.rows = axis == 1 ? rc.cx_own : rc.cy_own;
  args.cols = axis == 1 ? rc.cy : rc.cx;
  args.cost = rc.cost;
  args.inv_scale = 1.0 / r.scale;
  args.eps = r.epsilon;
  args.row_potential = (axis == 1 ? ws.get(f_id) : ws.get(g_id)) + own.begin;
  args.col_potential = axis == 1 ? ws.get(g_id) : ws.get(f_id);
  args.v = ws.get(v_id);
  args.k = k;
  args.out = ws.get(out_id) + own.begin * k;
  args.acc = ws.get(acc_id);
  args.tile_rows = plan.rows;
  be.row_apply(args);
  std::vector<double> result(static_cast<std::size_t>(rows_n * k));
  be.download(ws.get(out_id) + own.begin * k, result.data() + own.begin * k, own.size() * k);
  scope.finish();
  gather_rows(comm, result, rows_n, k);
  return result;
}

template <class T>
std::vector<double> marginal_on(Problem::Impl& p, const Potentials& r, int axis, std::optional<index_t> batch,
                                const PointCloud* pending, TilePlan* plan_out) {
  if (axis != 0 && axis != 1) throw InvalidArgument("axis must be 0 (P^T 1) or 1 (P 1), got " + std::to_string(axis));
  detail::check_potentials(p, r);
  const Shape s = p.shape;
  Backend<T>& be = p.backend<T>();
  const index_t rows_n = axis == 1 ? s.n : s.m;
  const index_t parts = be.lse_partials_per_row(axis == 1 ? s.m : s.n);
  // Distributed: each rank reduces the rows it owns, then they are all-gathered.
  Communicator& comm = p.ctx.communicator();
  const Shard own = axis == 1 ? p.shards.x : p.shards.y;
  WorkspaceDecl decl;
  decl.operation = "marginal";
  decl.resident_bytes = p.budget_in_use();
  const auto f_id = decl.add<T>("f", static_cast<std::size_t>(s.n));
  const auto g_id = decl.add<T>("g", static_cast<std::size_t>(s.m));
  const auto lse_id = decl.add<T>("lse", static_cast<std::size_t>(rows_n));
  const auto state_id = decl.add<double>("tile_state", 0, 2 * static_cast<std::size_t>(parts));
  const TilePlan plan = detail::agreed(
      comm, [&] { return plan_batch(std::max<index_t>(own.size(), 1), decl, p.ctx.memory_budget(), batch); });
  if (plan_out) *plan_out = plan;
  if (pending) detail::upload_now(p, *pending);

  detail::OperationScope scope(p.ctx);
  const detail::Workspace ws(p.ctx.workspace(), decl, plan.rows, p.ctx.compute_stream());
  be.upload(r.f.data(), ws.get(f_id), s.n);
  be.upload(r.g.data(), ws.get(g_id), s.m);
  const detail::ResidentClouds<T>& rc = p.resident<T>().clouds;
  const double inv_scale = 1.0 / r.scale;
  T* const lse = ws.get(lse_id) + own.begin;
  if (axis == 1)
    be.row_lse({rc.cx_own, rc.cy, rc.cost, inv_scale, r.epsilon, ws.get(g_id), lse, ws.get(state_id), plan.rows});
  else
    be.row_lse({rc.cy_own, rc.cx, rc.cost, inv_scale, r.epsilon, ws.get(f_id), lse, ws.get(state_id), plan.rows});
  std::vector<double> l(static_cast<std::size_t>(rows_n));
  be.download(lse, l.data() + own.begin, own.size());
  scope.finish();
  gather_rows(comm, l, rows_n, 1);
  const std::vector<double>& pot = axis == 1 ? r.f : r.g;
  for (std::size_t i = 0; i < l.size(); ++i) l[i] = detail::marginal_from_lse(pot[i], l[i], r.epsilon);
  return l;
}

}  // namespace

SinkhornResult sinkhorn(const Problem& problem, const SinkhornOptions& options) {
  return precision_for(problem, options.precision) == DType::float32 ? solve<float>(problem.impl(), options, nullptr)
                                                                     : solve<double>(problem.impl(), options, nullptr);
}

Potentials initial_potentials(const Problem& problem, const SinkhornOptions& options) {
  const DType precision = precision_for(problem, options.precision);
  check_initializer(problem.impl(), options);
  const ResolvedGeometry rg = resolve_geometry(problem, options);
  Potentials out = precision == DType::float32 ? starting_potentials<float>(problem.impl(), options, rg.scale)
                                               : starting_potentials<double>(problem.impl(), options, rg.scale);
  out.epsilon = rg.epsilon;
  out.scale = rg.scale;
  out.cost = problem.geometry().cost;
  out.precision = precision;
  return out;
}

const char* initializer_name(Initializer init) { return init == Initializer::gaussian ? "gaussian" : "zeros"; }

ResolvedGeometry resolve_geometry(const Problem& problem, const SinkhornOptions& options) {
  return precision_for(problem, options.precision) == DType::float32
             ? resolve_on<float>(problem.impl(), options, nullptr)
             : resolve_on<double>(problem.impl(), options, nullptr);
}

std::vector<double> apply_transport(const Problem& problem, const Potentials& potentials, const ConstMatrix& v,
                                    int axis, std::optional<index_t> batch_size, TilePlan* plan) {
  return problem.precision() == DType::float32
             ? apply_on<float>(problem.impl(), potentials, v, axis, batch_size, nullptr, plan)
             : apply_on<double>(problem.impl(), potentials, v, axis, batch_size, nullptr, plan);
}

std::vector<double> marginal(const Problem& problem, const Potentials& potentials, int axis,
                             std::optional<index_t> batch_size, TilePlan* plan) {
  return problem.precision() == DType::float32
             ? marginal_on<float>(problem.impl(), potentials, axis, batch_size, nullptr, plan)
             : marginal_on<double>(problem.impl(), potentials, axis, batch_size, nullptr, plan);
}

// The one-call overloads prepare the problem, and the operation plans the whole call before the
// upload: the minimum named by BudgetTooSmall covers the resident copies and the workspace.
SinkhornResult sinkhorn(const Context& ctx, const PointCloud& geom, const ConstVector& a, const ConstVector& b,
                        const SinkhornOptions& options) {
  check_options(options);
  const DType precision = options.precision.value_or(DType::float64);
  const auto p = detail::prepare_problem(ctx, geom, a, b, precision);
  return precision == DType::float32 ? solve<float>(*p, options, &geom) : solve<double>(*p, options, &geom);
}

ResolvedGeometry resolve_geometry(const Context& ctx, const PointCloud& geom, const SinkhornOptions& options) {
  check_options(options);
  const DType precision = options.precision.value_or(DType::float64);
  const auto p = detail::prepare_problem(ctx, geom, {}, {}, precision);
  return precision == DType::float32 ? resolve_on<float>(*p, options, &geom) : resolve_on<double>(*p, options, &geom);
}

std::vector<double> apply_transport(const Context& ctx, const PointCloud& geom, const Potentials& potentials,
                                    const ConstMatrix& v, int axis, std::optional<index_t> batch_size) {
  const auto p = detail::prepare_problem(ctx, geom, {}, {}, potentials.precision);
  return potentials.precision == DType::float32 ? apply_on<float>(*p, potentials, v, axis, batch_size, &geom, nullptr)
                                                : apply_on<double>(*p, potentials, v, axis, batch_size, &geom, nullptr);
}

std::vector<double> marginal(const Context& ctx, const PointCloud& geom, const Potentials& potentials, int axis,
                             std::optional<index_t> batch_size) {
  const auto p = detail::prepare_problem(ctx, geom, {}, {}, potentials.precision);
  return potentials.precision == DType::float32 ? marginal_on<float>(*p, potentials, axis, batch_size, &geom, nullptr)
                                                : marginal_on<double>(*p, potentials, axis, batch_size, &geom, nullptr);
}

}  // namespace otcal
