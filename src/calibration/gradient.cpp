// Gradient calibrator with microcalibrate semantics (spec/calibration.md §3): log-weights, Adam,
// inverted log-space dropout, normalization factors, excluded targets, and the exact two-pass
// batched gradient (pass 1: S = A w' over record batches; pass 2: per batch w'_i (Aᵀc)_i), then
// the optional L0 hard-concrete stage (§3.7). Random draws are Philox, keyed by (seed, purpose,
// epoch, record), so nothing depends on the batch size.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "calibration/calib_backend.hpp"
#include "calibration/kernels.hpp"
#include "otcal/calibration.hpp"
#include "otcal/detail/philox.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

using detail::RandomPurpose;
constexpr double kLogitClamp = detail::kLogAlphaClamp;

struct Adam {  // PyTorch Adam: beta1 0.9, beta2 0.999, eps 1e-8, no weight decay, no amsgrad
  double lr;
  int step = 0;
  void apply(double* x, double* m, double* v, const double* grad, index_t n) {
    ++step;
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) detail::adam_element(x[i], m[i], v[i], grad[i], lr, bc1, bc2);
  }
};

class GradientEngine {
 public:
  GradientEngine(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& o)
      : ctx_(ctx), sys_(sys), A_(sys.A), o_(o), n_(sys.A.cols), k_(sys.A.rows) {
    if (!(o.dropout_rate >= 0 && o.dropout_rate <= 1))
      throw InvalidArgument("dropout_rate must lie in [0, 1], got " + std::to_string(o.dropout_rate));
    if (o.epochs < 0) throw InvalidArgument("epochs must be >= 0");
    if (!o.normalization_factor.empty() && static_cast<index_t>(o.normalization_factor.size()) != k_)
      throw InvalidArgument("normalization_factor has " + std::to_string(o.normalization_factor.size()) +
                            " values, expected one per target (" + std::to_string(k_) + ")");
    active_.assign(static_cast<std::size_t>(k_), 1);
    for (const auto& name : o.excluded_targets) {
      auto it = std::find(sys.names.begin(), sys.names.end(), name);
      if (it == sys.names.end())
        throw InvalidArgument("excluded target '" + name + "' is not a constraint name");
      active_[static_cast<std::size_t>(it - sys.names.begin())] = 0;
    }
    k_active_ = 0;
    for (char a : active_) k_active_ += a;
    if (k_active_ == 0) throw InvalidArgument("gradient calibration needs at least one target that is not excluded");
    for (std::size_t j = 0; j < sys.targets.size(); ++j)
      if (!std::isfinite(sys.targets[j])) throw InvalidArgument("Target '" + sys.names[j] + "' is not finite");
    if (o.batch_size && *o.batch_size < 1) throw InvalidArgument("batch_size must be >= 1");
    if (ctx.kind() == DeviceKind::cuda) {
#ifdef OTCAL_WITH_CUDA
      // On the device no batch buffer exists (w' is recomputed from θ in the kernels): the plan is
      // the resident state, both CSRs included, in one piece.
      const std::size_t need = calib::cuda_gradient_device_bytes(A_, o.regularize_with_l0);
      if (need + planner_headroom(ctx.memory_budget()) > ctx.memory_budget())
        throw BudgetTooSmall("calibrate_gradient on CUDA needs at least " +
                                 format_bytes(need + planner_headroom(ctx.memory_budget())) +
                                 " of device memory (per-record state and the constraint CSR and its transpose); "
                                 "budget is " + format_bytes(ctx.memory_budget()),
                             need);
      plan_.rows = n_;
      plan_.n_tiles = 1;
      plan_.planned_peak = need;
#else
      throw DeviceError("calibrate: this otcal was built without CUDA; use a CPU context");
#endif
    } else {
      const ByteModel model = gradient_model(n_, k_, o.regularize_with_l0);
      plan_ = plan_batch(n_, model, ctx.memory_budget(), o.batch_size);
    }
    At_ = transpose(A_);
  }

  const TilePlan& plan() const { return plan_; }

  // Element math shared with the CUDA passes (include/otcal/detail/calib_math.hpp).
  double dropout_weight(index_t i, double theta, std::uint32_t epoch) const {
    return detail::dropout_weight(o_.seed, o_.dropout_rate, i, theta, epoch);
  }
  using Gate = detail::HardConcreteGate;
  Gate training_gate(index_t i, double log_alpha, std::uint32_t step) const {
    return detail::training_gate(o_.seed, o_.temperature, i, log_alpha, step);
  }
  double eval_gate(double log_alpha) const { return detail::eval_gate(log_alpha, o_.temperature, o_.legacy_eval_gate); }
  double penalty_prob(double log_alpha) const { return detail::penalty_prob(log_alpha, o_.temperature); }

