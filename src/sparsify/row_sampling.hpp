#pragma once
// Rows for the sampled percentile (docs/sparsify.md §4.2): the k rows with the smallest
// h_i = Philox(seed, i) (ties by index), sorted ascending. A uniform k-subset that is a function
// of (seed, n, k) only, so it never depends on batch size or device count.
#include <algorithm>
#include <cstdint>
#include <utility>

#include "otcal/detail/philox.hpp"
#include "otcal/types.hpp"

namespace otcal::detail {

inline std::uint64_t sparsify_row_hash(std::uint64_t seed, index_t i) {
  const Philox4x32 r = philox_draw(seed, static_cast<std::uint64_t>(i), RandomPurpose::sparsify_rows, 0);
  return (static_cast<std::uint64_t>(r.v[0]) << 32) | r.v[1];
}

// `heap` is workspace of k (hash, index) pairs; on return out[0 .. k) holds the rows ascending.
inline void sample_rows(std::uint64_t seed, index_t n, index_t k, std::pair<std::uint64_t, index_t>* heap,
                        index_t* out) {
  if (k <= 0) return;
  // A max-heap of the k smallest (hash, index) pairs seen so far: O(n log k) time, O(k) memory.
  index_t size = 0;
  for (index_t i = 0; i < n; ++i) {
    const std::pair<std::uint64_t, index_t> e{sparsify_row_hash(seed, i), i};
    if (size < k) {
      heap[size++] = e;
      std::push_heap(heap, heap + size);
    } else if (e < heap[0]) {
      std::pop_heap(heap, heap + size);
      heap[size - 1] = e;
      std::push_heap(heap, heap + size);
    }
  }
  for (index_t r = 0; r < size; ++r) out[r] = heap[r].second;
  std::sort(out, out + size);
}

}  // namespace otcal::detail
