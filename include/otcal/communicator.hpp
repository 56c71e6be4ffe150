#pragma once
// Several processes (docs/distributed.md): the few collectives the host loops combine with, behind
// one small interface, so the loops stay written once and the library compiles without MPI. One
// process per device; every rank holds both clouds and owns a contiguous, granule-aligned range
// of rows of each. Every combination is deterministic in rank order and identical on every rank.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "otcal/memory.hpp"
#include "otcal/types.hpp"

namespace otcal {

// Rows [begin, end) of an axis owned by one rank.
struct Shard {
  index_t begin = 0, end = 0;
  index_t size() const { return end - begin; }
};

// The rows of n owned by `rank` of `ranks`: whole reduction granules (kReductionGranule rows), the
// first ranks taking one more granule when they do not divide evenly, the last rank the ragged
// tail. Granule-aligned shards are what make every distributed sum the single-process sum bit for
// bit: a rank's granule partials are exactly the single-process ones (docs/distributed.md §3).
Shard shard_rows(index_t n, int rank, int ranks);

// Where a buffer handed to a collective lives.
enum class BufferPlace { host, device };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The rank among the processes of this node (a process picks its GPU from it).
  virtual int local_rank() const = 0;
  // "single process", "MPI (4 ranks)", "MPI + NCCL (4 ranks)".
  virtual std::string description() const = 0;

  // buf holds `counts[r]` values of dtype for every rank r, back to back in rank order; on entry
  // this rank's piece is filled in, on return every piece is. Device buffers go through NCCL on
  // `stream` when the communicator has it, else through host staging.
  virtual void all_gather_in_place(void* buf, DType dtype, const std::vector<index_t>& counts, BufferPlace place,
                                   StreamHandle stream) = 0;
  // One word from every rank, in rank order.
  virtual std::vector<std::uint64_t> all_gather_word(std::uint64_t word) = 0;
  // Element-wise sums of integer counters: exact, so their order does not matter.
  virtual void all_sum(std::uint64_t* values, std::size_t count) = 0;
  virtual double all_min(double value) = 0;
  virtual double all_max(double value) = 0;
  // Rank `root`'s bytes on every rank.
  virtual void broadcast(std::string& bytes, int root) = 0;
  // Host bytes from one rank to another, in order per (source, destination).
  virtual void send(const void* data, std::size_t bytes, int destination) = 0;
  virtual void receive(void* data, std::size_t bytes, int source) = 0;
  virtual void barrier() = 0;
  // Called by a CUDA context with its device before any device collective (sets up NCCL where
  // the build has it). The default does nothing.
  virtual void bind_device(int /*device*/) {}
};

// The communicator of a context without one: rank 0 of 1; every collective is the identity.
std::shared_ptr<Communicator> single_process();

// Whether this build has MPI and NCCL (`otcal info`).
bool built_with_mpi();
bool built_with_nccl();

}  // namespace otcal
