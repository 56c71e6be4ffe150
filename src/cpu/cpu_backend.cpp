// CPU backend: the Sinkhorn passes are one row-reduction engine (cpu/row_engine.hpp) run with a
// formula (cpu/row_formulas.hpp) and a reduction (cpu/row_reductions.hpp). Every row's reduction
// runs granule by granule in a fixed order, so results are bitwise independent of the tile size
// and of the thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/backend.hpp"
#include "cpu/deterministic.hpp"
#include "cpu/row_engine.hpp"
#include "cpu/row_formulas.hpp"
#include "cpu/row_reductions.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/lse_math.hpp"

namespace otcal::detail {
namespace {

template <class T>
T neg_inf_as_zero(T v) {
  return v == -std::numeric_limits<T>::infinity() ? T(0) : v;
}

// Rows of the LSE sharing one granule of the other cloud while it is in L1; the other passes
// do more work per entry (exp, k products) and go row by row.
constexpr index_t kLseChunkRows = 8;

template <class T>
class CpuBackend final : public Backend<T> {
 public:

  void upload_cloud(const ConstMatrix& h, T* dst) override {
    const index_t n = h.rows, d = h.cols;
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i)
      for (index_t k = 0; k < d; ++k) dst[k * n + i] = static_cast<T>(h.at(i, k));
  }
  void upload(const double* host, T* dst, index_t count) override {
    for (index_t i = 0; i < count; ++i) dst[i] = static_cast<T>(host[i]);
  }
  void download(const T* src, double* host, index_t count) override {
    for (index_t i = 0; i < count; ++i) host[i] = static_cast<double>(src[i]);
  }
  void point_norms(const T* x, index_t n, int d, T* out) override {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      T s = 0;
      for (int k = 0; k < d; ++k) s += x[k * n + i] * x[k * n + i];
      out[i] = std::sqrt(s);
    }
  }
  void log_weights(const T* w, T* out, index_t n) override {
    for (index_t i = 0; i < n; ++i) out[i] = w[i] > T(0) ? std::log(w[i]) : -std::numeric_limits<T>::infinity();
  }

