// Smoke tests of the bench binaries (docs/host-layer.md §7): each runs on a small CPU configuration as
// its own process, prints exactly one `OTCAL_BENCH {json}` line holding every documented field,
// and respects the memory contract alloc_peak <= planned_peak <= budget. The bench folder comes
// from OTCAL_BENCH_DIR (set by tests/CMakeLists.txt); benches that were not built are skipped.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace {

using nlohmann::json;

std::string bench_path(const std::string& name) {
  const char* dir = std::getenv("OTCAL_BENCH_DIR");
  if (dir == nullptr || *dir == '\0') return {};
  const std::string p = std::string(dir) + "/otcal-bench-" + name;
  struct stat st {};
  return stat(p.c_str(), &st) == 0 ? p : std::string{};
}

struct ProcessRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

ProcessRun run_process(const std::string& command) {
  ProcessRun r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe) != nullptr) r.out += buf.data();
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The single OTCAL_BENCH line, parsed; fails the test when there is not exactly one.
json bench_record(const ProcessRun& r) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < r.out.size()) {
    const std::size_t end = r.out.find('\n', pos);
    const std::string line = r.out.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (line.rfind("OTCAL_BENCH ", 0) == 0) lines.push_back(line.substr(12));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  EXPECT_EQ(lines.size(), 1u) << r.out;
  if (lines.empty()) return json::object();
  return json::parse(lines.front());
}

using testsupport::fresh_seed;  // honours OTCAL_TEST_SEED

// Every field the record must carry (docs/host-layer.md §7 and the bench issue).
void expect_common_fields(const json& j, const std::string& bench) {
  for (const char* key :
       {"bench", "n", "m", "d", "k", "batch_size", "tile_rows", "precision", "device_kind", "device", "commit",
        "date", "warmup", "repeats", "time_s", "time_min_s", "time_max_s", "times_s", "cpu_time_s", "iters", "throughput",
        "throughput_unit", "alloc_peak_bytes", "workspace_peak_bytes", "output_bytes", "planned_peak_bytes",
        "pool_used_high", "pool_reserved_high", "device_delta_bytes", "host_peak_rss_bytes", "memory_budget",
        "dense_equivalent_bytes", "exp_floor_s", "exp_floor_fraction"})
    EXPECT_TRUE(j.contains(key)) << "missing field " << key << " in " << j.dump();
  if (::testing::Test::HasFailure()) return;
  EXPECT_EQ(j["bench"], bench);
  EXPECT_EQ(j["device_kind"], "cpu");
  EXPECT_FALSE(j["commit"].get<std::string>().empty());
  // On the CPU there is no device-level delta and no GPU exp floor.
  EXPECT_TRUE(j["device_delta_bytes"].is_null());
  EXPECT_TRUE(j["exp_floor_s"].is_null());
  EXPECT_TRUE(j["exp_floor_fraction"].is_null());
  // Timing: the median lies within [min, max] of the listed samples, one per repeat.
  const auto times = j["times_s"].get<std::vector<double>>();
  EXPECT_EQ(static_cast<int>(times.size()), j["repeats"].get<int>());
  EXPECT_LE(j["time_min_s"].get<double>(), j["time_s"].get<double>());
  EXPECT_LE(j["time_s"].get<double>(), j["time_max_s"].get<double>());
  EXPECT_GT(j["time_min_s"].get<double>(), 0.0);
  // The memory contract.
  const auto peak = j["alloc_peak_bytes"].get<std::size_t>();
  const auto planned = j["planned_peak_bytes"].get<std::size_t>();
  const auto budget = j["memory_budget"].get<std::size_t>();
  EXPECT_GT(peak, 0u);
  EXPECT_LE(peak, planned);
  EXPECT_LE(planned, budget);
  EXPECT_GT(j["host_peak_rss_bytes"].get<std::size_t>(), 0u);
}

