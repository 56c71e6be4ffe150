#pragma once
// The workspace of every calibration operation, declared once (docs/host-layer.md §3). Each
// operation plans with the declaration returned here and allocates exactly that list with
// detail::Workspace, so tests read the very declaration the operation ran with.
//
// Budgeted: everything the operation itself allocates per record or per target pair (the
// transpose Aᵀ, per-record state, the Newton matrix, the granule accumulators, the gradient's
// batch buffers; on CUDA also the uploaded A). Not budgeted: the caller's inputs (the
// ConstraintSystem), the results (plain vectors, like every operation's outputs) and O(k) host
// vectors (S, η, c) that are the same on both backends. The Newton matrix is factored in T's own
// (budgeted) storage (the Cholesky factor, or the fallback eigensolve), so no other ka² matrix
// exists on the CPU; on CUDA T is built and solved in the device workspace (cuSOLVER's scratch
// declared there too) and never copied to the host (docs/calibration.md §4.7).
#include <algorithm>
#include <cstdint>
#include <string>

#include "calibration/calib_backend.hpp"
#include "calibration/kernels.hpp"
#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/planner.hpp"

namespace otcal::calib {

// The builder, and rake, run on the host for every context: on CUDA their scratch comes from
// pinned host memory (the device workspace is not host-addressable), planned against the same
// budget so that a refusal still comes before any allocation.
inline MemoryResource& host_scratch(const Context& ctx) {
  return ctx.kind() == DeviceKind::cuda ? ctx.pinned_host() : ctx.workspace();
}

// ---- build_constraints (§2) ---------------------------------------------------------------------
struct BuildLayout {
  WorkspaceDecl decl;
  BufferId<std::int32_t> row_of_record;  // category -> row within the current margin, per record
  BufferId<std::int64_t> row_counters;   // counting-sort counters of the current margin's rows
};

inline BuildLayout build_layout(const Context& ctx, const RecordTable& table, const ConstraintSpec& spec) {
  std::size_t max_rows_per_margin = 1;
  for (const auto& margin : spec.marginal) max_rows_per_margin = std::max(max_rows_per_margin, margin.second.size());
  BuildLayout l;
  l.decl.operation = "build_constraints";
  l.decl.resident_bytes = ctx.limiter().allocated_bytes();
  l.row_of_record = l.decl.add<std::int32_t>("row_of_record", spec.marginal.empty() ? 0 : static_cast<std::size_t>(table.n_records));
  l.row_counters = l.decl.add<std::int64_t>("row_counters", spec.marginal.empty() ? 0 : max_rows_per_margin);
  return l;
}

// ---- calibrate_exact (§4.3-§4.5) -----------------------------------------------------------------
struct CpuExactIds : ExactRecordIds {
  CsrIds At;
  BufferId<std::uint16_t> slot;  // per entry of A, its position in the record's Aᵀ slice (none: k > 65536
                                 // or margins, whose tallies leave the generic pass few rows)
  BufferId<std::uint16_t> cat16;  // margins x n: each record's category per margin (fill_margin_categories), ka < 65535
  BufferId<std::int32_t> cat32;   // the same for larger ka
  BufferId<double> tmp;  // Aᵀη
  AccumulatorIds acc;
};

struct ExactLayout {
  WorkspaceDecl decl;
  bool on_device = false;
  index_t ka = 0;       // active constraint rows: T is ka x ka
  CpuExactIds cpu;      // declared when !on_device
  CudaExactIds device;  // declared when on_device
};

inline index_t active_row_count(const CsrMatrix& A) {
  index_t ka = 0;
  for (index_t r = 0; r < A.rows; ++r) ka += row_is_active(A, r);
  return ka;
}

// σ² is per record whenever options.variance is given (as n values or as x_iᵀ v, §4.1).
// `ka` is the number of active rows when the caller knows it (distributed: rows active on some
// rank, from all-reduced supports); by default the rows of A that hold an entry.
inline ExactLayout exact_layout(const Context& ctx, const ConstraintSystem& sys, const ExactOptions& o,
                                index_t ka = -1) {
  const CsrMatrix& A = sys.A;
  const auto n = static_cast<std::size_t>(A.cols);
  const bool has_sigma2 = !o.variance.empty();
  ExactLayout l;
  l.decl.operation = "calibrate_exact";
  l.decl.resident_bytes = ctx.limiter().allocated_bytes();
  l.on_device = ctx.kind() == DeviceKind::cuda;
  l.ka = ka >= 0 ? ka : active_row_count(A);
  if (l.on_device) {
    l.device = declare_cuda_exact_workspace(l.decl, A, l.ka, has_sigma2);
    return l;
  }
  CpuExactIds& c = l.cpu;
  c.At = declare_csr(l.decl, "At", A.cols, A.rows, A.nnz());
  // Categorical margins: T's margin entries are weighted counts (tally_newton_margins) from each
  // record's category per margin; the generic pass, then without slots, keeps the other rows.
  const bool margins = sys.n_categorical > 0 && sys.margin_offsets.size() >= 2;
  const std::size_t categories = margins ? (sys.margin_offsets.size() - 1) * n : 0;
  const bool narrow = margin_categories_fit_16(l.ka);
  c.cat16 = l.decl.add<std::uint16_t>("margin_categories16", narrow ? categories : 0);
  c.cat32 = l.decl.add<std::int32_t>("margin_categories32", narrow ? 0 : categories);
  c.slot = l.decl.add<std::uint16_t>("At.slot", !margins && newton_slots_fit(A.rows) ? static_cast<std::size_t>(A.nnz()) : 0);
  static_cast<ExactRecordIds&>(c) = declare_exact_records(l.decl, A.cols, l.ka, has_sigma2);
  c.tmp = l.decl.add<double>("At_eta", n);
  c.acc = declare_accumulator(l.decl, A.rows, ctx.distributed() ? &A : nullptr);
  return l;
}

// ---- rake (§4.6) ---------------------------------------------------------------------------------
// R's rake() compares the joint table of all margin variables between sweeps, so every record gets
// its joint cell (the combination of its categories, numbered densely by a sort over the records)
// and the joint totals of two sweeps are kept; the cells number at most n.
struct RakeLayout {
  WorkspaceDecl decl;
  BufferId<double> weights;             // n, raked in place, copied to the result at the end
  BufferId<std::int64_t> joint_cell;    // n: each record's joint cell
  BufferId<std::int64_t> joint_key;     // n: scratch while numbering the joint cells
  BufferId<std::int64_t> joint_order;   // n: scratch while numbering the joint cells
  BufferId<double> joint_previous;      // joint cell totals of the previous sweep (<= n cells)
  BufferId<double> joint_now;           // joint cell totals after this sweep (<= n cells)
};

inline RakeLayout rake_layout(const Context& ctx, const ConstraintSystem& sys) {
  RakeLayout l;
  l.decl.operation = "rake";
  l.decl.resident_bytes = ctx.limiter().allocated_bytes();
  const auto n = static_cast<std::size_t>(sys.A.cols);
  l.weights = l.decl.add<double>("weights", n);
  l.joint_cell = l.decl.add<std::int64_t>("joint_cell", n);
  l.joint_key = l.decl.add<std::int64_t>("joint_key", n);
  l.joint_order = l.decl.add<std::int64_t>("joint_order", n);
  l.joint_previous = l.decl.add<double>("joint_totals_previous", n);
  l.joint_now = l.decl.add<double>("joint_totals_now", n);
  return l;
}

// ---- calibrate_gradient and gradient_loss (§3.4, §3.7) -------------------------------------------
// One loss-and-gradient evaluation on the CPU: Aᵀ, the granule accumulators of S, and per batch
// record w' and (Aᵀc) — the batch size is the tile rows.
struct EvaluationIds {
  CsrIds At;
  AccumulatorIds acc;
  BufferId<double> batch_weights, batch_gradient;
};

// `distributed`: the accumulator keeps its granule partials for the rank-order fold.
inline EvaluationIds declare_evaluation(WorkspaceDecl& d, const CsrMatrix& A, bool distributed = false) {
  EvaluationIds e;
  e.At = declare_csr(d, "At", A.cols, A.rows, A.nnz());
  e.acc = declare_accumulator(d, A.rows, distributed ? &A : nullptr);
  e.batch_weights = d.add<double>("batch_weights", 0, 1);
  e.batch_gradient = d.add<double>("batch_At_c", 0, 1);
  return e;
}

// CPU: the evaluation plus the per-record state (the base); CUDA: `device`.
struct GradientLayout : GradientStateIds {
  WorkspaceDecl decl;
  bool on_device = false;
  EvaluationIds eval;
  CudaGradientIds device;  // declared when on_device
};

inline GradientLayout gradient_layout(const Context& ctx, const ConstraintSystem& sys, const GradientOptions& o) {
  const CsrMatrix& A = sys.A;
  GradientLayout l;
  l.decl.operation = "calibrate_gradient";
  l.decl.resident_bytes = ctx.limiter().allocated_bytes();
  l.on_device = ctx.kind() == DeviceKind::cuda;
  if (l.on_device) {
    l.device = declare_cuda_gradient_workspace(l.decl, A, o.regularize_with_l0);
    return l;
  }
  l.eval = declare_evaluation(l.decl, A, ctx.distributed());
  static_cast<GradientStateIds&>(l) = declare_gradient_state(l.decl, A.cols, o.regularize_with_l0);
  return l;
}

// gradient_loss (host only): one evaluation; θ is the caller's and the gradient is the result.
struct LossLayout {
  WorkspaceDecl decl;
  EvaluationIds eval;
};

inline LossLayout gradient_loss_layout(const Context& ctx, const ConstraintSystem& sys) {
  LossLayout l;
  l.decl.operation = "gradient_loss";
  l.decl.resident_bytes = ctx.limiter().allocated_bytes();
  l.eval = declare_evaluation(l.decl, sys.A, ctx.distributed());
  return l;
}

// The tile of a calibration operation: the gradient's batch on the CPU (explicit or planned);
// everything else, and the gradient on CUDA (no batch buffer there), in one piece of n rows.
inline TilePlan plan_calibration(const WorkspaceDecl& decl, const Context& ctx, index_t n_records,
                                 std::optional<index_t> batch = std::nullopt) {
  return plan_batch(n_records, decl, ctx.memory_budget(), decl.bytes_per_row() > 0 ? batch : std::nullopt);
}

// The MemoryReport of an operation whose scope has just finished.
inline MemoryReport memory_report(const Context& ctx, const TilePlan& plan, std::size_t measured_peak) {
  return {ctx.memory_budget(), measured_peak, plan.planned_peak};
}

}  // namespace otcal::calib
