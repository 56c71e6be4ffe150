// `otcal merge-plan`: the per-rank plan files of `otcal sparsify/solve --per-rank-files` joined
// into the one SciPy CSR .npz a single process writes, byte for byte (docs/sparsify.md
// "Distributed sparsify"), streaming the pieces through a bounded buffer.
#include <memory>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "core/collective.hpp"
#include "io/npz.hpp"
#include "io/output.hpp"

namespace otcal::cli {
namespace {

struct Args {
  std::string manifest, out;
};

// One process does the work; under mpirun the other ranks only wait for its outcome.
int run(const Args& s) {
  Communicator& ranks = *processes();
  detail::agreed(ranks, [&] {
    if (!writes_outputs()) return;
    io::check_output_file(s.out, "--out");
    io::AtomicFile out(s.out, "--out");
    io::merge_npz_pieces(s.manifest, out.temp_path(), "--manifest");
    out.commit();
  });
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "merge-plan", "Per-rank plan files (--per-rank-files) -> the one SciPy CSR .npz a single process writes");
  sub->add_option("--manifest", args->manifest, "plan.manifest.json of an otcal sparsify/solve --per-rank-files output")
      ->required();
  sub->add_option("--out", args->out, "Output .npz (scipy.sparse.load_npz reads it)")->required();
  return [args] { return run(*args); };
}

const RegisterCommand reg(25, "merge-plan", setup);

}  // namespace
}  // namespace otcal::cli
