// Hardware ceilings of the benches: see ceilings.hpp and bench/README.md "Ceilings".
#include "ceilings.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include <time.h>

#include "cli/processes.hpp"

#ifdef OTCAL_BENCH_CUDA
#include <cuda_runtime.h>
#endif

namespace otcal::bench {

namespace {

// FP64 operations per entry of the current CUDA row LSE besides the d of the cost: the exponent,
// the software exp2(double) (libdevice: no MUFU) and the sum. SASS of the float64 sqeuclidean
// kernel at 5c8fd2c: 959 DFMA/DADD/DMUL, less 96 in the coordinate loop, over 32 entries = 27, of
// which about 3 are the per-chunk merges; bench/results/cuda-instructions-before-20261202.md.
constexpr double kGpuF64OpsPerEntry = 24;

// The CPU LSE kernel's ymm FP instructions per 32 entries at d <= 3 (objdump of
// src/cpu/row_engine.hpp, bench/results/cpu-kernel-20261202.md): exponent sweep + exp2 sum.
constexpr double kCpuOpsPer32F32 = 57 + 79;
constexpr double kCpuOpsPer32F64 = 116 + 202;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The core clock from a chain of dependent integer adds (one cycle each on every x86 core since
// the Pentium 4): 8 per iteration, the loop's own counter runs beside them. Timed in thread CPU
// seconds, so time the thread spends preempted on a busy machine does not count; best of 5 runs
// of 2e8 adds. 0 where the adds' latency is not known.
double measure_cpu_clock_hz() {
#if defined(__x86_64__)
  constexpr std::int64_t kIters = 25'000'000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::uint64_t x = static_cast<std::uint64_t>(rep);
    const double t0 = thread_cpu_seconds();
    for (std::int64_t i = 0; i < kIters; ++i) {
      asm volatile(
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
          : "+r"(x));
    }
    const double s = thread_cpu_seconds() - t0;
    if (s > 0) best = std::max(best, 8.0 * static_cast<double>(kIters) / s);
  }
  return best;
#else
  return 0;
#endif
}

// STREAM-like copy on `threads` threads: (read + written bytes) / s, best of 4 copies of 2 x 128
// MiB (far beyond the caches). Run in a forked child, so the buffers count neither in this
// process's peak resident set (host_peak_rss_bytes) nor in its allocator statistics.
double measure_cpu_copy_Bps(int threads) {
  int fd[2];
  if (pipe(fd) != 0) return 0;
  const pid_t pid = fork();
  if (pid < 0) {
    close(fd[0]);
    close(fd[1]);
    return 0;
  }
  if (pid == 0) {
    close(fd[0]);
    constexpr std::size_t kBytes = std::size_t{128} << 20;
    const int t = std::max(1, threads);
    std::unique_ptr<char[]> a(new char[kBytes]), b(new char[kBytes]);
    const std::size_t slice = kBytes / static_cast<std::size_t>(t);
    auto parallel = [&](auto&& body) {
      std::vector<std::thread> pool;
      for (int k = 0; k < t; ++k) pool.emplace_back([&, k] { body(static_cast<std::size_t>(k) * slice); });
      for (auto& th : pool) th.join();
    };
    parallel([&](std::size_t off) {  // first touch by the thread that copies the slice
      std::memset(a.get() + off, 1, slice);
      std::memset(b.get() + off, 0, slice);
    });
    double best = 0;
    for (int rep = 0; rep < 4; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      parallel([&](std::size_t off) { std::memcpy(b.get() + off, a.get() + off, slice); });
      const double s = seconds_since(t0);
      if (s > 0) best = std::max(best, 2.0 * static_cast<double>(slice) * t / s);
    }
    const ssize_t w = write(fd[1], &best, sizeof best);
    _exit(w == static_cast<ssize_t>(sizeof best) ? 0 : 1);
  }
  close(fd[1]);
  double best = 0;
  if (read(fd[0], &best, sizeof best) != static_cast<ssize_t>(sizeof best)) best = 0;
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return best;
}

#ifdef OTCAL_BENCH_CUDA
// cudaMemcpy device to device of 2 x min(512 MiB, free / 4), timed with events over 5 copies
// after one untimed: (read + written bytes) / s.
double measure_gpu_copy_Bps(int device) {
  if (cudaSetDevice(device) != cudaSuccess) return 0;
  std::size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  const std::size_t bytes = std::min<std::size_t>(std::size_t{512} << 20, free_b / 4);
  void *a = nullptr, *b = nullptr;
  double bps = 0;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess &&
      cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess) {
    cudaMemset(a, 1, bytes);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e0);
    for (int rep = 0; rep < 5; ++rep) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    float ms = 0;
    if (cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess && ms > 0)
      bps = 2.0 * 5.0 * static_cast<double>(bytes) / (1e-3 * ms);
  }
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  if (a) cudaFree(a);
  if (b) cudaFree(b);
  cudaGetLastError();  // a failed step above leaves nothing behind for the library to see
  return bps;
}
#endif

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(3);
  s << v;
  return s.str();
}

}  // namespace

