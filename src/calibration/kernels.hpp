#pragma once
// The per-record passes of calibration, isolated so a CUDA backend can replace them one by one:
//   RowAccumulator  S = A w, reduced over records in fixed granules (batch-invariant, bitwise)
//   transpose_apply (Aᵀ c)_i, per record (no cross-record reduction)
//   accumulate_newton_matrix  T = A diag(v) Aᵀ over the active rows (one triangle), O(Σ_i nnz_i²/2)
#include <algorithm>
#include <cstdint>
#include <vector>

#include "calibration/calib_backend.hpp"
#include "core/collective.hpp"
#include "core/workspace.hpp"
#include "otcal/csr.hpp"
#include "otcal/types.hpp"

namespace otcal::calib {

// A host CSR whose arrays live either in a CsrMatrix (the input A) or in the operation's
// workspace (Aᵀ): the passes read both through the same view, so the arithmetic is one code.
struct CsrView {
  index_t rows = 0, cols = 0;
  bool wide = false;
  const std::int64_t* indptr = nullptr;
  const std::int32_t* indices32 = nullptr;
  const std::int64_t* indices64 = nullptr;
  const double* values = nullptr;

  bool wide_indices() const { return wide; }
  std::int64_t index(std::int64_t p) const { return wide ? indices64[p] : indices32[p]; }
};

inline CsrView csr_view(const CsrMatrix& M) {
  return {M.rows, M.cols, M.wide_indices(), M.indptr.data(), M.indices32.data(), M.indices64.data(), M.values.data()};
}

// Aᵀ (n x k) into its declared workspace buffers, by the counting sort of otcal::transpose: the
// same entries in the same order (constraint rows ascending within a record), so every pass over
// it is bitwise what it was over the CsrMatrix. indptr doubles as the scatter cursor (no scratch).
inline CsrView transpose_into(const CsrMatrix& A, const detail::Workspace& ws, const CsrIds& t) {
  std::int64_t* indptr = ws.get(t.indptr);
  std::int32_t* idx32 = ws.get(t.indices32);
  std::int64_t* idx64 = ws.get(t.indices64);
  double* values = ws.get(t.values);
  const index_t n = A.cols;
  const std::int64_t nnz = A.nnz();
  std::fill(indptr, indptr + n + 1, std::int64_t{0});
  for (std::int64_t p = 0; p < nnz; ++p) ++indptr[A.index(p) + 1];
  for (index_t i = 0; i < n; ++i) indptr[i + 1] += indptr[i];
  for (index_t r = 0; r < A.rows; ++r)
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t q = indptr[A.index(p)]++;
      if (t.wide)
        idx64[q] = r;
      else
        idx32[q] = static_cast<std::int32_t>(r);
      values[q] = A.values[p];
    }
  for (index_t i = n; i > 0; --i) indptr[i] = indptr[i - 1];  // cursors ended one record ahead
  indptr[0] = 0;
  return {t.rows, t.cols, t.wide, indptr, idx32, idx64, values};
}

// The four per-row arrays of a RowAccumulator, declared in the operation's list; a distributed
// accumulator (slots = true) also keeps every granule partial of every row (the granule slots).
struct AccumulatorIds {
  BufferId<std::int64_t> cursor, granule;
  BufferId<double> sum, partial;
  BufferId<std::int64_t> slot_offsets, slot_cursor;
  BufferId<double> slots;
  bool keeps_slots = false;
};

// Per row, how many granules of kReductionGranule records hold one of its entries: the granule
// partials a distributed accumulator keeps (at most nnz, at most k x granules). O(nnz).
inline std::int64_t granule_slot_count(const CsrMatrix& A) {
  std::int64_t total = 0;
  for (index_t r = 0; r < A.rows; ++r) {
    std::int64_t last = -1;
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t g = A.index(p) / kReductionGranule;
      total += g != last;
      last = g;
    }
  }
  return total;
}