  // L(S) of §3.3 over the active targets and c = ∂L/∂S (0 for excluded targets); S has k values.
  double loss_and_c(const double* S, double* c) const {
    const double kk = static_cast<double>(k_active_);
    double loss = 0;
    bool finite = true;
    for (index_t j = 0; j < k_; ++j) {
      c[j] = 0;
      if (!active_[j]) continue;
      const double t = sys_.targets[j];
      const double nf = o_.normalization_factor.empty() ? 1.0 : o_.normalization_factor[j];
      const double den = std::max(t + 1, 1e-12);
      const double num = o_.loss_relative ? S[j] - t : S[j] - t + 1;
      const double rel = num / den;
      const double term = nf * rel * rel;
      finite = finite && std::isfinite(term);
      loss += term;
      c[j] = 2 * nf * num / (den * den * kk);
    }
    if (!finite) throw NumericalError("Relative error contains non-finite values (an estimate or weight overflowed; "
                                      "lower the learning rate or check the targets)");
    return loss / kk;
  }

  // One loss-and-gradient evaluation (two passes over record batches). log_alpha == nullptr:
  // dense stage. Returns the data loss L(S); S holds every row's estimate (excluded included).
  double evaluate(const double* theta, const double* log_alpha, std::uint32_t dropout_epoch, std::uint32_t gate_step,
                  double* grad_theta, double* grad_alpha, double* S) {
    MemoryResource& mr = ctx_.workspace();
    const index_t B = plan_.rows > 0 ? plan_.rows : 1;
    Buffer<double> wb(mr, static_cast<std::size_t>(B)), atc(mr, static_cast<std::size_t>(B));
    calib::RowAccumulator acc(mr, A_);
    // pass 1: S = A w'
    for (index_t b0 = 0; b0 < n_; b0 += B) {
      const index_t b1 = std::min(n_, b0 + B);
#pragma omp parallel for schedule(static) if (b1 - b0 >= calib::kParallelMinRecords)
      for (index_t i = b0; i < b1; ++i) {
        double w = dropout_weight(i, theta[i], dropout_epoch);
        if (log_alpha) w *= training_gate(i, log_alpha[i], gate_step).z;
        wb[i - b0] = w;
      }
      acc.add_batch(b0, b1, wb.data());
    }
    acc.finish(S);
    // loss and c = ∂L/∂S
    std::vector<double> c(static_cast<std::size_t>(k_), 0.0);
    const double loss = loss_and_c(S, c.data());
    // pass 2: per record gradient, the same c for every batch
    const double lambda = o_.l0_lambda / (o_.l0_penalty_per_record ? static_cast<double>(std::max<index_t>(n_, 1)) : 1.0);
    for (index_t b0 = 0; b0 < n_; b0 += B) {
      const index_t b1 = std::min(n_, b0 + B);
      calib::transpose_apply(At_, c.data(), b0, b1, atc.data());
#pragma omp parallel for schedule(static) if (b1 - b0 >= calib::kParallelMinRecords)
      for (index_t i = b0; i < b1; ++i) {
        const double we = dropout_weight(i, theta[i], dropout_epoch);
        const double ac = atc[i - b0];
        if (!log_alpha) {
          grad_theta[i] = we * ac;
        } else {
          const Gate gt = training_gate(i, log_alpha[i], gate_step);
          grad_theta[i] = we * gt.z * ac;
          if (std::fabs(log_alpha[i]) > kLogitClamp) {
            grad_alpha[i] = 0;
          } else {
            const double p = penalty_prob(log_alpha[i]);
            grad_alpha[i] = we * ac * gt.dz + lambda * p * (1 - p);
          }
        }
      }
    }
    return loss;
  }

