#pragma once
// The MPI communicator (builds with OTCAL_MPI; include this only where <mpi.h> is available).
// The caller owns MPI: it calls MPI_Init before and MPI_Finalize after every otcal object on the
// communicator is gone.
#include <mpi.h>

#include <memory>

#include "otcal/communicator.hpp"

namespace otcal {

// A communicator over a duplicate of `comm`, so otcal's messages never mix with the caller's.
// Collectives on device buffers use NCCL after Context::distributed binds a CUDA device, where the
// build has NCCL; otherwise they stage through host memory.
std::shared_ptr<Communicator> mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace otcal
