// `otcal sinkhorn`: solve entropic OT between two point clouds stored as .npy files and write the
// potentials and a JSON summary into an output folder (atomically: all of it or nothing).
#include <cmath>
#include <iostream>
#include <memory>

#include "cli/command.hpp"
#include "cli/processes.hpp"
#include "core/collective.hpp"
#include "cli/common.hpp"
#include "cli/provenance.hpp"
#include "cli/sinkhorn_args.hpp"
#include "io/npy.hpp"
#include "io/output.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {
namespace {

struct SinkhornArgs {
  CloudFiles in;
  std::string out;
  SolverArgs solver;
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
    {"relative_epsilon", "--relative-epsilon"}, {"initializer", "--initializer"}};

int run_sinkhorn(const SinkhornArgs& s) {
  Stopwatch total;
  Communicator& ranks = *processes();
  const bool writer = writes_outputs();
  // 1. Options (no IO yet), then the output folder, then the device: cheap failures first.
  s.solver.check();
  const Cost cost = s.solver.parse_cost();
  const ScaleCost scale = s.solver.parse_scale_cost();
  const SinkhornOptions opt = s.solver.options(s.common.quiet || !writer);
  detail::agreed(ranks, [&] {
    if (writer) io::check_output_dir(s.out, "--out");
  });
  const Context ctx = s.common.make_context();

  // 2. Inputs: every rank reads both clouds whole (O((n + m) d)); a rank that cannot stops all.
  Clouds clouds = detail::agreed(ranks, [&] {
    Clouds c = load_points_xy(s.in, {&ctx, cost, opt.precision.value_or(DType::float64)});
    load_weights_ab(c, s.in, /*x_used_as_y=*/true);
    return c;
  });
  const PointCloud geom = clouds.geometry(cost, scale);

  // 3. Solve; rank 0 writes the outputs into a temporary sibling of --out until all are written.
  std::optional<io::AtomicOutputDir> out;
  detail::agreed(ranks, [&] {
    if (writer) out.emplace(s.out, "--out");
  });
  const Problem problem = upload_with_flags(ctx, geom, clouds.a_view(), clouds.b_view(),
                                            opt.precision.value_or(DType::float64), kFlagNames);
  const SinkhornResult r = sinkhorn_with_flags(problem, opt, kFlagNames);
  nlohmann::json j = sinkhorn_summary(r);
  j["command"] = "sinkhorn";
  j["iterations"] = r.n_iters;
  j["device_selection_note"] = ctx.selection_note();
  j["context"] = to_json(ctx);
  j["distributed"] = ranks_json(r.memory.peak_bytes);
  j["total_elapsed_s"] = total.seconds();
  j["inputs"] = {{"x", s.in.x},
                 {"y", path_or_null(s.in.y)},
                 {"a", path_or_null(s.in.a)},
                 {"b", path_or_null(s.in.b)},
                 {"x_dtype", dtype_name(clouds.x.dtype)},
                 {"y_dtype", dtype_name(clouds.has_y ? clouds.y.dtype : clouds.x.dtype)}};
  j["outputs"] = {{"f", "f.npy"}, {"g", "g.npy"}, {"out", s.out}};
  j["options"] = s.solver.to_json();
  j["options"]["memory_budget"] = path_or_null(s.common.memory_budget);
  j["options"]["device"] = s.common.device;
  j["options"]["quiet"] = s.common.quiet;
  detail::agreed(ranks, [&] {
    if (!writer) return;
    io::write_npy(out->file("f.npy"), r.f.data(), {r.n}, r.precision);
    io::write_npy(out->file("g.npy"), r.g.data(), {r.m}, r.precision);
    j["provenance"] = potentials_provenance(r, s.in, clouds, out->file("f.npy"), out->file("g.npy"));
    write_json(out->file("result.json"), j);
    out->commit();
  });

  if (!s.common.quiet && writer) {
    std::cerr << "sinkhorn: " << (r.converged ? "converged" : "did not converge") << " after " << r.n_iters
              << " iterations on " << r.device << (r.ranks > 1 ? " x " + std::to_string(r.ranks) + " ranks" : "")
              << " (reg_ot_cost " << r.reg_ot_cost << ", peak " << format_bytes(r.memory.peak_bytes) << " of "
              << format_bytes(r.memory.budget_bytes) << (r.ranks > 1 ? " on rank 0" : "") << "); wrote " << s.out
              << "/{f.npy,g.npy,result.json}\n";
  }
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<SinkhornArgs>();
  CLI::App* sub = app.add_subcommand("sinkhorn", "Entropic OT between two point clouds (.npy) -> potentials f, g");
  SinkhornArgs& s = *args;
  s.in.add_to(*sub, {.a = "Source weights, .npy [n] (default: uniform 1/n)",
                      .b = "Target weights, .npy [m] (default: uniform 1/m)"});
  sub->add_option("--out", s.out, "Output folder (new, empty, or an earlier otcal output): f.npy, g.npy, result.json")
      ->required();
  s.solver.add_to(*sub);
  s.common.add_to(*sub);
  return [args] { return run_sinkhorn(*args); };
}

const RegisterCommand reg(10, "sinkhorn", setup);

}  // namespace
}  // namespace otcal::cli
