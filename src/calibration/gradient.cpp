// Gradient calibrator with microcalibrate semantics (docs/calibration.md §3): log-weights, Adam,
// inverted log-space dropout, normalization factors, excluded targets, and the exact two-pass
// batched gradient (pass 1: S = A w' over record batches; pass 2: per batch w'_i (Aᵀc)_i), then
// the optional L0 hard-concrete stage (§3.7). Random draws are Philox, keyed by (seed, purpose,
// epoch, record), so nothing depends on the batch size.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "calibration/calib_backend.hpp"
#include "calibration/distributed.hpp"
#include "calibration/kernels.hpp"
#include "calibration/workspace_layouts.hpp"
#include "core/operation.hpp"
#include "otcal/calibration.hpp"
#include "otcal/detail/philox.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

using detail::RandomPurpose;
constexpr double kLogitClamp = detail::kLogAlphaClamp;

// detail::adam_element in float32 arithmetic (GradientOptions::precision float32): the state is
// read from and written back to the double buffers as float32 values.
inline void adam_element_f32(double& x, double& m, double& v, double grad, float lr, float bc1, float bc2) {
  float xf = static_cast<float>(x), mf = static_cast<float>(m), vf = static_cast<float>(v);
  const float g = static_cast<float>(grad);
  mf = 0.9f * mf + (1 - 0.9f) * g;
  vf = 0.999f * vf + (1 - 0.999f) * g * g;
  xf -= lr * (mf / bc1) / (std::sqrt(vf / bc2) + 1e-8f);
  x = xf;
  m = mf;
  v = vf;
}

struct Adam {  // PyTorch Adam: beta1 0.9, beta2 0.999, eps 1e-8, no weight decay, no amsgrad
  double lr;
  bool f32 = false;
  int step = 0;
  void apply(double* x, double* m, double* v, const double* grad, index_t n) {
    ++step;
    if (f32) {
      const float bc1 = 1 - std::pow(0.9f, static_cast<float>(step)), bc2 = 1 - std::pow(0.999f, static_cast<float>(step));
      const auto lr32 = static_cast<float>(lr);
#pragma omp parallel for schedule(static)
      for (index_t i = 0; i < n; ++i) adam_element_f32(x[i], m[i], v[i], grad[i], lr32, bc1, bc2);
      return;
    }
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) detail::adam_element(x[i], m[i], v[i], grad[i], lr, bc1, bc2);
  }
};

class GradientEngine {
 public:
  // `rl`: where this rank's records lie (one process: all of them). Per-record draws are keyed by
  // the global record index and every sum over records is folded in rank order (§8).
  GradientEngine(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& o, const calib::RecordLayout& rl)
      : ctx_(ctx), sys_(sys), A_(sys.A), o_(o), n_(sys.A.cols), k_(sys.A.rows), rl_(rl),
        f32_(o.precision == DType::float32) {
    if (f32_ && ctx.kind() == DeviceKind::cuda)
      throw InvalidArgument("precision float32 runs on CPU contexts only for now (the CUDA epochs are float64)");
    if (!(o.dropout_rate >= 0 && o.dropout_rate <= 1))
      throw InvalidArgument("dropout_rate must lie in [0, 1], got " + std::to_string(o.dropout_rate));
    if (o.epochs < 0) throw InvalidArgument("epochs must be >= 0");
    // Adam with a step <= 0 climbs the loss (learning_rate -1 "converged" at 1e19), and a negative
    // L0 penalty rewards keeping records: refuse them instead of running.
    auto positive = [](double v, const char* name) {
      if (!(v > 0 && std::isfinite(v)))
        throw InvalidArgument(std::string(name) + " must be a finite number > 0, got " + std::to_string(v));
    };
    positive(o.learning_rate, "learning_rate");
    if (!(o.noise_level >= 0 && std::isfinite(o.noise_level)))
      throw InvalidArgument("noise_level must be a finite number >= 0, got " + std::to_string(o.noise_level));
    if (o.regularize_with_l0) {
      positive(o.sparse_learning_rate, "sparse_learning_rate");
      positive(o.temperature, "temperature");
      if (!(o.l0_lambda >= 0 && std::isfinite(o.l0_lambda)))
        throw InvalidArgument("l0_lambda must be a finite number >= 0, got " + std::to_string(o.l0_lambda));
      if (!(o.init_mean > 0 && o.init_mean < 1))
        throw InvalidArgument("init_mean must lie in (0, 1), got " + std::to_string(o.init_mean));
    }
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
    const auto& w0 = sys.design_weights;
    if (static_cast<index_t>(w0.size()) != n_)
      throw InvalidArgument("gradient calibration: design_weights must have one value per record");
    for (index_t i = 0; i < n_; ++i)
      if (!std::isfinite(w0[i]))
        throw InvalidArgument("initial weight of record " + std::to_string(rl_.offset + i) + " is not finite");
  }

