#pragma once
// The processes the tool runs as (docs/distributed.md §6). Launched by mpirun or srun in a build
// with MPI, the tool initialises MPI for its lifetime and every rank runs the command on its
// shard; rank 0 alone writes outputs and prints progress and warnings; an error on any rank is
// raised by every rank, so all of them exit non-zero with the same message.
#include <memory>

#include <nlohmann/json.hpp>

#include "otcal/communicator.hpp"

namespace otcal::cli {

// Lives in main(): MPI_Init when an MPI launcher started this process, MPI_Finalize at the end.
// Throws InvalidArgument when a launcher started several ranks of a build without MPI (each
// would solve the whole problem and race for --out).
class ProcessGroup {
 public:
  ProcessGroup(int* argc, char*** argv);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

 private:
  bool mpi_ = false;
};

// The tool's communicator: MPI_COMM_WORLD's under a launcher, else single_process().
std::shared_ptr<Communicator> processes();
// Rank 0: the one that writes --out, result.json and the progress lines.
bool writes_outputs();

// {"ranks", "communicator", "peak_bytes_per_rank"} for result.json. Collective: every rank calls it.
nlohmann::json ranks_json(std::size_t my_peak_bytes);

}  // namespace otcal::cli
