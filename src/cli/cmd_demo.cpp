// `otcal demo`: a built-in problem that shows the tool working without any input files. Two
// Gaussian mixtures in 3-D (seeded, generated here), sqeuclidean cost scaled by its mean and the
// default epsilon (0.05 * std of the scaled cost), solved on the chosen device.
#include <array>
#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <random>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {
namespace {

// Default size: about 3 s on 2 idle CPU cores (about 110 iterations of ~2.1 * n^2 cost entries,
// at about 6.5e8 entries/s per core).
constexpr index_t kDefaultPoints = 4000;

struct DemoArgs {
  index_t n = kDefaultPoints;
  std::uint64_t seed = 42;
  CommonOptions common;
};

struct Component {
  std::array<double, 3> mean;
  double sd;
  double weight;
};

// n points, row-major [n, 3], from a mixture; component picked by weight.
std::vector<double> sample_mixture(index_t n, const std::vector<Component>& mix, std::mt19937_64& rng) {
  std::vector<double> w;
  for (const Component& c : mix) w.push_back(c.weight);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  std::normal_distribution<double> z(0.0, 1.0);
  std::vector<double> out(static_cast<std::size_t>(n) * 3);
  for (index_t i = 0; i < n; ++i) {
    const Component& c = mix[static_cast<std::size_t>(pick(rng))];
    for (int k = 0; k < 3; ++k) out[static_cast<std::size_t>(i * 3 + k)] = c.mean[k] + c.sd * z(rng);
  }
  return out;
}

int run_demo(const DemoArgs& args) {
  if (args.n < 1) throw InvalidArgument("--n " + std::to_string(args.n) + " must be >= 1");
  const Context ctx = args.common.make_context();
  // The generated clouds (float64 [n, 3] each) live on the host beside their resident copy:
  // refused before they are generated when either does not fit.
  const std::uint64_t generated =
      args.n > (index_t{1} << 56) ? std::numeric_limits<std::uint64_t>::max() : std::uint64_t(args.n) * 3 * 8 * 2;
  check_problem_fits(ctx, args.n, args.n, 3, false, Cost{}, DType::float64, generated,
                     "--n " + std::to_string(args.n) + " (two clouds of " + std::to_string(args.n) + " 3-D points)");
  std::mt19937_64 rng(args.seed);
  const std::vector<Component> source = {{{0, 0, 0}, 0.6, 0.5}, {{3, 0, 1}, 0.8, 0.3}, {{0, 3, -1}, 0.5, 0.2}};
  const std::vector<Component> target = {{{1, 1, 0}, 0.7, 0.4}, {{4, 2, 1}, 0.5, 0.4}, {{-1, 2, 2}, 0.9, 0.2}};
  const std::vector<double> x = sample_mixture(args.n, source, rng);
  const std::vector<double> y = sample_mixture(args.n, target, rng);

  PointCloud geom{ConstMatrix::of(x.data(), args.n, 3), ConstMatrix::of(y.data(), args.n, 3),
                  {Cost{}, ScaleCost{ScaleCost::Kind::mean, 1.0}}};
  SinkhornOptions opt;
  opt.progress = sinkhorn_progress(args.common.quiet, "demo");
  Stopwatch clock;
  const SinkhornResult r = sinkhorn(ctx, geom, {}, {}, opt);
  const double seconds = clock.seconds();

  const double rate = r.elapsed_s > 0 ? static_cast<double>(r.n_iters) / r.elapsed_s : 0.0;
  const double entries = 2.0 * static_cast<double>(r.n) * static_cast<double>(r.m) * static_cast<double>(r.n_iters);
  char line[256];
  std::cout << "otcal demo: entropic OT between two 3-D Gaussian mixtures (seed " << args.seed << ")\n";
  std::cout << "  device        " << r.device << "  (" << ctx.selection_note() << ")\n";
  std::cout << "  n, m, d       " << r.n << ", " << r.m << ", " << r.d << "\n";
  std::snprintf(line, sizeof line, "  cost          %s, scale_cost mean (s = %.6g)\n", r.cost.name().c_str(), r.scale);
  std::cout << line;
  std::snprintf(line, sizeof line, "  epsilon       %.6g  (default: 0.05 * std of the scaled cost)\n", r.epsilon);
  std::cout << line;
  std::cout << "  iterations    " << r.n_iters << (r.converged ? "  converged" : "  NOT converged") << "\n";
  std::snprintf(line, sizeof line, "  reg_ot_cost   %.10g\n", r.reg_ot_cost);
  std::cout << line;
  std::cout << "  memory        peak " << format_bytes(r.memory.peak_bytes) << " (planned "
            << format_bytes(r.memory.planned_peak_bytes) << ") of a " << format_bytes(r.memory.budget_bytes)
            << " budget; tile " << r.batch_size << " rows x " << r.plan.n_tiles << "\n";
  std::snprintf(line, sizeof line, "  time          %.3f s solve (%.3f s total), %.1f iterations/s, %.3g cost entries/s\n",
                r.elapsed_s, seconds, rate, r.elapsed_s > 0 ? entries / r.elapsed_s : 0.0);
  std::cout << line;
  return 0;  // non-convergence is reported above (and warned about), not an error of the run
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* sub = app.add_subcommand("demo", "Solve a built-in problem (two 3-D Gaussian mixtures) and print a summary");
  sub->add_option("--n", args->n, "Points per cloud")->capture_default_str();
  sub->add_option("--seed", args->seed, "Random seed of the generated clouds")->capture_default_str();
  args->common.add_to(*sub);
  return [args] { return run_demo(*args); };
}

const RegisterCommand reg(80, "demo", setup);

}  // namespace
}  // namespace otcal::cli