inline AccumulatorIds declare_accumulator(WorkspaceDecl& d, index_t rows, const CsrMatrix* slots_of = nullptr) {
  const auto k = static_cast<std::size_t>(rows);
  AccumulatorIds a;
  a.cursor = d.add<std::int64_t>("S.cursor", k);
  a.granule = d.add<std::int64_t>("S.granule", k);
  a.sum = d.add<double>("S.sum", k);
  a.partial = d.add<double>("S.partial", k);
  if (slots_of) {  // distributed only: one-process declarations stay as they were
    a.keeps_slots = true;
    a.slot_offsets = d.add<std::int64_t>("S.slot_offsets", k + 1);
    a.slot_cursor = d.add<std::int64_t>("S.slot_cursor", k);
    a.slots = d.add<double>("S.granule_partials", static_cast<std::size_t>(granule_slot_count(*slots_of)));
  }
  return a;
}

// Below this many records per batch the passes run on one thread (no result depends on it).
inline constexpr index_t kParallelMinRecords = 4096;

// S_r = Σ_i A_ri w_i for every row, fed by record batches [b0, b1) in increasing order. Each row
// keeps a cursor into its (ascending) record indices, a partial sum of the current granule of
// kReductionGranule records and the ordered sum of completed granules: the summation order is
// fixed by the granules alone, so S is bitwise identical for every batch size and thread count.
//
// Distributed (ids.keeps_slots): the rank's records are a granule-aligned slice of the data, so
// its granule partials are exactly the one-process ones; instead of summing them it keeps them
// (the slots) and finish() folds every rank's slots in rank order (detail::ordered_fold), which is
// the one-process left fold 0 + p_0 + p_1 + ... bit for bit.
class RowAccumulator {
 public:
  RowAccumulator(const CsrView& A, const detail::Workspace& ws, const AccumulatorIds& ids)
      : A_(A), cursor_(ws.get(ids.cursor)), granule_(ws.get(ids.granule)), sum_(ws.get(ids.sum)),
        partial_(ws.get(ids.partial)), keeps_slots_(ids.keeps_slots) {
    if (keeps_slots_) {
      slot_offsets_ = ws.get(ids.slot_offsets);
      slot_cursor_ = ws.get(ids.slot_cursor);
      slots_ = ws.get(ids.slots);
      slot_offsets_[0] = 0;
      for (index_t r = 0; r < A_.rows; ++r) {
        std::int64_t count = 0, last = -1;
        for (std::int64_t p = A_.indptr[r]; p < A_.indptr[r + 1]; ++p) {
          const std::int64_t g = A_.index(p) / kReductionGranule;
          count += g != last;
          last = g;
        }
        slot_offsets_[r + 1] = slot_offsets_[r] + count;
      }
    }
    reset();
  }

  void reset() {
    for (index_t r = 0; r < A_.rows; ++r) {
      cursor_[r] = A_.indptr[r];
      // with slots, -1 = no granule yet: a row's first slot is its first non-empty granule
      granule_[r] = keeps_slots_ ? -1 : 0;
      sum_[r] = 0;
      partial_[r] = 0;
      if (keeps_slots_) slot_cursor_[r] = slot_offsets_[r];
    }
  }

  // w_batch[i - b0] is the weight of record i.
  void add_batch(index_t b0, index_t b1, const double* w_batch) {
    const bool wide = A_.wide_indices();
    // small batches run serially: a parallel region per tiny batch costs more than it saves
#pragma omp parallel for schedule(dynamic, 16) if (b1 - b0 >= kParallelMinRecords)
    for (index_t r = 0; r < A_.rows; ++r) {
      std::int64_t p = cursor_[r];
      const std::int64_t end = A_.indptr[r + 1];
      std::int64_t g = granule_[r];
      double s = sum_[r], part = partial_[r];
      for (; p < end; ++p) {
        const std::int64_t i = wide ? A_.indices64[p] : A_.indices32[p];
        if (i >= b1) break;
        const std::int64_t gi = i / kReductionGranule;
        if (gi != g) {
          if (!keeps_slots_)
            s += part;
          else if (g >= 0)
            slots_[slot_cursor_[r]++] = part;
          part = 0;
          g = gi;
        }
        part += A_.values[p] * w_batch[i - b0];
      }
      cursor_[r] = p;
      granule_[r] = g;
      sum_[r] = s;
      partial_[r] = part;
    }
  }

