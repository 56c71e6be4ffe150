#pragma once
// The per-record passes of calibration, isolated so a CUDA backend can replace them one by one:
//   RowAccumulator  S = A w, reduced over records in fixed granules (batch-invariant, bitwise)
//   transpose_apply (Aᵀ c)_i, per record (no cross-record reduction)
//   accumulate_newton_matrix  T = A diag(v) Aᵀ over the active rows (one triangle), O(Σ_i nnz_i²/2)
//   tally_newton_margins      T's categorical-margin entries as weighted counts (MarginCategories)
#include <algorithm>
#include <cstdint>
#include <limits>
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
// binary search over the record's last min(nnz_i, k - r) entries.
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
//
// `rows_of_T` (optional): only these rows of T (ascending T indices) are computed, the others are
// left as they are (the margin tallies below fill them).
inline void accumulate_newton_matrix(const CsrView& A, const CsrView& At, const std::vector<index_t>& active_rows,
                                     const std::vector<index_t>& active_of, const double* v, double* T,
                                     const std::uint16_t* slot = nullptr,
                                     const std::vector<index_t>* rows_of_T = nullptr) {
  const index_t ka = static_cast<index_t>(active_rows.size());
  const index_t n = A.cols;
  const bool wide = A.wide_indices();
  const bool wide_t = At.wide_indices();
  std::vector<index_t> every;
  if (!rows_of_T) {
    every.resize(static_cast<std::size_t>(ka));
    for (index_t a = 0; a < ka; ++a) every[static_cast<std::size_t>(a)] = a;
    rows_of_T = &every;
  }
  const index_t rows = static_cast<index_t>(rows_of_T->size());
  std::vector<std::int64_t> cursor(static_cast<std::size_t>(rows));
  const bool all_active = ka == At.cols;  // active_of is the identity
  for (index_t j = 0; j < rows; ++j) {
    const index_t a = (*rows_of_T)[static_cast<std::size_t>(j)];
    std::fill(T + a * ka + a, T + (a + 1) * ka, 0.0);
    cursor[static_cast<std::size_t>(j)] = A.indptr[active_rows[static_cast<std::size_t>(a)]];
  }
  constexpr std::int64_t ahead = kNewtonPrefetchRecords;
  for (index_t c0 = 0; c0 < n; c0 += kNewtonChunkRecords) {
    const index_t c1 = std::min(n, c0 + kNewtonChunkRecords);
#pragma omp parallel for schedule(dynamic, 8)
    for (index_t j = 0; j < rows; ++j) {
      const index_t a = (*rows_of_T)[static_cast<std::size_t>(j)];
      double* Trow = T + a * ka;
      const index_t r = active_rows[static_cast<std::size_t>(a)];
      std::int64_t p = cursor[static_cast<std::size_t>(j)];
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
        // Without slots: at most k-1-r rows follow r in the slice, so the search starts there (a few
        // entries for the last rows, which are the ones left when margins are tallied).
        const std::int64_t from = std::max(q0, q1 - (At.cols - r));
        if (slot)
          q = q0 + slot[p];
        else if (wide_t)
          q = std::lower_bound(At.indices64 + from, At.indices64 + q1, std::int64_t{r}) - At.indices64;
        else
          q = std::lower_bound(At.indices32 + from, At.indices32 + q1, static_cast<std::int32_t>(r)) - At.indices32;
        if (all_active && !wide_t) {  // the common case: b is the row index itself (no lookup)
          for (; q < q1; ++q) Trow[At.indices32[q]] += wi * At.values[q];
          continue;
        }
        for (; q < q1; ++q) {
          const index_t b = active_of[static_cast<std::size_t>(wide_t ? At.indices64[q] : At.indices32[q])];
          if (b >= 0) Trow[b] += wi * At.values[q];
        }
      }
      cursor[static_cast<std::size_t>(j)] = p;
    }
  }
}

