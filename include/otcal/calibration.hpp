#pragma once
// Survey-weight calibration (docs/calibration.md): the sparse targets x records constraint system
// built in O(nnz), exact Deville-Sarndal calibrators (Newton on the dual, as R's survey::grake),
// a microcalibrate-compatible gradient calibrator with optional L0 gates, and diagnostics.
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/csr.hpp"
#include "otcal/planner.hpp"
#include "otcal/types.hpp"

namespace otcal {

// ---------------------------------------------------------------------------------------------
// Data model (§1)

// One column of a record table: numbers (NaN = missing) or strings ("" = missing).
struct TableColumn {
  std::string name;
  bool numeric = true;
  std::vector<double> numbers;
  std::vector<std::string> strings;
};

struct RecordTable {
  index_t n_records = 0;
  std::vector<TableColumn> columns;

  const TableColumn* find(const std::string& name) const;
  // Both throw InvalidArgument when the length differs from n_records (n_records is set by the
  // first column added) or the name is already used.
  void add_numeric(std::string name, std::vector<double> values);
  void add_strings(std::string name, std::vector<std::string> values);
};

struct LinearConstraint {
  std::string name;
  std::vector<double> coefficients;  // one per record
  double target = 0;
};

struct ConstraintSpec {
  // column -> (category text -> target), both in the given order. A category's text is its
  // canonical rendering: decimal integers, strings verbatim. For numeric columns a key that
  // parses as a number matches by value ("3", "3.0").
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, double>>>> marginal;
  std::vector<std::pair<std::string, double>> continuous;  // column -> total
  std::vector<LinearConstraint> linear;
  std::optional<double> total;            // population total: a row of ones named "total" (last)
  std::string weight_column = "weight";   // initial weights; all 1 when the column is absent
};

struct ConstraintSystem {
  CsrMatrix A;                          // k x n, rows in spec order
  std::vector<double> targets;          // k
  std::vector<std::string> names;       // k
  index_t n_categorical = 0;            // marginal rows come first
  std::vector<index_t> margin_offsets;  // margin m owns rows [margin_offsets[m], margin_offsets[m+1])
  std::vector<double> design_weights;   // n: the weight column, or ones
  std::vector<std::string> warnings;    // zero/low support, negative targets, magnitude checks
  std::size_t planned_peak_bytes = 0;   // workspace peak of the build (its declared buffers)
  MemoryReport memory{};                // the build's measured peak against the same plan
  // Distributed (§8): this rank's records are records [record_offset, record_offset + n_records())
  // of total_records in data order. One process: 0 and n_records(). Set by build_constraints; the
  // calibrators work the layout out again from every rank's record count.
  index_t record_offset = 0;
  index_t total_records = 0;

