#include "cli/processes.hpp"

#include <cstdlib>
#include <string>

#include "otcal/errors.hpp"
#ifdef OTCAL_WITH_MPI
#include "otcal/mpi.hpp"
#endif

namespace otcal::cli {
namespace {

std::shared_ptr<Communicator>& slot() {
  static std::shared_ptr<Communicator> c;
  return c;
}

// The size an MPI launcher announced (OpenMPI, MPICH/Hydra and Slurm PMI, PMIx), 0 when none did.
int launched_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"})
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') return std::atoi(v);
  if (std::getenv("PMIX_RANK") != nullptr) return 1;
  return 0;
}

}  // namespace

ProcessGroup::ProcessGroup(int* argc, char*** argv) {
  const int size = launched_size();
#ifdef OTCAL_WITH_MPI
  if (size > 0) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    mpi_ = true;
    slot() = mpi_communicator(MPI_COMM_WORLD);
  }
#else
  (void)argc;
  (void)argv;
  if (size > 1)
    throw InvalidArgument("this otcal was built without MPI, but a launcher started " + std::to_string(size) +
                          " ranks: each would solve the whole problem; rebuild with -DOTCAL_MPI=ON "
                          "(apt-get install libopenmpi-dev) or run one process");
#endif
}

ProcessGroup::~ProcessGroup() {
  slot().reset();
#ifdef OTCAL_WITH_MPI
  if (mpi_) MPI_Finalize();
#endif
}

std::shared_ptr<Communicator> processes() { return slot() ? slot() : single_process(); }

bool writes_outputs() { return processes()->rank() == 0; }

nlohmann::json ranks_json(std::size_t my_peak_bytes) {
  Communicator& c = *processes();
  const std::vector<std::uint64_t> peaks = c.all_gather_word(my_peak_bytes);
  return {{"ranks", c.size()}, {"communicator", c.description()}, {"peak_bytes_per_rank", peaks}};
}

}  // namespace otcal::cli