// ---- T over categorical margins: weighted counts ------------------------------------------------
// A categorical margin (ConstraintSystem::margin_offsets) puts each record in at most one of its
// rows, with coefficient 1, so over margins T is a table of weighted counts: T[a][b] for a in
// margin p and b in margin q > p is Σ v_i over the records whose category in p is a and in q is b.
// With each record's category per margin stored once (cat_p[i]), the block p x q is one sweep over
// the records in order adding v_i to one cell of a block that stays in cache: sequential reads of
// small arrays and v instead of the generic pass's read of every record's Aᵀ slice once per row it
// is in. Entries between a margin row and another row b (continuous, linear, or a margin that
// failed the check below) are v_i A_bi zipped from row b's CSR with cat_p; rows in no checked
// margin keep the generic pass (restricted to their own rows of T).
//
// The sums are the generic pass's, bit for bit: its term (A_ai v_i) A_bi with A = 1 is v_i (or
// v_i A_bi), each entry adds its records in ascending order starting from +0, and the records that
// pass skips (v_i = 0) add ±0 here, which leaves such a sum unchanged.
struct MarginCategories {
  index_t n = 0;
  std::vector<index_t> slot;         // per checked margin: its index in the cat buffer (n values each)
  std::vector<index_t> first, last;  // per checked margin: its rows of T, [first, last)
  std::vector<index_t> other_rows;   // rows of T in no checked margin, ascending (the generic pass)
  bool any() const { return !slot.empty(); }
};

// The category stored per record and margin is the row's place among the margin's active rows
// (its row of T minus `first`), and "none" (no row of the margin, or an inactive one) is the
// margin's count of active rows, last - first: a block of T with one spare row and column then
// takes every record without a branch. uint16 when ka < 65535 (2 bytes per record and margin).
inline bool margin_categories_fit_16(index_t ka) { return ka < 65535; }

// Fills cat (margins x n, margin m at cat + m n) from A's margin rows and checks each margin: a
// record in two of its rows, or a coefficient other than 1, leaves the margin to the generic pass
// (nothing is wrong with such a system; it only is not a set of indicator rows). `offsets` as
// ConstraintSystem::margin_offsets; offsets that are not ascending within A's rows check nothing.
template <class Cat>
MarginCategories fill_margin_categories(const CsrView& A, const std::vector<index_t>& offsets,
                                        const std::vector<index_t>& active_of, index_t ka, Cat* cat) {
  MarginCategories mc;
  mc.n = A.cols;
  const index_t margins = offsets.size() < 2 ? 0 : static_cast<index_t>(offsets.size()) - 1;
  bool ordered = margins > 0 && offsets[0] >= 0 && offsets[static_cast<std::size_t>(margins)] <= A.rows;
  for (index_t m = 0; ordered && m < margins; ++m) ordered = offsets[m] <= offsets[m + 1];
  // Each margin's active rows are consecutive rows of T (active_of keeps the row order).
  std::vector<index_t> first(static_cast<std::size_t>(margins), -1), last(static_cast<std::size_t>(margins), -1);
  for (index_t m = 0; ordered && m < margins; ++m)
    for (index_t r = offsets[m]; r < offsets[m + 1]; ++r)
      if (const index_t a = active_of[static_cast<std::size_t>(r)]; a >= 0) {
        if (first[m] < 0) first[m] = a;
        last[m] = a + 1;
      }
  std::vector<char> ok(static_cast<std::size_t>(margins), 0);
#pragma omp parallel for schedule(dynamic, 1) if (ordered)
  for (index_t m = 0; m < (ordered ? margins : 0); ++m) {
    if (first[m] < 0) continue;  // no active row: nothing to tally
    Cat* c = cat + m * A.cols;
    const Cat none = static_cast<Cat>(last[m] - first[m]);
    std::fill(c, c + A.cols, none);
    bool fine = true;
    for (index_t r = offsets[m]; fine && r < offsets[m + 1]; ++r) {
      const index_t a = active_of[static_cast<std::size_t>(r)];
      for (std::int64_t p = A.indptr[r]; fine && p < A.indptr[r + 1]; ++p) {
        Cat& slot = c[A.index(p)];
        fine = a >= 0 && A.values[p] == 1.0 && slot == none;
        slot = static_cast<Cat>(a - first[m]);
      }
    }
    ok[static_cast<std::size_t>(m)] = fine;
  }
  std::vector<char> tallied(static_cast<std::size_t>(ka), 0);
  for (index_t m = 0; m < margins; ++m) {
    if (!ok[static_cast<std::size_t>(m)]) continue;
    mc.slot.push_back(m);
    mc.first.push_back(first[m]);
    mc.last.push_back(last[m]);
    std::fill(tallied.begin() + first[m], tallied.begin() + last[m], 1);
  }
  for (index_t a = 0; a < ka; ++a)
    if (!tallied[static_cast<std::size_t>(a)]) mc.other_rows.push_back(a);
  return mc;
}

