#pragma once
// Sparsify flags shared by `otcal sparsify` and `otcal solve`: parsing into SparsifyOptions, the
// context sparsify runs on, writing the SciPy .npz, and the JSON summary.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <iostream>
#include <optional>
#include <string>

#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "io/npz.hpp"
#include "io/output.hpp"
#include "otcal/sparsify.hpp"

namespace otcal::cli {

struct SparsifyArgs {
  std::string mode;
  std::optional<double> value;
  std::optional<index_t> max_k, n_samples, batch_size;
  std::uint64_t seed = 0;
  bool exact = false;
  bool per_rank_files = false;

  // `batch_flag` lets `otcal solve` keep --batch-size for the solve.
  void add_to(CLI::App& sub, const std::string& batch_flag = "--batch-size") {
    sub.add_option("--mode", mode, "threshold, percentile, min_row or mass")->required();
    sub.add_option("--value", value,
                   "threshold: the cut; percentile: in [0, 100]; mass: the row-mass fraction in (0, 1]; min_row: unused");
    sub.add_option("--max-k", max_k, "mass: at most K entries per row");
    sub.add_option("--n-samples", n_samples, "percentile (sampled): rows sampled for the statistic (default 1024)");
    sub.add_option("--seed", seed, "percentile (sampled): seed of the row sample")->capture_default_str();
    sub.add_flag("--exact", exact, "percentile: the exact global percentile of all entries (no row sampling)");
    sub.add_option(batch_flag, batch_size,
                   "Plan rows per block (memory only; default: planned from --memory-budget)");
    sub.add_flag("--per-rank-files", per_rank_files,
                 "Under mpirun: one plan.rank-R-of-P.npz per rank and plan.manifest.json (joined by otcal "
                 "merge-plan) instead of one plan .npz streamed to rank 0; the folder must be on a shared filesystem");
  }

  SparsifyOptions options(const std::string& batch_flag = "--batch-size") const {
    SparsifyOptions o;
    o.mode = with_flag("--mode", [&] { return parse_sparsify_mode(mode); });
    o.value = value;
    o.max_k = max_k;
    o.n_samples = n_samples;
    o.seed = seed;
    o.batch_size = batch_size;
    if (batch_size && *batch_size < 1)
      throw InvalidArgument(batch_flag + " " + std::to_string(*batch_size) +
                            " must be a positive number of rows (omit it to plan from --memory-budget)");
    if (exact) {
      if (o.mode != SparsifyMode::percentile) throw InvalidArgument("--exact is only supported with --mode percentile");
      if (n_samples) throw InvalidArgument("--n-samples and --exact exclude each other: the exact percentile uses every row");
      o.percentile_method = PercentileMethod::exact;
    }
    return o;
  }
};

// Library option names -> flags, for messages raised by validation inside sparsify().
inline std::string sparsify_flagify(const std::string& message) {
  return flagify(message, {{"max_k", "--max-k"}, {"n_samples", "--n-samples"},
                           {"batch_size", "--batch-size"}, {"value", "--value"}});
}

// sparsify() with validation errors rewritten to flag names.
template <class F>
SparsifyResult run_sparsify(F&& f) {
  try {
    return f();
  } catch (const BudgetTooSmall&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(sparsify_flagify(e.what()));
  }
}

inline void write_plan_npz(const std::string& path, const CsrMatrix& csr) { io::write_npz_csr(path, csr); }

// The plan's files (collective: every rank calls it with its rows; docs/sparsify.md "Distributed
// sparsify"). One .npz: rank 0 writes `rank0_path` (a temporary file) with every rank's rows
// streamed to it, in one process the plain writer. Per-rank files: `rank0_path` is rank 0's
// temporary folder, broadcast so that every rank writes its piece into it (a shared filesystem),
// and rank 0 adds the manifest. Returns the name the plan has in its folder.
inline std::string write_plan(Communicator& ranks, const SparsifyResult& r, bool per_rank_files,
                              std::string rank0_path, const std::string& stem = "plan") {
  if (per_rank_files) {
    ranks.broadcast(rank0_path, 0);
    io::write_npz_csr_pieces(rank0_path, stem, r.csr, r.row_offset, ranks);
    return io::manifest_file_name(stem);
  }
  if (ranks.size() == 1) write_plan_npz(rank0_path, r.csr);
  else io::write_npz_csr_sharded(rank0_path, r.csr, r.row_offset, ranks);
  return stem + ".npz";
}

// Collective (the ranks' peaks are gathered): every rank calls it.
inline nlohmann::json sparsify_summary(const SparsifyResult& r, const SparsifyOptions& o, const Context& ctx) {
  nlohmann::json j;
  j["mode"] = sparsify_mode_name(o.mode);
  j["value"] = o.value ? nlohmann::json(*o.value) : nlohmann::json(nullptr);
  j["percentile_method"] = o.percentile_method == PercentileMethod::exact ? "exact" : "sampled";
  j["max_k"] = o.max_k ? nlohmann::json(*o.max_k) : nlohmann::json(nullptr);
  j["shape"] = {r.rows_total, r.csr.cols};
  j["nnz"] = r.nnz_total;
  j["n_massless_rows"] = r.n_massless_rows;
  j["rows_left_empty"] = r.n_massless_rows;
  j["threshold"] = std::isnan(r.threshold) ? nlohmann::json(nullptr)
                   : std::isinf(r.threshold) ? nlohmann::json("inf")
                                             : nlohmann::json(r.threshold);
  j["dtype"] = dtype_name(r.csr.dtype);
  j["cost"] = finite_or_null(r.cost);
  j["converged"] = r.converged;
  j["batch_size"] = r.batch_size;
  j["tile_plan"] = to_json(r.plan);
  j["memory"] = to_json(r.memory);
  j["peak_memory_bytes"] = r.memory.peak_bytes;
  j["device"] = ctx.device_name();
  j["elapsed_s"] = r.elapsed_s;
  j["warnings"] = r.warnings;
  j["distributed"] = ranks_json(r.memory.peak_bytes);  // collective
  return j;
}

// The sparsify summary on stdout, tagged with the command, its output and the time since `total`
// started (read here, after everything was written).
inline void print_sparsify_summary(nlohmann::json j, const std::string& command, const std::string& out,
                                   const Stopwatch& total) {
  j["command"] = command;
  j["out"] = out;
  j["total_elapsed_s"] = total.seconds();
  std::cout << j.dump(2) << "\n";
}

}  // namespace otcal::cli
