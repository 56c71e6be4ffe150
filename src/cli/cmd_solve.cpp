// `otcal solve`: Sinkhorn then sparsify in one process (the clouds are read once), writing
// f.npy, g.npy, result.json and plan.npz into --out atomically. result.json is the sinkhorn
// summary with a "sparsify" section; the sparsify summary also goes to stdout.
#include <cmath>
#include <iostream>
#include <memory>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/sparsify_args.hpp"
#include "io/npy.hpp"
#include "io/output.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"

namespace otcal::cli {
namespace {

struct Args {
  std::string x, y, a, b, out;
  std::string cost = "sqeuclidean", scale_cost = "1", relative_epsilon = "none", precision = "float64";
  std::optional<double> epsilon;
  double tau_a = 1.0, tau_b = 1.0, threshold = 1e-3;
  index_t inner_iterations = 10, min_iterations = 0, max_iterations = 2000;
  std::optional<index_t> solve_batch;
  SparsifyArgs sp;
  CommonOptions common;
};

RelativeEpsilon parse_relative(const std::string& t) {
  if (t == "none" || t.empty()) return RelativeEpsilon::none;
  if (t == "mean") return RelativeEpsilon::mean;
  if (t == "std") return RelativeEpsilon::std;
  throw InvalidArgument("--relative-epsilon '" + t + "' is not one of mean, std, none");
}

int run(const Args& s) {
  Stopwatch total;
  SparsifyOptions sopt = s.sp.options("--sparsify-batch-size");
  SinkhornOptions opt;
  opt.epsilon = s.epsilon;
  opt.relative_epsilon = parse_relative(s.relative_epsilon);
  opt.tau_a = s.tau_a;
  opt.tau_b = s.tau_b;
  opt.threshold = s.threshold;
  opt.inner_iterations = s.inner_iterations;
  opt.min_iterations = s.min_iterations;
  opt.max_iterations = s.max_iterations;
  opt.batch_size = s.solve_batch;
  opt.precision = parse_precision(s.precision);
  opt.progress = sinkhorn_progress(s.common.quiet);
  const Cost cost = with_flag("--cost", [&] { return Cost::parse(s.cost); });
  const ScaleCost scale = with_flag("--scale-cost", [&] { return ScaleCost::parse(s.scale_cost); });
  io::check_output_dir(s.out, "--out");
  const Context ctx = s.common.make_context();

  const io::NpyArray x = load_points(s.x, "--x");
  const io::NpyArray y = s.y.empty() ? io::NpyArray{} : load_points(s.y, "--y");
  if (!s.y.empty() && y.shape[1] != x.shape[1])
    throw InvalidArgument("--y '" + s.y + "' has " + std::to_string(y.shape[1]) + " columns but --x '" + s.x + "' has " +
                          std::to_string(x.shape[1]) + ": both clouds must have the same number of features");
  const index_t n = x.shape[0];
  const index_t m = s.y.empty() ? n : y.shape[0];
  const io::NpyArray a = s.a.empty() ? io::NpyArray{} : load_weights(s.a, "--a", n, "--x has " + std::to_string(n) + " points");
  const io::NpyArray b = s.b.empty() ? io::NpyArray{} : load_weights(s.b, "--b", m, "--y has " + std::to_string(m) + " points");
  PointCloud geom{matrix_view(x), s.y.empty() ? ConstMatrix{} : matrix_view(y), {cost, scale}};

  io::AtomicOutputDir out(s.out, "--out");
  SinkhornResult r;
  try {
    r = sinkhorn(ctx, geom, s.a.empty() ? ConstVector{} : vector_view(a), s.b.empty() ? ConstVector{} : vector_view(b),
                 opt);
  } catch (const BudgetTooSmall&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(flagify(e.what(), {{"batch_size", "--batch-size"}, {"scale_cost", "--scale-cost"},
                                             {"tau_a", "--tau-a"}, {"tau_b", "--tau-b"}}));
  }
  const Context sctx = sparsify_context(s.common, ctx);
  const SparsifyResult sr = run_sparsify([&] { return sparsify(sctx, geom, r, sopt); });

  io::write_npy(out.file("f.npy"), r.f.data(), {r.n}, opt.precision);
  io::write_npy(out.file("g.npy"), r.g.data(), {r.m}, opt.precision);
  write_plan_npz(out.file("plan.npz"), sr.csr);
  nlohmann::json sj = sparsify_summary(sr, sopt, sctx);
  nlohmann::json j;
  j["command"] = "solve";
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
  j["batch_size"] = r.batch_size;
  j["tile_plan"] = to_json(r.plan);
  j["memory"] = to_json(r.memory);
  j["elapsed_s"] = r.elapsed_s;
  j["n"] = r.n;
  j["m"] = r.m;
  j["d"] = r.d;
  j["warnings"] = r.warnings;
  j["inputs"] = {{"x", s.x}, {"y", s.y.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.y)}};
  j["outputs"] = {{"f", "f.npy"}, {"g", "g.npy"}, {"plan", "plan.npz"}, {"out", s.out}};
  j["sparsify"] = sj;
  j["total_elapsed_s"] = total.seconds();
  write_json(out.file("result.json"), j);
  out.commit();
  sj["command"] = "solve";
  sj["out"] = s.out;
  sj["total_elapsed_s"] = total.seconds();
  std::cout << sj.dump(2) << "\n";
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("solve", "Sinkhorn then sparsify: f.npy, g.npy, result.json and plan.npz in --out");
  Args& s = *args;
  sub->add_option("--x", s.x, "Source points, .npy float32/float64 [n, d]")->required();
  sub->add_option("--y", s.y, "Target points, .npy [m, d] (default: --x)");
  sub->add_option("--a", s.a, "Source weights, .npy [n] (default: uniform)");
  sub->add_option("--b", s.b, "Target weights, .npy [m] (default: uniform)");
  sub->add_option("--out", s.out, "Output folder (new, empty, or an earlier otcal output)")->required();
  sub->add_option("--cost", s.cost, "sqeuclidean, euclidean, cosine, pnorm:P or sq_pnorm:P")->capture_default_str();
  sub->add_option("--scale-cost", s.scale_cost, "A number > 0, mean, median, max_cost, max_norm or max_bound")
      ->capture_default_str();
  sub->add_option("--epsilon", s.epsilon, "Target epsilon (default: 0.05 * std of the scaled cost)");
  sub->add_option("--relative-epsilon", s.relative_epsilon, "mean, std or none")->capture_default_str();
  sub->add_option("--tau-a", s.tau_a, "Source marginal relaxation in (0, 1]")->capture_default_str();
  sub->add_option("--tau-b", s.tau_b, "Target marginal relaxation in (0, 1]")->capture_default_str();
  sub->add_option("--threshold", s.threshold, "Convergence threshold on the marginal error")->capture_default_str();
  sub->add_option("--inner-iterations", s.inner_iterations)->capture_default_str();
  sub->add_option("--min-iterations", s.min_iterations)->capture_default_str();
  sub->add_option("--max-iterations", s.max_iterations)->capture_default_str();
  sub->add_option("--batch-size", s.solve_batch, "Sinkhorn tile rows (default: planned from --memory-budget)");
  sub->add_option("--precision", s.precision, "float32 or float64")->capture_default_str();
  s.sp.add_to(*sub, "--sparsify-batch-size");
  s.common.add_to(*sub);
  return [args] { return run(*args); };
}

const RegisterCommand reg(30, "solve", setup);

}  // namespace
}  // namespace otcal::cli
