#include "cli/common.hpp"

#include <cctype>
#include <cfloat>
#include <cmath>
#include <memory>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "cli/processes.hpp"
#include "io/host_memory.hpp"
#include "core/collective.hpp"
#include "otcal/memory.hpp"
#include "otcal/problem.hpp"

namespace otcal::cli {

const char* version() {
#ifdef OTCAL_VERSION
  return OTCAL_VERSION;
#else
  return "0.1.0";  // keep in step with project(otcal VERSION ...) in CMakeLists.txt
#endif
}

void CommonOptions::add_to(CLI::App& app, bool with_quiet) {
  app.add_option("--memory-budget", memory_budget,
                 "Memory budget for workspace and outputs: bytes or a size such as 512MiB or 8GiB "
                 "(default: a quarter of the device memory, capped by the free memory)");
  app.add_option("--device", device, "auto (CUDA when one works, else the CPU), cpu, cuda or cuda:N")
      ->capture_default_str();
  if (with_quiet) app.add_flag("--quiet,-q", quiet, "No progress on stderr");
}

std::size_t CommonOptions::budget_bytes() const {
  if (memory_budget.empty()) return 0;
  return parse_bytes(memory_budget, "--memory-budget");
}

Context CommonOptions::make_context() const {
  ContextOptions o;
  o.memory_budget = budget_bytes();
  // Under a launcher every rank warns alike: rank 0 speaks for all of them.
  if (!writes_outputs()) o.on_warning = [](const std::string&) {};
  try {
    const std::shared_ptr<Communicator> ranks = processes();
    if (ranks->size() > 1)
      return detail::agreed(*ranks, [&] {
        return with_flag("--device", [&] { return Context::distributed(ranks, device, o); });
      });
    return with_flag("--device", [&] { return Context::from_string(device, o); });
  } catch (const DeviceError& e) {  // e.g. cuda asked for in a CPU-only build, or no such device
    const std::string msg = e.what();
    throw DeviceError("--device " + device + ": " + msg +
                      (msg.find("--device") == std::string::npos ? " (use --device auto or cpu)" : ""));
  }
}

nlohmann::json CommonOptions::to_json() const {
  return {{"memory_budget", memory_budget.empty() ? nlohmann::json(nullptr) : nlohmann::json(memory_budget)},
          {"device", device},
          {"quiet", quiet}};
}

std::string flagify(const std::string& message, const std::vector<std::pair<std::string, std::string>>& names) {
  std::string out = message;
  for (const auto& [name, flag] : names) {
    // Replace whole words only (so "tau_a" does not touch "tau_ab").
    std::size_t pos = 0;
    auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
    while ((pos = out.find(name, pos)) != std::string::npos) {
      const bool left_ok = pos == 0 || !is_word(out[pos - 1]);
      const bool right_ok = pos + name.size() >= out.size() || !is_word(out[pos + name.size()]);
      if (left_ok && right_ok) {
        out.replace(pos, name.size(), flag);
        pos += flag.size();
      } else {
        pos += name.size();
      }
    }
  }
  return out;
}

namespace {
std::string fmt(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
}  // namespace

io::NpyInput open_points(const std::string& path, const std::string& flag) {
  io::NpyInput in(path, flag);
  const std::vector<index_t>& shape = in.shape();
  if (shape.size() != 2)
    throw InvalidArgument(flag + " '" + path + "' has " + std::to_string(shape.size()) +
                          " dimensions; points must be a 2-D array [n_points, n_features]"
                          " (use arr.reshape(-1, 1) for 1-D data)");
  if (shape[0] < 1 || shape[1] < 1)
    throw InvalidArgument(flag + " '" + path + "' has shape (" + std::to_string(shape[0]) + ", " +
                          std::to_string(shape[1]) + "); it needs at least one point with at least one feature");
  return in;
}

namespace {
// The first non-finite value among elements [begin, end), or -1.
template <class T>
std::int64_t first_non_finite(const T* v, std::size_t begin, std::size_t end) {
  for (std::size_t k = begin; k < end; ++k)
    if (!std::isfinite(v[k])) return static_cast<std::int64_t>(k);
  return -1;
}
}  // namespace

io::NpyArray read_points(io::NpyInput& input) {
  io::NpyArray a = input.read();
  const index_t d = a.shape[1];
  // Under mpirun a rank checks the rows it owns; agreed() makes every rank raise what one found.
  const Communicator& ranks = *processes();
  const Shard own = shard_rows(a.shape[0], ranks.rank(), ranks.size());
  const auto begin = static_cast<std::size_t>(own.begin * d), end = static_cast<std::size_t>(own.end * d);
  const std::int64_t bad = a.dtype == DType::float32 ? first_non_finite(a.data<float>(), begin, end)
                                                     : first_non_finite(a.data<double>(), begin, end);
  if (bad >= 0)
    throw InvalidArgument(input.what() + " '" + input.path() + "' holds " + fmt(a.at(static_cast<std::size_t>(bad))) +
                          " at row " + std::to_string(bad / d) + ", column " + std::to_string(bad % d) +
                          ": point coordinates must be finite; drop or impute those points");
  return a;
}

io::NpyArray load_points(const std::string& path, const std::string& flag) {
  io::NpyInput in = open_points(path, flag);
  return read_points(in);
}

io::NpyArray load_weights(const std::string& path, const std::string& flag, index_t expected, const std::string& against) {
  io::NpyArray w = io::read_npy(path, flag);
  if (w.shape.size() != 1)
    throw InvalidArgument(flag + " '" + path + "' has " + std::to_string(w.shape.size()) +
                          " dimensions; weights must be a 1-D array (use arr.ravel())");
  if (w.shape[0] != expected)
    throw InvalidArgument(flag + " '" + path + "' has " + std::to_string(w.shape[0]) + " weights but " + against +
                          ": give one weight per point");
  double total = 0;
  for (std::size_t k = 0; k < static_cast<std::size_t>(w.size()); ++k) {
    const double v = w.at(k);
    if (!std::isfinite(v) || v < 0)
      throw InvalidArgument(flag + " '" + path + "' holds " + fmt(v) + " at index " + std::to_string(k) +
                            ": weights must be finite and >= 0");
    total += v;
  }
  if (!(total > 0))
    throw InvalidArgument(flag + " '" + path + "' sums to 0: at least one weight must be positive");
  if (!std::isfinite(total))
    throw InvalidArgument(flag + " '" + path + "' sums to more than the largest double (" + fmt(DBL_MAX) +
                          "): divide the weights by a common factor");
  return w;
}

ConstMatrix matrix_view(const io::NpyArray& a) { return a.matrix(); }
ConstVector vector_view(const io::NpyArray& a) { return a.vector(); }

void check_problem_fits(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds, const Cost& cost,
                        DType precision, std::uint64_t host_inputs, const std::string& inputs) {
  // Clouds beyond 2^56 values are out of any machine's reach, and their byte counts would overflow.
  constexpr index_t kMaxValues = index_t{1} << 56;
  const bool huge = n > kMaxValues / d || m > kMaxValues / d;
  const std::size_t resident =
      huge ? std::numeric_limits<std::size_t>::max() : Problem::resident_bytes_for(ctx, n, m, d, same_clouds, cost, precision);
  const std::size_t in_use = ctx.limiter().allocated_bytes();
  const std::size_t budget = ctx.memory_budget();
  const std::size_t minimum =
      huge ? std::numeric_limits<std::size_t>::max() : Problem::minimum_budget_for(ctx, n, m, d, same_clouds, cost, precision);
  if (minimum > budget) {
    const std::string need = huge ? "more than 2^59 bytes"
                                  : "at least " + std::to_string(minimum) + " bytes (" + format_bytes(minimum) +
                                        "; the clouds alone take " + std::to_string(resident) + " bytes)";
    throw BudgetTooSmall(inputs + ": the resident problem in " + dtype_name(precision) + " needs " + need +
                             " but the memory budget (--memory-budget) is " + format_bytes(budget) + " (" +
                             std::to_string(budget) + " bytes" +
                             (in_use > 0 ? ", " + std::to_string(in_use) + " of them in use" : std::string()) +
                             "): raise --memory-budget or use fewer points",
                         minimum);
  }
  const std::uint64_t on_host = host_inputs + (ctx.kind() == DeviceKind::cpu ? resident : 0);
  io::check_host_memory(on_host, inputs, ctx.kind() == DeviceKind::cpu ? "(the inputs and their resident copy)"
                                                                         : "(the inputs)");
}

DType parse_precision(const std::string& text, const std::string& flag) {
  if (text == "float64" || text == "f8" || text == "double") return DType::float64;
  if (text == "float32" || text == "f4" || text == "float") return DType::float32;
  throw InvalidArgument(flag + " '" + text + "' is not float32 or float64");
}

std::function<void(const SinkhornProgress&)> sinkhorn_progress(bool quiet, const std::string& label, double interval_s) {
  if (quiet) return {};
  auto last = std::make_shared<std::optional<std::chrono::steady_clock::time_point>>();
  return [last, label, interval_s](const SinkhornProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (*last && std::chrono::duration<double>(now - **last).count() < interval_s) return;
    *last = now;
    char line[160];
    std::snprintf(line, sizeof line, "%s: iteration %lld  error %.3e  %.1f it/s\n", label.c_str(),
                  static_cast<long long>(p.iteration), p.error, p.iterations_per_second);
    std::cerr << line << std::flush;
  };
}

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json finite_or_null(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double x : v) a.push_back(finite_or_null(x));
  return a;
}

nlohmann::json to_json(const TilePlan& plan) {
  return {{"rows", plan.rows},
          {"n_tiles", plan.n_tiles},
          {"planned_peak_bytes", plan.planned_peak},
          {"headroom_bytes", plan.headroom},
          {"clamped", plan.clamped}};
}

nlohmann::json to_json(const MemoryReport& memory) {
  return {{"budget_bytes", memory.budget_bytes},
          {"peak_bytes", memory.peak_bytes},
          {"planned_peak_bytes", memory.planned_peak_bytes}};
}

nlohmann::json to_json(const Context& ctx) {
  return {{"device", ctx.device_name()},
          {"kind", ctx.kind() == DeviceKind::cuda ? "cuda" : "cpu"},
          {"device_id", ctx.device_id()},
          {"selection_note", ctx.selection_note()},
          {"threads", ctx.threads()},
          {"memory_budget_bytes", ctx.memory_budget()}};
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(2) << "\n";
  out.flush();
  if (!out) throw InvalidArgument("cannot write '" + path + "' (disk full or folder not writable?)");
}

}  // namespace otcal::cli
