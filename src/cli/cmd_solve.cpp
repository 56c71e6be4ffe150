// `otcal solve`: Sinkhorn then sparsify on one resident problem (the clouds are read and uploaded
// once), writing
// f.npy, g.npy, result.json and plan.npz (or, with --per-rank-files, plan.rank-R-of-P.npz and
// plan.manifest.json) into --out atomically. result.json is the sinkhorn
// summary with a "sparsify" section; the sparsify summary also goes to stdout.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "cli/provenance.hpp"
#include "cli/sinkhorn_args.hpp"
#include "cli/sparsify_args.hpp"
#include "io/npy.hpp"
#include "core/collective.hpp"
#include "io/output.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"

namespace otcal::cli {
namespace {

struct Args {
  CloudFiles in;
  std::string out;
  SolverArgs solver;
  SparsifyArgs sp;
  CommonOptions common;
};

// Under mpirun every rank solves and sparsifies its shard (the pattern of otcal sinkhorn); rank 0
// writes --out, committed only once every rank's plan rows are written.
int run(const Args& s) {
  Stopwatch total;
  Communicator& ranks = *processes();
  const bool writer = writes_outputs();
  s.solver.check();
  SparsifyOptions sopt = s.sp.options("--sparsify-batch-size");
  const SinkhornOptions opt = s.solver.options(s.common.quiet || !writer);
  const Cost cost = s.solver.parse_cost();
  const ScaleCost scale = s.solver.parse_scale_cost();
  detail::agreed(ranks, [&] {
    if (writer) io::check_output_dir(s.out, "--out");
  });
  const Context ctx = s.common.make_context();

  Clouds clouds = detail::agreed(ranks, [&] {
    Clouds c = load_points_xy(s.in, {&ctx, cost, opt.precision.value_or(DType::float64)});
    load_weights_ab(c, s.in);
    return c;
  });
  const PointCloud geom = clouds.geometry(cost, scale);

  std::optional<io::AtomicOutputDir> out;
  detail::agreed(ranks, [&] {
    if (writer) out.emplace(s.out, "--out");
  });
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"batch_size", "--batch-size"}, {"scale_cost", "--scale-cost"}, {"tau_a", "--tau-a"}, {"tau_b", "--tau-b"},
      {"initializer", "--initializer"}};
  const Problem problem = upload_with_flags(ctx, geom, clouds.a_view(), clouds.b_view(),
                                            opt.precision.value_or(DType::float64), flags);
  const SinkhornResult r = sinkhorn_with_flags(problem, opt, flags);
  const SparsifyResult sr = run_sparsify([&] { return sparsify(problem, r, sopt); });

  const bool per_rank = s.sp.per_rank_files;
  const std::string rank0_path = !writer ? "" : per_rank ? out->temp_path().string() : out->file("plan.npz");
  const std::string plan_name = write_plan(ranks, sr, per_rank, rank0_path);
  nlohmann::json sj = sparsify_summary(sr, sopt, ctx);
  nlohmann::json j = sinkhorn_summary(r);
  j["command"] = "solve";
  j["inputs"] = {{"x", s.in.x}, {"y", path_or_null(s.in.y)}};
  j["outputs"] = {{"f", "f.npy"}, {"g", "g.npy"}, {"plan", plan_name}, {"out", s.out}};
  j["sparsify"] = sj;
  j["distributed"] = ranks_json(std::max(r.memory.peak_bytes, sr.memory.peak_bytes));
  j["total_elapsed_s"] = total.seconds();
  detail::agreed(ranks, [&] {
    if (!writer) return;
    io::write_npy(out->file("f.npy"), r.f.data(), {r.n}, r.precision);
    io::write_npy(out->file("g.npy"), r.g.data(), {r.m}, r.precision);
    j["provenance"] = potentials_provenance(r, s.in, clouds, out->file("f.npy"), out->file("g.npy"));
    write_json(out->file("result.json"), j);
    out->commit();
  });
  if (writer) print_sparsify_summary(sj, "solve", s.out, total);
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("solve", "Sinkhorn then sparsify: f.npy, g.npy, result.json and plan.npz in --out");
  Args& s = *args;
  s.in.add_to(*sub, {.a = "Source weights, .npy [n] (default: uniform)", .b = "Target weights, .npy [m] (default: uniform)"});
  sub->add_option("--out", s.out, "Output folder (new, empty, or an earlier otcal output)")->required();
  s.solver.add_to(*sub, {.scale_cost = "A number > 0, mean, median, max_cost, max_norm or max_bound",
                         .epsilon = "Target epsilon (default: 0.05 * std of the scaled cost)",
                         .tau_a = "Source marginal relaxation in (0, 1]",
                         .tau_b = "Target marginal relaxation in (0, 1]",
                         .inner_iterations = "",
                         .batch_size = "Sinkhorn tile rows (default: planned from --memory-budget)",
                         .precision = "float32 or float64",
                         .advanced = false});
  s.sp.add_to(*sub, "--sparsify-batch-size");
  s.common.add_to(*sub);
  return [args] { return run(*args); };
}

const RegisterCommand reg(30, "solve", setup);

}  // namespace
}  // namespace otcal::cli