// The ceiling object (bench/README.md "Ceilings"): the achieved rate is the record's throughput,
// the binding ceiling is the smallest known candidate and has the expected name, and the fraction
// is achieved / ceiling. Returns the object (empty on failure).
json expect_ceiling(const json& j, const std::string& binding) {
  EXPECT_TRUE(j.contains("ceiling")) << j.dump();
  if (!j.contains("ceiling")) return json::object();
  const json& c = j["ceiling"];
  for (const char* key : {"achieved_rate", "unit", "candidates", "binding", "ceiling_rate", "fraction", "why", "machine"})
    EXPECT_TRUE(c.contains(key)) << "missing ceiling field " << key << " in " << c.dump();
  if (::testing::Test::HasFailure()) return json::object();
  EXPECT_EQ(c["machine"]["kind"], "cpu");
  EXPECT_EQ(c["unit"], j["throughput_unit"]);
  EXPECT_DOUBLE_EQ(c["achieved_rate"].get<double>(), j["throughput"].get<double>());
  EXPECT_EQ(c["binding"], binding) << c.dump();
  if (c["binding"].is_null()) return json::object();
  double smallest = 0;
  for (const json& k : c["candidates"])
    if (!k["rate"].is_null() && (smallest == 0 || k["rate"].get<double>() < smallest)) smallest = k["rate"].get<double>();
  EXPECT_GT(smallest, 0.0);
  EXPECT_DOUBLE_EQ(c["ceiling_rate"].get<double>(), smallest);
  EXPECT_DOUBLE_EQ(c["fraction"].get<double>(), c["achieved_rate"].get<double>() / smallest);
  EXPECT_FALSE(c["why"].get<std::string>().empty());
  return c;
}

TEST(BenchSmoke, SinkhornRecordIsCompleteAndWithinBudget) {
  const std::string bin = bench_path("sinkhorn");
  if (bin.empty()) GTEST_SKIP() << "otcal-bench-sinkhorn not found (OTCAL_BENCH_DIR unset or bench not built)";
  const std::uint64_t seed = fresh_seed();  // the printed seed reproduces the sizes too
  std::mt19937_64 gen(seed);
  const int n = 150 + static_cast<int>(gen() % 200), m = 100 + static_cast<int>(gen() % 200);
  const int d = 1 + static_cast<int>(gen() % 5), iterations = 3, batch = 16 + static_cast<int>(gen() % 64);
  const std::string precision = gen() % 2 ? "float32" : "float64";
  SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " m " + std::to_string(m) + " d " +
               std::to_string(d) + " batch " + std::to_string(batch) + " " + precision);
  const ProcessRun r = run_process(bin + " --device cpu --n " + std::to_string(n) + " --m " + std::to_string(m) + " --d " +
                    std::to_string(d) + " --iterations " + std::to_string(iterations) + " --batch-size " +
                    std::to_string(batch) + " --memory-budget 16MiB --precision " + precision +
                    " --repeats 2 --warmup 1 --seed " + std::to_string(seed));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = bench_record(r);
  expect_common_fields(j, "sinkhorn");
  if (HasFailure()) return;
  EXPECT_EQ(j["n"], n);
  EXPECT_EQ(j["m"], m);
  EXPECT_EQ(j["d"], d);
  EXPECT_EQ(j["batch_size"], batch);
  EXPECT_EQ(j["tile_rows"], batch);
  EXPECT_EQ(j["iters"], iterations);
  EXPECT_EQ(j["precision"], precision);
  const double elem = precision == "float32" ? 4.0 : 8.0;
  EXPECT_EQ(j["dense_equivalent_bytes"].get<double>(), static_cast<double>(n) * m * elem);
  // Throughput is iterations x 2 x n x m cost entries over the median time.
  const double expected = iterations * 2.0 * n * m / j["time_s"].get<double>();
  EXPECT_NEAR(j["throughput"].get<double>(), expected, 1e-9 * expected);
  // The bounded-memory point: the peak is far below the dense plan once the tile is small.
  EXPECT_LT(j["alloc_peak_bytes"].get<double>(), j["dense_equivalent_bytes"].get<double>());
#if defined(__x86_64__)
  // The CPU kernel's ceiling: cores x measured clock x 2 vector ops per clock over its vector FP
  // instructions per entry (136 / 32 float32, 318 / 32 float64 at d <= 3, + 2 per vector and
  // coordinate above 3).
  const json c = expect_ceiling(j, "CPU vector unit");
  if (c.empty()) return;
  const json& machine = c["machine"];
  EXPECT_GT(machine["clock_hz"].get<double>(), 1e8);  // a real clock, not a preempted wall time
  const double lanes = precision == "float32" ? 8 : 4;
  const double ops = (precision == "float32" ? 136.0 : 318.0) / 32.0 + (d > 3 ? 2.0 * (d - 3) / lanes : 0.0);
  const double rate = machine["cores"].get<double>() * machine["clock_hz"].get<double>() * 2.0 / ops;
  EXPECT_NEAR(c["ceiling_rate"].get<double>(), rate, 1e-9 * rate);
