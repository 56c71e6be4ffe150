// `otcal sparsify`: the transport plan of an `otcal sinkhorn` result as a SciPy CSR .npz, built
// block by block from (x, y, f, g, scale, epsilon) within the memory budget. Geometry, cost,
// scale and epsilon come from DIR/result.json; f and g from DIR/f.npy, DIR/g.npy.
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/sinkhorn_args.hpp"
#include "cli/sparsify_args.hpp"
#include "io/npy.hpp"
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

int run(const Args& s) {
  Stopwatch total;
  const SparsifyOptions opt = s.sp.options();
  io::check_output_file(s.out, "--out");
  const Context ctx = s.common.make_context();

  // The solve this plan belongs to.
  const nlohmann::json rj = read_result_json(s.potentials);
  Potentials r;
  r.epsilon = field<double>(rj, "epsilon", s.potentials);
  r.scale = field<double>(rj, "scale", s.potentials);
  r.cost = with_flag("--potentials result.json cost", [&] { return Cost::parse(field<std::string>(rj, "cost", s.potentials)); });
  r.precision = parse_precision(field<std::string>(rj, "precision", s.potentials), "--potentials result.json precision");
  r.converged = rj.value("converged", false);
  r.reg_ot_cost = rj.contains("reg_ot_cost") && rj["reg_ot_cost"].is_number() ? rj["reg_ot_cost"].get<double>()
                                                                             : std::nan("");
  const io::NpyArray f = io::read_npy(s.potentials + "/f.npy", "--potentials f.npy");
  const io::NpyArray g = io::read_npy(s.potentials + "/g.npy", "--potentials g.npy");
  r.f = f.data;
  r.g = g.data;

  Clouds clouds = load_points_xy(s.in);
  const index_t n = clouds.n, m = clouds.m;
  if (f.shape.size() != 1 || f.shape[0] != n || g.shape.size() != 1 || g.shape[0] != m)
    throw InvalidArgument("--potentials '" + s.potentials + "': f.npy/g.npy have " + std::to_string(f.size()) + "/" +
                          std::to_string(g.size()) + " entries but --x/--y have " + std::to_string(n) + "/" +
                          std::to_string(m) + " points: pass the clouds the potentials were solved on");
  // The weights are absorbed in the potentials; they are only checked for consistency.
  load_weights_ab(clouds, s.in);
  const PointCloud geom = clouds.geometry(r.cost, ScaleCost{});

  io::AtomicFile out(s.out, "--out");
  const SparsifyResult res = run_sparsify([&] { return sparsify(ctx, geom, r, opt); });
  write_plan_npz(out.temp_path(), res.csr);
  out.commit();

  nlohmann::json j = sparsify_summary(res, opt, ctx);
  j["otcal_version"] = version();
  print_sparsify_summary(j, "sparsify", s.out, total);
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
  sub->add_option("--out", s.out, "Output .npz (scipy.sparse.load_npz reads it)")->required();
  s.sp.add_to(*sub);
  s.common.add_to(*sub);
  return [args] { return run(*args); };
}

const RegisterCommand reg(20, "sparsify", setup);

}  // namespace
}  // namespace otcal::cli