// Partner margins per sweep over the records: the margin's own categories and v are read once for
// up to this many blocks (together within a core's L2 at 100 categories).
inline constexpr index_t kTallyPartners = 4;
// A block with its spare row and column up to this many cells is tallied in thread scratch (then
// copied into T, the same sums); larger ones are tallied in T directly, skipping "none".
inline constexpr index_t kTallyBlockCells = index_t{1} << 15;
// Entries of another row's CSR zipped with every margin in turn (they stay in L1 meanwhile).
inline constexpr std::int64_t kZipEntries = 4096;

// One sweep over the records for four small blocks, side by side in the rows of one scratch matrix
// (row c: the four blocks' rows c; `col[j]`: block j's first column): one row address per record.
template <class Cat>
void tally_four_blocks(const Cat* __restrict cp, const Cat* const* cq, const double* __restrict v, index_t n,
                       double* __restrict rows, index_t width, const index_t* col) {
  const Cat* __restrict q0 = cq[0];
  const Cat* __restrict q1 = cq[1];
  const Cat* __restrict q2 = cq[2];
  const Cat* __restrict q3 = cq[3];
  const index_t c1 = col[1], c2 = col[2], c3 = col[3];
  for (index_t i = 0; i < n; ++i) {
    double* __restrict row = rows + static_cast<index_t>(cp[i]) * width;
    const double vi = v[i];
    row[q0[i]] += vi;
    row[c1 + q1[i]] += vi;
    row[c2 + q2[i]] += vi;
    row[c3 + q3[i]] += vi;
  }
}