#endif
}

TEST(BenchSmoke, SinkhornRefusesATooSmallBudgetWithAClearError) {
  const std::string bin = bench_path("sinkhorn");
  if (bin.empty()) GTEST_SKIP() << "otcal-bench-sinkhorn not found";
  const ProcessRun r = run_process(bin + " --device cpu --n 5000 --d 8 --iterations 1 --memory-budget 1KiB --repeats 1 --warmup 0");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.find("OTCAL_BENCH "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("budget"), std::string::npos) << r.out;
}

TEST(BenchSmoke, SparsifyRecordIsCompleteAndWithinBudget) {
  const std::string bin = bench_path("sparsify");
  if (bin.empty()) GTEST_SKIP() << "otcal-bench-sparsify not built";
  const std::uint64_t seed = fresh_seed();  // the printed seed reproduces the sizes too
  std::mt19937_64 gen(seed);
  const int n = 100 + static_cast<int>(gen() % 150), batch = 8 + static_cast<int>(gen() % 40), max_k = 5;
  SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " batch " + std::to_string(batch));
  const ProcessRun r = run_process(bin + " --device cpu --n " + std::to_string(n) + " --d 3 --iterations 10 --batch-size " +
                    std::to_string(batch) + " --max-k " + std::to_string(max_k) +
                    " --memory-budget 16MiB --repeats 1 --warmup 0 --seed " + std::to_string(seed));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = bench_record(r);
  expect_common_fields(j, "sparsify");
  if (HasFailure()) return;
  EXPECT_EQ(j["n"], n);
  EXPECT_EQ(j["k"], max_k);
  EXPECT_EQ(j["tile_rows"], batch);
  ASSERT_TRUE(j.contains("nnz"));
  // Mass mode keeps between 1 and max_k entries per row.
  EXPECT_GE(j["nnz"].get<long>(), n);
  EXPECT_LE(j["nnz"].get<long>(), static_cast<long>(n) * max_k);
#if defined(__x86_64__)
  // Mass mode is one sweep over the plan: the ceiling is the Sinkhorn pass's.
  EXPECT_EQ(j["sweeps"], 1.0);
  expect_ceiling(j, "CPU vector unit");
#endif
}

TEST(BenchSmoke, CalibrateRecordIsCompleteAndWithinBudget) {
  const std::string bin = bench_path("calibrate");
  if (bin.empty()) GTEST_SKIP() << "otcal-bench-calibrate not built";
  const std::uint64_t seed = fresh_seed();  // the printed seed reproduces the sizes too
  std::mt19937_64 gen(seed);
  const int records = 2000 + static_cast<int>(gen() % 3000), categories = 5, targets = 20;
  SCOPED_TRACE("seed " + std::to_string(seed) + " records " + std::to_string(records));
  for (const std::string method : {"raking", "gradient"}) {
    SCOPED_TRACE(method);
    const ProcessRun r = run_process(bin + " --device cpu --records " + std::to_string(records) + " --targets " +
                      std::to_string(targets) + " --categories " + std::to_string(categories) + " --method " +
                      method + " --epochs 4 --memory-budget 16MiB --repeats 1 --warmup 0 --seed " +
                      std::to_string(seed));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const json j = bench_record(r);
    expect_common_fields(j, "calibrate");
    if (HasFailure()) return;
    EXPECT_EQ(j["n"], records);
    EXPECT_EQ(j["k"], targets);
    // Each record falls in exactly one category of each of targets / categories margin columns.
    EXPECT_EQ(j["nnz"].get<long>(), static_cast<long>(records) * (targets / categories));
    EXPECT_EQ(j["dense_equivalent_bytes"].get<double>(), 8.0 * records * targets);
    // Memory bound: the measured copy bandwidth over the bytes one non-zero streams (float64 value
    // and 32-bit column index).
    const json c = expect_ceiling(j, "memory bandwidth");
    if (c.empty()) return;
    EXPECT_EQ(j["bytes_per_nnz"], 12.0);
    const double bw = c["machine"]["bandwidth_Bps"].get<double>();
    EXPECT_GT(bw, 1e8);
    EXPECT_NEAR(c["ceiling_rate"].get<double>(), bw / 12.0, 1e-9 * bw);
    EXPECT_NEAR(j["time_per_iteration_s"].get<double>(),
                j["time_s"].get<double>() / std::max(1, j["iters"].get<int>()), 1e-12);
  }
}

}  // namespace