  // One process: S = the ordered sum of the granules. Distributed (collective: every rank calls
  // it at the same point): every rank's slots folded in rank order, the same S on every rank.
  void finish(double* S, Communicator* comm = nullptr) {
    if (!keeps_slots_) {
      for (index_t r = 0; r < A_.rows; ++r) S[r] = sum_[r] + partial_[r];
      return;
    }
    for (index_t r = 0; r < A_.rows; ++r)
      if (granule_[r] >= 0) slots_[slot_cursor_[r]++] = partial_[r];  // the last granule
    std::vector<double> running(static_cast<std::size_t>(A_.rows), 0.0);
    detail::ordered_fold(*comm, running, [&](std::vector<double>& acc) {
      for (index_t r = 0; r < A_.rows; ++r)
        for (std::int64_t q = slot_offsets_[r]; q < slot_cursor_[r]; ++q) acc[static_cast<std::size_t>(r)] += slots_[q];
    });
    std::copy(running.begin(), running.end(), S);
  }

 private:
  CsrView A_;
  std::int64_t *cursor_, *granule_;
  double *sum_, *partial_;
  std::int64_t *slot_offsets_ = nullptr, *slot_cursor_ = nullptr;
  double* slots_ = nullptr;
  // Not `slots_ != nullptr`: a rank that owns no records keeps no slots (a null buffer) but must
  // still join the fold, or the other ranks wait for it forever.
  bool keeps_slots_ = false;
};

// out[i - b0] = Σ_j At_ij c_j for records i in [b0, b1); At is the n x k transpose.
inline void transpose_apply(const CsrView& At, const double* c, index_t b0, index_t b1, double* out) {
  const bool wide = At.wide_indices();
#pragma omp parallel for schedule(static) if (b1 - b0 >= kParallelMinRecords)
  for (index_t i = b0; i < b1; ++i) {
    double s = 0;
    for (std::int64_t p = At.indptr[i]; p < At.indptr[i + 1]; ++p)
      s += At.values[p] * c[wide ? At.indices64[p] : At.indices32[p]];
    out[i - b0] = s;
  }
}

// Records per chunk of the Newton-matrix pass: the chunk's Aᵀ slices (~12 bytes per entry, ~50
// entries per record) stay in the last-level cache while every row of T visits its records there.
inline constexpr index_t kNewtonChunkRecords = 32768;

// Where each entry of A sits within its record's Aᵀ slice (slot[p] = q - Aᵀ.indptr[i] for the
// entry p of row r and record i): the Newton-matrix pass then starts a record's tail there instead
// of searching for it. A position within a slice is below k, so uint16 covers every k <= 65536;
// larger systems declare no slots and search. O(nnz), one sweep of Aᵀ with k cursors into A.
inline bool newton_slots_fit(index_t rows) { return rows <= 65536; }

inline void fill_newton_slots(const CsrView& A, const CsrView& At, std::uint16_t* slot) {
  std::vector<std::int64_t> cursor(A.indptr, A.indptr + A.rows);
  for (index_t i = 0; i < At.rows; ++i)
    for (std::int64_t q = At.indptr[i]; q < At.indptr[i + 1]; ++q)
      slot[cursor[static_cast<std::size_t>(At.index(q))]++] = static_cast<std::uint16_t>(q - At.indptr[i]);
}

// Records ahead of the one being added whose Aᵀ slice is prefetched (and twice as far ahead, the
// slice's indptr entry, which locating the slice needs first).
inline constexpr std::int64_t kNewtonPrefetchRecords = 4;

