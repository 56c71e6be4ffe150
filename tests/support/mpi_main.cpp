// GoogleTest main of the mpi_* binaries, run by ctest under mpirun with 1 to 4 ranks: MPI is
// initialised around the tests, and every rank exits with the worst result of any rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include "support/mpi_support.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    ::testing::InitGoogleTest(&argc, argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    // One report (rank 0's); other ranks print only their failures.
    if (rank != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new testsupport::FailurePrinter(rank));
    }
    rc = RUN_ALL_TESTS();
    testsupport::release_world();
  }
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
