// The single-process communicator, row shards, and the build's distributed features.
#include "otcal/communicator.hpp"

#include <algorithm>
#include <cstring>

#include "otcal/errors.hpp"

namespace otcal {

Shard shard_rows(index_t n, int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks)
    throw InvalidArgument("rank " + std::to_string(rank) + " of " + std::to_string(ranks) + " does not exist");
  const index_t R = kReductionGranule;
  const index_t granules = (n + R - 1) / R;
  const index_t base = granules / ranks, extra = granules % ranks;
  const index_t first = rank * base + std::min<index_t>(rank, extra);
  const index_t count = base + (rank < extra ? 1 : 0);
  return {std::min(n, first * R), std::min(n, (first + count) * R)};
}

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string description() const override { return "single process"; }
  void all_gather_in_place(void*, DType, const std::vector<index_t>&, BufferPlace, StreamHandle) override {}
  std::vector<std::uint64_t> all_gather_word(std::uint64_t word) override { return {word}; }
  void all_sum(std::uint64_t*, std::size_t) override {}
  double all_min(double v) override { return v; }
  double all_max(double v) override { return v; }
  void broadcast(std::string&, int) override {}
  void send(const void*, std::size_t, int) override {
    throw InvalidArgument("send: a single process has no other rank");
  }
  void receive(void*, std::size_t, int) override {
    throw InvalidArgument("receive: a single process has no other rank");
  }
  void barrier() override {}
};

}  // namespace

std::shared_ptr<Communicator> single_process() {
  static const std::shared_ptr<Communicator> one = std::make_shared<SingleProcess>();
  return one;
}

bool built_with_mpi() {
#ifdef OTCAL_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#ifdef OTCAL_WITH_NCCL
  return true;
#else
  return false;
#endif
}

}  // namespace otcal