  CalibrationResult run() {
    MemoryResource& mr = ctx_.workspace();
    CalibrationResult res;
    res.plan = plan_;
    const auto& w0 = sys_.design_weights;
    if (static_cast<index_t>(w0.size()) != n_)
      throw InvalidArgument("gradient calibration: design_weights must have one value per record");
    for (index_t i = 0; i < n_; ++i)
      if (!std::isfinite(w0[i]))
        throw InvalidArgument("initial weight of record " + std::to_string(i) + " is not finite");
#ifdef OTCAL_WITH_CUDA
    if (ctx_.kind() == DeviceKind::cuda) return run_on_device();
#endif
    Buffer<double> theta(mr, n_), m(mr, n_), v(mr, n_), grad(mr, n_);
    std::vector<double> S(static_cast<std::size_t>(k_));
    const index_t floored = calib::initial_log_weights(w0, o_.seed, o_.noise_level, theta.data());
    for (index_t i = 0; i < n_; ++i) m[i] = v[i] = 0;
    std::vector<std::string> excluded;
    for (index_t j = 0; j < k_; ++j)
      if (!active_[j]) excluded.push_back(sys_.names[j]);
    std::vector<std::string> warnings;
    if (floored > 0) {
      warnings.push_back(std::to_string(floored) + " initial weight(s) (after noise) were floored to 1e-12");
      ctx_.warn(warnings.back());
    }
    std::vector<double> S0;  // quirk 4: excluded targets frozen at their initial estimate A w0
    if (o_.excluded_log_initial) {
      S0.assign(static_cast<std::size_t>(k_), 0.0);
      calib::RowAccumulator acc0(mr, A_);
      acc0.add_batch(0, n_, w0.data());
      acc0.finish(S0.data());
    }
    auto logged = [&](const std::vector<double>& est) { return with_frozen_excluded(S0, est); };
    const int E = o_.epochs;
    const int stride = E > 10 ? std::max(1, E / 10) : 1;
    Adam adam{o_.learning_rate};
    res.weights.assign(static_cast<std::size_t>(n_), 0.0);
    for (int e = 0; e < E; ++e) {
      const double loss = evaluate(theta.data(), nullptr, static_cast<std::uint32_t>(e), 0, grad.data(), nullptr, S.data());
      if (e % stride == 0 || e == E - 1) res.history.push_back({e, "dense", loss, logged(S)});
      if (e == E - 1 && o_.final_weights_last_dropout_draw)
        for (index_t i = 0; i < n_; ++i) res.weights[i] = dropout_weight(i, theta[i], static_cast<std::uint32_t>(e));
      adam.apply(theta.data(), m.data(), v.data(), grad.data(), n_);
      res.diagnostics.loss = loss;
    }
    if (!(E > 0 && o_.final_weights_last_dropout_draw))
      for (index_t i = 0; i < n_; ++i) res.weights[i] = std::exp(theta[i]);
    res.n_iterations = E;

    if (o_.regularize_with_l0) {
      Buffer<double> alpha(mr, n_), ma(mr, n_), va(mr, n_), ga(mr, n_);
      const double la0 = std::log(o_.init_mean / (1 - o_.init_mean));
      for (index_t i = 0; i < n_; ++i) {
        const double start = o_.l0_init_dense_result ? res.weights[i] : w0[i];
        theta[i] = std::log(std::max(start, 1e-12));
        m[i] = v[i] = ma[i] = va[i] = 0;
        alpha[i] = la0;
      }
      Adam adam_t{o_.sparse_learning_rate}, adam_a{o_.sparse_learning_rate};
      const int steps = 2 * E;
      const int l0_stride = std::max(1, stride / 2);
      for (int s = 0; s < steps; ++s) {
        const double loss = evaluate(theta.data(), alpha.data(), static_cast<std::uint32_t>(E + s),
                                     static_cast<std::uint32_t>(s), grad.data(), ga.data(), S.data());
        if (s % l0_stride == 0 || s == steps - 1) res.history.push_back({s, "l0", loss, logged(S)});
        adam_t.apply(theta.data(), m.data(), v.data(), grad.data(), n_);
        adam_a.apply(alpha.data(), ma.data(), va.data(), ga.data(), n_);
        res.diagnostics.loss = loss;
      }
      for (index_t i = 0; i < n_; ++i) res.weights[i] = std::exp(theta[i]) * eval_gate(alpha[i]);
      res.n_iterations += steps;
    }
    return finish(std::move(res), excluded, warnings);
  }

