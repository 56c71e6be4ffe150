#include "cli/sinkhorn_args.hpp"

#include <cmath>
#include <optional>
#include <sstream>

namespace otcal::cli {
namespace {

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

RelativeEpsilon parse_relative(const std::string& t) {
  if (t == "none" || t.empty()) return RelativeEpsilon::none;
  if (t == "mean") return RelativeEpsilon::mean;
  if (t == "std") return RelativeEpsilon::std;
  throw InvalidArgument("--relative-epsilon '" + t + "' is not one of mean, std, none");
}

OnDivergence parse_divergence(const std::string& t) {
  if (t == "error") return OnDivergence::error;
  if (t == "return") return OnDivergence::return_result;
  throw InvalidArgument("--on-divergence '" + t + "' is not error or return");
}

Initializer parse_initializer(const std::string& t) {
  if (t == "zeros" || t == "default") return Initializer::zeros;
  if (t == "gaussian") return Initializer::gaussian;
  throw InvalidArgument("--initializer '" + t + "' is not zeros (alias default) or gaussian");
}

}  // namespace

void CloudFiles::add_to(CLI::App& sub, const CloudFlagHelp& help) {
  sub.add_option("--x", x, help.x)->required();
  sub.add_option("--y", y, "Target points, .npy [m, d] (default: --x)");
  sub.add_option("--a", a, help.a);
  sub.add_option("--b", b, help.b);
}

PointCloud Clouds::geometry(const Cost& cost, const ScaleCost& scale) const {
  return PointCloud{matrix_view(x), has_y ? matrix_view(y) : ConstMatrix{}, {cost, scale}};
}

ConstVector Clouds::a_view() const { return has_a ? vector_view(a) : ConstVector{}; }
ConstVector Clouds::b_view() const { return has_b ? vector_view(b) : ConstVector{}; }

Clouds load_points_xy(const CloudFiles& files, const CloudTarget& target) {
  Clouds c;
  io::NpyInput x = open_points(files.x, "--x");
  c.has_y = !files.y.empty();
  std::optional<io::NpyInput> y;
  if (c.has_y) y.emplace(open_points(files.y, "--y"));
  if (c.has_y && y->shape()[1] != x.shape()[1])
    throw InvalidArgument("--y '" + files.y + "' has " + std::to_string(y->shape()[1]) + " columns but --x '" + files.x +
                          "' has " + std::to_string(x.shape()[1]) +
                          ": both clouds must have the same number of features");
  c.n = x.shape()[0];
  c.m = c.has_y ? y->shape()[0] : c.n;
  if (target.ctx != nullptr) {
    auto describe = [](const io::NpyInput& in) {
      return in.what() + " '" + in.path() + "' [" + std::to_string(in.shape()[0]) + ", " +
             std::to_string(in.shape()[1]) + "] " + dtype_name(in.dtype());
    };
    // A mapped input takes no memory of its own; one read from a pipe is copied onto the host.
    const std::uint64_t copied = (x.copies() ? x.payload_bytes() : 0) + (y && y->copies() ? y->payload_bytes() : 0);
    check_problem_fits(*target.ctx, c.n, c.m, x.shape()[1], !c.has_y, target.cost, target.precision, copied,
                       c.has_y ? describe(x) + " and " + describe(*y) : describe(x));
  }
  c.x = read_points(x);
  if (c.has_y) c.y = read_points(*y);
  return c;
}

void load_weights_ab(Clouds& c, const CloudFiles& files, bool x_used_as_y) {
  c.has_a = !files.a.empty();
  c.has_b = !files.b.empty();
  if (c.has_a) c.a = load_weights(files.a, "--a", c.n, "--x has " + std::to_string(c.n) + " points");
  if (c.has_b)
    c.b = load_weights(files.b, "--b", c.m,
                       (x_used_as_y && !c.has_y ? "--x (used as y) has " : "--y has ") + std::to_string(c.m) +
                           " points");
}

void SolverArgs::add_to(CLI::App& sub, const SolverFlagHelp& help) {
  sub.add_option("--cost", cost, "sqeuclidean, euclidean, cosine, pnorm:P or sq_pnorm:P")->capture_default_str();
  sub.add_option("--scale-cost", scale_cost, help.scale_cost)->capture_default_str();
  sub.add_option("--epsilon", epsilon, help.epsilon);
  sub.add_option("--relative-epsilon", relative_epsilon, "mean, std or none")->capture_default_str();
  if (help.advanced) {
    sub.add_option("--epsilon-init", epsilon_init, "Scheduler: eps_t = max(init * decay^t, 1) * eps")
        ->capture_default_str();
    sub.add_option("--epsilon-decay", epsilon_decay, "Scheduler decay, in (0, 1]")->capture_default_str();
  }
  sub.add_option("--tau-a", tau_a, help.tau_a)->capture_default_str();
  sub.add_option("--tau-b", tau_b, help.tau_b)->capture_default_str();
  sub.add_option("--threshold", threshold, "Convergence threshold on the marginal error")->capture_default_str();
  if (help.advanced) sub.add_option("--norm-error", norm_error, "p of the error's p-norm (>= 1)")->capture_default_str();
  sub.add_option("--inner-iterations", inner_iterations, help.inner_iterations)->capture_default_str();
  sub.add_option("--min-iterations", min_iterations)->capture_default_str();
  sub.add_option("--max-iterations", max_iterations)->capture_default_str();
  if (help.advanced)
    sub.add_flag("--parallel-dual-updates", parallel_dual_updates, "Jacobi instead of Gauss-Seidel updates");
  sub.add_option("--momentum", momentum,
                 "Momentum weight in (0, 2) (OTT's Momentum.value; 1 = none); with --momentum-start, "
                 "the weight used before the adaptive one");
  sub.add_option("--momentum-start", momentum_start,
                 "Iteration from which the adaptive (Lehmann) momentum weight is used; 0 = fixed weight")
      ->capture_default_str();
  sub.add_option("--momentum-error-threshold", momentum_error_threshold,
                 "The adaptive weight needs the error before --momentum-start below this (default inf)");
  sub.add_option("--anderson", anderson, "Anderson acceleration with this memory (>= 1); default off");
  sub.add_option("--anderson-refresh-every", anderson_refresh_every, "Iterations between Anderson extrapolations")
      ->capture_default_str();
  sub.add_option("--anderson-ridge", anderson_ridge, "Ridge of Anderson's linear system (> 0)")->capture_default_str();
  sub.add_option("--initializer", initializer, "zeros (alias default) or gaussian (sqeuclidean cost only)")
      ->capture_default_str();
  sub.add_option("--batch-size", batch_size, help.batch_size);
  sub.add_option("--precision", precision, help.precision)->capture_default_str();
  if (help.advanced)
    sub.add_option("--on-divergence", on_divergence, "error (exit 1) or return (write the diverged result)")
        ->capture_default_str();
}

Cost SolverArgs::parse_cost() const {
  return with_flag("--cost", [&] { return Cost::parse(cost); });
}

ScaleCost SolverArgs::parse_scale_cost() const {
  return with_flag("--scale-cost", [&] { return ScaleCost::parse(scale_cost); });
}

SinkhornOptions SolverArgs::options(bool quiet) const {
  SinkhornOptions opt;
  opt.epsilon = epsilon;
  opt.relative_epsilon = parse_relative(relative_epsilon);
  opt.epsilon_init = epsilon_init;
  opt.epsilon_decay = epsilon_decay;
  opt.tau_a = tau_a;
  opt.tau_b = tau_b;
  opt.threshold = threshold;
  opt.norm_error = norm_error;
  opt.inner_iterations = inner_iterations;
  opt.min_iterations = min_iterations;
  opt.max_iterations = max_iterations;
  opt.parallel_dual_updates = parallel_dual_updates;
  if (momentum) opt.momentum.value = *momentum;
  opt.momentum.start = momentum_start;
  if (momentum_error_threshold) opt.momentum.error_threshold = *momentum_error_threshold;
  if (anderson) opt.anderson = AndersonAcceleration{*anderson, anderson_refresh_every, anderson_ridge};
  opt.initializer = parse_initializer(initializer);
  opt.batch_size = batch_size;
  opt.precision = parse_precision(precision);
  opt.on_divergence = parse_divergence(on_divergence);
  opt.progress = sinkhorn_progress(quiet);
  return opt;
}

nlohmann::json SolverArgs::to_json() const {
  return {{"cost", cost},
          {"scale_cost", scale_cost},
          {"epsilon", epsilon ? nlohmann::json(*epsilon) : nlohmann::json(nullptr)},
          {"relative_epsilon", relative_epsilon},
          {"epsilon_init", epsilon_init},
          {"epsilon_decay", epsilon_decay},
          {"tau_a", tau_a},
          {"tau_b", tau_b},
          {"threshold", threshold},
          {"norm_error", norm_error},
          {"inner_iterations", inner_iterations},
          {"min_iterations", min_iterations},
          {"max_iterations", max_iterations},
          {"parallel_dual_updates", parallel_dual_updates},
          {"momentum", momentum ? nlohmann::json(*momentum) : nlohmann::json(nullptr)},
          {"momentum_start", momentum_start},
          {"momentum_error_threshold",
           momentum_error_threshold ? nlohmann::json(*momentum_error_threshold) : nlohmann::json(nullptr)},
          {"anderson", anderson ? nlohmann::json(*anderson) : nlohmann::json(nullptr)},
          {"anderson_refresh_every", anderson_refresh_every},
          {"anderson_ridge", anderson_ridge},
          {"initializer", initializer},
          {"batch_size", batch_size ? nlohmann::json(*batch_size) : nlohmann::json(nullptr)},
          {"precision", precision},
          {"on_divergence", on_divergence}};
}

namespace {
template <class F>
auto with_flag_names(const std::vector<std::pair<std::string, std::string>>& flag_names, F&& f) {
  try {
    return f();
  } catch (const BudgetTooSmall&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(flagify(e.what(), flag_names));
  }
}
}  // namespace

Problem upload_with_flags(const Context& ctx, const PointCloud& geom, ConstVector a, ConstVector b, DType precision,
                          const std::vector<std::pair<std::string, std::string>>& flag_names) {
  return with_flag_names(flag_names, [&] { return Problem::upload(ctx, geom, a, b, precision); });
}

SinkhornResult sinkhorn_with_flags(const Problem& problem, const SinkhornOptions& opt,
                                   const std::vector<std::pair<std::string, std::string>>& flag_names) {
  return with_flag_names(flag_names, [&] { return sinkhorn(problem, opt); });
}

nlohmann::json path_or_null(const std::string& text) {
  return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

nlohmann::json sinkhorn_summary(const SinkhornResult& r) {
  nlohmann::json j;
  j["otcal_version"] = version();
  j["converged"] = r.converged;
  j["diverged"] = r.diverged;
  j["n_iters"] = r.n_iters;
  j["errors"] = finite_or_null(r.errors);
  j["reg_ot_cost"] = finite_or_null(r.reg_ot_cost);
  j["epsilon"] = r.epsilon;
  j["scale"] = r.scale;
  j["cost"] = r.cost.name();
  j["precision"] = dtype_name(r.precision);
  j["device"] = r.device;
  j["initializer"] = initializer_name(r.initializer);
  j["momentum"] = {{"value", r.momentum.value},
                   {"start", r.momentum.start},
                   {"error_threshold", finite_or_null(r.momentum.error_threshold)}};
  j["anderson"] = r.anderson ? nlohmann::json{{"memory", r.anderson->memory},
                                               {"refresh_every", r.anderson->refresh_every},
                                               {"ridge_identity", r.anderson->ridge_identity}}
                             : nlohmann::json(nullptr);
  j["batch_size"] = r.batch_size;
  j["tile_plan"] = to_json(r.plan);
  j["memory"] = to_json(r.memory);
  j["elapsed_s"] = r.elapsed_s;
  j["communication_s"] = r.communication_s;
  j["n"] = r.n;
  j["m"] = r.m;
  j["d"] = r.d;
  j["warnings"] = r.warnings;
  return j;
}

void SolverArgs::check() const {
  const SolverArgs& s = *this;
  if (s.epsilon && !(std::isfinite(*s.epsilon) && *s.epsilon > 0))
    throw InvalidArgument("--epsilon " + num(*s.epsilon) + " must be a finite number > 0");
  if (!(std::isfinite(s.epsilon_init) && s.epsilon_init > 0))
    throw InvalidArgument("--epsilon-init " + num(s.epsilon_init) + " must be a finite number > 0");
  if (!(s.epsilon_decay > 0 && s.epsilon_decay <= 1))
    throw InvalidArgument("--epsilon-decay " + num(s.epsilon_decay) + " must be in (0, 1]");
  if (!(s.tau_a > 0 && s.tau_a <= 1))
    throw InvalidArgument("--tau-a " + num(s.tau_a) + " must be in (0, 1] (1 = balanced on the x side)");
  if (!(s.tau_b > 0 && s.tau_b <= 1))
    throw InvalidArgument("--tau-b " + num(s.tau_b) + " must be in (0, 1] (1 = balanced on the y side)");
  if (!(std::isfinite(s.threshold) && s.threshold >= 0))
    throw InvalidArgument("--threshold " + num(s.threshold) + " must be a finite number >= 0");
  if (!(std::isfinite(s.norm_error) && s.norm_error >= 1))
    throw InvalidArgument("--norm-error " + num(s.norm_error) + " must be a finite number >= 1");
  if (s.inner_iterations < 1)
    throw InvalidArgument("--inner-iterations " + std::to_string(s.inner_iterations) + " must be >= 1");
  if (s.max_iterations < 1)
    throw InvalidArgument("--max-iterations " + std::to_string(s.max_iterations) + " must be >= 1");
  if (s.min_iterations < 0 || s.min_iterations > s.max_iterations)
    throw InvalidArgument("--min-iterations " + std::to_string(s.min_iterations) + " must be in [0, --max-iterations " +
                          std::to_string(s.max_iterations) + "]");
  if (s.min_iterations == s.max_iterations && s.max_iterations % s.inner_iterations != 0)
    throw InvalidArgument("fixed-length mode (--min-iterations = --max-iterations = " + std::to_string(s.max_iterations) +
                          ") needs --max-iterations to be a multiple of --inner-iterations (" +
                          std::to_string(s.inner_iterations) + ")");
  if (s.batch_size && *s.batch_size < 1)
    throw InvalidArgument("--batch-size " + std::to_string(*s.batch_size) +
                          " must be a positive number of rows (omit it to plan from --memory-budget)");
  check_acceleration();
}

void SolverArgs::check_acceleration() const {
  const SolverArgs& s = *this;
  if (s.momentum && !(*s.momentum > 0 && *s.momentum < 2))
    throw InvalidArgument("--momentum " + num(*s.momentum) + " must be in (0, 2) (1 = no momentum)");
  if (s.momentum_start < 0)
    throw InvalidArgument("--momentum-start " + std::to_string(s.momentum_start) + " must be >= 0 (0 = fixed weight)");
  if (s.momentum_error_threshold && (std::isnan(*s.momentum_error_threshold) || !(*s.momentum_error_threshold > 0)))
    throw InvalidArgument("--momentum-error-threshold " + num(*s.momentum_error_threshold) + " must be > 0");
  if (s.momentum_start > 0 && !s.anderson) {
    const index_t blocks = s.momentum_start / s.inner_iterations;
    if (blocks < 2 || (blocks - 1) * s.inner_iterations - 1 < s.min_iterations)
      throw InvalidArgument("--momentum-start " + std::to_string(s.momentum_start) +
                            " must leave two blocks of errors before it: at least --min-iterations (" +
                            std::to_string(s.min_iterations) + ") + 2 * --inner-iterations (" +
                            std::to_string(s.inner_iterations) + ")");
  }
  if (s.anderson && *s.anderson < 1)
    throw InvalidArgument("--anderson " + std::to_string(*s.anderson) + " must be a memory >= 1 (omit it for no Anderson)");
  if (s.anderson_refresh_every < 1)
    throw InvalidArgument("--anderson-refresh-every " + std::to_string(s.anderson_refresh_every) + " must be >= 1");
  if (!(std::isfinite(s.anderson_ridge) && s.anderson_ridge > 0))
    throw InvalidArgument("--anderson-ridge " + num(s.anderson_ridge) + " must be a finite number > 0");
  if (parse_initializer(s.initializer) == Initializer::gaussian && parse_cost().kind != CostKind::sqeuclidean)
    throw InvalidArgument("--initializer gaussian is the closed form for the sqeuclidean cost, but --cost is '" +
                          s.cost + "': use --initializer zeros");
}

}  // namespace otcal::cli
