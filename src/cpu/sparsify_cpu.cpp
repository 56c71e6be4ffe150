// CPU implementation of the sparsify primitives (src/sparsify/sparsify_backend.hpp): OpenMP over the
// rows of a block. Every row is handled by one thread in a fixed order, so the output does not
// depend on the thread count or on how rows are grouped into blocks.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu/row_engine.hpp"
#include "cpu/row_formulas.hpp"
#include "cpu/row_reductions.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "core/radix_select.hpp"
#include "sparsify/sparsify_backend.hpp"

namespace otcal::detail {
namespace {

template <class T>
class CloudSource final : public PlanBlockSource<T> {
 public:
  // plan = false: unscaled costs; plan = true: exp((f_i + g_j - c_ij * inv_scale) / eps).
  CloudSource(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, bool plan, double inv_scale,
              double eps, const T* f, const T* g)
      : rows_(rows), cols_(cols), cost_(cost), plan_(plan), inv_scale_(inv_scale), inv_eps_(1.0 / eps), f_(f), g_(g) {}
  index_t rows() const override { return rows_.n; }
  index_t cols() const override { return cols_.n; }
  void build(index_t r0, index_t count, const index_t* ids, T* out) override {
    dispatch_cost(cost_.kind, [&](auto tag) { build_impl<decltype(tag)::value>(r0, count, ids, out); });
  }

 private:
  // The block's rows, one per thread at a time (the row engine with no tiling), each written
  // granule by granule: costs, or plan entries with the float64 formula of apply_transport.
  template <CostKind K>
  void build_impl(index_t r0, index_t count, const index_t* ids, T* out) {
    const cpu::RowLoop loop{
        .rows = count, .cols = cols_.n, .tile_rows = count, .always_parallel = true, .ids = ids, .first = r0};
    const cpu::EmitRow<T> emit{out, cols_.n};
    const T p = static_cast<T>(cost_.p);
    if (plan_) cpu::reduce_rows<1>(loop, cpu::PlanFormula<K, T>{rows_, cols_, p, f_, g_, inv_scale_, inv_eps_}, emit);
    else cpu::reduce_rows<1>(loop, cpu::CostFormula<K, T>{rows_, cols_, p}, emit);
  }

  Cloud<T> rows_, cols_;
  CostParams cost_;
  bool plan_;
  double inv_scale_, inv_eps_;
  const T* f_;
  const T* g_;
};

template <class T>
class DenseSource final : public PlanBlockSource<T> {
 public:
  explicit DenseSource(const ConstMatrix& h) : h_(h) {}
  index_t rows() const override { return h_.rows; }
  index_t cols() const override { return h_.cols; }
  void build(index_t r0, index_t count, const index_t* ids, T* out) override {
    const index_t m = h_.cols;
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < count; ++r) {
      const index_t i = ids ? ids[r] : r0 + r;
      T* row = out + r * m;
      if (h_.dtype == DType::float32) {
        const float* src = static_cast<const float*>(h_.data) + i * m;
        for (index_t j = 0; j < m; ++j) row[j] = static_cast<T>(src[j]);
      } else {
        const double* src = static_cast<const double*>(h_.data) + i * m;
        for (index_t j = 0; j < m; ++j) row[j] = static_cast<T>(src[j]);
      }
    }
  }

 private:
  ConstMatrix h_;
};

template <class T>
inline bool has_mass(const T* row_max, index_t r) {
  return row_max == nullptr || row_max[r] > T(0);
}

template <class T>
class CpuSparsifyBackend final : public SparsifyBackend<T> {
 public:

  std::unique_ptr<PlanBlockSource<T>> cloud_plan_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                        const CostParams& cost, double inv_scale, double eps,
                                                        const T* f, const T* g) override {
    return std::make_unique<CloudSource<T>>(rows, cols, cost, true, inv_scale, eps, f, g);
  }
  std::unique_ptr<PlanBlockSource<T>> cloud_cost_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                        const CostParams& cost) override {
    return std::make_unique<CloudSource<T>>(rows, cols, cost, false, 1.0, 1.0, nullptr, nullptr);
  }
  std::unique_ptr<PlanBlockSource<T>> dense_source(const ConstMatrix& host) override {
    return std::make_unique<DenseSource<T>>(host);
  }

  unsigned row_max(const T* block, index_t rows, index_t m, T* out_max) override {
    unsigned flags = 0;
#pragma omp parallel for schedule(static) reduction(| : flags)
    for (index_t r = 0; r < rows; ++r) {
      const T* row = block + r * m;
      T mx = -std::numeric_limits<T>::infinity();
      unsigned f = 0;
      for (index_t j = 0; j < m; ++j) {
        const T v = row[j];
        if (v != v) f |= kBlockNaN;
        else if (v == std::numeric_limits<T>::infinity()) f |= kBlockPosInf;
        else if (v < T(0)) f |= kBlockNegative;
        mx = v > mx ? v : mx;
      }
      out_max[r] = (f & kBlockNaN) ? std::numeric_limits<T>::quiet_NaN() : mx;
      flags |= f;
    }
    return flags;
  }

  void key_histogram(const T* block, index_t rows, index_t m, const T* row_max, const KeyHistogramQuery& q,
                     std::uint64_t* bins) override {
    // Serial: the counters are shared and the sweep is dominated by building the block.
    using K = KeyOf<T>;
    const int shift = q.shift;
    const int pshift = shift + kHistogramBits;
    const K mask = static_cast<K>(kHistogramBins - 1);
    for (index_t r = 0; r < rows; ++r) {
      if (!has_mass(row_max, r)) continue;
      const T* row = block + r * m;
      if (q.n_prefixes == 0) {
        for (index_t j = 0; j < m; ++j) ++bins[(float_key(row[j]) >> shift) & mask];
        continue;
      }
      for (index_t j = 0; j < m; ++j) {
        const K key = float_key(row[j]);
        const std::uint64_t pre = static_cast<std::uint64_t>(key) >> pshift;
        const std::size_t bin = static_cast<std::size_t>((key >> shift) & mask);
        if (pre == q.prefix[0]) ++bins[bin];
        else if (q.n_prefixes > 1 && pre == q.prefix[1]) ++bins[kHistogramBins + bin];
      }
    }
  }

  void count_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                      std::int64_t* counts) override {
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r) {
      std::int64_t c = 0;
      if (has_mass(row_max, r)) {
        const T* row = block + r * m;
        for (index_t j = 0; j < m; ++j) {
          const double v = static_cast<double>(row[j]);
          c += (v >= thr && v != 0.0) ? 1 : 0;
        }
      }
      counts[r] = c;
    }
  }

  void compact_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                        const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                        double* values) override {
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r) {
      if (!has_mass(row_max, r)) continue;
      const T* row = block + r * m;
      std::int64_t o = offsets[r];
      for (index_t j = 0; j < m; ++j) {
        const double v = static_cast<double>(row[j]);
        if (!(v >= thr && v != 0.0)) continue;
        if (idx32) idx32[o] = static_cast<std::int32_t>(j);
        else idx64[o] = j;
        values[o++] = v;
      }
    }
  }

  void mass_select(const T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k,
                   void* order, bool wide, std::int64_t* counts) override {
    if (wide) mass_impl(block, rows, m, row_max, value, max_k, static_cast<std::int64_t*>(order), counts);
    else mass_impl(block, rows, m, row_max, value, max_k, static_cast<std::int32_t*>(order), counts);
  }

  void gather_selected(const T* block, index_t rows, index_t m, const void* order, bool wide,
                       const std::int64_t* counts, const std::int64_t* offsets, std::int32_t* idx32,
                       std::int64_t* idx64, double* values) override {
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < rows; ++r) {
      const T* row = block + r * m;
      for (std::int64_t q = 0; q < counts[r]; ++q) {
        const std::int64_t j = wide ? static_cast<const std::int64_t*>(order)[r * m + q]
                                    : static_cast<const std::int32_t*>(order)[r * m + q];
        const std::int64_t o = offsets[r] + q;
        if (idx32) idx32[o] = static_cast<std::int32_t>(j);
        else idx64[o] = j;
        values[o] = static_cast<double>(row[j]);
      }
    }
  }

 private:
  template <class I>
  void mass_impl(const T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k, I* order,
                 std::int64_t* counts) {
#pragma omp parallel for schedule(dynamic, 1)
    for (index_t r = 0; r < rows; ++r) {
      const T* row = block + r * m;
      I* ord = order + r * m;
      counts[r] = 0;
      if (!has_mass(row_max, r)) continue;
      // Only positive entries can be kept (zeros are never stored) and they come first in the
      // descending order, so the candidates are the positive columns.
      double tot = 0;
      index_t npos = 0;
      for (index_t j = 0; j < m; ++j) {
        tot += static_cast<double>(row[j]);
        if (row[j] > T(0)) ord[npos++] = static_cast<I>(j);
      }
      if (!(tot > 0)) continue;
      const index_t cap = std::min<index_t>(max_k > 0 ? max_k : m, m);
      index_t k = 0;
      if (value >= 1) {
        k = std::min(npos, cap);  // target = +inf: every positive entry (up to max_k)
        if (k < npos) sort_desc(row, ord, npos, k);
      } else {
        const double target = value * tot;
        // Sort lazily: the kept prefix is short for plan-like rows, so grow a partial sort.
        index_t sorted = 0;
        double cum = 0;
        while (k < npos && k < cap) {
          if (k == sorted) {
            const index_t want = std::min(npos, std::max<index_t>(2 * sorted, 64));
            sort_desc(row, ord + sorted, npos - sorted, want - sorted);
            sorted = want;
          }
          cum += static_cast<double>(row[ord[k]]);
          ++k;
          if (!(cum < target)) break;  // the crossing entry is kept
        }
      }
      std::sort(ord, ord + k);
      counts[r] = k;
    }
  }

  // Puts the `first` largest of ord[0 .. len) (ties by ascending column) first, in order.
  template <class I>
  static void sort_desc(const T* row, I* ord, index_t len, index_t first) {
    auto desc = [row](I a, I b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
    if (first >= len) std::sort(ord, ord + len, desc);
    else std::partial_sort(ord, ord + first, ord + len, desc);
  }

};

}  // namespace

template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cpu_sparsify_backend() {
  return std::make_unique<CpuSparsifyBackend<T>>();
}

template <class T>
std::unique_ptr<SparsifyBackend<T>> make_sparsify_backend(const Context& ctx, std::int64_t staging_entries) {
  if (ctx.kind() == DeviceKind::cuda) return make_cuda_sparsify_backend<T>(ctx, staging_entries);
  return make_cpu_sparsify_backend<T>();
}

template <class T>
std::unique_ptr<BlockBackend<T>> make_cpu_block_backend() {
  return std::make_unique<CpuSparsifyBackend<T>>();
}

template std::unique_ptr<BlockBackend<float>> make_cpu_block_backend<float>();
template std::unique_ptr<BlockBackend<double>> make_cpu_block_backend<double>();
template std::unique_ptr<SparsifyBackend<float>> make_cpu_sparsify_backend<float>();
template std::unique_ptr<SparsifyBackend<double>> make_cpu_sparsify_backend<double>();
template std::unique_ptr<SparsifyBackend<float>> make_sparsify_backend<float>(const Context&, std::int64_t);
template std::unique_ptr<SparsifyBackend<double>> make_sparsify_backend<double>(const Context&, std::int64_t);

}  // namespace otcal::detail
