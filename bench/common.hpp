#pragma once
// Shared plumbing of the bench binaries (docs/host-layer.md §7): common flags, seeded inputs, timing
// with warm-up and repeats, memory figures, and the single `OTCAL_BENCH {json}` line each process
// prints. One configuration per process: the harness (bench/run_sweeps.py) launches each cold,
// because allocator peaks accumulate within a process.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/geometry.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/types.hpp"

namespace otcal::bench {

// H100/H200 MUFU ex2 rate at 1.83 GHz (sinkhorn.md §10): 16/clk/SM x 132 SMs.
inline constexpr double kExpPerSecondHopper = 3.87e12;

// Flags every bench takes.
struct CommonOptions {
  std::string device = "cpu";            // auto, cpu, cuda, cuda:N
  std::string precision = "float64";     // float32 | float64
  std::string memory_budget = "1GiB";
  std::optional<index_t> batch_size;     // unset: planned from the budget
  int repeats = 3;                       // timed runs; the median is reported
  int warmup = 1;                        // untimed runs first (module load, first-touch pages)
  std::uint64_t seed = 12345;            // fixed seeds: the same inputs in every process
  int threads = 0;                       // CPU backend OpenMP threads; 0 = OpenMP's default
  double cpu_vector_ops = 2;             // ymm FP instructions per clock per core (ceilings.hpp)
};
void add_common_options(CLI::App& app, CommonOptions& o);

DType parse_precision(const std::string& text);
std::size_t budget_bytes(const CommonOptions& o);
// Warnings are collected (not printed per repeat) so the OTCAL_BENCH line stays the only output.
Context make_context(const CommonOptions& o, std::vector<std::string>& warnings);

// Row-major [n, d] standard-normal cloud shifted by `shift` in every coordinate.
template <class T>
std::vector<T> gaussian_cloud(index_t n, index_t d, std::uint64_t seed, double shift);

// --n, --m (0 = n), --d: the sizes of the two clouds.
void add_cloud_options(CLI::App& app, index_t& n, index_t& m, index_t& d);

// The OT benches' inputs: x = gaussian_cloud(n, d, seed, 0), y = gaussian_cloud(m, d, seed + 1, 0.5)
// (different means, so the plan is not the identity), stored in `precision`, and a geometry that
// views them with scale 1 (explicit, so no cost-statistics pass is timed) and the default cost.
// Not copyable or movable: `geometry` points into the vectors.
class BenchClouds {
 public:
  BenchClouds(index_t n, index_t m, index_t d, std::uint64_t seed, DType precision);
  BenchClouds(const BenchClouds&) = delete;
  BenchClouds& operator=(const BenchClouds&) = delete;

  PointCloud geometry;
  // The coordinates as float64, row-major (widened from float32 when stored so).
  std::vector<double> x_f64() const;
  std::vector<double> y_f64() const;

 private:
  std::vector<double> x64_, y64_;
  std::vector<float> x32_, y32_;
};

// Fixed-length Sinkhorn options: min = max = inner = `iterations`, threshold 0 (never stops
// early), absolute `epsilon`, `precision`.
SinkhornOptions fixed_length_sinkhorn(double epsilon, index_t iterations, DType precision);

struct Timing {
  std::vector<double> samples_s;
  double median_s = 0, min_s = 0, max_s = 0;
  // Process CPU seconds (all threads) of the median-time repeat's neighbourhood: the median of the
  // per-repeat CPU times. Less sensitive than wall time to other load on a shared machine.
  double cpu_median_s = 0;
};
// `warmup` untimed calls, then `repeats` timed calls of `run`.
Timing time_repeats(int warmup, int repeats, const std::function<void()>& run);

// Device-level memory use on CUDA (docs/host-layer.md §7): the largest drop of cudaMemGetInfo free bytes
// (through otcal::system_info()) below the baseline taken at construction, right after context
// creation, sampled every 10 ms by a background thread. It includes the CUDA context's later growth and
// library workspaces that the allocator peak misses. Inactive (reports nothing) on the CPU.
class DeviceMemorySampler {
 public:
  explicit DeviceMemorySampler(const Context& ctx);
  ~DeviceMemorySampler();
  DeviceMemorySampler(const DeviceMemorySampler&) = delete;
  DeviceMemorySampler& operator=(const DeviceMemorySampler&) = delete;
  // Stops sampling; the peak drop in bytes, or nullopt on the CPU.
  std::optional<std::int64_t> stop();

 private:
  std::size_t free_bytes() const;
  bool active_ = false;
  int device_ = -1;
  std::size_t baseline_ = 0;
  std::atomic<std::size_t> min_free_{0};
  std::atomic<bool> running_{false};
  std::thread thread_;
};

// Peak resident set of this process in bytes (getrusage ru_maxrss).
std::size_t host_peak_rss_bytes();

// The fields every record carries: bench name, configuration, device, commit, timing, memory.
struct Record {
  std::string bench;
  index_t n = 0, m = 0, d = 0;
  std::optional<index_t> k;
  index_t batch_size = 0;  // rows of a tile as requested (0 = planned)
  index_t tile_rows = 0;   // rows of a tile as used
  index_t iterations = 0;
  Timing timing;
  double work_per_run = 0;          // cost entries (OT) or nnz (calibration) per timed run
  std::string throughput_unit;
  std::size_t alloc_peak_bytes = 0;       // ctx.statistics() peak over the whole process
  std::size_t workspace_peak_bytes = 0;   // the operation's own reported peak
  std::size_t output_bytes = 0;
  std::size_t planned_peak_bytes = 0;
  std::optional<std::int64_t> device_delta_bytes;
  std::size_t dense_equivalent_bytes = 0;
  std::optional<double> exp_per_run;      // OT on a GPU: exponentials per timed run
  nlohmann::json extra = nlohmann::json::object();
};

nlohmann::json to_json(const Record& r, const CommonOptions& o, const Context& ctx,
                       const std::vector<std::string>& warnings);
// Prints `OTCAL_BENCH {json}` on one line to stdout and flushes.
void print_record(const nlohmann::json& j);

// Runs `body` and turns otcal errors and CLI parse errors into exit codes (2 usage, 1 error).
int guarded_main(CLI::App& app, int argc, char** argv, const std::function<int()>& body);

}  // namespace otcal::bench