  // The shared tail: diagnostics, warnings and g = w / w0.
  CalibrationResult finish(CalibrationResult res, const std::vector<std::string>& excluded,
                           const std::vector<std::string>& warnings) const {
    const auto& w0 = sys_.design_weights;
    res.converged = true;  // fixed epochs, no convergence test (microcalibrate)
    const double loss = res.diagnostics.loss;
    res.diagnostics = diagnose(sys_, res.weights, excluded);
    res.diagnostics.loss = loss;
    for (auto& w : warnings) res.diagnostics.warnings.push_back(w);
    res.g.resize(static_cast<std::size_t>(n_));
    for (index_t i = 0; i < n_; ++i) res.g[i] = w0[i] != 0 ? res.weights[i] / w0[i] : 0.0;
    return res;
  }

#ifdef OTCAL_WITH_CUDA
  // Every epoch on the device (cuda/calibration.cu); the host computes L(S) and c from the k
  // estimates, exactly as on the CPU.
  CalibrationResult run_on_device() {
    CalibrationResult res;
    res.plan = plan_;
    std::vector<std::string> excluded;
    for (index_t j = 0; j < k_; ++j)
      if (!active_[j]) excluded.push_back(sys_.names[j]);
    std::vector<std::string> warnings;
    std::vector<double> S0;
    if (o_.excluded_log_initial) {
      S0.assign(static_cast<std::size_t>(k_), 0.0);
      calib::cuda_estimate(ctx_, A_, sys_.design_weights, S0.data());
    }
    auto logged = [&](const std::vector<double>& est) { return with_frozen_excluded(S0, est); };
    calib::GradientDeviceRun dev = calib::run_gradient_cuda(
        ctx_, A_, At_, sys_.design_weights, o_, [this](const double* S, double* c) { return loss_and_c(S, c); },
        logged, [&](index_t floored) {
          warnings.push_back(std::to_string(floored) + " initial weight(s) (after noise) were floored to 1e-12");
          ctx_.warn(warnings.back());
        });
    res.weights = std::move(dev.weights);
    res.history = std::move(dev.history);
    res.n_iterations = dev.n_iterations;
    if (!res.history.empty()) res.diagnostics.loss = dev.loss;
    return finish(std::move(res), excluded, warnings);
  }
#endif

  index_t k_active() const { return k_active_; }
  const std::vector<char>& active() const { return active_; }

 private:
  // Quirk 4 (excluded_log = "initial"): excluded targets logged at their initial estimate S0.
  std::vector<double> with_frozen_excluded(const std::vector<double>& S0, const std::vector<double>& est) const {
    if (S0.empty()) return est;
    std::vector<double> out = est;
    for (index_t j = 0; j < k_; ++j)
      if (!active_[j]) out[j] = S0[j];
    return out;
  }

  const Context& ctx_;
  const ConstraintSystem& sys_;
  const CsrMatrix& A_;
  CsrMatrix At_;
  GradientOptions o_;
  index_t n_, k_, k_active_ = 0;
  std::vector<char> active_;
  TilePlan plan_;
};

}  // namespace

ByteModel gradient_model(index_t n_records, index_t n_targets, bool l0) {
  const std::size_t per_record_state = (l0 ? 8 : 4) * align_up(static_cast<std::size_t>(n_records) * 8);
  ByteModel m;
  m.operation = "calibrate_gradient";
  m.fixed_bytes = per_record_state + calib::RowAccumulator::bytes(n_targets) + 2 * kDefaultAlignment;
  m.bytes_per_row = 16;  // w' and (Aᵀc) per batch record
  m.min_rows = 1;
  m.row_align = 1;  // the S reduction is granule-ordered inside RowAccumulator for any batch
  return m;
}

CalibrationResult calibrate_gradient(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& options) {
  GradientEngine engine(ctx, sys, options);
  return engine.run();
}

LossAndGradient gradient_loss(const Context& ctx, const ConstraintSystem& sys, const std::vector<double>& theta,
                              const GradientOptions& options, int epoch) {
  if (ctx.kind() == DeviceKind::cuda)
    throw InvalidArgument("gradient_loss evaluates on the host: pass a CPU context (calibrate_gradient runs on CUDA)");
  GradientEngine engine(ctx, sys, options);
  const index_t n = sys.A.cols;
  if (static_cast<index_t>(theta.size()) != n) throw InvalidArgument("gradient_loss: theta must have one value per record");
  LossAndGradient out;
  out.gradient.resize(static_cast<std::size_t>(n));
  std::vector<double> S(static_cast<std::size_t>(sys.A.rows));
  out.loss = engine.evaluate(theta.data(), nullptr, static_cast<std::uint32_t>(epoch), 0, out.gradient.data(), nullptr,
                             S.data());
  for (index_t j = 0; j < sys.A.rows; ++j)
    if (engine.active()[j]) out.estimates.push_back(S[j]);
  return out;
}

}  // namespace otcal
