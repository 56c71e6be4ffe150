#pragma once
// The hardware ceilings a bench's achieved rate is measured against (bench/README.md "Ceilings").
// Each bench names its candidate ceilings (the exp2 unit, the FP32/FP64 pipe, memory bandwidth, the
// CPU's vector unit), all in the bench's own work unit per second; the smallest one binds, and the
// record carries the achieved rate, every candidate with its basis, the binding one and why, and
// the fraction reached. The machine's figures are read (GPU attributes) or measured (CPU clock,
// copy bandwidth) once per process, after the timed region, so they disturb neither the timing
// nor the memory figures of the record.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/types.hpp"

namespace otcal::bench {

// Per-SM throughputs of sm_90 (H100/H200), per clock, from the CUDA C++ Programming Guide,
// "Arithmetic Instructions" throughput table (compute capability 9.0): 16 ex2 (MUFU: exp2,
// rsqrt, ...), 128 FP32 FMA, 64 FP64 FMA results per clock per SM.
inline constexpr double kGpuExp2PerClockPerSm = 16;
inline constexpr double kGpuFp32FmaPerClockPerSm = 128;
inline constexpr double kGpuFp64FmaPerClockPerSm = 64;

// What the machine offers. GPU: attributes of the context's device, plus a measured
// device-to-device copy. CPU: the threads the bench ran with, a clock measured by a dependent-add
// loop, a STREAM-like copy.
struct Machine {
  bool gpu = false;
  std::string name;
  int units = 0;         // SMs (GPU) or cores = the bench's threads (CPU)
  double clock_hz = 0;   // SM clock (cudaDevAttrClockRate) or the measured core clock; 0 = unknown
  double bandwidth_Bps = 0;       // measured copy: (read + written bytes) / s; 0 = not measured
  std::string bandwidth_basis;
  double bandwidth_attr_Bps = 0;  // GPU: 2 x memory clock x bus width from the attributes
  double vector_ops_per_clock = 0;  // CPU: ymm FP instructions issued per clock per core
  nlohmann::json to_json() const;
};

// `bandwidth`: also measure the copy bandwidth (not needed by the OT benches' compute ceilings).
// `vector_ops_per_clock`: the CPU figure (--cpu-vector-ops); ignored on a GPU.
Machine measure_machine(const Context& ctx, bool bandwidth, double vector_ops_per_clock);

struct Ceiling {
  std::string name;   // "exp2 unit", "FP32 pipe", "memory bandwidth", "CPU vector unit", ...
  double rate = 0;    // work units per second; 0 = unknown (never binds)
  std::string basis;  // how the rate follows from the machine
};

// Row LSE / plan-entry passes (Sinkhorn, sparsify): cost entries per second of one pass over the
// n x m entries with the sqeuclidean-type cost (d FMAs per entry) and one exp2 per entry.
// `why` receives the reason the smallest of them binds.
std::vector<Ceiling> cost_entry_ceilings(const Machine& m, DType precision, index_t d, std::string* why);
// CSR passes (calibration): non-zeros per second of one streaming pass at `bytes_per_nnz`.
std::vector<Ceiling> csr_pass_ceilings(const Machine& m, double bytes_per_nnz, std::string* why);
// Every ceiling divided by `passes` (a run does that many passes per unit of work).
std::vector<Ceiling> per_passes(std::vector<Ceiling> c, double passes, const std::string& why);

// The record's "ceiling" object: achieved rate, candidates, the binding (smallest known) one, its
// rate and the fraction achieved / ceiling, and `why` it binds (the bench's explanation).
nlohmann::json ceiling_json(double achieved, const std::string& unit, const std::vector<Ceiling>& candidates,
                            const std::string& why, const Machine& m);
// One human-readable line of it, printed to stderr (stdout carries only the OTCAL_BENCH line).
std::string ceiling_text(const std::string& bench, const nlohmann::json& ceiling);

}  // namespace otcal::bench