// T's entries whose smaller row is in a checked margin (mc), the other entries untouched: margin
// blocks by tallies, margin x other rows by the zip. Parallel over blocks and over other rows;
// each entry is written by one thread.
template <class Cat>
void tally_newton_margins(const CsrView& A, const std::vector<index_t>& active_rows, const MarginCategories& mc,
                          const Cat* cat, const double* v, double* T) {
  const index_t ka = static_cast<index_t>(active_rows.size());
  const index_t n = mc.n, margins = static_cast<index_t>(mc.slot.size());
  struct Item {
    index_t x, y0, y1;  // margin x with margins [y0, y1); y0 == x: x's own diagonal block
  };
  std::vector<Item> items;
  for (index_t x = 0; x < margins; ++x) {
    items.push_back({x, x, x + 1});
    for (index_t y = x + 1; y < margins; y += kTallyPartners) items.push_back({x, y, std::min(margins, y + kTallyPartners)});
  }
  const auto categories = [&](index_t m) { return cat + mc.slot[static_cast<std::size_t>(m)] * n; };
  const auto count = [&](index_t m) { return mc.last[static_cast<std::size_t>(m)] - mc.first[static_cast<std::size_t>(m)]; };
#pragma omp parallel
  {
    std::vector<double> scratch;
#pragma omp for schedule(dynamic, 1)
    for (std::size_t it = 0; it < items.size(); ++it) {
      const Item w = items[it];
      const index_t f = mc.first[w.x], mx = count(w.x);
      const Cat* cp = categories(w.x);
      if (w.y0 == w.x) {  // within a margin only the diagonal holds records
        scratch.assign(static_cast<std::size_t>(mx + 1), 0.0);
        for (index_t i = 0; i < n; ++i) scratch[cp[i]] += v[i];
        for (index_t c = 0; c < mx; ++c) {
          double* row = T + (f + c) * ka;
          std::fill(row + f + c, row + f + mx, 0.0);
          row[f + c] = scratch[static_cast<std::size_t>(c)];
        }
        continue;
      }
      const index_t g = w.y1 - w.y0;
      bool small = true;
      for (index_t j = 0; j < g; ++j) small = small && (mx + 1) * (count(w.y0 + j) + 1) <= kTallyBlockCells;
      const Cat* cq[kTallyPartners];
      index_t fq[kTallyPartners], mq[kTallyPartners];
      for (index_t j = 0; j < g; ++j) {
        cq[j] = categories(w.y0 + j);
        fq[j] = mc.first[w.y0 + j];
        mq[j] = count(w.y0 + j);
      }
      if (!small) {  // large blocks: in T itself, skipping the records without a category
        for (index_t j = 0; j < g; ++j)
          for (index_t c = 0; c < mx; ++c) std::fill(T + (f + c) * ka + fq[j], T + (f + c) * ka + fq[j] + mq[j], 0.0);
        for (index_t i = 0; i < n; ++i) {
          const index_t c = cp[i];
          if (c == mx) continue;
          double* row = T + (f + c) * ka;
          for (index_t j = 0; j < g; ++j)
            if (const index_t b = cq[j][i]; b != mq[j]) row[fq[j] + b] += v[i];
        }
        continue;
      }
      // Small blocks side by side in scratch, each with its spare row and column: no branch.
      index_t col[kTallyPartners] = {}, width = 0;
      for (index_t j = 0; j < g; ++j) {
        col[j] = width;
        width += mq[j] + 1;
      }
      scratch.assign(static_cast<std::size_t>((mx + 1) * width), 0.0);
      if (g == kTallyPartners) {
        tally_four_blocks(cp, cq, v, n, scratch.data(), width, col);
      } else {
        for (index_t i = 0; i < n; ++i) {
          double* row = scratch.data() + static_cast<index_t>(cp[i]) * width;
          for (index_t j = 0; j < g; ++j) row[col[j] + cq[j][i]] += v[i];
        }
      }
      for (index_t c = 0; c < mx; ++c)
        for (index_t j = 0; j < g; ++j)
          std::copy(scratch.data() + c * width + col[j], scratch.data() + c * width + col[j] + mq[j],
                    T + (f + c) * ka + fq[j]);
    }
  }
  static_assert(kTallyPartners == 4, "the unrolled sweep above takes four partners");
  // Margin rows x the later other rows: T[c][o] = Σ v_i A_oi over row o's records of category c,
  // summed per margin in a scratch column (its spare entry takes the records without a category)
  // and then copied into T's column o.
  const index_t others = static_cast<index_t>(mc.other_rows.size());
  std::vector<index_t> at(static_cast<std::size_t>(margins) + 1, 0);
  for (index_t x = 0; x < margins; ++x) at[x + 1] = at[x] + count(x) + 1;
#pragma omp parallel
  {
    std::vector<double> column;
#pragma omp for schedule(dynamic, 1)
    for (index_t j = 0; j < others; ++j) {
      const index_t o = mc.other_rows[static_cast<std::size_t>(j)];
      const index_t r = active_rows[static_cast<std::size_t>(o)];
      index_t before = 0;  // the checked margins whose rows precede o
      while (before < margins && mc.last[before] <= o) ++before;
      column.assign(static_cast<std::size_t>(at[before]), 0.0);
      for (std::int64_t p0 = A.indptr[r]; p0 < A.indptr[r + 1]; p0 += kZipEntries) {
        const std::int64_t p1 = std::min(A.indptr[r + 1], p0 + kZipEntries);
        for (index_t x = 0; x < before; ++x) {
          const Cat* __restrict cp = categories(x);
          double* __restrict acc = column.data() + at[x];
          for (std::int64_t p = p0; p < p1; ++p) {
            const std::int64_t i = A.index(p);
            const double vi = v[i], term = vi * A.values[p];
            acc[cp[i]] += vi == 0 ? 0.0 : term;  // the generic pass's skip, for A_oi not finite
          }
        }
      }
      for (index_t x = 0; x < before; ++x)
        for (index_t c = 0; c < count(x); ++c) T[(mc.first[x] + c) * ka + o] = column[static_cast<std::size_t>(at[x] + c)];
    }
  }
}

}  // namespace otcal::calib
