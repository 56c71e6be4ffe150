// `otcal info`: what this build and this machine offer (devices, CUDA, threads, memory).
#include <iostream>
#include <memory>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "otcal/context.hpp"
#include "otcal/memory.hpp"

namespace otcal::cli {
namespace {

struct InfoArgs {
  bool json = false;
};

nlohmann::json info_json(const SystemInfo& s) {
  nlohmann::json devices = nlohmann::json::array();
  for (const DeviceInfo& d : s.devices)
    devices.push_back({{"id", d.id},
                       {"name", d.name},
                       {"total_bytes", d.total_bytes},
                       {"free_bytes", d.free_bytes},
                       {"compute_capability", std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor)}});
  return {{"version", version()},
          {"built_with_cuda", s.built_with_cuda},
          {"cuda_runtime_version", s.built_with_cuda ? nlohmann::json(s.cuda_runtime_version) : nlohmann::json(nullptr)},
          {"cuda_status", s.cuda_status},
          {"devices", devices},
          {"built_with_mpi", built_with_mpi()},
          {"built_with_nccl", built_with_nccl()},
          {"ranks", processes()->size()},
          {"communicator", processes()->description()},
          {"openmp_threads", s.cpu_threads},
          {"host_memory_bytes", s.host_memory_bytes}};
}

int run_info(const InfoArgs& args) {
  const SystemInfo s = system_info();
  if (args.json) {
    std::cout << info_json(s).dump(2) << "\n";
    return 0;
  }
  std::cout << "otcal " << version() << "\n";
  std::cout << "CUDA backend:   " << (s.built_with_cuda ? "built" : "not built (CPU-only build)") << "\n";
  if (s.built_with_cuda) std::cout << "CUDA runtime:   " << s.cuda_runtime_version << "\n";
  if (!s.cuda_status.empty()) std::cout << "CUDA status:    " << s.cuda_status << "\n";
  std::cout << "CUDA devices:   " << s.devices.size() << "\n";
  for (const DeviceInfo& d : s.devices)
    std::cout << "  cuda:" << d.id << "  " << d.name << "  sm_" << d.compute_major << d.compute_minor << "  "
              << format_bytes(d.total_bytes) << " total, " << format_bytes(d.free_bytes) << " free\n";
  std::cout << "MPI:            " << (built_with_mpi() ? "built" : "not built") << " (this run: "
            << processes()->description() << ")\n";
  std::cout << "NCCL:           " << (built_with_nccl() ? "built (device collectives)" : "not built") << "\n";
  std::cout << "OpenMP threads: " << s.cpu_threads << "\n";
  std::cout << "Host memory:    " << format_bytes(s.host_memory_bytes) << "\n";
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* sub = app.add_subcommand("info", "Devices and build options");
  sub->add_flag("--json", args->json, "Print JSON instead of text");
  return [args] { return run_info(*args); };
}

const RegisterCommand reg(90, "info", setup);

}  // namespace
}  // namespace otcal::cli
