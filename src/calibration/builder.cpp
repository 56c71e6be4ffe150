// Constraint-system builder (docs/calibration.md §1-§2): validation, then the targets x records
// CSR in O(nnz) by counting sort. No dense k x n buffer exists on any path.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "calibration/distributed.hpp"
#include "calibration/workspace_layouts.hpp"
#include "core/operation.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

std::string render_number(double v) {
  if (std::isnan(v)) return "nan";
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15)
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  else
    std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

std::string join_limited(const std::vector<std::string>& items, std::size_t limit = 10) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += ", ... (" + std::to_string(items.size()) + " in all)";
  return out;
}

}  // namespace

const TableColumn* RecordTable::find(const std::string& name) const {
  for (const auto& c : columns)
    if (c.name == name) return &c;
  return nullptr;
}

void RecordTable::add_numeric(std::string name, std::vector<double> values) {
  if (find(name)) throw InvalidArgument("record table: column '" + name + "' is already defined");
  if (columns.empty()) n_records = static_cast<index_t>(values.size());
  if (static_cast<index_t>(values.size()) != n_records)
    throw InvalidArgument("record table: column '" + name + "' has " + std::to_string(values.size()) +
                          " values, expected " + std::to_string(n_records));
  columns.push_back(TableColumn{std::move(name), true, std::move(values), {}});
}

void RecordTable::add_strings(std::string name, std::vector<std::string> values) {
  if (find(name)) throw InvalidArgument("record table: column '" + name + "' is already defined");
  if (columns.empty()) n_records = static_cast<index_t>(values.size());
  if (static_cast<index_t>(values.size()) != n_records)
    throw InvalidArgument("record table: column '" + name + "' has " + std::to_string(values.size()) +
                          " values, expected " + std::to_string(n_records));
  columns.push_back(TableColumn{std::move(name), false, {}, std::move(values)});
}

CsrMatrix transpose(const CsrMatrix& A) {
  CsrMatrix T;
  T.rows = A.cols;
  T.cols = A.rows;
  T.dtype = A.dtype;
  const std::int64_t nnz = A.nnz();
  T.indptr.assign(static_cast<std::size_t>(T.rows) + 1, 0);
  for (std::int64_t p = 0; p < nnz; ++p) ++T.indptr[static_cast<std::size_t>(A.index(p)) + 1];
  for (index_t i = 0; i < T.rows; ++i) T.indptr[i + 1] += T.indptr[i];
  if (T.wide_indices())
    T.indices64.resize(static_cast<std::size_t>(nnz));
  else
    T.indices32.resize(static_cast<std::size_t>(nnz));
  T.values.resize(static_cast<std::size_t>(nnz));
  std::vector<std::int64_t> next(T.indptr.begin(), T.indptr.end() - 1);
  for (index_t r = 0; r < A.rows; ++r)  // rows in order: indices ascending within each record
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t q = next[static_cast<std::size_t>(A.index(p))]++;
      if (T.wide_indices())
        T.indices64[q] = r;
      else
        T.indices32[q] = static_cast<std::int32_t>(r);
      T.values[q] = A.values[p];
    }
  return T;
}

namespace {

// Frees a consumed table's columns once the build has read them for the last time, so that the
// table shrinks while A grows (the CLI's peak is otherwise the whole table plus A). A column's last
// reader is the last margin or continuous row group naming it; a column no group names (the weight
// column, unused ones) is last read when the design weights are copied. Does nothing for a table
// the caller keeps.
class ColumnRelease {
 public:
  ColumnRelease(const RecordTable& table, RecordTable* consumed) : table_(table), consumed_(consumed) {
    if (consumed_) last_group_.assign(table.columns.size(), kNoGroup);
  }
  // Row groups are numbered in build order: margins first, then continuous rows.
  void read_by(const TableColumn* c, int group) {
    if (consumed_) last_group_[slot(c)] = group;
  }
  void unread() { release_if([](int g) { return g == kNoGroup; }); }
  void after_group(int group) { release_if([group](int g) { return g == group; }); }

