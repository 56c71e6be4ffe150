#pragma once
// Calibration sharded over ranks (docs/calibration.md §8). Each rank holds the records of a
// consecutive, granule-aligned slice of the data (its ConstraintSystem is k x n_local); targets and
// names are the same everywhere. What the loops need from the communicator is collected here:
// where a rank's records lie, the all-reduced row supports, and sums over records in exactly the
// one-process order (the rank-order chain of detail::ordered_fold).
#include <cstdint>
#include <string>
#include <vector>

#include "core/collective.hpp"
#include "otcal/communicator.hpp"
#include "otcal/csr.hpp"
#include "otcal/errors.hpp"

namespace otcal::calib {

// This rank's records are [offset, offset + local) of `total` records in data order.
struct RecordLayout {
  index_t offset = 0, local = 0, total = 0;
  bool distributed = false;
};

// Collective (every rank, at the same point, before anything that may throw on one rank only):
// every rank's record count in rank order. Ranks hold consecutive slices in rank order; each
// non-empty slice must start on a granule (a multiple of kReductionGranule records, as
// shard_rows gives), otherwise a rank's granule partials would not be the one-process ones. Every
// rank sees the same counts, so every rank throws the same InvalidArgument.
inline RecordLayout record_layout(Communicator& comm, index_t n_local, const std::string& operation) {
  RecordLayout l;
  l.local = l.total = n_local;
  if (comm.size() == 1) return l;
  l.distributed = true;
  const std::vector<std::uint64_t> counts = comm.all_gather_word(static_cast<std::uint64_t>(n_local));
  index_t begin = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] > 0 && begin % kReductionGranule != 0)
      throw InvalidArgument(operation + ": the records of rank " + std::to_string(r) + " start at record " +
                            std::to_string(begin) + ", not a multiple of " + std::to_string(kReductionGranule) +
                            "; give each rank the slice shard_rows(n, rank, ranks) of the data");
    if (static_cast<int>(r) == comm.rank()) l.offset = begin;
    begin += static_cast<index_t>(counts[r]);
  }
  l.total = begin;
  return l;
}

// Collective: throws the same InvalidArgument on every rank unless `value` is equal on all of them
// (the number of constraints, say: the collectives below exchange one value per row).
inline void require_same(Communicator& comm, std::uint64_t value, const std::string& what) {
  if (comm.size() == 1) return;
  const std::vector<std::uint64_t> all = comm.all_gather_word(value);
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw InvalidArgument(what + " differs between ranks (rank 0: " + std::to_string(all[0]) + ", rank " +
                            std::to_string(r) + ": " + std::to_string(all[r]) + ")");
}

// Collective: the number of stored entries of every row of A over all ranks (exact integer sums).
inline std::vector<std::int64_t> global_row_support(Communicator& comm, const CsrMatrix& A) {
  std::vector<std::uint64_t> count(static_cast<std::size_t>(A.rows));
  for (index_t r = 0; r < A.rows; ++r) count[static_cast<std::size_t>(r)] = static_cast<std::uint64_t>(A.indptr[r + 1] - A.indptr[r]);
  if (comm.size() > 1 && !count.empty()) comm.all_sum(count.data(), count.size());
  return {count.begin(), count.end()};
}

}  // namespace otcal::calib