  // The CPU evaluation's buffers, bound once per operation to its workspace (the batch is the
  // tile rows of the plan).
  struct Evaluation {
    Evaluation(const CsrMatrix& A, const detail::Workspace& ws, const calib::EvaluationIds& ids, index_t batch)
        : At(calib::transpose_into(A, ws, ids.At)), acc(calib::csr_view(A), ws, ids.acc),
          wb(ws.get(ids.batch_weights)), atc(ws.get(ids.batch_gradient)), B(std::max<index_t>(batch, 1)) {}
    calib::CsrView At;
    calib::RowAccumulator acc;
    double *wb, *atc;
    index_t B;
  };

  // Element math shared with the CUDA passes (include/otcal/detail/calib_math.hpp).
  // i is this rank's record; the draws are keyed by its global index.
  double dropout_weight(index_t i, double theta, std::uint32_t epoch) const {
    return q(detail::dropout_weight(o_.seed, o_.dropout_rate, rl_.offset + i, theta, epoch));
  }
  // A value at the working precision: rounded to float32 where torch would hold a float32 tensor.
  double q(double x) const { return f32_ ? static_cast<double>(static_cast<float>(x)) : x; }
  using Gate = detail::HardConcreteGate;
  Gate training_gate(index_t i, double log_alpha, std::uint32_t step) const {
    return detail::training_gate(o_.seed, o_.temperature, rl_.offset + i, log_alpha, step);
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
  double evaluate(Evaluation& ev, const double* theta, const double* log_alpha, std::uint32_t dropout_epoch,
                  std::uint32_t gate_step, double* grad_theta, double* grad_alpha, double* S) const {
    const index_t B = ev.B;
    double* wb = ev.wb;
    double* atc = ev.atc;
    calib::RowAccumulator& acc = ev.acc;
    acc.reset();
    // pass 1: S = A w'
    for (index_t b0 = 0; b0 < n_; b0 += B) {
      const index_t b1 = std::min(n_, b0 + B);
#pragma omp parallel for schedule(static) if (b1 - b0 >= calib::kParallelMinRecords)
      for (index_t i = b0; i < b1; ++i) {
        double w = dropout_weight(i, theta[i], dropout_epoch);
        if (log_alpha) w = q(w * q(training_gate(i, log_alpha[i], gate_step).z));
        wb[i - b0] = w;
      }
      acc.add_batch(b0, b1, wb);
    }
    acc.finish(S, fold_comm());
    // loss and c = ∂L/∂S
    std::vector<double> c(static_cast<std::size_t>(k_), 0.0);
    if (f32_)
      for (index_t j = 0; j < k_; ++j) S[j] = q(S[j]);
    const double loss = loss_and_c(S, c.data());
    for (double& cj : c) cj = q(cj);
    // pass 2: per record gradient, the same c for every batch
    const double lambda =
        o_.l0_lambda / (o_.l0_penalty_per_record ? static_cast<double>(std::max<index_t>(rl_.total, 1)) : 1.0);
    for (index_t b0 = 0; b0 < n_; b0 += B) {
      const index_t b1 = std::min(n_, b0 + B);
      calib::transpose_apply(ev.At, c.data(), b0, b1, atc);
#pragma omp parallel for schedule(static) if (b1 - b0 >= calib::kParallelMinRecords)
      for (index_t i = b0; i < b1; ++i) {
        const double we = dropout_weight(i, theta[i], dropout_epoch);
        const double ac = q(atc[i - b0]);
        if (!log_alpha) {
          grad_theta[i] = q(we * ac);
        } else {
          const Gate gt = training_gate(i, log_alpha[i], gate_step);
          grad_theta[i] = q(we * gt.z * ac);
          if (std::fabs(log_alpha[i]) > kLogitClamp) {
            grad_alpha[i] = 0;
          } else {
            const double p = penalty_prob(log_alpha[i]);
            grad_alpha[i] = q(we * ac * gt.dz + lambda * p * (1 - p));
          }
        }
      }
    }
    return loss;
  }

  CalibrationResult run(const detail::Workspace& ws, const calib::GradientLayout& l, index_t batch) {
    CalibrationResult res;
    const auto& w0 = sys_.design_weights;
    Evaluation ev(A_, ws, l.eval, batch);
    double* theta = ws.get(l.theta);
    double* m = ws.get(l.m);
    double* v = ws.get(l.v);
    double* grad = ws.get(l.grad);
    std::vector<double> S(static_cast<std::size_t>(k_));
    index_t floored = calib::initial_log_weights(w0, o_.seed, o_.noise_level, theta, rl_.offset);
    for (index_t i = 0; i < n_; ++i) theta[i] = q(theta[i]);
    if (rl_.distributed) {  // the warning counts every rank's records
      auto all = static_cast<std::uint64_t>(floored);
      ctx_.communicator().all_sum(&all, 1);
      floored = static_cast<index_t>(all);
    }
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
      ev.acc.reset();
      ev.acc.add_batch(0, n_, w0.data());
      ev.acc.finish(S0.data(), fold_comm());
    }
    auto logged = [&](const std::vector<double>& est) { return with_frozen_excluded(S0, est); };
    const int E = o_.epochs;
    const int stride = E > 10 ? std::max(1, E / 10) : 1;
    Adam adam{o_.learning_rate, f32_};
    res.weights.assign(static_cast<std::size_t>(n_), 0.0);
    const bool last_draw = keeps_last_dropout_draw();
    for (int e = 0; e < E; ++e) {
      const double loss = evaluate(ev, theta, nullptr, static_cast<std::uint32_t>(e), 0, grad, nullptr, S.data());
      report("dense", e, E, loss);
      if (e % stride == 0 || e == E - 1) res.history.push_back({e, "dense", loss, logged(S)});
      if (e == E - 1 && last_draw)
        for (index_t i = 0; i < n_; ++i) res.weights[i] = dropout_weight(i, theta[i], static_cast<std::uint32_t>(e));
      adam.apply(theta, m, v, grad, n_);
      res.diagnostics.loss = loss;
    }
    if (!(E > 0 && last_draw))
      for (index_t i = 0; i < n_; ++i) res.weights[i] = q(std::exp(theta[i]));
    res.n_iterations = E;

    if (o_.regularize_with_l0) {
      res.dense_weights = res.weights;
      double* alpha = ws.get(l.alpha);
      double* ma = ws.get(l.m_alpha);
      double* va = ws.get(l.v_alpha);
      double* ga = ws.get(l.grad_alpha);
      const double la0 = std::log(o_.init_mean / (1 - o_.init_mean));
      for (index_t i = 0; i < n_; ++i) {
        const double start = o_.l0_init_dense_result ? res.weights[i] : w0[i];
        theta[i] = q(std::log(std::max(start, 1e-12)));
        m[i] = v[i] = ma[i] = va[i] = 0;
        alpha[i] = q(la0);
      }
      Adam adam_t{o_.sparse_learning_rate, f32_}, adam_a{o_.sparse_learning_rate, f32_};
      const int steps = 2 * E;
      const int l0_stride = std::max(1, stride / 2);
      for (int s = 0; s < steps; ++s) {
        const double loss = evaluate(ev, theta, alpha, static_cast<std::uint32_t>(E + s),
                                     static_cast<std::uint32_t>(s), grad, ga, S.data());
        report("l0", s, steps, loss);
        if (s % l0_stride == 0 || s == steps - 1) res.history.push_back({s, "l0", loss, logged(S)});
        adam_t.apply(theta, m, v, grad, n_);
        adam_a.apply(alpha, ma, va, ga, n_);
        res.diagnostics.loss = loss;
      }
      for (index_t i = 0; i < n_; ++i) res.weights[i] = q(q(std::exp(theta[i])) * q(eval_gate(alpha[i])));
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
    res.diagnostics = diagnose(ctx_, sys_, res.weights, excluded);
    res.record_offset = rl_.offset;
    res.total_records = rl_.total;
    res.diagnostics.loss = loss;
    for (auto& w : warnings) res.diagnostics.warnings.push_back(w);
    res.g.resize(static_cast<std::size_t>(n_));
    for (index_t i = 0; i < n_; ++i) res.g[i] = w0[i] != 0 ? res.weights[i] / w0[i] : 0.0;
    return res;
  }

  // Every epoch on the device (cuda/calibration.cu); the host computes L(S) and c from the k
  // estimates, exactly as on the CPU.
  CalibrationResult run_on_device(const detail::Workspace& ws, const calib::GradientLayout& l) {
    CalibrationResult res;
    std::vector<std::string> excluded;
    for (index_t j = 0; j < k_; ++j)
      if (!active_[j]) excluded.push_back(sys_.names[j]);
    std::vector<std::string> warnings;
    std::vector<double> S0;
    auto logged = [&](const std::vector<double>& est) { return with_frozen_excluded(S0, est); };
    const CsrMatrix At = transpose(A_);  // host counting sort, uploaded once into the workspace
    // The device loop asks the host for L(S) exactly once per epoch and per L0 step, in order, so
    // the progress hook rides on that call: the n-th evaluation is dense epoch n, then L0 step n - E.
    // With L0 the device hands back only the L0 weights, so a dense-only run comes first for the
    // dense weights (the same epochs and Philox keys, hence the same numbers); the full run then
    // repeats those epochs and reports them as stage "dense_repeat".
    const int E = o_.epochs;
    auto hook_with = [this, E](const char* dense_stage) {
      return [this, E, dense_stage, evaluations = 0](const double* S, double* c) mutable {
        const double loss = loss_and_c(S, c);
        const int e = evaluations++;
        if (e < E)
          report(dense_stage, e, E, loss);
        else
          report("l0", e - E, 2 * E, loss);
        return loss;
      };
    };
    const std::function<void(index_t)> no_warning = [](index_t) {};
    const std::function<void(index_t)> floored_warning = [&](index_t floored) {
      warnings.push_back(std::to_string(floored) + " initial weight(s) (after noise) were floored to 1e-12");
      ctx_.warn(warnings.back());
    };
    if (o_.regularize_with_l0) {
      GradientOptions dense_only = o_;
      dense_only.regularize_with_l0 = false;
      res.dense_weights = calib::run_gradient_cuda(ctx_, ws, l.device, A_, At, sys_.design_weights, dense_only,
                                                   hook_with("dense"), logged, floored_warning, nullptr)
                              .weights;
    }
    calib::GradientDeviceRun dev = calib::run_gradient_cuda(
        ctx_, ws, l.device, A_, At, sys_.design_weights, o_, hook_with(o_.regularize_with_l0 ? "dense_repeat" : "dense"),
        logged, o_.regularize_with_l0 ? no_warning : floored_warning,
        o_.excluded_log_initial ? &S0 : nullptr);
    res.weights = std::move(dev.weights);
    res.history = std::move(dev.history);
    res.n_iterations = dev.n_iterations;
    if (!res.history.empty()) res.diagnostics.loss = dev.loss;
    return finish(std::move(res), excluded, warnings);
  }

  // The caller's progress hook (calibration.hpp), once per epoch or L0 step from the host loop.
  // Distributed, a hook that throws on one rank (an interrupt) stops every rank at the same epoch.
  void report(const char* stage, int step, int total, double loss) const {
    if (!rl_.distributed) {
      if (o_.progress) o_.progress(CalibrationProgress{stage, step, total, loss});
      return;
    }
    detail::agreed(ctx_.communicator(), [&] {
      if (o_.progress) o_.progress(CalibrationProgress{stage, step, total, loss});
    });
  }

  // The communicator the accumulator folds over: none in one process (the granules sum locally).
  Communicator* fold_comm() const { return rl_.distributed ? &ctx_.communicator() : nullptr; }

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

  // Quirk 1 (§3.8): microcalibrate hands back exp of its last dropout draw, taken before the final
  // Adam step; at dropout 0 that draw is θ itself, which the step then updates in place, so the
  // weights it returns are exp(θ) after the step — the same as without the quirk.
  bool keeps_last_dropout_draw() const { return o_.final_weights_last_dropout_draw && o_.dropout_rate > 0; }

  const Context& ctx_;
  const ConstraintSystem& sys_;
  const CsrMatrix& A_;
  GradientOptions o_;
  index_t n_, k_, k_active_ = 0;
  calib::RecordLayout rl_;
  bool f32_ = false;  // GradientOptions::precision float32
  std::vector<char> active_;
};

}  // namespace