  index_t n_records() const { return A.cols; }
  index_t n_constraints() const { return A.rows; }
};

// §2. Throws InvalidArgument on every validation failure of §1. Emits warnings via ctx.warn().
// Distributed context (§8, collective): `table` is this rank's slice of the records (ranks in
// rank order hold consecutive slices, each starting on a multiple of kReductionGranule records:
// slice_records(whole, record_shard(ctx, n))) and every LinearConstraint holds the coefficients of
// those records only (slice_spec). The result holds this rank's columns; warnings are computed from
// all-reduced supports and sums, so they equal the one-process ones, and a validation failure on
// any rank is raised on every rank ("rank R: ...").
ConstraintSystem build_constraints(const Context& ctx, const RecordTable& table, const ConstraintSpec& spec);
// The same system for a table the caller gives up: each column's storage is freed once the last
// row reading it is built (and columns no row reads, once the design weights are copied), so the
// peak is about the larger of the table and A rather than their sum. Afterwards every column is
// empty (names and n_records remain); after an exception its columns are unspecified.
ConstraintSystem build_constraints(const Context& ctx, RecordTable&& table, const ConstraintSpec& spec);

// §8: the records of n_total that this context's rank owns (shard_rows with the communicator's
// rank and size; all of them in one process), and the matching slices of a whole table and of a
// spec's linear-constraint coefficients (targets are global and stay as they are).
Shard record_shard(const Context& ctx, index_t n_total);
RecordTable slice_records(const RecordTable& table, Shard shard);
ConstraintSpec slice_spec(const ConstraintSpec& spec, Shard shard);

// Aᵀ (n x k CSR) by the same counting sort, O(nnz).
CsrMatrix transpose(const CsrMatrix& A);

// ---------------------------------------------------------------------------------------------
// Progress (docs/calibration.md §7)

// What a calibrator reports once per step of its host loop: an epoch of the gradient calibrator
// (stage "dense", then "l0"), a Newton step of the exact calibrator ("newton") or a sweep of rake()
// ("rake"). The hook runs on the calling thread, outside every OpenMP region (an epoch: once its
// loss is known, before the Adam update; Newton and rake: after the step), and nothing of the
// calibrator runs concurrently with it. It may throw to stop the operation (an interrupt): the
// exception propagates out of the calibrator, whose workspace is released on the way, and no
// result is produced.
struct CalibrationProgress {
  // "dense", "l0", "newton" or "rake"; "dense_repeat" for the dense epochs that a CUDA run with L0
  // computes a second time (the device returns only final weights, so the dense weights come from
  // a dense-only run first).
  const char* stage = "";
  int step = 0;            // 0-based epoch or L0 step; 1-based Newton iteration or sweep
  int total = 0;           // the most steps this stage takes (epochs, 2 x epochs, max_iterations, max_sweeps)
  double loss = 0;         // gradient loss before the step, Newton max ratio after it, or rake's delta
};
using ProgressHook = std::function<void(const CalibrationProgress&)>;

// ---------------------------------------------------------------------------------------------
// Exact calibrators (§4)

enum class CalFun { linear, raking, logit };

struct ExactOptions {
  CalFun calfun = CalFun::linear;
  double lower = -std::numeric_limits<double>::infinity();  // bounds on g = w / d
  double upper = std::numeric_limits<double>::infinity();
  int max_iterations = 50;
  double epsilon = 1e-7;
  bool force = false;
  std::vector<double> variance;  // sigma_i^2 per record (n), or a length-k v with sigma_i^2 = x_iᵀ v; empty = all 1
  // §4.5 trim = (a, b) on g after calibration (also in the GREG path: [deviation] from R).
  std::optional<std::pair<double, double>> trim;
  ProgressHook progress;  // once per Newton step (also the single GREG solve); empty = none
};

// §4.5 step 1-2: g' = clip(g, a, b); the trimmed mass Σ (g - g') d is spread over the untrimmed
// units in proportion to d (one pass: untrimmed units may end up outside [a, b]).
struct TrimResult {
  std::vector<double> values;
  index_t n_trimmed = 0;
  std::vector<std::string> warnings;
};
TrimResult trim_g(const std::vector<double>& g, const std::vector<double>& d, double a, double b);
// R's trimWeights on absolute weights: clip, share the excess in equal parts among units never
// trimmed; strict repeats until nothing lies outside (or no unit is left: "trimming failed").
TrimResult trim_weights(const std::vector<double>& w, double lower, double upper, bool strict = false);

// ---------------------------------------------------------------------------------------------
// Gradient calibrator (§3)

struct GradientOptions {
  int epochs = 32;
  double learning_rate = 1e-3;
  double noise_level = 10.0;
  double dropout_rate = 0.0;
  std::uint64_t seed = 42;
  std::optional<index_t> batch_size;      // memory knob only; results identical for every value
  std::vector<double> normalization_factor;  // per target (k), empty = all 1
  std::vector<std::string> excluded_targets;
  bool regularize_with_l0 = false;
  double l0_lambda = 5e-6;
  double init_mean = 0.999;
  double temperature = 0.5;
  double sparse_learning_rate = 0.2;
  // §3.8 quirks, microcalibrate behaviour behind explicit options.
  bool final_weights_last_dropout_draw = false;  // quirk 1
  bool loss_relative = false;                    // quirk 2: ((S - t)/d)^2 instead of the +1 numerator
  bool l0_init_dense_result = false;             // quirk 3
  bool l0_penalty_per_record = false;            // quirk 5
  bool excluded_log_initial = false;             // quirk 4: history keeps excluded targets at A w0
  bool legacy_eval_gate = false;                 // sigma(log alpha) evaluation gate (l0 < PR #41)
  // float64, or float32 as microcalibrate computes (torch float32): θ, the weights exp(θ), the
  // gradients, the L0 gate logits and the Adam state are held at float32 precision and every Adam
  // step runs in float32 arithmetic; S = A w and Aᵀc are summed in float64 (the batch-invariant
  // granule sums; more accurate than float32 sums) and rounded where torch holds a float32 tensor.
  // CPU contexts only for now.
  DType precision = DType::float64;
  ProgressHook progress;  // once per epoch (dense) and per L0 step, on either backend; empty = none
};

// §3.2: the starting log-weights θ_i = log(max(w0_i + u_i·noise_level, 1e-12)) that
// calibrate_gradient draws for these options (Philox keyed by seed and record), so that adapters
// and tests can start an independent reference from the same point.
std::vector<double> initial_log_weights(const std::vector<double>& w0, std::uint64_t seed, double noise_level);

// nf_j = 1 / |group of j|, rescaled by 1 / mean(nf) (§3.6).
std::vector<double> normalization_from_groups(const std::vector<std::string>& group_of_target);

// ---------------------------------------------------------------------------------------------
// Results and diagnostics (§5)

struct TargetDiagnostic {
  std::string name;
  double target = 0, estimate = 0, error = 0, abs_error = 0, rel_error = 0, rel_abs_error = 0;
  bool within_tol = false;
  bool excluded = false;
  index_t support = 0;
  double support_fraction = 0;
};

struct WeightStatistics {
  double min = 0, max = 0, mean = 0, std = 0, cv = 0, sum = 0;
  index_t n_zero = 0, n_negative = 0;
  double n_eff = 0, efficiency = 0, deff = 0;
  double g_min = 0, g_max = 0;
  index_t n_at_lower = 0, n_at_upper = 0;
  double design_efficiency = 0;  // (Σ d g)² / (Σ d · Σ d g²)
};

struct HistoryRow {
  int epoch = 0;        // epoch (gradient) or Newton iteration (exact)
  std::string stage;    // "dense", "l0" or "newton"
  double loss = 0;      // gradient loss, or the max misfit ratio for Newton
  std::vector<double> estimates;  // per target, all targets (excluded ones re-estimated)
};

struct Diagnostics {
  std::vector<TargetDiagnostic> targets;
  double loss = std::numeric_limits<double>::quiet_NaN();
  double pct_close = 0;
  double max_error = 0, mean_error = 0, rmse = 0;  // microplex relative errors (0 when t <= 0)
  double pct_within_10 = 0;                         // percent of targets within_tol
  WeightStatistics weights;
  std::vector<std::string> warnings;
};

struct CalibrationResult {
  std::vector<double> weights;
  // Gradient calibrator with L0: the dense stage's weights (microcalibrate's `weights`), while
  // `weights` holds the L0 stage's sparse result (its `sparse_weights`). Empty otherwise.
  std::vector<double> dense_weights;
  std::vector<double> g;        // w / d (0 where d = 0)
  bool converged = false;
  int n_iterations = 0;
  double max_ratio = 0;         // exact: max |misfit| / (1 + |t|)
  std::vector<std::string> worst_targets;
  std::vector<std::string> dropped_constraints;  // zero row, zero target (§4.3)
  std::vector<HistoryRow> history;
  Diagnostics diagnostics;
  TilePlan plan;                // workspace plan (planned_peak); rows = the batch for gradient
  MemoryReport memory{};        // measured peak of the operation against plan.planned_peak
  // §8: weights, dense_weights and g are per record of this rank: records [record_offset,
  // record_offset + weights.size()) of total_records. Everything else is global (equal on every rank).
  index_t record_offset = 0;
  index_t total_records = 0;
};

CalibrationResult calibrate_exact(const Context& ctx, const ConstraintSystem& sys, const ExactOptions& options);

// §4.6 iterative raking with R rake() semantics over the marginal rows only: sweeps of
// post-stratification per margin; stop when the largest change of any margin cell total between
// sweeps is below epsilon (absolute if epsilon >= 1, else relative to Σ d). Not converging after
// max_sweeps gives converged = false and the warning "Raking did not converge after N iterations".
struct RakeOptions {
  int max_sweeps = 10;
  double epsilon = 1;
  ProgressHook progress;  // once per sweep; empty = none
};
CalibrationResult rake(const Context& ctx, const ConstraintSystem& sys, const RakeOptions& options = {});
CalibrationResult calibrate_gradient(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& options);

// The gradient loss of §3.3 and its gradient with respect to the log-weights theta at a given
// epoch (dropout mask of that epoch), evaluated in record batches. Exposed for tests and benches.
struct LossAndGradient {
  double loss = 0;
  std::vector<double> estimates;  // S over the active (non-excluded) targets
  std::vector<double> gradient;   // dL/dtheta, n
  TilePlan plan;
  MemoryReport memory{};
};
LossAndGradient gradient_loss(const Context& ctx, const ConstraintSystem& sys, const std::vector<double>& theta,
                              const GradientOptions& options, int epoch);

// §5. `excluded` names targets flagged as excluded; bounds are those on g (exact methods).
Diagnostics diagnose(const ConstraintSystem& sys, const std::vector<double>& weights,
                     const std::vector<std::string>& excluded = {},
                     double lower = -std::numeric_limits<double>::infinity(),
                     double upper = std::numeric_limits<double>::infinity());
// The same over the context's ranks (§8, collective): `sys` and `weights` hold this rank's records;
// the result is the one-process diagnostics of all records, bit for bit, on every rank.
Diagnostics diagnose(const Context& ctx, const ConstraintSystem& sys, const std::vector<double>& weights,
                     const std::vector<std::string>& excluded = {},
                     double lower = -std::numeric_limits<double>::infinity(),
                     double upper = std::numeric_limits<double>::infinity());

// ---------------------------------------------------------------------------------------------
// Synthetic problems (tests and bench/bench_calibrate_build.cpp)

struct SyntheticSurvey {
  RecordTable table;
  ConstraintSpec spec;
};

// n records with `n_margin_columns` integer categorical columns of `categories_per_column`
// categories each (every category targeted: margins exhaustive), `n_continuous` positive numeric
// columns, a design-weight column "weight". Targets are the weighted totals of a perturbed copy of
// the design weights, so they are consistent and the problem is feasible for every calfun.
SyntheticSurvey make_synthetic_survey(index_t n_records, int n_margin_columns, int categories_per_column,
                                      int n_continuous, std::uint64_t seed);

}  // namespace otcal
