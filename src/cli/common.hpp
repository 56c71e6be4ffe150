#pragma once
// Option handling shared by the otcal subcommands: the budget/device/quiet flags, the Context
// they make, input loading with flag-named errors, progress on stderr and the JSON summary.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/errors.hpp"
#include "otcal/planner.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {

// The otcal version (CMake's project version when the build passes OTCAL_VERSION).
const char* version();

// --memory-budget, --device, --quiet.
struct CommonOptions {
  std::string memory_budget;  // text as given ("8GiB"); empty = the default budget
  std::string device = "auto";
  bool quiet = false;

  void add_to(CLI::App& app, bool with_quiet = true);
  // Bytes, 0 for the default; InvalidArgument naming --memory-budget on bad text.
  std::size_t budget_bytes() const;
  // Context::from_string with the budget; errors name --device / --memory-budget.
  Context make_context() const;
  nlohmann::json to_json() const;
};

// Runs f(); an otcal::InvalidArgument it throws is rethrown prefixed with "<flag>: ".
template <class F>
auto with_flag(const std::string& flag, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const BudgetTooSmall&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(flag + ": " + e.what());
  }
}

// Rewrites the library's option names in a message into flag names (tau_a -> --tau-a, ...), so an
// error raised inside a solver still names what the user typed.
std::string flagify(const std::string& message, const std::vector<std::pair<std::string, std::string>>& names);

// ---- inputs -------------------------------------------------------------------------------------
// Inputs keep their dtype (float32 stays float32) and are mapped, not copied, when they are regular
// files; their headers are checked (open_points, check_problem_fits) before a payload is read.
// Opens a points file and checks from its header that it is 2-D [rows >= 1, cols >= 1]; errors name `flag`.
io::NpyInput open_points(const std::string& path, const std::string& flag);
// Reads an opened points file and checks that its values are finite.
io::NpyArray read_points(io::NpyInput& input);
// open_points, then read_points.
io::NpyArray load_points(const std::string& path, const std::string& flag);
// A 1-D float array of `expected` finite, non-negative weights with a positive sum; `against`
// names what fixes the length (e.g. "--x has 100 rows").
io::NpyArray load_weights(const std::string& path, const std::string& flag, index_t expected, const std::string& against);
ConstMatrix matrix_view(const io::NpyArray& a);  // in the file's dtype
ConstVector vector_view(const io::NpyArray& a);

// Refuses, before the inputs are read or generated, a problem whose resident copy (clouds of n and
// m points in d dimensions, Problem::resident_bytes_for) does not fit the context's budget
// (BudgetTooSmall naming `inputs` and --memory-budget), or whose host memory does not fit what the
// host has available (InvalidArgument): `host_inputs` bytes the inputs themselves take on the host,
// plus the resident copy on a CPU context. `inputs` names them, e.g. "--x 'x.npy' [1000, 3] float64".
void check_problem_fits(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds, const Cost& cost,
                        DType precision, std::uint64_t host_inputs, const std::string& inputs);

DType parse_precision(const std::string& text, const std::string& flag = "--precision");

// ---- progress -----------------------------------------------------------------------------------
// "sinkhorn: iteration 120  error 3.2e-04  850 it/s" on stderr, at most every `interval`, unless quiet.
std::function<void(const SinkhornProgress&)> sinkhorn_progress(bool quiet, const std::string& label = "sinkhorn",
                                                               double interval_s = 0.5);

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// ---- JSON ---------------------------------------------------------------------------------------
nlohmann::json finite_or_null(double v);
nlohmann::json finite_or_null(const std::vector<double>& v);
nlohmann::json to_json(const TilePlan& plan);
nlohmann::json to_json(const MemoryReport& memory);
// Context description: device, selection note, budget, threads.
nlohmann::json to_json(const Context& ctx);
// Pretty-printed (2 spaces) with a trailing newline; InvalidArgument if it cannot be written.
void write_json(const std::string& path, const nlohmann::json& j);

}  // namespace otcal::cli