namespace {

// Distributed runs (§8) are CPU only for now: the CUDA epoch loop has no rank-order fold of S.
void refuse_distributed_device(const Context& ctx, const char* operation) {
  if (ctx.distributed() && ctx.kind() == DeviceKind::cuda)
    throw InvalidArgument(std::string(operation) + ": distributed calibration runs on CPU contexts only");
}

}  // namespace

CalibrationResult calibrate_gradient(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& options) {
  Communicator& comm = ctx.communicator();
  const calib::RecordLayout rl = calib::record_layout(comm, sys.A.cols, "calibrate_gradient");
  calib::require_same(comm, static_cast<std::uint64_t>(sys.A.rows), "calibrate_gradient: the number of constraints");
  refuse_distributed_device(ctx, "calibrate_gradient");
  // Validation, planning and allocation may fail on one rank only (its records, its budget):
  // every rank raises the first failure instead of waiting in the first fold.
  std::unique_ptr<GradientEngine> engine;
  std::optional<calib::GradientLayout> layout;
  TilePlan plan;
  std::optional<detail::OperationScope> scope;
  std::optional<detail::Workspace> ws;
  detail::agreed(comm, [&] {
    engine = std::make_unique<GradientEngine>(ctx, sys, options, rl);
    layout.emplace(calib::gradient_layout(ctx, sys, options));
    plan = calib::plan_calibration(layout->decl, ctx, sys.A.cols, options.batch_size);
    scope.emplace(ctx);
    ws.emplace(ctx.workspace(), layout->decl, plan.rows, ctx.compute_stream());
  });
  CalibrationResult res = layout->on_device ? engine->run_on_device(*ws, *layout) : engine->run(*ws, *layout, plan.rows);
  ws.reset();
  res.plan = plan;
  res.memory = calib::memory_report(ctx, plan, scope->finish());
  return res;
}

