// Bench plumbing: see common.hpp.
#include "common.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <random>

#include <time.h>

#include "cli/processes.hpp"
#include "otcal/errors.hpp"
#include "otcal/memory.hpp"

#ifndef OTCAL_BENCH_COMMIT
#define OTCAL_BENCH_COMMIT "unknown"
#endif

namespace otcal::bench {

void add_common_options(CLI::App& app, CommonOptions& o) {
  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--precision", o.precision, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  app.add_option("--memory-budget", o.memory_budget, "byte budget, e.g. 512MiB, 8GiB")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "tile rows (default: planned from the budget)")
      ->check(CLI::PositiveNumber);
  app.add_option("--repeats", o.repeats, "timed runs (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed runs before timing")->check(CLI::Range(0, 1000))->capture_default_str();
  app.add_option("--seed", o.seed, "input seed")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU backend threads (0 = OpenMP default)")->check(CLI::NonNegativeNumber);
  app.add_option("--cpu-vector-ops", o.cpu_vector_ops,
                 "CPU ceiling: vector FP instructions issued per clock per core (2: the two FMA ports of AVX2 cores; "
                 "4 on Zen 3, which adds two FP add ports)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

DType parse_precision(const std::string& text) {
  if (text == "float32") return DType::float32;
  if (text == "float64") return DType::float64;
  throw InvalidArgument("precision '" + text + "' is not float32 or float64");
}

std::size_t budget_bytes(const CommonOptions& o) { return parse_bytes(o.memory_budget, "--memory-budget"); }

Context make_context(const CommonOptions& o, std::vector<std::string>& warnings) {
  ContextOptions co;
  co.memory_budget = budget_bytes(o);
  co.threads = o.threads;
  co.on_warning = [&warnings](const std::string& w) {
    if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) warnings.push_back(w);
  };
  // Under mpirun: one rank of a distributed run (rank 0 prints the record).
  if (cli::processes()->size() > 1) return Context::distributed(cli::processes(), o.device, co);
  return Context::from_string(o.device, co);
}

template <class T>
std::vector<T> gaussian_cloud(index_t n, index_t d, std::uint64_t seed, double shift) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> v(static_cast<std::size_t>(n * d));
  for (auto& e : v) e = static_cast<T>(normal(gen) + shift);
  return v;
}
template std::vector<float> gaussian_cloud<float>(index_t, index_t, std::uint64_t, double);
template std::vector<double> gaussian_cloud<double>(index_t, index_t, std::uint64_t, double);

void add_cloud_options(CLI::App& app, index_t& n, index_t& m, index_t& d) {
  app.add_option("--n", n, "points in x")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--m", m, "points in y (default: n)")->check(CLI::NonNegativeNumber);
  app.add_option("--d", d, "dimension")->check(CLI::PositiveNumber)->capture_default_str();
}

BenchClouds::BenchClouds(index_t n, index_t m, index_t d, std::uint64_t seed, DType precision) {
  if (precision == DType::float64) {
    x64_ = gaussian_cloud<double>(n, d, seed, 0.0);
    y64_ = gaussian_cloud<double>(m, d, seed + 1, 0.5);
    geometry.x = ConstMatrix::of(x64_.data(), n, d);
    geometry.y = ConstMatrix::of(y64_.data(), m, d);
  } else {
    x32_ = gaussian_cloud<float>(n, d, seed, 0.0);
    y32_ = gaussian_cloud<float>(m, d, seed + 1, 0.5);
    geometry.x = ConstMatrix::of(x32_.data(), n, d);
    geometry.y = ConstMatrix::of(y32_.data(), m, d);
  }
  geometry.options.scale = ScaleCost{ScaleCost::Kind::value, 1.0};
}

std::vector<double> BenchClouds::x_f64() const { return x64_.empty() ? std::vector<double>(x32_.begin(), x32_.end()) : x64_; }
std::vector<double> BenchClouds::y_f64() const { return y64_.empty() ? std::vector<double>(y32_.begin(), y32_.end()) : y64_; }

SinkhornOptions fixed_length_sinkhorn(double epsilon, index_t iterations, DType precision) {
  SinkhornOptions so;
  so.epsilon = epsilon;
  so.min_iterations = so.max_iterations = so.inner_iterations = iterations;
  so.threshold = 0;
  so.precision = precision;
  return so;
}

namespace {
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

Timing time_repeats(int warmup, int repeats, const std::function<void()>& run) {
  for (int i = 0; i < warmup; ++i) run();
  Timing t;
  std::vector<double> cpu;
  for (int i = 0; i < repeats; ++i) {
    const double cpu0 = process_cpu_seconds();
    const auto start = std::chrono::steady_clock::now();
    run();  // every bench call synchronises its context before returning
    t.samples_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    cpu.push_back(process_cpu_seconds() - cpu0);
  }
  t.cpu_median_s = median_of(cpu);
  std::vector<double> s = t.samples_s;
  std::sort(s.begin(), s.end());
  t.min_s = s.front();
  t.max_s = s.back();
  t.median_s = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  return t;
}

DeviceMemorySampler::DeviceMemorySampler(const Context& ctx) {
  if (ctx.kind() != DeviceKind::cuda) return;
  active_ = true;
  device_ = ctx.device_id();
  baseline_ = free_bytes();
  min_free_ = baseline_;
  running_ = true;
  thread_ = std::thread([this] {
    // 10 ms: system_info() asks every device for its properties, which is not free.
    while (running_) {
      std::size_t f = 0;
      try {
        f = free_bytes();
      } catch (...) {
        return;  // a failing query ends sampling; an exception must not escape the thread
      }
      std::size_t cur = min_free_.load();
      while (f < cur && !min_free_.compare_exchange_weak(cur, f)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
}

DeviceMemorySampler::~DeviceMemorySampler() { stop(); }

std::size_t DeviceMemorySampler::free_bytes() const {
  const SystemInfo info = system_info();
  for (const DeviceInfo& d : info.devices)
    if (d.id == device_) return d.free_bytes;
  return info.devices.size() > static_cast<std::size_t>(device_) ? info.devices[device_].free_bytes : 0;
}

std::optional<std::int64_t> DeviceMemorySampler::stop() {
  if (!active_) return std::nullopt;
  if (running_.exchange(false) && thread_.joinable()) thread_.join();
  const std::size_t last = free_bytes();  // one final sample after the work finished
  const std::size_t low = std::min(min_free_.load(), last);
  return static_cast<std::int64_t>(baseline_) - static_cast<std::int64_t>(low);
}

std::size_t host_peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::size_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

namespace {
std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}
}  // namespace

nlohmann::json to_json(const Record& r, const CommonOptions& o, const Context& ctx,
                       const std::vector<std::string>& warnings) {
  using nlohmann::json;
  const SystemInfo sys = system_info();
  const bool gpu = ctx.kind() == DeviceKind::cuda;
  json j;
  j["bench"] = r.bench;
  j["n"] = r.n;
  j["m"] = r.m;
  j["d"] = r.d;
  j["k"] = r.k ? json(*r.k) : json(nullptr);
  j["batch_size"] = o.batch_size ? json(*o.batch_size) : json(nullptr);
  j["tile_rows"] = r.tile_rows;
  j["precision"] = o.precision;
  j["device_kind"] = gpu ? "cuda" : "cpu";
  j["device"] = ctx.device_name();
  j["threads"] = ctx.threads();
  j["cuda_runtime_version"] = sys.cuda_runtime_version.empty() ? json(nullptr) : json(sys.cuda_runtime_version);
  j["commit"] = OTCAL_BENCH_COMMIT;
  j["date"] = utc_now();
  j["warmup"] = o.warmup;
  j["repeats"] = o.repeats;
  j["time_s"] = r.timing.median_s;
  j["time_min_s"] = r.timing.min_s;
  j["time_max_s"] = r.timing.max_s;
  j["times_s"] = r.timing.samples_s;
  j["cpu_time_s"] = r.timing.cpu_median_s;
  j["iters"] = r.iterations;
  j["throughput"] = r.timing.median_s > 0 ? r.work_per_run / r.timing.median_s : 0.0;
  j["throughput_unit"] = r.throughput_unit;
  j["alloc_peak_bytes"] = r.alloc_peak_bytes;
  j["workspace_peak_bytes"] = r.workspace_peak_bytes;
  j["output_bytes"] = r.output_bytes;
  j["planned_peak_bytes"] = r.planned_peak_bytes;
  // The Context does not expose its CUDA pool's attributes; the sampled device delta stands in.
  j["pool_used_high"] = nullptr;
  j["pool_reserved_high"] = nullptr;
  j["device_delta_bytes"] = r.device_delta_bytes ? json(*r.device_delta_bytes) : json(nullptr);
  j["host_peak_rss_bytes"] = host_peak_rss_bytes();
  j["memory_budget"] = ctx.memory_budget();
  j["dense_equivalent_bytes"] = r.dense_equivalent_bytes;
  if (gpu && r.exp_per_run) {
    const double floor_s = *r.exp_per_run / kExpPerSecondHopper;
    j["exp_floor_s"] = floor_s;
    j["exp_floor_fraction"] = r.timing.median_s > 0 ? floor_s / r.timing.median_s : 0.0;
    j["exp_floor_basis"] = "2*n*m exps per iteration at 3.87e12/s (H100/H200 MUFU, 1.83 GHz)";
  } else {
    j["exp_floor_s"] = nullptr;
    j["exp_floor_fraction"] = nullptr;
  }
  j["warnings"] = warnings;
  for (auto it = r.extra.begin(); it != r.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void print_record(const nlohmann::json& j) {
  if (cli::writes_outputs()) std::cout << "OTCAL_BENCH " << j.dump() << std::endl;
}

int guarded_main(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  std::unique_ptr<cli::ProcessGroup> group;
  try {
    group = std::make_unique<cli::ProcessGroup>(&argc, &argv);
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": error: " << e.what() << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return body();
  } catch (const otcal::Error& e) {
    std::cerr << app.get_name() << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << app.get_name() << ": internal error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace otcal::bench
