#include "support/mpi_support.hpp"

#include <mpi.h>

#include <cstdio>

#include "otcal/mpi.hpp"
#include "support/process.hpp"

namespace testsupport {
namespace {
std::shared_ptr<otcal::Communicator>& world_slot() {
  static std::shared_ptr<otcal::Communicator> w;
  return w;
}
}  // namespace

std::shared_ptr<otcal::Communicator> world() {
  auto& w = world_slot();
  if (!w) w = otcal::mpi_communicator(MPI_COMM_WORLD);
  return w;
}

void release_world() { world_slot().reset(); }

namespace {
otcal::ContextOptions test_options(std::size_t budget) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.threads = 1;
  o.on_warning = [](const std::string&) {};
  return o;
}
}  // namespace

otcal::Context distributed_cpu(std::size_t budget) {
  return otcal::Context::distributed(world(), "cpu", test_options(budget));
}

otcal::Context one_process_cpu(std::size_t budget) { return otcal::Context::cpu(test_options(budget)); }

std::uint64_t shared_seed() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::uint64_t seed = rank == 0 ? fresh_seed() : 0;
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return seed;
}

bool same_on_every_rank(const std::string& text) {
  std::string root = text;
  world()->broadcast(root, 0);
  int same = root == text ? 1 : 0, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

void FailurePrinter::OnTestPartResult(const ::testing::TestPartResult& r) {
  if (!r.failed()) return;
  std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
               r.summary());
}

}  // namespace testsupport
