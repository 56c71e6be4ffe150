// `otcal sparsify`: the transport plan of an `otcal sinkhorn` result as a SciPy CSR .npz, built
// block by block from (x, y, f, g, scale, epsilon) within the memory budget. Geometry, cost,
// scale and epsilon come from DIR/result.json; f and g from DIR/f.npy, DIR/g.npy.
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "cli/provenance.hpp"
#include "cli/sinkhorn_args.hpp"
#include "cli/sparsify_args.hpp"
#include "io/npy.hpp"
#include "core/collective.hpp"
#include "io/output.hpp"
#include "otcal/sparsify.hpp"

namespace otcal::cli {
namespace {

struct Args {
  CloudFiles in;
  std::string potentials, out;
  SparsifyArgs sp;
  CommonOptions common;
};

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

nlohmann::json read_result_json(const std::string& dir) {
  const std::string path = dir + "/result.json";
  std::ifstream in(path);
  if (!in) throw InvalidArgument("--potentials '" + dir + "': no result.json in it; pass the --out folder of otcal sinkhorn");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw InvalidArgument("--potentials '" + path + "' is not valid JSON (" + e.what() + ")");
  }
}

template <class V>
V field(const nlohmann::json& j, const char* key, const std::string& dir) {
  if (!j.contains(key) || j[key].is_null())
    throw InvalidArgument("--potentials '" + dir + "/result.json' has no '" + key +
                          "': pass the --out folder of otcal sinkhorn");
  try {
    return j[key].get<V>();
  } catch (const std::exception&) {
    throw InvalidArgument("--potentials '" + dir + "/result.json': '" + key + "' has the wrong type");
  }
}

// One potential, 1-D. Its values are checked where plan rows use them (check_potential_values).
std::vector<double> read_potential(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name + ".npy";
  const io::NpyArray a = io::read_npy(path, "--potentials " + name + ".npy");
  if (a.shape.size() != 1)
    throw InvalidArgument("--potentials " + name + ".npy '" + path + "' has " + std::to_string(a.shape.size()) +
                          " dimensions; a potential is 1-D: pass the --out folder of otcal sinkhorn");
  return a.values();
}

// NaN or +inf in a potential makes plan entries NaN or inf; -inf is a zero-weight point's
// potential (its row or column of the plan is empty). A rank checks the entries it owns, so that
// under mpirun the rank holding the bad entry is the one named.
void check_potential_values(const std::vector<double>& v, const std::string& name, const std::string& dir,
                            const Communicator& ranks) {
  const Shard own = shard_rows(static_cast<index_t>(v.size()), ranks.rank(), ranks.size());
  for (index_t i = own.begin; i < own.end; ++i)
    if (std::isnan(v[static_cast<std::size_t>(i)]) || v[static_cast<std::size_t>(i)] == INFINITY)
      throw InvalidArgument("--potentials " + name + ".npy '" + dir + "/" + name + ".npy' holds " +
                            num(v[static_cast<std::size_t>(i)]) + " at index " + std::to_string(i) +
                            ": potentials must be finite or -inf (a zero-weight point); rerun otcal sinkhorn");
}

// The potentials and their solve's metadata from an `otcal sinkhorn` --out folder.
Potentials read_potentials(const std::string& dir) {
  const nlohmann::json rj = read_result_json(dir);
  Potentials r;
  r.epsilon = field<double>(rj, "epsilon", dir);
  r.scale = field<double>(rj, "scale", dir);
  r.cost = with_flag("--potentials result.json cost", [&] { return Cost::parse(field<std::string>(rj, "cost", dir)); });
  r.precision = parse_precision(field<std::string>(rj, "precision", dir), "--potentials result.json precision");
  r.converged = rj.value("converged", false);
  r.reg_ot_cost = rj.contains("reg_ot_cost") && rj["reg_ot_cost"].is_number() ? rj["reg_ot_cost"].get<double>()
                                                                             : std::nan("");
  if (!(std::isfinite(r.epsilon) && r.epsilon > 0))
    throw InvalidArgument("--potentials '" + dir + "/result.json': epsilon " + num(r.epsilon) +
                          " must be a finite number > 0: pass the --out folder of otcal sinkhorn");
  if (!(std::isfinite(r.scale) && r.scale > 0))
    throw InvalidArgument("--potentials '" + dir + "/result.json': scale " + num(r.scale) +
                          " must be a finite number > 0: pass the --out folder of otcal sinkhorn");
  r.f = read_potential(dir, "f");
  r.g = read_potential(dir, "g");
  return r;
}

// Under mpirun every rank reads the inputs whole and builds the plan rows it owns; rank 0 writes
// --out (docs/sparsify.md "Distributed sparsify"). Any rank's failure stops every rank, and --out
// is committed only once every rank's rows are written.
int run(const Args& s) {
  Stopwatch total;
  Communicator& ranks = *processes();
  const bool writer = writes_outputs();
  const bool per_rank = s.sp.per_rank_files;
  const SparsifyOptions opt = s.sp.options();
  detail::agreed(ranks, [&] {
    if (!writer) return;
    if (per_rank) io::check_output_dir(s.out, "--out");
    else io::check_output_file(s.out, "--out");
  });
  const Context ctx = s.common.make_context();

  // The solve this plan belongs to, and its clouds (a rank that cannot read them stops all).
  struct Inputs {
    Potentials r;
    Clouds clouds;
  };
  Inputs in = detail::agreed(ranks, [&] {
    Potentials r = read_potentials(s.potentials);
    // The clouds' headers against the budget and the host memory before their payloads are read.
    Clouds c = load_points_xy(s.in, {&ctx, r.cost, r.precision});
    Inputs i{std::move(r), std::move(c)};
    const index_t n = i.clouds.n, m = i.clouds.m;
    if (static_cast<index_t>(i.r.f.size()) != n || static_cast<index_t>(i.r.g.size()) != m)
      throw InvalidArgument("--potentials '" + s.potentials + "': f.npy/g.npy have " + std::to_string(i.r.f.size()) +
                            "/" + std::to_string(i.r.g.size()) + " entries but --x/--y have " + std::to_string(n) +
                            "/" + std::to_string(m) + " points: pass the clouds the potentials were solved on");
    // The weights are absorbed in the potentials; they are only checked for consistency.
    load_weights_ab(i.clouds, s.in);
    // Then what the shapes cannot tell: the potentials, their parameters and the files are those
    // of one solve. Every rank checks what it read (docs/sparsify.md "Provenance").
    const std::optional<std::string> unchecked =
        verify_potentials_provenance(read_result_json(s.potentials), s.potentials, s.in);
    if (unchecked && writer) ctx.warn(*unchecked);
    check_potential_values(i.r.f, "f", s.potentials, ranks);
    check_potential_values(i.r.g, "g", s.potentials, ranks);
    return i;
  });
  const PointCloud geom = in.clouds.geometry(in.r.cost, ScaleCost{});

  std::optional<io::AtomicFile> file;
  std::optional<io::AtomicOutputDir> dir;
  detail::agreed(ranks, [&] {
    if (!writer) return;
    if (per_rank) dir.emplace(s.out, "--out");
    else file.emplace(s.out, "--out");
  });
  const SparsifyResult res = run_sparsify([&] { return sparsify(ctx, geom, in.r, opt); });
  const std::string rank0_path = !writer ? "" : per_rank ? dir->temp_path().string() : file->temp_path();
  write_plan(ranks, res, per_rank, rank0_path);
  detail::agreed(ranks, [&] {
    if (!writer) return;
    if (per_rank) dir->commit();
    else file->commit();
  });

  nlohmann::json j = sparsify_summary(res, opt, ctx);
  j["otcal_version"] = version();
  if (writer) print_sparsify_summary(j, "sparsify", s.out, total);
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "sparsify", "Transport plan of an otcal sinkhorn result -> SciPy CSR .npz (block-wise, within the budget)");
  Args& s = *args;
  s.in.add_to(*sub, {.x = "Source points, .npy [n, d] (as given to otcal sinkhorn)",
                      .a = "Source weights .npy [n] (checked only: the potentials absorb them)",
                      .b = "Target weights .npy [m] (checked only)"});
  sub->add_option("--potentials", s.potentials, "The --out folder of otcal sinkhorn (f.npy, g.npy, result.json)")
      ->required();
  sub->add_option("--out", s.out,
                  "Output .npz (scipy.sparse.load_npz reads it); with --per-rank-files an output folder")
      ->required();
  s.sp.add_to(*sub);
  s.common.add_to(*sub);
  return [args] { return run(*args); };
}

const RegisterCommand reg(20, "sparsify", setup);

}  // namespace
}  // namespace otcal::cli