  index_t lse_partials_per_row(index_t) const override { return 1; }
  void row_lse(const RowLseArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { row_lse_impl<decltype(tag)::value>(a); });
  }
  void row_apply(const RowApplyArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { row_apply_impl<decltype(tag)::value>(a); });
  }
  CostMoments cost_moments(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, index_t tile_rows,
                           double* partials) override {
    return dispatch_cost(cost.kind,
                         [&](auto tag) { return moments_impl<decltype(tag)::value>(rows, cols, cost, tile_rows, partials); });
  }

  void potential_update(const T* lse, const T* log_w, double eps_t, double tau, T* out, index_t n) override {
    const T e = static_cast<T>(eps_t), t = static_cast<T>(tau);
#pragma omp parallel for schedule(static) if (n > cpu::kParallelWork)
    for (index_t i = 0; i < n; ++i) out[i] = detail::potential_update(lse[i], log_w[i], e, t);
  }
  void relaxed_update(const T* lse, const T* log_w, double eps_t, double tau, double weight, T* pot,
                      index_t n) override {
    const T e = static_cast<T>(eps_t), t = static_cast<T>(tau), w = static_cast<T>(weight);
    const T keep = static_cast<T>(1.0 - weight);
#pragma omp parallel for schedule(static) if (n > cpu::kParallelWork)
    for (index_t i = 0; i < n; ++i) pot[i] = keep * fin(pot[i]) + w * detail::potential_update(lse[i], log_w[i], e, t);
  }
  void anderson_record_input(const T* f, T* residual, index_t n) override {
    for (index_t i = 0; i < n; ++i) residual[i] = neg_inf_as_zero(f[i]);
  }
  void anderson_record_output(const T* f, T* residual, T* mapped, index_t n) override {
    for (index_t i = 0; i < n; ++i) {
      residual[i] = neg_inf_as_zero(f[i]) - residual[i];
      mapped[i] = f[i];
    }
  }
  Partials dot(const T* u, const T* v, index_t n) override {
    return cpu::granular_partials(n, [&](index_t i) { return static_cast<double>(u[i]) * static_cast<double>(v[i]); });
  }
  void anderson_combine(const std::vector<const T*>& cols, const std::vector<double>& weights, T* out,
                        index_t n) override {
    std::vector<T> w(weights.begin(), weights.end());
    for (index_t i = 0; i < n; ++i) {
      T acc = 0;
      for (std::size_t k = 0; k < cols.size(); ++k) acc += w[k] * cols[k][i];
      out[i] = std::isfinite(acc) ? acc : -std::numeric_limits<T>::infinity();
    }
  }
  Partials marginal_error(const T* pot, const T* lse, const T* w, double eps, double rho, double p,
                          index_t n) override {
    return cpu::granular_partials(n, [&](index_t i) {
      const double diff = std::fabs(marginal_from_lse(pot[i], lse[i], eps) - marginal_target(w[i], pot[i], rho));
      return p == 1.0 ? diff : std::pow(diff, p);
    });
  }
  Partials transported_mass(const T* pot, const T* lse, double eps, index_t n) override {
    return cpu::granular_partials(n, [&](index_t i) { return marginal_from_lse(pot[i], lse[i], eps); });
  }
  unsigned potential_flags(const T* pot, const T* w, index_t n) override {
    return cpu::parallel_or(n, [&](index_t i) { return detail::potential_flags(pot[i], w[i]); });
  }
  unsigned value_flags(const T* v, index_t n) override {
    return cpu::parallel_or(n, [&](index_t i) { return detail::value_flags(v[i]); });
  }

 private:
  template <CostKind K>
  void row_lse_impl(const RowLseArgs<T>& a) {
    const cpu::RowLoop loop{.rows = a.rows.n, .cols = a.cols.n, .tile_rows = a.tile_rows, .work_per_entry = a.rows.d};
    const cpu::ExponentFormula<K, T> formula{a.rows, a.cols, static_cast<T>(a.cost.p), a.col_potential,
                                             static_cast<T>(kLog2e / a.eps),
                                             static_cast<T>(kLog2e / a.eps * a.inv_scale)};
    const cpu::LseReduction<T> reduction{reinterpret_cast<LseState*>(a.state), a.out};
    cpu::reduce_rows<kLseChunkRows>(loop, formula, reduction);
  }

  template <CostKind K>
  void row_apply_impl(const RowApplyArgs<T>& a) {
    const cpu::RowLoop loop{.rows = a.rows.n, .cols = a.cols.n, .tile_rows = a.tile_rows, .work_per_entry = a.k};
    const cpu::PlanFormula<K, T> formula{a.rows, a.cols, static_cast<T>(a.cost.p), a.row_potential,
                                         a.col_potential, a.inv_scale, 1.0 / a.eps};
    const cpu::WeightedSum<T> reduction{a.acc, a.row_potential, a.v, a.k, a.out};
    cpu::reduce_rows<1>(loop, formula, reduction);
  }

  template <CostKind K>
  CostMoments moments_impl(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, index_t tile_rows,
                           double* partials) {
    const cpu::RowLoop loop{.rows = rows.n, .cols = cols.n, .tile_rows = tile_rows};
    const cpu::CostFormula<K, T> formula{rows, cols, static_cast<T>(cost.p)};
    cpu::reduce_rows<1>(loop, formula, cpu::MomentsReduction<T>{partials});
    CostMoments out;
    for (index_t i = 0; i < rows.n; ++i) {
      out.sum += partials[3 * i];
      out.sum_sq += partials[3 * i + 1];
      out.max_abs = std::max(out.max_abs, partials[3 * i + 2]);
    }
    return out;
  }
};

}  // namespace

template <class T>
std::unique_ptr<Backend<T>> make_cpu_backend(const Context&) {
  return std::make_unique<CpuBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(const Context&);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(const Context&);

}  // namespace otcal::detail
