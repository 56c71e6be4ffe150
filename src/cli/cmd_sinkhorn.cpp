// `otcal sinkhorn`: solve entropic OT between two point clouds stored as .npy files and write the
// potentials and a JSON summary into an output folder (atomically: all of it or nothing).
#include <cmath>
#include <iostream>
#include <memory>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "io/npy.hpp"
#include "io/output.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {
namespace {

struct SinkhornArgs {
  std::string x, y, a, b, out;
  std::string cost = "sqeuclidean";
  std::string scale_cost = "1";
  std::optional<double> epsilon;
  std::string relative_epsilon = "none";
  double epsilon_init = 1.0, epsilon_decay = 1.0;
  double tau_a = 1.0, tau_b = 1.0;
  double threshold = 1e-3, norm_error = 1.0;
  index_t inner_iterations = 10, min_iterations = 0, max_iterations = 2000;
  bool parallel_dual_updates = false;
  std::optional<index_t> batch_size;
  std::string precision = "float64";
  std::string on_divergence = "error";
  CommonOptions common;
};

// Library option names -> the flags that set them, for messages raised inside the solver.
const std::vector<std::pair<std::string, std::string>> kFlagNames = {
    {"scale_cost", "--scale-cost"},         {"epsilon_init", "--epsilon-init"},
    {"epsilon_decay", "--epsilon-decay"},   {"tau_a/tau_b", "--tau-a/--tau-b"},
    {"tau_a", "--tau-a"},                   {"tau_b", "--tau-b"},
    {"threshold", "--threshold"},           {"norm_error", "--norm-error"},
    {"inner_iterations", "--inner-iterations"}, {"min_iterations", "--min-iterations"},
    {"max_iterations", "--max-iterations"}, {"batch_size", "--batch-size"},
    {"relative_epsilon", "--relative-epsilon"}};

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

// Option checks with flag names, before any file is read (spec/sinkhorn.md §1-§5).
void check_options(const SinkhornArgs& s) {
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

int run_sinkhorn(const SinkhornArgs& s) {
  Stopwatch total;
  // 1. Options (no IO yet), then the output folder, then the device: cheap failures first.
  check_options(s);
  const Cost cost = with_flag("--cost", [&] { return Cost::parse(s.cost); });
  const ScaleCost scale = with_flag("--scale-cost", [&] { return ScaleCost::parse(s.scale_cost); });
  SinkhornOptions opt;
  opt.epsilon = s.epsilon;
  opt.relative_epsilon = parse_relative(s.relative_epsilon);
  opt.epsilon_init = s.epsilon_init;
  opt.epsilon_decay = s.epsilon_decay;
  opt.tau_a = s.tau_a;
  opt.tau_b = s.tau_b;
  opt.threshold = s.threshold;
  opt.norm_error = s.norm_error;
  opt.inner_iterations = s.inner_iterations;
  opt.min_iterations = s.min_iterations;
  opt.max_iterations = s.max_iterations;
  opt.parallel_dual_updates = s.parallel_dual_updates;
  opt.batch_size = s.batch_size;
  opt.precision = parse_precision(s.precision);
  opt.on_divergence = parse_divergence(s.on_divergence);
  opt.progress = sinkhorn_progress(s.common.quiet);
  io::check_output_dir(s.out, "--out");
  const Context ctx = s.common.make_context();

  // 2. Inputs.
  const io::NpyArray x = load_points(s.x, "--x");
  const io::NpyArray y = s.y.empty() ? io::NpyArray{} : load_points(s.y, "--y");
  if (!s.y.empty() && y.shape[1] != x.shape[1])
    throw InvalidArgument("--y '" + s.y + "' has " + std::to_string(y.shape[1]) + " columns but --x '" + s.x + "' has " +
                          std::to_string(x.shape[1]) + ": both clouds must have the same number of features");
  const index_t n = x.shape[0];
  const index_t m = s.y.empty() ? n : y.shape[0];
  const io::NpyArray a = s.a.empty() ? io::NpyArray{}
                                     : load_weights(s.a, "--a", n, "--x has " + std::to_string(n) + " points");
  const io::NpyArray b = s.b.empty() ? io::NpyArray{}
                                     : load_weights(s.b, "--b", m,
                                                    (s.y.empty() ? "--x (used as y) has " : "--y has ") +
                                                        std::to_string(m) + " points");

  PointCloud geom{matrix_view(x), s.y.empty() ? ConstMatrix{} : matrix_view(y), {cost, scale}};
  const ConstVector va = s.a.empty() ? ConstVector{} : vector_view(a);
  const ConstVector vb = s.b.empty() ? ConstVector{} : vector_view(b);

  // 3. Solve; the outputs go into a temporary sibling of --out until everything is written.
  io::AtomicOutputDir out(s.out, "--out");
  SinkhornResult r;
  try {
    r = sinkhorn(ctx, geom, va, vb, opt);
  } catch (const BudgetTooSmall&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(flagify(e.what(), kFlagNames));
  }
  io::write_npy(out.file("f.npy"), r.f.data(), {r.n}, opt.precision);
  io::write_npy(out.file("g.npy"), r.g.data(), {r.m}, opt.precision);

  nlohmann::json j;
  j["command"] = "sinkhorn";
  j["otcal_version"] = version();
  j["converged"] = r.converged;
  j["diverged"] = r.diverged;
  j["n_iters"] = r.n_iters;
  j["iterations"] = r.n_iters;
  j["errors"] = finite_or_null(r.errors);
  j["reg_ot_cost"] = finite_or_null(r.reg_ot_cost);
  j["epsilon"] = r.epsilon;
  j["scale"] = r.scale;
  j["cost"] = r.cost.name();
  j["device"] = r.device;
  j["device_selection_note"] = ctx.selection_note();
  j["context"] = to_json(ctx);
  j["batch_size"] = r.batch_size;
  j["tile_plan"] = to_json(r.plan);
  j["memory"] = to_json(r.memory);
  j["elapsed_s"] = r.elapsed_s;
  j["total_elapsed_s"] = total.seconds();
  j["n"] = r.n;
  j["m"] = r.m;
  j["d"] = r.d;
  j["precision"] = dtype_name(r.precision);
  j["warnings"] = r.warnings;
  j["inputs"] = {{"x", s.x},
                 {"y", s.y.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.y)},
                 {"a", s.a.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.a)},
                 {"b", s.b.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.b)},
                 {"x_dtype", dtype_name(x.dtype)},
                 {"y_dtype", s.y.empty() ? dtype_name(x.dtype) : dtype_name(y.dtype)}};
  j["outputs"] = {{"f", "f.npy"}, {"g", "g.npy"}, {"out", s.out}};
  j["options"] = {{"cost", s.cost},
                  {"scale_cost", s.scale_cost},
                  {"epsilon", s.epsilon ? nlohmann::json(*s.epsilon) : nlohmann::json(nullptr)},
                  {"relative_epsilon", s.relative_epsilon},
                  {"epsilon_init", s.epsilon_init},
                  {"epsilon_decay", s.epsilon_decay},
                  {"tau_a", s.tau_a},
                  {"tau_b", s.tau_b},
                  {"threshold", s.threshold},
                  {"norm_error", s.norm_error},
                  {"inner_iterations", s.inner_iterations},
                  {"min_iterations", s.min_iterations},
                  {"max_iterations", s.max_iterations},
                  {"parallel_dual_updates", s.parallel_dual_updates},
                  {"batch_size", s.batch_size ? nlohmann::json(*s.batch_size) : nlohmann::json(nullptr)},
                  {"precision", s.precision},
                  {"on_divergence", s.on_divergence},
                  {"memory_budget", s.common.memory_budget.empty() ? nlohmann::json(nullptr)
                                                                    : nlohmann::json(s.common.memory_budget)},
                  {"device", s.common.device},
                  {"quiet", s.common.quiet}};
  write_json(out.file("result.json"), j);
  out.commit();

  if (!s.common.quiet) {
    std::cerr << "sinkhorn: " << (r.converged ? "converged" : "did not converge") << " after " << r.n_iters
              << " iterations on " << r.device << " (reg_ot_cost " << r.reg_ot_cost << ", peak "
              << format_bytes(r.memory.peak_bytes) << " of " << format_bytes(r.memory.budget_bytes) << "); wrote "
              << s.out << "/{f.npy,g.npy,result.json}\n";
  }
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<SinkhornArgs>();
  CLI::App* sub = app.add_subcommand("sinkhorn", "Entropic OT between two point clouds (.npy) -> potentials f, g");
  SinkhornArgs& s = *args;
  sub->add_option("--x", s.x, "Source points, .npy float32/float64 [n, d]")->required();
  sub->add_option("--y", s.y, "Target points, .npy [m, d] (default: --x)");
  sub->add_option("--a", s.a, "Source weights, .npy [n] (default: uniform 1/n)");
  sub->add_option("--b", s.b, "Target weights, .npy [m] (default: uniform 1/m)");
  sub->add_option("--out", s.out, "Output folder (new, empty, or an earlier otcal output): f.npy, g.npy, result.json")
      ->required();
  sub->add_option("--cost", s.cost, "sqeuclidean, euclidean, cosine, pnorm:P or sq_pnorm:P")->capture_default_str();
  sub->add_option("--scale-cost", s.scale_cost, "A number > 0, mean, max_cost, max_norm or max_bound")
      ->capture_default_str();
  sub->add_option("--epsilon", s.epsilon,
                  "Target epsilon (absolute; the factor with --relative-epsilon). Default: 0.05 * std of the scaled cost");
  sub->add_option("--relative-epsilon", s.relative_epsilon, "mean, std or none")->capture_default_str();
  sub->add_option("--epsilon-init", s.epsilon_init, "Scheduler: eps_t = max(init * decay^t, 1) * eps")
      ->capture_default_str();
  sub->add_option("--epsilon-decay", s.epsilon_decay, "Scheduler decay, in (0, 1]")->capture_default_str();
  sub->add_option("--tau-a", s.tau_a, "Source marginal relaxation in (0, 1]; 1 = balanced")->capture_default_str();
  sub->add_option("--tau-b", s.tau_b, "Target marginal relaxation in (0, 1]; 1 = balanced")->capture_default_str();
  sub->add_option("--threshold", s.threshold, "Convergence threshold on the marginal error")->capture_default_str();
  sub->add_option("--norm-error", s.norm_error, "p of the error's p-norm (>= 1)")->capture_default_str();
  sub->add_option("--inner-iterations", s.inner_iterations, "Iterations between error evaluations")
      ->capture_default_str();
  sub->add_option("--min-iterations", s.min_iterations)->capture_default_str();
  sub->add_option("--max-iterations", s.max_iterations)->capture_default_str();
  sub->add_flag("--parallel-dual-updates", s.parallel_dual_updates, "Jacobi instead of Gauss-Seidel updates");
  sub->add_option("--batch-size", s.batch_size, "Tile rows (memory only; default: planned from --memory-budget)");
  sub->add_option("--precision", s.precision, "float32 or float64 (compute and output dtype)")->capture_default_str();
  sub->add_option("--on-divergence", s.on_divergence, "error (exit 1) or return (write the diverged result)")
      ->capture_default_str();
  s.common.add_to(*sub);
  return [args] { return run_sinkhorn(*args); };
}

const RegisterCommand reg(10, "sinkhorn", setup);

}  // namespace
}  // namespace otcal::cli