 private:
  static constexpr int kNoGroup = -1;
  std::size_t slot(const TableColumn* c) const { return static_cast<std::size_t>(c - table_.columns.data()); }
  template <class Pred>
  void release_if(Pred last_read_here) {
    if (!consumed_) return;
    for (std::size_t j = 0; j < last_group_.size(); ++j)
      if (last_read_here(last_group_[j])) {
        TableColumn& col = consumed_->columns[j];
        std::vector<double>().swap(col.numbers);  // swap, not clear: the storage itself goes
        std::vector<std::string>().swap(col.strings);
      }
  }
  const RecordTable& table_;
  RecordTable* consumed_;
  std::vector<int> last_group_;
};

// The build over this rank's records (all of them in one process); `first` is the global index of
// the table's first record (messages name records by it). Warnings are left to the caller.
// `consumed` is the same table when the caller gives it up (its columns are emptied as the build
// goes), else null.
ConstraintSystem build_local(const Context& ctx, const RecordTable& table, const ConstraintSpec& spec, index_t first,
                             RecordTable* consumed) {
  const index_t n = table.n_records;
  ConstraintSystem sys;
  ColumnRelease release(table, consumed);

  // ---- validation (§1) -------------------------------------------------------------------------
  std::vector<const TableColumn*> margin_cols, cont_cols;
  for (const auto& [col, cats] : spec.marginal) {
    sys.margin_offsets.push_back(static_cast<index_t>(sys.names.size()));
    const TableColumn* c = table.find(col);
    if (!c) throw InvalidArgument("Margin variable '" + col + "' not in data columns");
    release.read_by(c, static_cast<int>(margin_cols.size()));
    margin_cols.push_back(c);
    for (const auto& [cat, t] : cats) {
      sys.names.push_back(col + "=" + cat);
      sys.targets.push_back(t);
    }
  }
  sys.n_categorical = static_cast<index_t>(sys.names.size());
  sys.margin_offsets.push_back(sys.n_categorical);
  for (const auto& [col, t] : spec.continuous) {
    const TableColumn* c = table.find(col);
    if (!c) throw InvalidArgument("Continuous variable '" + col + "' not in data columns");
    if (!c->numeric)
      throw InvalidArgument("Continuous variable '" + col + "' is not numeric; give it numbers or target it as a margin");
    for (index_t i = 0; i < n; ++i)
      if (!std::isfinite(c->numbers[i]))
        throw InvalidArgument("Continuous variable '" + col + "' has a non-finite value (" + render_number(c->numbers[i]) +
                              ") at record " + std::to_string(first + i) + "; fill or drop missing values first");
    release.read_by(c, static_cast<int>(spec.marginal.size() + cont_cols.size()));
    cont_cols.push_back(c);
    sys.names.push_back(col);
    sys.targets.push_back(t);
  }
  for (const auto& lc : spec.linear) {
    if (lc.name.empty()) throw InvalidArgument("LinearConstraint name must be non-empty");
    if (static_cast<index_t>(lc.coefficients.size()) != n)
      throw InvalidArgument("LinearConstraint '" + lc.name + "' has " + std::to_string(lc.coefficients.size()) +
                            " coefficients, expected one per record (" + std::to_string(n) + ")");
    for (double v : lc.coefficients)
      if (!std::isfinite(v)) throw InvalidArgument("LinearConstraint '" + lc.name + "' has non-finite coefficients");
    sys.names.push_back(lc.name);
    sys.targets.push_back(lc.target);
  }
  if (spec.total) {
    sys.names.push_back("total");
    sys.targets.push_back(*spec.total);
  }
  {
    std::unordered_set<std::string> seen;
    for (const auto& name : sys.names)
      if (!seen.insert(name).second)
        throw InvalidArgument("Duplicate constraint name '" + name + "'; every target row needs a unique name");
  }
  for (std::size_t r = 0; r < sys.targets.size(); ++r)
    if (!std::isfinite(sys.targets[r]))
      throw InvalidArgument("Target '" + sys.names[r] + "' is not finite (" + render_number(sys.targets[r]) + ")");

  // initial weights
  sys.design_weights.assign(static_cast<std::size_t>(n), 1.0);
  if (const TableColumn* wc = table.find(spec.weight_column)) {
    if (!wc->numeric) throw InvalidArgument("Weight column '" + spec.weight_column + "' is not numeric");
    for (index_t i = 0; i < n; ++i) {
      if (!std::isfinite(wc->numbers[i]))
        throw InvalidArgument("Weight column '" + spec.weight_column + "' has a non-finite value at record " +
                              std::to_string(first + i));
      sys.design_weights[i] = wc->numbers[i];
    }
  }

  release.unread();

  // ---- workspace and CSR shape -------------------------------------------------------------------
  const calib::BuildLayout layout = calib::build_layout(ctx, table, spec);
  const TilePlan plan = calib::plan_calibration(layout.decl, ctx, n);  // refuses before allocating
  sys.planned_peak_bytes = plan.planned_peak;
  detail::OperationScope scope(ctx);
  const detail::Workspace ws(calib::host_scratch(ctx), layout.decl, plan.rows);
  std::int32_t* row_of = ws.get(layout.row_of_record);
  std::int64_t* next = ws.get(layout.row_counters);
  const index_t k = static_cast<index_t>(sys.names.size());
  CsrMatrix& A = sys.A;
  A.rows = k;
  A.cols = n;
  A.dtype = DType::float64;
  // Non-zeros per continuous and linear row, in row order: each row's entries are then appended
  // to storage reserved for all of them but touched only as it fills, so a consumed table's freed
  // columns make room for A instead of adding to it.
  std::vector<std::int64_t> dense_nnz;
  std::int64_t nnz = static_cast<std::int64_t>(margin_cols.size()) * n;  // margins are exhaustive
  auto count_nonzeros = [&](const std::vector<double>& v) {
    std::int64_t cnt = 0;
    for (double x : v) cnt += (x != 0);
    dense_nnz.push_back(cnt);
    nnz += cnt;
  };
  for (const TableColumn* c : cont_cols) count_nonzeros(c->numbers);
  for (const auto& lc : spec.linear) count_nonzeros(lc.coefficients);
  if (spec.total) nnz += n;
  A.indptr.assign(static_cast<std::size_t>(k) + 1, 0);
  const bool wide = A.wide_indices();
  if (wide)
    A.indices64.reserve(static_cast<std::size_t>(nnz));
  else
    A.indices32.reserve(static_cast<std::size_t>(nnz));
  A.values.reserve(static_cast<std::size_t>(nnz));
  auto grow_to = [&](std::int64_t end) {  // within the reservation: no reallocation
    if (wide)
      A.indices64.resize(static_cast<std::size_t>(end));
    else
      A.indices32.resize(static_cast<std::size_t>(end));
    A.values.resize(static_cast<std::size_t>(end));
  };
  auto put = [&](std::int64_t pos, index_t i, double v) {
    if (wide)
      A.indices64[pos] = i;
    else
      A.indices32[pos] = static_cast<std::int32_t>(i);
    A.values[pos] = v;
  };

  index_t row = 0;
  std::int64_t pos = 0;
  for (std::size_t m = 0; m < spec.marginal.size(); ++m) {
    const auto& [col, cats] = spec.marginal[m];
    const TableColumn* c = margin_cols[m];
    const index_t rows_here = static_cast<index_t>(cats.size());
    // 1. category -> row within this margin (-1: untargeted)
    std::unordered_map<double, std::int32_t> by_value;
    std::unordered_map<std::string, std::int32_t> by_text;
    for (index_t j = 0; j < rows_here; ++j) {
      const std::string& key = cats[j].first;
      double v;
      if (c->numeric) {
        if (key == "True") v = 1;
        else if (key == "False") v = 0;
        else if (!parse_number(key, v)) continue;  // cannot occur in a numeric column: an empty row
        by_value.emplace(v, static_cast<std::int32_t>(j));
      } else {
        by_text.emplace(key, static_cast<std::int32_t>(j));
      }
    }
    bool any_untargeted = false;
#pragma omp parallel for schedule(static) reduction(|| : any_untargeted)
    for (index_t i = 0; i < n; ++i) {
      std::int32_t r = -1;
      if (c->numeric) {
        const double v = c->numbers[i];
        if (!std::isnan(v))
          if (auto it = by_value.find(v); it != by_value.end()) r = it->second;
      } else {
        const std::string& s = c->strings[i];
        if (!s.empty())
          if (auto it = by_text.find(s); it != by_text.end()) r = it->second;
      }
      row_of[i] = r;
      any_untargeted = any_untargeted || r < 0;
    }
    if (any_untargeted) {
      std::set<std::string> missing;
      for (index_t i = 0; i < n && missing.size() < 20; ++i)
        if (row_of[i] < 0) missing.insert(c->numeric ? render_number(c->numbers[i]) : (c->strings[i].empty() ? "nan" : c->strings[i]));
      throw InvalidArgument("Data contains categories not in targets for '" + col + "': {" +
                            join_limited(std::vector<std::string>(missing.begin(), missing.end())) +
                            "}; margins must be exhaustive: add targets for them or recode the column");
    }
    // 2. count, exclusive scan, stable scatter in record order
    for (index_t j = 0; j < rows_here; ++j) next[j] = 0;
    for (index_t i = 0; i < n; ++i) ++next[row_of[i]];
    for (index_t j = 0; j < rows_here; ++j) {
      A.indptr[row + j] = pos;
      const std::int64_t cnt = next[j];
      next[j] = pos;
      pos += cnt;
    }
    grow_to(pos);
    for (index_t i = 0; i < n; ++i) put(next[row_of[i]]++, i, 1.0);
    row += rows_here;
    release.after_group(static_cast<int>(m));
  }
  // 3. continuous, linear and total rows compact their non-zeros
  std::size_t dense_index = 0;
  auto dense_row = [&](const double* v) {
    A.indptr[row] = pos;
    grow_to(pos + dense_nnz[dense_index++]);
    for (index_t i = 0; i < n; ++i)
      if (v[i] != 0) put(pos++, i, v[i]);
    ++row;
  };
  for (std::size_t j = 0; j < cont_cols.size(); ++j) {
    dense_row(cont_cols[j]->numbers.data());
    release.after_group(static_cast<int>(spec.marginal.size() + j));
  }
  for (const auto& lc : spec.linear) dense_row(lc.coefficients.data());
  if (spec.total) {
    A.indptr[row] = pos;
    grow_to(pos + n);
    for (index_t i = 0; i < n; ++i) put(pos++, i, 1.0);
    ++row;
  }
  A.indptr[k] = pos;
  sys.memory = calib::memory_report(ctx, plan, scope.finish());
  return sys;
}

// Build-time warnings (§5, §3.8) from every row's support and unit-weight column sum over all
// records: the sums run in record order, chained through the ranks (bitwise the one-process sums).
void add_build_warnings(const Context& ctx, ConstraintSystem& sys) {
  Communicator& comm = ctx.communicator();
  const CsrMatrix& A = sys.A;
  const index_t k = A.rows, n = sys.total_records;
  const std::vector<std::int64_t> supports = calib::global_row_support(comm, A);
  std::vector<double> column_sum(static_cast<std::size_t>(k), 0.0);
  detail::ordered_fold(comm, column_sum, [&](std::vector<double>& acc) {
    for (index_t r = 0; r < k; ++r)
      for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) acc[static_cast<std::size_t>(r)] += A.values[p];
  });
  std::vector<std::string> zero_support, low_support, negative, magnitude, zero_sum;
  for (index_t r = 0; r < k; ++r) {
    const std::int64_t support = supports[static_cast<std::size_t>(r)];
    double e = column_sum[static_cast<std::size_t>(r)];
    const double t = sys.targets[r];
    if (support == 0)
      zero_support.push_back(sys.names[r]);
    else if (n > 0 && static_cast<double>(support) < 0.01 * static_cast<double>(n))
      low_support.push_back(sys.names[r]);
    if (t < 0) negative.push_back(sys.names[r]);
    if (e == 0) {
      zero_sum.push_back(sys.names[r]);
      e = 1e-4;
    }
    if (t == 0 || std::log10(std::fabs(t / e)) > 1) magnitude.push_back(sys.names[r]);
  }
  auto warn = [&](const std::vector<std::string>& names, const std::string& what) {
    if (names.empty()) return;
    sys.warnings.push_back(std::to_string(names.size()) + " " + what + ": " + join_limited(names));
    ctx.warn(sys.warnings.back());
  };
  warn(zero_support, "target(s) have zero support (no record with a non-zero coefficient; infeasible unless the target is 0)");
  warn(low_support, "target(s) are supported by fewer than 1% of records");
  warn(negative, "target(s) are negative");
  warn(zero_sum, "column(s) have a zero estimate sum");
  warn(magnitude, "target(s) are zero or more than an order of magnitude from their unit-weight column sum");
}

}  // namespace