nlohmann::json Machine::to_json() const {
  nlohmann::json j;
  j["kind"] = gpu ? "cuda" : "cpu";
  j["name"] = name;
  j[gpu ? "sms" : "cores"] = units;
  j["clock_hz"] = clock_hz;
  j["clock_basis"] = gpu ? "cudaDevAttrClockRate (peak SM clock)"
                         : "measured: a chain of dependent 64-bit integer adds (1 cycle each), thread CPU time, best of 5";
  j["bandwidth_Bps"] = bandwidth_Bps > 0 ? nlohmann::json(bandwidth_Bps) : nlohmann::json(nullptr);
  j["bandwidth_basis"] = bandwidth_basis;
  if (gpu) {
    j["bandwidth_attributes_Bps"] = bandwidth_attr_Bps;
  } else {
    j["vector_ops_per_clock"] = vector_ops_per_clock;
  }
  return j;
}

Machine measure_machine(const Context& ctx, bool bandwidth, double vector_ops_per_clock) {
  Machine m;
  m.name = ctx.device_name();
  const bool several_ranks = cli::processes()->size() > 1;
  if (ctx.kind() == DeviceKind::cuda) {
    m.gpu = true;
#ifdef OTCAL_BENCH_CUDA
    const int dev = ctx.device_id();
    int sms = 0, clock_khz = 0, mem_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev);
    cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
    cudaGetLastError();
    m.units = sms;
    m.clock_hz = 1e3 * clock_khz;
    m.bandwidth_attr_Bps = 2.0 * 1e3 * mem_khz * bus_bits / 8.0;  // double data rate
    if (bandwidth) {
      m.bandwidth_Bps = measure_gpu_copy_Bps(dev);
      m.bandwidth_basis = "measured: cudaMemcpy device to device, 2 x 512 MiB, (read + written bytes) / s";
    }
#endif
    return m;
  }
  m.units = std::max(1, ctx.threads());
  m.clock_hz = measure_cpu_clock_hz();
  m.vector_ops_per_clock = vector_ops_per_clock;
  if (bandwidth && !several_ranks) {
    m.bandwidth_Bps = measure_cpu_copy_Bps(m.units);
    m.bandwidth_basis = "measured: STREAM-like memcpy of 2 x 128 MiB on the bench's threads, (read + written bytes) / s";
  } else if (bandwidth) {
    m.bandwidth_basis = "not measured under mpirun";
  }
  return m;
}

