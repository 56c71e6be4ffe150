#pragma once
// Helpers of the mpi_* tests: the world communicator, a seed every rank shares, and comparisons
// of whole results across ranks.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "otcal/communicator.hpp"
#include "otcal/context.hpp"

namespace testsupport {

// otcal's communicator over MPI_COMM_WORLD (made on first use, released before MPI_Finalize).
std::shared_ptr<otcal::Communicator> world();
void release_world();

// One-thread CPU contexts with warnings silenced (capped test runs warn by design): a rank of the
// world, and this process alone (the reference every rank computes for itself).
otcal::Context distributed_cpu(std::size_t budget = 0);
otcal::Context one_process_cpu(std::size_t budget = 0);

// fresh_seed() drawn on rank 0 (OTCAL_TEST_SEED honoured) and broadcast: every rank draws the
// same inputs.
std::uint64_t shared_seed();

// True when `text` is the same on every rank.
bool same_on_every_rank(const std::string& text);

// Bitwise equality of two float64 vectors (NaN payloads and signed zeros included).
inline bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

// Prints failed assertions of a rank other than 0, prefixed with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override;

 private:
  int rank_;
};

}  // namespace testsupport