namespace {

ConstraintSystem build_system(const Context& ctx, const RecordTable& table, const ConstraintSpec& spec,
                              RecordTable* consumed) {
  Communicator& comm = ctx.communicator();
  // Collective first: where this rank's records lie (§8), then the build, whose validation may
  // fail on one rank only (its records): every rank raises the first failing rank's error.
  const calib::RecordLayout rl = calib::record_layout(comm, table.n_records, "build_constraints");
  ConstraintSystem sys = detail::agreed(comm, [&] { return build_local(ctx, table, spec, rl.offset, consumed); });
  calib::require_same(comm, static_cast<std::uint64_t>(sys.A.rows), "build_constraints: the number of constraints");
  sys.record_offset = rl.offset;
  sys.total_records = rl.total;
  add_build_warnings(ctx, sys);
  return sys;
}

}  // namespace

ConstraintSystem build_constraints(const Context& ctx, const RecordTable& table, const ConstraintSpec& spec) {
  return build_system(ctx, table, spec, nullptr);
}

ConstraintSystem build_constraints(const Context& ctx, RecordTable&& table, const ConstraintSpec& spec) {
  return build_system(ctx, table, spec, &table);
}

Shard record_shard(const Context& ctx, index_t n_total) {
  const Communicator& comm = ctx.communicator();
  return shard_rows(n_total, comm.rank(), comm.size());
}