std::vector<Ceiling> cost_entry_ceilings(const Machine& m, DType precision, index_t d, std::string* why) {
  const double dd = static_cast<double>(std::max<index_t>(1, d));
  const double per_clock = m.units * m.clock_hz;
  std::vector<Ceiling> c;
  if (m.gpu) {
    if (precision == DType::float32) {
      c.push_back({"exp2 unit", per_clock * kGpuExp2PerClockPerSm,
                   "16 ex2 / clk / SM (MUFU, sm_90) x SMs x clock; one ex2 per entry"});
      c.push_back({"FP32 pipe", per_clock * kGpuFp32FmaPerClockPerSm / dd,
                   "128 FMA / clk / SM x SMs x clock; d FMAs per entry (cost as b_j + a_i.y_j; no tensor cores)"});
      *why = dd * kGpuExp2PerClockPerSm < kGpuFp32FmaPerClockPerSm
                 ? "d = " + fmt(dd) + " FMAs per entry take less than its ex2 (16 ex2 vs 128 FMA / clk / SM)"
                 : "d = " + fmt(dd) + " FMAs per entry take longer than its ex2 (128 / d < 16 entries / clk / SM)";
    } else {
      *why = "no MUFU for float64: the exp2 is a polynomial on the FP64 pipe, with the cost's d FMAs";
      c.push_back({"FP64 pipe", per_clock * kGpuFp64FmaPerClockPerSm / (dd + kGpuF64OpsPerEntry),
                   "64 FMA / clk / SM x SMs x clock; d FMAs + " + fmt(kGpuF64OpsPerEntry) +
                       " FP64 ops (software exp2, exponent, sum) per entry"});
    }
    return c;
  }
  // CPU: the kernel's own instruction count per entry on the vector unit.
  const bool f32 = precision == DType::float32;
  const double lanes = f32 ? 8 : 4;
  const double per32 = f32 ? kCpuOpsPer32F32 : kCpuOpsPer32F64;
  // d > 3: the unfused exponent sweep; 2 ops (subtract, FMA) per vector and extra coordinate.
  const double ops = per32 / 32.0 + (d > 3 ? 2.0 * (dd - 3.0) / lanes : 0.0);
  *why = "the CPU kernel is compute bound: its vector FP instructions per entry (cost, exponent, exp2 polynomial, "
         "sum) on the FP ports";
  c.push_back({"CPU vector unit", m.vector_ops_per_clock > 0 ? per_clock * m.vector_ops_per_clock / ops : 0,
               fmt(m.vector_ops_per_clock) + " ymm FP instructions / clk / core x cores x measured clock; " +
                   fmt(ops) + " per entry (" + fmt(per32) + " per 32 at d <= 3" +
                   (d > 3 ? ", + 2 per vector per coordinate above 3" : "") + ")"});
  return c;
}

std::vector<Ceiling> csr_pass_ceilings(const Machine& m, double bytes_per_nnz, std::string* why) {
  *why = "a CSR pass does O(1) arithmetic per non-zero and streams " + fmt(bytes_per_nnz) +
         " bytes of it: memory bound";
  return {{"memory bandwidth", m.bandwidth_Bps > 0 ? m.bandwidth_Bps / bytes_per_nnz : 0,
           "copy bandwidth / " + fmt(bytes_per_nnz) + " bytes per non-zero (value + column index), one streaming pass"}};
}

std::vector<Ceiling> per_passes(std::vector<Ceiling> c, double passes, const std::string& why) {
  for (Ceiling& x : c) {
    x.rate /= passes;
    x.basis += "; / " + fmt(passes) + " " + why;
  }
  return c;
}

nlohmann::json ceiling_json(double achieved, const std::string& unit, const std::vector<Ceiling>& candidates,
                            const std::string& why, const Machine& m) {
  nlohmann::json j;
  j["achieved_rate"] = achieved;
  j["unit"] = unit;
  j["candidates"] = nlohmann::json::array();
  const Ceiling* bind = nullptr;
  for (const Ceiling& c : candidates) {
    j["candidates"].push_back({{"name", c.name}, {"rate", c.rate > 0 ? nlohmann::json(c.rate) : nlohmann::json(nullptr)},
                               {"basis", c.basis}});
    if (c.rate > 0 && (bind == nullptr || c.rate < bind->rate)) bind = &c;
  }
  j["binding"] = bind ? nlohmann::json(bind->name) : nlohmann::json(nullptr);
  j["ceiling_rate"] = bind ? nlohmann::json(bind->rate) : nlohmann::json(nullptr);
  j["fraction"] = bind ? nlohmann::json(achieved / bind->rate) : nlohmann::json(nullptr);
  j["why"] = bind ? why : "no ceiling known on this machine (clock or bandwidth not measured)";
  j["machine"] = m.to_json();
  return j;
}

std::string ceiling_text(const std::string& bench, const nlohmann::json& c) {
  std::ostringstream s;
  s << bench << ": " << fmt(c["achieved_rate"].get<double>()) << " " << c["unit"].get<std::string>();
  if (c["binding"].is_null()) {
    s << "; ceiling unknown: " << c["why"].get<std::string>();
  } else {
    s << " = " << fmt(100.0 * c["fraction"].get<double>()) << " % of the " << c["binding"].get<std::string>()
      << " ceiling " << fmt(c["ceiling_rate"].get<double>()) << " (" << c["why"].get<std::string>() << ")";
  }
  return s.str();
}

}  // namespace otcal::bench
