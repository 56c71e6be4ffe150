#pragma once
// Context: where operations run (CPU via OpenMP, or one CUDA device), with which memory
// resources, streams and budget. Passed to every operation; cheap to copy (shared handle).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "otcal/communicator.hpp"
#include "otcal/memory.hpp"

namespace otcal {

enum class DeviceKind { cpu, cuda };

struct ContextOptions {
  std::size_t memory_budget = 0;      // bytes; 0 = default (a quarter of the memory, capped by free)
  int threads = 0;                    // CPU backend threads for this context's operations; 0 = OpenMP's
                                      // default. The process-wide OpenMP setting is left alone.
  StreamHandle user_stream = nullptr; // CUDA: work is ordered after, and before, this stream
  // Receives every warning; the default prints "otcal: warning: ..." to stderr.
  std::function<void(const std::string&)> on_warning;
  std::size_t pinned_budget = std::size_t{512} << 20;  // docs/host-layer.md §4
  // Several processes (docs/distributed.md): the ranks this context's operations are sharded over.
  // Null: one process. Context::distributed sets it and picks the device.
  std::shared_ptr<Communicator> communicator;
};

struct DeviceInfo {
  int id = -1;
  std::string name;
  std::size_t total_bytes = 0;
  std::size_t free_bytes = 0;
  int compute_major = 0, compute_minor = 0;
};

// What the build and the machine offer (`otcal info`).
struct SystemInfo {
  bool built_with_cuda = false;
  std::string cuda_runtime_version;   // empty without CUDA
  std::string cuda_status;            // "ok" or why no device is usable
  std::vector<DeviceInfo> devices;
  int cpu_threads = 0;
  std::size_t host_memory_bytes = 0;
};
SystemInfo system_info();

class Context {
 public:
  static Context cpu(ContextOptions options = {});
  static Context cuda(int device = 0, ContextOptions options = {});
  // A CUDA device when one works, else the CPU; selection_note() says which and why.
  static Context automatic(ContextOptions options = {});
  // "auto", "cpu", "cuda" or "cuda:N".
  static Context from_string(const std::string& device, ContextOptions options = {});
  // One rank of a distributed run: `device` as in from_string, where "cuda" and "auto" pick the
  // GPU of this node's local rank (local_rank modulo the visible devices); a CUDA context binds
  // the communicator to its device (NCCL where the build has it).
  static Context distributed(std::shared_ptr<Communicator> communicator, const std::string& device = "auto",
                             ContextOptions options = {});

  DeviceKind kind() const;
  int device_id() const;            // -1 on the CPU
  std::string device_name() const;  // e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100 80GB HBM3"
  const std::string& selection_note() const;
  int threads() const;

  std::size_t memory_budget() const;
  MemoryResource& workspace() const;        // budgeted: Limiting(Statistics(base))
  MemoryResource& output() const;           // defaults to workspace()
  void set_output_resource(MemoryResource* mr);  // caller-owned; not budgeted, separately counted
  StatisticsAdaptor& statistics() const;    // the budgeted stack's counters
  LimitingAdaptor& limiter() const;
  MemoryResource& pinned_host() const;

  StreamHandle compute_stream() const;  // null on the CPU
  StreamHandle copy_stream() const;
  StreamHandle user_stream() const;
  // CUDA: make the compute stream wait on the user stream (entry) / the user stream on ours (exit).
  void enter_user_stream() const;
  void exit_user_stream() const;
  void synchronize() const;

  void warn(const std::string& message) const;

  Communicator& communicator() const;  // single_process() when none was given
  bool distributed() const;            // more than one rank

  // Point clouds uploaded to this context's device so far (a resident problem uploads each once).
  std::uint64_t cloud_uploads() const;

  struct Impl;
  explicit Context(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace otcal