RecordTable slice_records(const RecordTable& table, Shard shard) {
  if (shard.begin < 0 || shard.end < shard.begin || shard.end > table.n_records)
    throw InvalidArgument("slice_records: rows [" + std::to_string(shard.begin) + ", " + std::to_string(shard.end) +
                          ") are not within the table's " + std::to_string(table.n_records) + " records");
  RecordTable out;
  out.n_records = shard.size();
  for (const TableColumn& c : table.columns) {
    TableColumn s{c.name, c.numeric, {}, {}};
    if (c.numeric)
      s.numbers.assign(c.numbers.begin() + shard.begin, c.numbers.begin() + shard.end);
    else
      s.strings.assign(c.strings.begin() + shard.begin, c.strings.begin() + shard.end);
    out.columns.push_back(std::move(s));
  }
  return out;
}

ConstraintSpec slice_spec(const ConstraintSpec& spec, Shard shard) {
  ConstraintSpec out = spec;
  for (std::size_t j = 0; j < out.linear.size(); ++j) {
    const std::vector<double>& all = spec.linear[j].coefficients;
    if (shard.begin < 0 || shard.end < shard.begin || shard.end > static_cast<index_t>(all.size()))
      throw InvalidArgument("slice_spec: LinearConstraint '" + spec.linear[j].name + "' has " +
                            std::to_string(all.size()) + " coefficients, fewer than the slice needs");
    out.linear[j].coefficients.assign(all.begin() + shard.begin, all.begin() + shard.end);
  }
  return out;
}

std::vector<double> normalization_from_groups(const std::vector<std::string>& group_of_target) {
  std::unordered_map<std::string, double> size;
  for (const auto& g : group_of_target) size[g] += 1;
  std::vector<double> nf(group_of_target.size());
  double mean = 0;
  for (std::size_t j = 0; j < nf.size(); ++j) mean += (nf[j] = 1.0 / size[group_of_target[j]]);
  if (!nf.empty()) mean /= static_cast<double>(nf.size());
  for (double& v : nf) v /= mean;
  return nf;
}

}  // namespace otcal