// T[a][b] = Σ_i A_{row(a), i} v_i A_{row(b), i} for b >= a over active rows (active_of[r] = a or
// -1), row-major ka x ka: the row-major upper triangle, which is the column-major lower triangle
// that the Newton solve reads (newton_solve.hpp); the other triangle is left unwritten. Half the
// O(Σ_i nnz_i²) work of the full matrix: a record's entries in Aᵀ are in ascending row order, so
// those with b >= a start where row(a) sits: slot[p] (fill_newton_slots) or, without slots, a
// binary search over the record's ~nnz_i entries.
//
// Memory, not arithmetic, bounds this pass: a record's Aᵀ slice is read once per row it belongs to
// (nnz_i times), and a row's records are spread over all n, so row by row every read is a miss.
// Records therefore go in chunks of kNewtonChunkRecords, ascending: within a chunk every row of T
// takes that chunk's records (a per-row cursor into A's row), so the slices are read from cache
// and T (half of ka² doubles) streams once per chunk. Even from cache each slice is a fresh,
// dependent load (A's row gives the record, its indptr entry the slice), so the row's upcoming
// records are known in advance and their slices are prefetched kNewtonPrefetchRecords ahead:
// without that the pass waits on the cache at every record (~1.6x slower). Rows of T are independent
// and each is written by one thread (dynamic scheduling within a chunk); each entry still sums its
// records in ascending order, one by one, so T is bitwise the same for every thread count and chunk
// size (and each entry is what the row-by-row pass computed for it). `cursor`: ka scratch values.
inline void accumulate_newton_matrix(const CsrView& A, const CsrView& At, const std::vector<index_t>& active_rows,
                                     const std::vector<index_t>& active_of, const double* v, double* T,
                                     const std::uint16_t* slot = nullptr) {
  const index_t ka = static_cast<index_t>(active_rows.size());
  const index_t n = A.cols;
  const bool wide = A.wide_indices();
  const bool wide_t = At.wide_indices();
  std::vector<std::int64_t> cursor(static_cast<std::size_t>(ka));
  const bool all_active = ka == At.cols;  // active_of is the identity
  for (index_t a = 0; a < ka; ++a) {
    std::fill(T + a * ka + a, T + (a + 1) * ka, 0.0);
    cursor[static_cast<std::size_t>(a)] = A.indptr[active_rows[static_cast<std::size_t>(a)]];
  }
  constexpr std::int64_t ahead = kNewtonPrefetchRecords;
  for (index_t c0 = 0; c0 < n; c0 += kNewtonChunkRecords) {
    const index_t c1 = std::min(n, c0 + kNewtonChunkRecords);
#pragma omp parallel for schedule(dynamic, 8)
    for (index_t a = 0; a < ka; ++a) {
      double* Trow = T + a * ka;
      const index_t r = active_rows[static_cast<std::size_t>(a)];
      std::int64_t p = cursor[static_cast<std::size_t>(a)];
      const std::int64_t end = A.indptr[r + 1];
      for (; p < end; ++p) {
        const std::int64_t i = wide ? A.indices64[p] : A.indices32[p];
        if (i >= c1) break;
        // Prefetches only (no value depends on them); past the chunk they warm the next one.
        if (p + 2 * ahead < end) __builtin_prefetch(At.indptr + A.index(p + 2 * ahead));
        if (p + ahead < end) {
          const std::int64_t j = A.index(p + ahead);
          const std::int64_t qa = At.indptr[j] + (slot ? slot[p + ahead] : 0);
          __builtin_prefetch(wide_t ? static_cast<const void*>(At.indices64 + qa) : At.indices32 + qa);
          for (int line = 0; line < 6; ++line) __builtin_prefetch(At.values + qa + 8 * line);
          __builtin_prefetch(v + j);
        }
        const double wi = A.values[p] * v[i];
        if (wi == 0) continue;
        const std::int64_t q0 = At.indptr[i], q1 = At.indptr[i + 1];
        std::int64_t q;
        if (slot)
          q = q0 + slot[p];
        else if (wide_t)
          q = std::lower_bound(At.indices64 + q0, At.indices64 + q1, std::int64_t{r}) - At.indices64;
        else
          q = std::lower_bound(At.indices32 + q0, At.indices32 + q1, static_cast<std::int32_t>(r)) - At.indices32;
        if (all_active && !wide_t) {  // the common case: b is the row index itself (no lookup)
          for (; q < q1; ++q) Trow[At.indices32[q]] += wi * At.values[q];
          continue;
        }
        for (; q < q1; ++q) {
          const index_t b = active_of[static_cast<std::size_t>(wide_t ? At.indices64[q] : At.indices32[q])];
          if (b >= 0) Trow[b] += wi * At.values[q];
        }
      }
      cursor[static_cast<std::size_t>(a)] = p;
    }
  }
}

}  // namespace otcal::calib
