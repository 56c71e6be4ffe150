#pragma once
// Solver flags and inputs shared by `otcal sinkhorn`, `otcal solve` (and, for the point clouds,
// `otcal sparsify`): registering the flags, turning them into SinkhornOptions, loading --x/--y/
// --a/--b with flag-named errors, and the part of result.json that describes the solve.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/common.hpp"
#include "io/npy.hpp"
#include "otcal/geometry.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {

// Help texts of the cloud flags: each tool words --a/--b (and --x) for what it does with them.
struct CloudFlagHelp {
  std::string x = "Source points, .npy float32/float64 [n, d]";
  std::string a, b;
};

// --x, --y, --a, --b: file names as given ("" = not given).
struct CloudFiles {
  std::string x, y, a, b;
  void add_to(CLI::App& sub, const CloudFlagHelp& help);
};

// The clouds (and weights, when given) read from CloudFiles.
struct Clouds {
  io::NpyArray x, y, a, b;
  bool has_y = false, has_a = false, has_b = false;
  index_t n = 0, m = 0;

  PointCloud geometry(const Cost& cost, const ScaleCost& scale) const;
  ConstVector a_view() const;  // empty = uniform
  ConstVector b_view() const;
};

// What the clouds will become: the resident problem on `ctx` under `cost` in `precision`.
struct CloudTarget {
  const Context* ctx = nullptr;  // null: the inputs are not checked against a budget
  Cost cost{};
  DType precision = DType::float64;
};

// Reads --x and --y (2-D, finite, the same number of columns); n, m from their rows. With a
// target, the shapes their headers announce are checked against the budget and the host memory
// (check_problem_fits) before either payload is read.
Clouds load_points_xy(const CloudFiles& files, const CloudTarget& target = {});
// Reads --a / --b (when given) against n and m. `x_used_as_y`: name --x as what fixes m when
// --y is absent (`otcal sinkhorn`'s wording); otherwise the message names --y.
void load_weights_ab(Clouds& clouds, const CloudFiles& files, bool x_used_as_y = false);

// Help texts of the solver flags that differ between `otcal sinkhorn` and `otcal solve`.
struct SolverFlagHelp {
  std::string scale_cost = "A number > 0, mean, max_cost, max_norm, max_bound or median (exact, one extra pass per refinement)";
  std::string epsilon = "Target epsilon (absolute; the factor with --relative-epsilon). Default: 0.05 * std of the scaled cost";
  std::string tau_a = "Source marginal relaxation in (0, 1]; 1 = balanced";
  std::string tau_b = "Target marginal relaxation in (0, 1]; 1 = balanced";
  std::string inner_iterations = "Iterations between error evaluations";
  std::string batch_size = "Tile rows (memory only; default: planned from --memory-budget)";
  std::string precision = "float32 or float64 (compute and output dtype)";
  // --epsilon-init/--epsilon-decay, --norm-error, --parallel-dual-updates, --on-divergence.
  bool advanced = true;
};

// The Sinkhorn flags. Defaults equal SinkhornOptions' defaults, so a tool that does not offer a
// flag (SolverFlagHelp::advanced = false) solves exactly as with the library's default.
struct SolverArgs {
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
  // Acceleration and initializer (docs/sinkhorn.md §7-8); unset = off, as in the library.
  std::optional<double> momentum;
  index_t momentum_start = 0;
  std::optional<double> momentum_error_threshold;  // unset: inf
  std::optional<index_t> anderson;                 // memory
  index_t anderson_refresh_every = 1;
  double anderson_ridge = 1e-2;
  std::string initializer = "zeros";

  // Registers --cost ... --precision (--on-divergence last) in `otcal sinkhorn`'s order.
  void add_to(CLI::App& sub, const SolverFlagHelp& help = {});
  // --cost / --scale-cost parsed; errors name the flag.
  Cost parse_cost() const;
  ScaleCost parse_scale_cost() const;
  // The options (progress on stderr unless `quiet`); InvalidArgument naming a flag on bad text.
  SinkhornOptions options(bool quiet) const;
  // The value checks that need no input (ranges, min <= max), naming the flags: before any IO.
  void check() const;
  // The momentum, Anderson and initializer flags (part of check()).
  void check_acceleration() const;
  // The flags as given, for result.json's "options".
  nlohmann::json to_json() const;
};

// Problem::upload and sinkhorn() with the library's option names in their validation errors
// rewritten to the flags that set them (`flag_names`, see flagify); BudgetTooSmall passes through.
Problem upload_with_flags(const Context& ctx, const PointCloud& geom, ConstVector a, ConstVector b, DType precision,
                          const std::vector<std::pair<std::string, std::string>>& flag_names);
SinkhornResult sinkhorn_with_flags(const Problem& problem, const SinkhornOptions& opt,
                                   const std::vector<std::pair<std::string, std::string>>& flag_names);

// nlohmann::json(text), or null for "" (a flag that was not given).
nlohmann::json path_or_null(const std::string& text);

// The part of result.json every solving tool writes: convergence, costs, epsilon, geometry,
// device, tiling and memory, sizes, warnings. The caller adds "command", inputs and outputs.
nlohmann::json sinkhorn_summary(const SinkhornResult& r);

}  // namespace otcal::cli