std::vector<double> initial_log_weights(const std::vector<double>& w0, std::uint64_t seed, double noise_level) {
  std::vector<double> theta(w0.size());
  calib::initial_log_weights(w0, seed, noise_level, theta.data());
  return theta;
}

LossAndGradient gradient_loss(const Context& ctx, const ConstraintSystem& sys, const std::vector<double>& theta,
                              const GradientOptions& options, int epoch) {
  if (ctx.kind() == DeviceKind::cuda)
    throw InvalidArgument("gradient_loss evaluates on the host: pass a CPU context (calibrate_gradient runs on CUDA)");
  Communicator& comm = ctx.communicator();
  const calib::RecordLayout rl = calib::record_layout(comm, sys.A.cols, "gradient_loss");
  calib::require_same(comm, static_cast<std::uint64_t>(sys.A.rows), "gradient_loss: the number of constraints");
  const index_t n = sys.A.cols;
  std::unique_ptr<GradientEngine> engine;
  std::optional<calib::LossLayout> layout;
  LossAndGradient out;
  std::optional<detail::OperationScope> scope;
  std::optional<detail::Workspace> ws;
  detail::agreed(comm, [&] {
    engine = std::make_unique<GradientEngine>(ctx, sys, options, rl);
    if (static_cast<index_t>(theta.size()) != n)
      throw InvalidArgument("gradient_loss: theta must have one value per record");
    layout.emplace(calib::gradient_loss_layout(ctx, sys));
    out.plan = calib::plan_calibration(layout->decl, ctx, n, options.batch_size);
    scope.emplace(ctx);
    ws.emplace(ctx.workspace(), layout->decl, out.plan.rows, ctx.compute_stream());
  });
  {
    GradientEngine::Evaluation ev(sys.A, *ws, layout->eval, out.plan.rows);
    out.gradient.resize(static_cast<std::size_t>(n));
    std::vector<double> S(static_cast<std::size_t>(sys.A.rows));
    out.loss = engine->evaluate(ev, theta.data(), nullptr, static_cast<std::uint32_t>(epoch), 0, out.gradient.data(),
                                nullptr, S.data());
    for (index_t j = 0; j < sys.A.rows; ++j)
      if (engine->active()[j]) out.estimates.push_back(S[j]);
  }
  ws.reset();
  out.memory = calib::memory_report(ctx, out.plan, scope->finish());
  return out;
}

}  // namespace otcal
