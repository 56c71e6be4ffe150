// The catalogue of bad inputs (otcal issue 11): one table row per class of bad or extreme input to
// the `otcal` tool, each run on tiny fresh random inputs with exactly one defect. Every row must
// fail cleanly: exit code 1..127 (no crash, no "terminate called", no bad_alloc or stoi leaking
// out), exactly one "otcal: error:" line naming the input (the flag, and the path, JSON key or
// column where there is one), and nothing at or beside --out (no OUT.tmp-*). Rows whose behaviour
// today is not yet that are marked known_open with the reason and reported as skipped, so the
// open ones stay visible; such a row that passes says so in its skip message.
//
// docs/bad-inputs.md lists the same ids; the DocumentListsEveryCase test keeps the two in step.
// OTCAL_BAD_INPUTS_LOG=<file> appends "id <TAB> exit code <TAB> error line" per case (used to
// write the "what the tool says" column of the document).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using otcal::DType;
using otcal::index_t;

namespace {

using testsupport::RunResult;
using testsupport::TempDir;

// ---- the inputs of one case -----------------------------------------------------------------------

// The folder a case runs in, its random stream and the sizes of its valid inputs.
struct Env {
  const TempDir& dir;
  std::mt19937_64 rng;
  index_t n = 0, m = 0, d = 0, records = 0;

  std::string file(const std::string& name) const { return dir.file(name); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
  std::size_t pick(std::size_t count) { return static_cast<std::size_t>(rng() % count); }
  // Coordinates in [-2, 2] (never all zero), weights in [0.5, 1.5].
  std::vector<double> points(index_t rows, index_t cols) {
    std::vector<double> v(static_cast<std::size_t>(rows * cols));
    for (double& e : v) e = uniform(-2, 2);
    return v;
  }
  std::vector<double> weights(index_t count) {
    std::vector<double> v(static_cast<std::size_t>(count));
    for (double& e : v) e = uniform(0.5, 1.5);
    return v;
  }
  void npy(const std::string& name, const std::vector<double>& v, const std::vector<index_t>& shape,
           DType dt = DType::float64) const {
    otcal::io::write_npy(file(name), v.data(), shape, dt);
  }
  void text(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary | std::ios::trunc) << content;
  }
};

std::string bytes_of(const std::vector<double>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
}

// A hand-made .npy: magic, version, header length, `dict` padded to 64 bytes, then `payload`.
std::string raw_npy(const std::string& dict, const std::string& payload, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  const std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  std::string h("\x93NUMPY", 6);
  h.push_back(static_cast<char>(major));
  h.push_back(0);
  const std::size_t len = total - prefix;
  for (std::size_t k = 0; k < prefix - 8; ++k) h.push_back(static_cast<char>((len >> (8 * k)) & 0xff));
  h += dict;
  h.append(total - h.size() - 1, ' ');
  h.push_back('\n');
  return h + payload;
}

std::string dict(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': " + descr + ", 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

std::string shape2(index_t r, index_t c) { return "(" + std::to_string(r) + ", " + std::to_string(c) + ")"; }

// The valid inputs every case starts from: two clouds with weights, an `otcal sinkhorn` output
// folder for sparsify (potentials of the right lengths), a survey CSV with a feasible spec.
void write_valid_inputs(Env& e) {
  e.npy("x.npy", e.points(e.n, e.d), {e.n, e.d});
  e.npy("y.npy", e.points(e.m, e.d), {e.m, e.d});
  e.npy("a.npy", e.weights(e.n), {e.n});
  e.npy("b.npy", e.weights(e.m), {e.m});
  fs::create_directory(e.dir.path / "pot");
  std::vector<double> f(static_cast<std::size_t>(e.n)), g(static_cast<std::size_t>(e.m));
  for (double& v : f) v = e.uniform(-0.1, 0.1);
  for (double& v : g) v = e.uniform(-0.1, 0.1);
  e.npy("pot/f.npy", f, {e.n});
  e.npy("pot/g.npy", g, {e.m});
  e.text("pot/result.json",
         "{\"epsilon\": 0.5, \"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float64\", "
         "\"converged\": true}\n");
  // Records: weight, region (3 categories, each present), age, income; targets 5% above the
  // design totals keep the linear calibration feasible.
  const std::vector<std::string> regions = {"north", "south", "east"};
  std::map<std::string, double> region_total;
  double income_total = 0;
  std::ostringstream csv;
  csv.precision(17);
  csv << "weight,region,age,income\n";
  for (index_t i = 0; i < e.records; ++i) {
    const double w = e.uniform(1, 3), income = std::round(e.uniform(100, 900));
    const std::string& r = regions[static_cast<std::size_t>(i) % 3];
    csv << w << ',' << r << ',' << 18 + static_cast<int>(e.rng() % 60) << ',' << income << '\n';
    region_total[r] += w;
    income_total += w * income;
  }
  e.text("data.csv", csv.str());
  std::ostringstream spec;
  spec.precision(17);
  spec << "{\"marginal\": {\"region\": {";
  for (std::size_t k = 0; k < regions.size(); ++k)
    spec << (k ? ", " : "") << '"' << regions[k] << "\": " << 1.05 * region_total[regions[k]];
  spec << "}}, \"continuous\": {\"income\": " << 1.05 * income_total << "}}\n";
  e.text("spec.json", spec.str());
  e.npy("coef.npy", e.weights(e.records), {e.records});
}

// ---- the table ------------------------------------------------------------------------------------

struct Case {
  std::string id;
  std::function<void(Env&)> setup;  // the defect, written over the valid inputs
  std::string args;                 // after "otcal"
  std::vector<std::string> names;   // each must appear in the error line
  std::string out;                  // --out, which must not appear ("" for commands without one)
  std::string known_open;           // why today's tool fails this row ("" = it must pass)
  std::string needs_unreadable;     // a file chmod 000 made unreadable (skipped where root reads it)
};

using Flags = std::vector<std::pair<std::string, std::string>>;
const std::string kDrop = "\x01drop";

// "<command> --flag value ..." from `base` with `over` replacing flags of the same name (kDrop
// removes one) or added at the end; a flag with an empty value is a switch.
std::string command(const std::string& name, const Flags& base, const Flags& over) {
  Flags all = base;
  for (const auto& [flag, value] : over) {
    bool replaced = false;
    for (auto& [f, v] : all)
      if (f == flag) v = value, replaced = true;
    if (!replaced) all.emplace_back(flag, value);
  }
  std::string s = name;
  for (const auto& [flag, value] : all) {
    if (value == kDrop) continue;
    s += " " + flag;
    if (!value.empty()) s += " " + value;
  }
  return s;
}

const Flags kSinkhorn = {{"--x", "x.npy"},   {"--y", "y.npy"},  {"--a", "a.npy"}, {"--b", "b.npy"},
                         {"--out", "out"},   {"--device", "cpu"}, {"--quiet", ""}, {"--max-iterations", "40"}};
const Flags kSolve = {{"--x", "x.npy"},      {"--y", "y.npy"},    {"--a", "a.npy"},     {"--b", "b.npy"},
                      {"--out", "out"},      {"--mode", "percentile"}, {"--value", "90"}, {"--device", "cpu"},
                      {"--quiet", ""},       {"--max-iterations", "40"}};
const Flags kSparsify = {{"--x", "x.npy"},           {"--y", "y.npy"},   {"--a", "a.npy"},
                         {"--b", "b.npy"},           {"--potentials", "pot"}, {"--out", "plan.npz"},
                         {"--mode", "percentile"},   {"--value", "90"},  {"--device", "cpu"},
                         {"--quiet", ""}};
const Flags kCalibrate = {{"--data", "data.csv"}, {"--spec", "spec.json"}, {"--out", "out"}, {"--device", "cpu"},
                          {"--quiet", ""}};
const Flags kMerge = {{"--manifest", "plan.manifest.json"}, {"--out", "merged.npz"}};
const Flags kDemo = {{"--n", "20"}, {"--device", "cpu"}, {"--quiet", ""}};

std::string sinkhorn(const Flags& over) { return command("sinkhorn", kSinkhorn, over); }
std::string solve(const Flags& over) { return command("solve", kSolve, over); }
std::string sparsify(const Flags& over) { return command("sparsify", kSparsify, over); }
std::string calibrate(const Flags& over) { return command("calibrate", kCalibrate, over); }
std::string merge_plan(const Flags& over) { return command("merge-plan", kMerge, over); }
std::string demo(const Flags& over) { return command("demo", kDemo, over); }


// A .npy defect: bytes for a file that stands where an array of shape (rows, cols) (cols = 0: a
// vector of `rows`) is expected.
struct NpyDefect {
  std::string name;
  std::function<std::string(Env&, index_t rows, index_t cols)> bytes;
  std::string known_open;  // "" = refused cleanly today
};

std::string shape_of(index_t rows, index_t cols) { return cols == 0 ? "(" + std::to_string(rows) + ",)" : shape2(rows, cols); }
index_t count_of(index_t rows, index_t cols) { return cols == 0 ? rows : rows * cols; }
std::vector<double> values(Env& e, index_t rows, index_t cols) {
  return cols == 0 ? e.weights(rows) : e.points(rows, cols);
}
std::string valid_f8(Env& e, index_t rows, index_t cols, const std::string& descr = "'<f8'") {
  return raw_npy(dict(descr, shape_of(rows, cols)), bytes_of(values(e, rows, cols)));
}
std::string with_value_at_random_place(Env& e, index_t rows, index_t cols, double bad) {
  std::vector<double> v = values(e, rows, cols);
  v[e.pick(v.size())] = bad;
  return raw_npy(dict("'<f8'", shape_of(rows, cols)), bytes_of(v));
}

std::vector<NpyDefect> npy_defects() {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  auto typed = [](const std::string& descr, std::size_t item) {
    return [descr, item](Env&, index_t r, index_t c) {
      return raw_npy(dict(descr, shape_of(r, c)), std::string(static_cast<std::size_t>(count_of(r, c)) * item, '\x01'));
    };
  };
  return {
      {"bad_magic", [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); s[1] = 'X'; return s; }, ""},
      {"text_file", [](Env&, index_t, index_t) { return std::string("1,2,3\n4,5,6\n"); }, ""},
      {"only_magic", [](Env&, index_t, index_t) { return std::string("\x93NUMPY", 6); }, ""},
      {"version_0", [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); s[6] = 0; return s; }, ""},
      {"version_4", [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); s[6] = 4; return s; }, ""},
      {"header_length_past_end",
       [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); s[8] = '\xff'; s[9] = '\x7f'; return s.substr(0, 200); },
       ""},
      {"header_length_zero",
       [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); s[8] = 0; s[9] = 0; return s; }, ""},
      {"truncated_header", [](Env& e, index_t r, index_t c) { return valid_f8(e, r, c).substr(0, 30); }, ""},
      {"truncated_payload",
       [](Env& e, index_t r, index_t c) { std::string s = valid_f8(e, r, c); return s.substr(0, s.size() - 5); }, ""},
      {"header_only", [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", shape_of(r, c)), ""); }, ""},
      {"big_endian", [](Env& e, index_t r, index_t c) { return valid_f8(e, r, c, "'>f8'"); }, ""},
      {"fortran_order",
       [](Env& e, index_t r, index_t c) {
         return raw_npy(dict("'<f8'", shape_of(r, c), "True"), bytes_of(values(e, r, c)));
       },
       ""},
      {"fortran_order_not_bool",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", shape_of(r, c), "maybe"), bytes_of(values(e, r, c))); },
       ""},
      {"dtype_object", typed("'|O'", 8), ""},
      {"dtype_int64", typed("'<i8'", 8), ""},
      {"dtype_int32", typed("'<i4'", 4), ""},
      {"dtype_uint8", typed("'|u1'", 1), ""},
      {"dtype_bool", typed("'|b1'", 1), ""},
      {"dtype_float16", typed("'<f2'", 2), ""},
      {"dtype_complex128", typed("'<c16'", 16), ""},
      {"dtype_unicode", typed("'<U3'", 12), ""},
      {"dtype_datetime", typed("'<M8[s]'", 8), ""},
      {"dtype_structured", typed("[('a', '<f8')]", 8), ""},
      {"dtype_empty", typed("''", 8), ""},
      {"header_not_dict",
       [](Env& e, index_t r, index_t c) { return raw_npy("['<f8', False, " + shape_of(r, c) + "]", bytes_of(values(e, r, c))); }, ""},
      {"header_unknown_key",
       [](Env& e, index_t r, index_t c) {
         return raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': " + shape_of(r, c) + ", 'extra': 1, }",
                        bytes_of(values(e, r, c)));
       },
       ""},
      {"header_no_shape",
       [](Env& e, index_t r, index_t c) { return raw_npy("{'descr': '<f8', 'fortran_order': False, }", bytes_of(values(e, r, c))); }, ""},
      {"shape_not_tuple",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", "[" + std::to_string(r) + "]"), bytes_of(values(e, r, c))); }, ""},
      {"shape_negative",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", "(-" + std::to_string(r) + ", 2)"), bytes_of(values(e, r, c))); }, ""},
      {"shape_huge",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", "(999999999999999999, 3)"), bytes_of(values(e, r, c))); }, ""},
      {"shape_product_overflows",
       [](Env& e, index_t r, index_t c) {
         return raw_npy(dict("'<f8'", "(3037000500, 3037000500, 3037000500)"), bytes_of(values(e, r, c)));
       },
       ""},
      {"shape_lies_bigger",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", shape_of(r + 1, c)), bytes_of(values(e, r, c))); }, ""},
      {"shape_lies_smaller",
       [](Env& e, index_t r, index_t c) { return raw_npy(dict("'<f8'", shape_of(r - 1, c)), bytes_of(values(e, r, c))); },
       ""},
      {"nan_at_random_place", [nan](Env& e, index_t r, index_t c) { return with_value_at_random_place(e, r, c, nan); }, ""},
      {"inf_at_random_place", [inf](Env& e, index_t r, index_t c) { return with_value_at_random_place(e, r, c, inf); }, ""},
      {"minus_inf_at_random_place",
       [inf](Env& e, index_t r, index_t c) { return with_value_at_random_place(e, r, c, -inf); }, ""},
  };
}

// Shape defects of a 2-D points array (`cols` = d) and of a weights vector.
struct ShapeDefect {
  std::string name;
  std::function<void(Env&, const std::string& file, index_t rows, index_t cols)> write;
};

std::vector<ShapeDefect> point_shape_defects() {
  return {
      {"zero_d", [](Env& e, const std::string& f, index_t, index_t) { e.npy(f, {e.uniform(1, 2)}, {}); }},
      {"one_d", [](Env& e, const std::string& f, index_t r, index_t) { e.npy(f, e.points(r, 1), {r}); }},
      {"three_d", [](Env& e, const std::string& f, index_t r, index_t c) { e.npy(f, e.points(r, 2 * c), {r, c, 2}); }},
      {"zero_rows", [](Env& e, const std::string& f, index_t, index_t c) { e.npy(f, {}, {0, c}); }},
      {"zero_columns", [](Env& e, const std::string& f, index_t r, index_t) { e.npy(f, {}, {r, 0}); }},
  };
}

struct PathDefect {
  std::string name;
  std::function<void(Env&, const std::string& file)> make;  // makes `file` bad (it may not exist yet)
  bool unreadable = false;
};

std::vector<PathDefect> path_defects() {
  return {
      {"missing", [](Env& e, const std::string& f) { fs::remove(e.dir.path / f); }},
      {"empty_file", [](Env& e, const std::string& f) { e.text(f, ""); }},
      {"folder", [](Env& e, const std::string& f) { fs::remove(e.dir.path / f); fs::create_directory(e.dir.path / f); }},
      {"dangling_symlink",
       [](Env& e, const std::string& f) { fs::remove(e.dir.path / f); fs::create_symlink("no-such-target", e.dir.path / f); }},
      {"unreadable", [](Env& e, const std::string& f) { ::chmod(e.file(f).c_str(), 0); }, true},
  };
}

std::vector<Case> build_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(std::move(c)); };
  const auto nothing = [](Env&) {};

  // -- file flags: missing, empty, a folder, a dangling link, unreadable ---------------------------
  struct FileFlag {
    std::string prefix, flag, file;
    std::function<std::string(const Flags&)> cmd;
    std::string out;
    std::vector<std::string> extra_names;
  };
  const std::vector<FileFlag> file_flags = {
      {"sinkhorn", "--x", "x.npy", sinkhorn, "out"},       {"sinkhorn", "--y", "y.npy", sinkhorn, "out"},
      {"sinkhorn", "--a", "a.npy", sinkhorn, "out"},       {"sinkhorn", "--b", "b.npy", sinkhorn, "out"},
      {"solve", "--x", "x.npy", solve, "out"},             {"solve", "--y", "y.npy", solve, "out"},
      {"solve", "--a", "a.npy", solve, "out"},             {"solve", "--b", "b.npy", solve, "out"},
      {"sparsify", "--x", "x.npy", sparsify, "plan.npz"},  {"sparsify", "--y", "y.npy", sparsify, "plan.npz"},
      {"sparsify", "--a", "a.npy", sparsify, "plan.npz"},  {"sparsify", "--b", "b.npy", sparsify, "plan.npz"},
      {"calibrate", "--data", "data.csv", calibrate, "out"}, {"calibrate", "--spec", "spec.json", calibrate, "out"},
  };
  for (const FileFlag& ff : file_flags)
    for (const PathDefect& pd : path_defects()) {
      const std::string flagname = ff.flag.substr(2);
      Case c{ff.prefix + "." + flagname + "." + pd.name,
             [pd, file = ff.file](Env& e) { pd.make(e, file); },
             ff.cmd({}),
             {ff.flag, ff.file},
             ff.out};
      if (pd.unreadable) c.needs_unreadable = ff.file;
      add(c);
    }
  // --potentials and --manifest as paths.
  add({"sparsify.potentials.missing", [](Env& e) { fs::remove_all(e.dir.path / "pot"); }, sparsify({}),
       {"--potentials", "pot"}, "plan.npz"});
  add({"sparsify.potentials.is_a_file", [](Env& e) { fs::remove_all(e.dir.path / "pot"); e.text("pot", "x"); },
       sparsify({}), {"--potentials", "pot"}, "plan.npz"});
  add({"sparsify.potentials.empty_folder",
       [](Env& e) { fs::remove_all(e.dir.path / "pot"); fs::create_directory(e.dir.path / "pot"); }, sparsify({}),
       {"--potentials", "pot"}, "plan.npz"});
  add({"merge_plan.manifest.missing", nothing, merge_plan({}), {"--manifest", "plan.manifest.json"}, "merged.npz"});
  add({"merge_plan.manifest.empty_file", [](Env& e) { e.text("plan.manifest.json", ""); }, merge_plan({}),
       {"--manifest", "plan.manifest.json"}, "merged.npz"});
  add({"merge_plan.manifest.folder", [](Env& e) { fs::create_directory(e.dir.path / "plan.manifest.json"); },
       merge_plan({}), {"--manifest", "plan.manifest.json"}, "merged.npz"});

  // -- .npy defects: every one on sinkhorn --x; the weight-relevant ones on --a; a sample on the
  //    other commands' array inputs ------------------------------------------------------------------
  for (const NpyDefect& nd : npy_defects()) {
    add({"npy.x." + nd.name, [nd](Env& e) { e.text("bad.npy", nd.bytes(e, e.n, e.d)); }, sinkhorn({{"--x", "bad.npy"}}),
         {"--x", "bad.npy"}, "out", nd.known_open});
    // A weights vector whose header says one entry less is refused for its length (against --x).
    add({"npy.a." + nd.name, [nd](Env& e) { e.text("bad.npy", nd.bytes(e, e.n, 0)); }, sinkhorn({{"--a", "bad.npy"}}),
         {"--a", "bad.npy"}, "out", nd.known_open});
  }
  const std::set<std::string> sample = {"bad_magic", "truncated_payload", "big_endian", "fortran_order", "dtype_int64",
                                        "nan_at_random_place", "shape_lies_bigger", "shape_huge"};
  for (const NpyDefect& nd : npy_defects()) {
    if (sample.count(nd.name) == 0) continue;
    add({"npy.solve_y." + nd.name, [nd](Env& e) { e.text("bad.npy", nd.bytes(e, e.m, e.d)); }, solve({{"--y", "bad.npy"}}),
         {"--y", "bad.npy"}, "out", nd.known_open});
    add({"npy.sparsify_x." + nd.name, [nd](Env& e) { e.text("bad.npy", nd.bytes(e, e.n, e.d)); },
         sparsify({{"--x", "bad.npy"}}), {"--x", "bad.npy"}, "plan.npz", nd.known_open});
    add({"npy.potentials_f." + nd.name, [nd](Env& e) { e.text("pot/f.npy", nd.bytes(e, e.n, 0)); }, sparsify({}),
         {"--potentials", "f.npy"}, "plan.npz",
         nd.known_open});
    add({"npy.coefficients." + nd.name,
         [nd](Env& e) {
           e.text("bad.npy", nd.bytes(e, e.records, 0));
           e.text("spec.json", "{\"linear\": [{\"name\": \"c\", \"coefficients\": \"bad.npy\", \"target\": 10}]}");
         },
         calibrate({}),
         nd.name == "nan_at_random_place" ? std::vector<std::string>{"--spec", "'c'", "non-finite"}
                                          : std::vector<std::string>{"--spec", "coefficients", "bad.npy"},
         "out",
         nd.known_open});
  }
  for (const ShapeDefect& sd : point_shape_defects()) {
    add({"shape.x." + sd.name, [sd](Env& e) { sd.write(e, "bad.npy", e.n, e.d); }, sinkhorn({{"--x", "bad.npy"}}),
         {"--x", "bad.npy"}, "out"});
    add({"shape.y." + sd.name, [sd](Env& e) { sd.write(e, "bad.npy", e.m, e.d); }, solve({{"--y", "bad.npy"}}),
         {"--y", "bad.npy"}, "out"});
  }

  // -- shapes that disagree, weights that cannot be marginals ----------------------------------------
  const double nan = std::numeric_limits<double>::quiet_NaN();
  add({"shape.xy_columns_differ", [](Env& e) { e.npy("bad.npy", e.points(e.m, e.d + 1), {e.m, e.d + 1}); },
       sinkhorn({{"--y", "bad.npy"}}), {"--y", "bad.npy", "--x"}, "out"});
  add({"shape.a_too_short", [](Env& e) { e.npy("bad.npy", e.weights(e.n - 1), {e.n - 1}); }, sinkhorn({{"--a", "bad.npy"}}),
       {"--a", "bad.npy"}, "out"});
  add({"shape.a_too_long", [](Env& e) { e.npy("bad.npy", e.weights(e.n + 2), {e.n + 2}); }, sinkhorn({{"--a", "bad.npy"}}),
       {"--a", "bad.npy"}, "out"});
  add({"shape.b_length_of_x", [](Env& e) { e.npy("bad.npy", e.weights(e.n), {e.n}); }, sinkhorn({{"--b", "bad.npy"}}),
       {"--b", "bad.npy"}, "out"});
  add({"shape.b_without_y_wrong_length", [](Env& e) { e.npy("bad.npy", e.weights(e.n + 1), {e.n + 1}); },
       sinkhorn({{"--y", kDrop}, {"--b", "bad.npy"}}), {"--b", "bad.npy"}, "out"});
  add({"shape.a_two_d", [](Env& e) { e.npy("bad.npy", e.weights(e.n), {e.n, 1}); }, sinkhorn({{"--a", "bad.npy"}}),
       {"--a", "bad.npy"}, "out"});
  add({"shape.a_zero_d", [](Env& e) { e.npy("bad.npy", {1.0}, {}); }, sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out"});
  add({"shape.solve_b_wrong_length", [](Env& e) { e.npy("bad.npy", e.weights(e.m + 3), {e.m + 3}); },
       solve({{"--b", "bad.npy"}}), {"--b", "bad.npy"}, "out"});
  add({"weights.a_negative_at_random_place",
       [](Env& e) { auto w = e.weights(e.n); w[e.pick(w.size())] = -e.uniform(0.1, 1); e.npy("bad.npy", w, {e.n}); },
       sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out"});
  add({"weights.b_negative_at_random_place",
       [](Env& e) { auto w = e.weights(e.m); w[e.pick(w.size())] = -e.uniform(0.1, 1); e.npy("bad.npy", w, {e.m}); },
       solve({{"--b", "bad.npy"}}), {"--b", "bad.npy"}, "out"});
  add({"weights.a_all_zero", [](Env& e) { e.npy("bad.npy", std::vector<double>(static_cast<std::size_t>(e.n), 0.0), {e.n}); },
       sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out"});
  add({"weights.b_all_zero", [](Env& e) { e.npy("bad.npy", std::vector<double>(static_cast<std::size_t>(e.m), 0.0), {e.m}); },
       sinkhorn({{"--b", "bad.npy"}}), {"--b", "bad.npy"}, "out"});
  add({"weights.a_negative_zero_sum",
       [](Env& e) {
         auto w = e.weights(e.n);
         w[0] = -w[1];  // a negative entry that also cancels: refused for the sign, not the sum
         e.npy("bad.npy", w, {e.n});
       },
       sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out"});
  add({"weights.a_nan_float32",
       [nan](Env& e) { auto w = e.weights(e.n); w[e.pick(w.size())] = nan; e.npy("bad.npy", w, {e.n}, DType::float32); },
       sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out"});
  add({"weights.a_overflow_sum",
       [](Env& e) { auto w = e.weights(e.n); w[0] = w[1] = 1.7e308; e.npy("bad.npy", w, {e.n}); },
       sinkhorn({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "out",
       ""});
  add({"weights.sparsify_a_wrong_length", [](Env& e) { e.npy("bad.npy", e.weights(e.n + 1), {e.n + 1}); },
       sparsify({{"--a", "bad.npy"}}), {"--a", "bad.npy"}, "plan.npz"});
  add({"points.x_float32_nan",
       [nan](Env& e) { auto p = e.points(e.n, e.d); p[e.pick(p.size())] = nan; e.npy("bad.npy", p, {e.n, e.d}, DType::float32); },
       sinkhorn({{"--x", "bad.npy"}}), {"--x", "bad.npy"}, "out"});

  // -- numeric flags of sinkhorn (and solve): out of range, non-finite, wrong type ------------------
  struct NumberCase {
    std::string flag, word, value;
  };
  const std::vector<NumberCase> numbers = {
      {"--epsilon", "zero", "0"},          {"--epsilon", "negative", "-0.5"},   {"--epsilon", "nan", "nan"},
      {"--epsilon", "inf", "inf"},         {"--epsilon", "word", "small"},
      {"--epsilon-init", "zero", "0"},     {"--epsilon-init", "negative", "-1"}, {"--epsilon-init", "nan", "nan"},
      {"--epsilon-init", "inf", "inf"},
      {"--epsilon-decay", "zero", "0"},    {"--epsilon-decay", "above_one", "1.5"}, {"--epsilon-decay", "nan", "nan"},
      {"--epsilon-decay", "negative", "-0.5"},
      {"--tau-a", "zero", "0"},            {"--tau-a", "above_one", "1.5"},     {"--tau-a", "negative", "-1"},
      {"--tau-a", "nan", "nan"},           {"--tau-a", "inf", "inf"},           {"--tau-a", "word", "abc"},
      {"--tau-b", "zero", "0"},            {"--tau-b", "above_one", "2"},       {"--tau-b", "nan", "nan"},
      {"--tau-b", "negative", "-0.1"},
      {"--threshold", "negative", "-1e-3"}, {"--threshold", "nan", "nan"},      {"--threshold", "inf", "inf"},
      {"--norm-error", "below_one", "0.5"}, {"--norm-error", "nan", "nan"},     {"--norm-error", "inf", "inf"},
      {"--inner-iterations", "zero", "0"},  {"--inner-iterations", "negative", "-3"},
      {"--inner-iterations", "fraction", "1.5"},
      {"--max-iterations", "zero", "0"},    {"--max-iterations", "negative", "-5"},
      {"--max-iterations", "fraction", "2.5"},
      {"--min-iterations", "negative", "-1"}, {"--min-iterations", "above_max", "100"},
      {"--batch-size", "zero", "0"},        {"--batch-size", "negative", "-4"},  {"--batch-size", "word", "all"},
      {"--memory-budget", "word", "lots"},  {"--memory-budget", "below_minimum", "1KiB"},
      {"--memory-budget", "negative", "-5MiB"}, {"--memory-budget", "fraction_of_byte", "0.5"},
      {"--memory-budget", "unknown_unit", "8XB"},
  };
  for (const NumberCase& nc : numbers) {
    const std::string flag = nc.flag.substr(2);
    std::string id_flag = flag;
    for (char& ch : id_flag) if (ch == '-') ch = '_';
    add({"sinkhorn." + id_flag + "." + nc.word, nothing, sinkhorn({{nc.flag, nc.value}}), {nc.flag}, "out",
         ""});
  }
  add({"sinkhorn.min_iterations.fixed_length_not_multiple", nothing,
       sinkhorn({{"--min-iterations", "25"}, {"--max-iterations", "25"}}), {"--inner-iterations"}, "out"});
  for (const NumberCase& nc : std::vector<NumberCase>{{"--epsilon", "negative", "-1"},
                                                      {"--tau-a", "above_one", "1.5"},
                                                      {"--threshold", "nan", "nan"},
                                                      {"--max-iterations", "zero", "0"},
                                                      {"--batch-size", "zero", "0"},
                                                      {"--memory-budget", "word", "lots"}}) {
    std::string id_flag = nc.flag.substr(2);
    for (char& ch : id_flag) if (ch == '-') ch = '_';
    add({"solve." + id_flag + "." + nc.word, nothing, solve({{nc.flag, nc.value}}), {nc.flag}, "out",
         ""});
  }

  // -- enum flags with unknown words -----------------------------------------------------------------
  const std::vector<std::pair<std::string, std::string>> enums = {
      {"--cost", "manhattan"},       {"--cost", "pnorm:0.5"},       {"--cost", "pnorm:abc"},
      {"--cost", "sq_pnorm:"},       {"--cost", "pnorm:nan"},       {"--cost", "SQEUCLIDEAN"},
      {"--scale-cost", "huge"},      {"--scale-cost", "0"},         {"--scale-cost", "-1"},
      {"--scale-cost", "nan"},       {"--scale-cost", "inf"},       {"--precision", "float16"},
      {"--precision", "int"},        {"--relative-epsilon", "median"}, {"--on-divergence", "ignore"},
      {"--device", "tpu"},           {"--device", "cuda:-1"},       {"--device", "gpu0"},
  };
  for (const auto& [flag, word] : enums) {
    std::string id_flag = flag.substr(2), id_word = word;
    for (char& ch : id_flag) if (ch == '-') ch = '_';
    for (char& ch : id_word) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    add({"sinkhorn." + id_flag + "." + id_word, nothing, sinkhorn({{flag, word}}), {flag}, "out"});
  }
  add({"sinkhorn.scale_cost.max_norm_with_euclidean", nothing,
       sinkhorn({{"--cost", "euclidean"}, {"--scale-cost", "max_norm"}}), {"--scale-cost"}, "out"});
  add({"solve.cost.unknown", nothing, solve({{"--cost", "manhattan"}}), {"--cost"}, "out"});
  add({"solve.precision.unknown", nothing, solve({{"--precision", "half"}}), {"--precision"}, "out"});
  add({"solve.device.unknown", nothing, solve({{"--device", "tpu"}}), {"--device"}, "out"});

  // -- sparsify and solve's sparsify flags -------------------------------------------------------------
  const std::vector<std::tuple<std::string, Flags, std::string, std::string>> modes = {
      {"mode.unknown", {{"--mode", "topk"}}, "--mode", ""},
      {"mode.missing", {{"--mode", kDrop}}, "--mode", ""},
      {"value.missing_for_percentile", {{"--value", kDrop}}, "--value", ""},
      {"value.missing_for_threshold", {{"--mode", "threshold"}, {"--value", kDrop}}, "--value", ""},
      {"value.percentile_above_100", {{"--value", "150"}}, "--value", ""},
      {"value.percentile_negative", {{"--value", "-1"}}, "--value", ""},
      {"value.percentile_nan", {{"--value", "nan"}}, "--value", ""},
      {"value.mass_zero", {{"--mode", "mass"}, {"--value", "0"}}, "--value", ""},
      {"value.mass_above_one", {{"--mode", "mass"}, {"--value", "1.5"}}, "--value", ""},
      {"value.threshold_nan", {{"--mode", "threshold"}, {"--value", "nan"}}, "--value", ""},
      {"value.word", {{"--value", "high"}}, "--value", ""},
      {"max_k.zero", {{"--mode", "mass"}, {"--value", "0.9"}, {"--max-k", "0"}}, "--max-k", ""},
      {"max_k.negative", {{"--mode", "mass"}, {"--value", "0.9"}, {"--max-k", "-2"}}, "--max-k", ""},
      {"n_samples.zero", {{"--n-samples", "0"}}, "--n-samples", ""},
      {"exact.with_mass", {{"--mode", "mass"}, {"--value", "0.9"}, {"--exact", ""}}, "--exact", ""},
      {"exact.with_n_samples", {{"--exact", ""}, {"--n-samples", "10"}}, "--exact", ""},
      {"seed.negative", {{"--seed", "-1"}}, "--seed", ""},
  };
  for (const auto& [word, over, flag, open] : modes) {
    add({"sparsify." + word, nothing, sparsify(over), {flag}, "plan.npz", open});
    add({"solve." + word, nothing, solve(over), {flag}, "out", open});
  }
  add({"sparsify.batch_size.zero", nothing, sparsify({{"--batch-size", "0"}}), {"--batch-size"}, "plan.npz"});
  add({"solve.sparsify_batch_size.zero", nothing, solve({{"--sparsify-batch-size", "0"}}), {"--sparsify-batch-size"}, "out"});
  add({"sparsify.out.is_a_folder", [](Env& e) { fs::create_directory(e.dir.path / "plan_dir"); },
       sparsify({{"--out", "plan_dir"}}), {"--out", "plan_dir"}, ""});
  add({"sparsify.device.unknown", nothing, sparsify({{"--device", "tpu"}}), {"--device"}, "plan.npz"});

  // -- sparsify --potentials folder contents ---------------------------------------------------------
  auto result_json = [](const std::string& body) { return [body](Env& e) { e.text("pot/result.json", body); }; };
  const std::string good_json =
      "\"epsilon\": 0.5, \"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float64\"";
  const std::vector<std::tuple<std::string, std::function<void(Env&)>, std::vector<std::string>, std::string>> pots = {
      {"no_result_json", [](Env& e) { fs::remove(e.dir.path / "pot/result.json"); }, {"--potentials", "result.json"}, ""},
      {"no_f_npy", [](Env& e) { fs::remove(e.dir.path / "pot/f.npy"); }, {"--potentials", "f.npy"}, ""},
      {"no_g_npy", [](Env& e) { fs::remove(e.dir.path / "pot/g.npy"); }, {"--potentials", "g.npy"}, ""},
      {"result_json_invalid", result_json("{\"epsilon\": 0.5,"), {"--potentials", "result.json"}, ""},
      {"result_json_array", result_json("[1, 2]"), {"--potentials", "result.json"}, ""},
      {"result_json_empty", result_json(""), {"--potentials", "result.json"}, ""},
      {"result_json_no_epsilon", result_json("{\"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float64\"}"),
       {"--potentials", "epsilon"}, ""},
      {"result_json_no_cost", result_json("{\"epsilon\": 0.5, \"scale\": 1.0, \"precision\": \"float64\"}"),
       {"--potentials", "cost"}, ""},
      {"result_json_epsilon_string", result_json("{" + good_json + ", \"epsilon\": \"half\"}"),
       {"--potentials", "epsilon"}, ""},
      {"result_json_epsilon_null",
       result_json("{\"epsilon\": null, \"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float64\"}"),
       {"--potentials", "epsilon"}, ""},
      {"result_json_epsilon_zero",
       result_json("{\"epsilon\": 0, \"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float64\"}"),
       {"--potentials", "epsilon"}, ""},
      {"result_json_scale_negative",
       result_json("{\"epsilon\": 0.5, \"scale\": -1, \"cost\": \"sqeuclidean\", \"precision\": \"float64\"}"),
       {"--potentials", "scale"}, ""},
      {"result_json_unknown_cost",
       result_json("{\"epsilon\": 0.5, \"scale\": 1.0, \"cost\": \"manhattan\", \"precision\": \"float64\"}"),
       {"--potentials", "cost"}, ""},
      {"result_json_unknown_precision",
       result_json("{\"epsilon\": 0.5, \"scale\": 1.0, \"cost\": \"sqeuclidean\", \"precision\": \"float16\"}"),
       {"--potentials", "precision"}, ""},
      {"f_wrong_length", [](Env& e) { e.npy("pot/f.npy", e.weights(e.n + 1), {e.n + 1}); }, {"--potentials", "f.npy"}, ""},
      {"g_wrong_length", [](Env& e) { e.npy("pot/g.npy", e.weights(e.m - 1), {e.m - 1}); }, {"--potentials", "g.npy"}, ""},
      {"f_two_d", [](Env& e) { e.npy("pot/f.npy", e.weights(e.n), {e.n, 1}); }, {"--potentials", "f.npy"},
       ""},
      {"f_from_other_x", [](Env& e) { e.npy("x2.npy", e.points(e.n + 4, e.d), {e.n + 4, e.d}); },
       {"--potentials", "--x"}, ""},
  };
  for (const auto& [word, setup, names, open] : pots) {
    const bool other_x = word == "f_from_other_x";
    add({"sparsify.potentials." + word, setup, sparsify(other_x ? Flags{{"--x", "x2.npy"}} : Flags{}), names, "plan.npz", open});
  }

  // -- merge-plan manifests --------------------------------------------------------------------------
  auto manifest = [](const std::string& body) { return [body](Env& e) { e.text("plan.manifest.json", body); }; };
  const std::vector<std::tuple<std::string, std::function<void(Env&)>, std::vector<std::string>>> manifests = {
      {"invalid_json", manifest("{\"format\": "), {"--manifest", "plan.manifest.json"}},
      {"array", manifest("[]"), {"--manifest", "plan.manifest.json"}},
      {"wrong_format", manifest("{\"format\": \"zip\", \"shape\": [2, 2], \"nnz\": 0, \"pieces\": []}"),
       {"--manifest", "plan.manifest.json"}},
      {"no_pieces", manifest("{\"format\": \"otcal csr pieces\", \"shape\": [2, 2], \"nnz\": 0, \"pieces\": []}"),
       {"--manifest", "plan.manifest.json"}},
      {"no_shape", manifest("{\"format\": \"otcal csr pieces\", \"nnz\": 0, \"pieces\": []}"),
       {"--manifest", "plan.manifest.json"}},
      {"piece_missing",
       manifest("{\"format\": \"otcal csr pieces\", \"shape\": [2, 2], \"nnz\": 1, \"pieces\": "
                "[{\"file\": \"plan.rank-0-of-1.npz\", \"rows\": [0, 2], \"nnz\": 1}]}"),
       {"--manifest", "plan.rank-0-of-1.npz"}},
      {"piece_not_npz",
       [](Env& e) {
         e.text("plan.rank-0-of-1.npz", "not a zip file at all");
         e.text("plan.manifest.json",
                "{\"format\": \"otcal csr pieces\", \"shape\": [2, 2], \"nnz\": 1, \"pieces\": "
                "[{\"file\": \"plan.rank-0-of-1.npz\", \"rows\": [0, 2], \"nnz\": 1}]}");
       },
       {"--manifest", "plan.rank-0-of-1.npz"}},
      {"piece_field_wrong_type",
       manifest("{\"format\": \"otcal csr pieces\", \"shape\": [2, 2], \"nnz\": 1, \"pieces\": "
                "[{\"file\": 7, \"rows\": [0, 2], \"nnz\": 1}]}"),
       {"--manifest", "plan.manifest.json"}},
  };
  for (const auto& [word, setup, names] : manifests)
    add({"merge_plan.manifest." + word, setup, merge_plan({}), names, "merged.npz"});

  // -- CSV defects (--data) -------------------------------------------------------------------------
  auto csv = [](std::function<std::string(Env&)> body) { return [body](Env& e) { e.text("data.csv", body(e)); }; };
  auto rows = [](Env& e, index_t count) {
    std::string s;
    for (index_t i = 0; i < count; ++i)
      s += std::to_string(1 + e.pick(3)) + "," + std::vector<std::string>{"north", "south", "east"}[e.pick(3)] + "," +
           std::to_string(20 + e.pick(50)) + "," + std::to_string(100 + e.pick(800)) + "\n";
    return s;
  };
  const std::string header = "weight,region,age,income\n";
  const std::vector<std::tuple<std::string, std::function<void(Env&)>, std::vector<std::string>, std::string>> csvs = {
      {"no_header_row", csv([](Env&) { return std::string("\n"); }), {"--data"}, ""},
      {"header_only", csv([header](Env&) { return header; }), {"--data"},
       ""},
      {"ragged_row", csv([=](Env& e) { return header + rows(e, e.records) + "1,north,30\n"; }), {"--data", "line"}, ""},
      {"extra_field", csv([=](Env& e) { return header + "1,north,30,400,9\n" + rows(e, e.records); }), {"--data", "line"}, ""},
      {"unterminated_quote", csv([=](Env& e) { return header + rows(e, e.records) + "1,\"north,30,400\n"; }), {"--data", "quote"}, ""},
      {"quote_inside_field", csv([=](Env& e) { return header + "1,no\"rth,30,400\n" + rows(e, e.records); }), {"--data", "line"}, ""},
      {"text_after_quote", csv([=](Env& e) { return header + "1,\"north\"x,30,400\n" + rows(e, e.records); }), {"--data", "line"}, ""},
      {"duplicate_column", csv([=](Env& e) { return std::string("weight,region,age,age\n") + rows(e, e.records); }),
       {"--data", "age"}, ""},
      {"empty_column_name", csv([=](Env& e) { return std::string("weight,,age,income\n") + rows(e, e.records); }),
       {"--data", "column 2"}, ""},
      {"weights_non_numeric",
       csv([=](Env& e) { return header + rows(e, e.records) + "heavy,north,30,400\n"; }), {"--data", "weight"}, ""},
      {"weights_negative", csv([=](Env& e) { return header + rows(e, e.records) + "-2,north,30,400\n"; }), {"weight"}, ""},
      {"weights_nan", csv([=](Env& e) { return header + rows(e, e.records) + "nan,north,30,400\n"; }), {"weight"}, ""},
      {"weights_all_zero",
       csv([=](Env& e) {
         std::string s = header;
         for (index_t i = 0; i < e.records; ++i) s += "0,north," + std::to_string(20 + e.pick(50)) + ",300\n";
         return s;
       }),
       {"weight"}, ""},
      {"continuous_column_text", csv([=](Env& e) { return header + rows(e, e.records) + "1,north,30,lots\n"; }),
       {"income"}, ""},
  };
  for (const auto& [word, setup, names, open] : csvs)
    add({"csv." + word, setup, calibrate({}), names, "out", open});
  add({"csv.weights_column_missing", nothing, calibrate({{"--weights-column", "w_design"}}), {"--weights-column", "w_design"},
       "out", ""});

  // -- calibration spec defects (--spec) -----------------------------------------------------------
  auto spec = [](const std::string& body) { return [body](Env& e) { e.text("spec.json", body); }; };
  const std::vector<std::tuple<std::string, std::function<void(Env&)>, std::vector<std::string>, std::string>> specs = {
      {"invalid_json", spec("{\"marginal\": "), {"--spec", "spec.json"}, ""},
      {"top_level_array", spec("[1, 2]"), {"--spec", "spec.json"}, ""},
      {"top_level_string", spec("\"total\""), {"--spec", "spec.json"}, ""},
      {"top_level_number", spec("42"), {"--spec", "spec.json"}, ""},
      {"unknown_key", spec("{\"totals\": 100}"), {"--spec", "totals"}, ""},
      {"empty_object", spec("{}"), {"--spec"}, ""},
      {"total_string", spec("{\"total\": \"100\"}"), {"--spec", "total"}, ""},
      {"total_null", spec("{\"total\": null}"), {"--spec", "total"}, ""},
      {"total_negative", spec("{\"total\": -100}"), {"--spec", "total"}, ""},
      {"marginal_not_object", spec("{\"marginal\": [1]}"), {"--spec", "marginal"}, ""},
      {"marginal_column_not_object", spec("{\"marginal\": {\"region\": 5}}"), {"--spec", "region"}, ""},
      {"marginal_unknown_column", spec("{\"marginal\": {\"county\": {\"a\": 5}}}"), {"county"}, ""},
      {"marginal_unknown_category", spec("{\"marginal\": {\"region\": {\"north\": 5, \"south\": 5, \"east\": 5, \"west\": 5}}}"), {"west"}, ""},
      {"marginal_target_string", spec("{\"marginal\": {\"region\": {\"north\": \"5\"}}}"), {"--spec", "north"}, ""},
      {"marginal_target_negative", spec("{\"marginal\": {\"region\": {\"north\": -5, \"south\": 5, \"east\": 5}}}"), {"north"},
       ""},
      {"continuous_not_object", spec("{\"continuous\": [\"income\"]}"), {"--spec", "continuous"}, ""},
      {"continuous_unknown_column", spec("{\"continuous\": {\"wealth\": 100}}"), {"wealth"}, ""},
      {"continuous_categorical_column", spec("{\"continuous\": {\"region\": 100}}"), {"region"}, ""},
      {"continuous_target_string", spec("{\"continuous\": {\"income\": \"lots\"}}"), {"--spec", "income"}, ""},
      {"linear_not_list", spec("{\"linear\": {\"name\": \"c\"}}"), {"--spec", "linear"}, ""},
      {"linear_no_name", spec("{\"linear\": [{\"column\": \"age\", \"target\": 10}]}"), {"--spec", "linear[0]"}, ""},
      {"linear_no_target", spec("{\"linear\": [{\"name\": \"c\", \"column\": \"age\"}]}"), {"--spec", "linear[0]"}, ""},
      {"linear_target_string", spec("{\"linear\": [{\"name\": \"c\", \"column\": \"age\", \"target\": \"x\"}]}"),
       {"--spec", "linear[0].target"}, ""},
      {"linear_unknown_column", spec("{\"linear\": [{\"name\": \"c\", \"column\": \"height\", \"target\": 10}]}"),
       {"--spec", "height"}, ""},
      {"linear_text_column", spec("{\"linear\": [{\"name\": \"c\", \"column\": \"region\", \"target\": 10}]}"),
       {"--spec", "region"}, ""},
      {"linear_neither_column_nor_coefficients", spec("{\"linear\": [{\"name\": \"c\", \"target\": 10}]}"),
       {"--spec", "linear[0]"}, ""},
      {"coefficients_missing_file",
       spec("{\"linear\": [{\"name\": \"c\", \"coefficients\": \"nope.npy\", \"target\": 10}]}"),
       {"--spec", "coefficients", "nope.npy"}, ""},
      {"coefficients_two_d",
       [](Env& e) {
         e.npy("bad.npy", e.weights(e.records), {e.records, 1});
         e.text("spec.json", "{\"linear\": [{\"name\": \"c\", \"coefficients\": \"bad.npy\", \"target\": 10}]}");
       },
       {"--spec", "coefficients", "bad.npy"}, ""},
      {"coefficients_wrong_length",
       [](Env& e) {
         e.npy("bad.npy", e.weights(e.records + 2), {e.records + 2});
         e.text("spec.json", "{\"linear\": [{\"name\": \"c\", \"coefficients\": \"bad.npy\", \"target\": 10}]}");
       },
       {"--spec", "'c'"}, ""},
      {"coefficients_folder",
       [](Env& e) {
         fs::create_directory(e.dir.path / "coefs");
         e.text("spec.json", "{\"linear\": [{\"name\": \"c\", \"coefficients\": \"coefs\", \"target\": 10}]}");
       },
       {"--spec", "coefficients", "coefs"}, ""},
  };
  for (const auto& [word, setup, names, open] : specs)
    add({"spec." + word, setup, calibrate({}), names, "out", open});

  // -- calibrate's own flags ---------------------------------------------------------------------------
  const std::vector<std::tuple<std::string, Flags, std::string, std::string>> cal = {
      {"method.unknown", {{"--method", "newton"}}, "--method", ""},
      {"method.empty", {{"--method", "''"}}, "--method", ""},
      {"epsilon.zero", {{"--epsilon", "0"}}, "--epsilon", ""},
      {"epsilon.negative", {{"--epsilon", "-1"}}, "--epsilon", ""},
      {"epsilon.nan", {{"--epsilon", "nan"}}, "--epsilon", ""},
      {"epsilon.inf", {{"--epsilon", "inf"}}, "--epsilon", ""},
      {"max_iterations.zero", {{"--max-iterations", "0"}}, "--max-iterations", ""},
      {"max_iterations.word", {{"--max-iterations", "many"}}, "--max-iterations", ""},
      {"lower.above_one", {{"--lower", "2"}}, "--lower", ""},
      {"upper.below_one", {{"--upper", "0.5"}}, "--upper", ""},
      {"lower.nan", {{"--lower", "nan"}}, "--lower", ""},
      {"batch_size.zero", {{"--method", "gradient"}, {"--batch-size", "0"}}, "--batch-size", ""},
      {"dropout.above_one", {{"--method", "gradient"}, {"--dropout", "1.5"}}, "--dropout", ""},
      {"dropout.negative", {{"--method", "gradient"}, {"--dropout", "-0.1"}}, "--dropout", ""},
      {"dropout.nan", {{"--method", "gradient"}, {"--dropout", "nan"}}, "--dropout", ""},
      {"epochs.negative", {{"--method", "gradient"}, {"--epochs", "-1"}}, "--epochs", ""},
      {"learning_rate.zero", {{"--method", "gradient"}, {"--learning-rate", "0"}}, "--learning-rate", ""},
      {"learning_rate.nan", {{"--method", "gradient"}, {"--learning-rate", "nan"}}, "--learning-rate", ""},
      {"noise_level.negative", {{"--method", "gradient"}, {"--noise-level", "-1"}}, "--noise-level", ""},
      {"l0_lambda.negative", {{"--method", "gradient"}, {"--l0-lambda", "-1"}}, "--l0-lambda", ""},
      {"seed.negative", {{"--method", "gradient"}, {"--seed", "-1"}}, "--seed", ""},
      {"device.unknown", {{"--device", "tpu"}}, "--device", ""},
      {"memory_budget.word", {{"--memory-budget", "lots"}}, "--memory-budget", ""},
  };
  for (const auto& [word, over, flag, open] : cal) add({"calibrate." + word, nothing, calibrate(over), {flag}, "out", open});

  // -- demo, info and the command line itself ----------------------------------------------------------
  add({"demo.n.zero", nothing, demo({{"--n", "0"}}), {"--n"}, ""});
  add({"demo.n.negative", nothing, demo({{"--n", "-5"}}), {"--n"}, ""});
  add({"demo.n.word", nothing, demo({{"--n", "many"}}), {"--n"}, ""});
  add({"demo.seed.negative", nothing, demo({{"--seed", "-1"}}), {"--seed"}, "", ""});
  add({"demo.device.unknown", nothing, demo({{"--device", "tpu"}}), {"--device"}, ""});
  add({"demo.memory_budget.word", nothing, demo({{"--memory-budget", "lots"}}), {"--memory-budget"}, ""});
  add({"info.unknown_flag", nothing, "info --verbose", {"--verbose"}, ""});
  add({"cli.unknown_command", nothing, "frobnicate --x x.npy", {"frobnicate"}, ""});
  add({"cli.unknown_flag", nothing, sinkhorn({{"--tau", "0.5"}}), {"--tau"}, "out"});
  add({"cli.missing_required_x", nothing, sinkhorn({{"--x", kDrop}}), {"--x"}, "out"});
  add({"cli.missing_required_out", nothing, sinkhorn({{"--out", kDrop}}), {"--out"}, ""});
  add({"cli.flag_without_value", nothing, sinkhorn({{"--epsilon", kDrop}}) + " --epsilon", {"--epsilon"}, "out"});
  add({"cli.out_empty_string", nothing, sinkhorn({{"--out", "''"}}), {"--out"}, ""});
  add({"cli.out_parent_missing", nothing, sinkhorn({{"--out", "no/such/folder/out"}}), {"--out", "no/such/folder"}, ""});
  return cases;
}

const std::vector<Case>& all_cases() {
  static const std::vector<Case> cases = build_cases();
  return cases;
}

// ---- running one case ------------------------------------------------------------------------------

// What is wrong with a run that should have failed cleanly ("" = nothing).
std::vector<std::string> problems(const Case& c, const TempDir& dir, const RunResult& r) {
  std::vector<std::string> p;
  if (r.exit_code == 0) p.push_back("exit code 0");
  if (r.exit_code < 0 || r.exit_code >= 128) p.push_back("exit code " + std::to_string(r.exit_code) + " (a crash?)");
  for (const char* leak : {"terminate called", "bad_alloc", "stoi", "what():", "Segmentation"})
    if (r.err.find(leak) != std::string::npos) p.push_back(std::string("stderr shows '") + leak + "'");
  const std::vector<std::string> lines = testsupport::error_lines(r.err);
  if (lines.size() != 1) {
    p.push_back(std::to_string(lines.size()) + " 'otcal: error:' lines, expected one");
  } else {
    for (const std::string& name : c.names)
      if (lines[0].find(name) == std::string::npos) p.push_back("the error line does not name '" + name + "'");
  }
  if (!c.out.empty()) {
    if (fs::exists(fs::symlink_status(dir.path / c.out))) p.push_back("--out '" + c.out + "' was created");
    for (const auto& e : fs::directory_iterator(dir.path)) {
      const std::string nm = e.path().filename().string();
      if (nm.rfind(c.out + ".", 0) == 0) p.push_back("left beside --out: " + nm);
    }
  }
  return p;
}

// The sizes of a run (from its seed) and its valid inputs, which each case then spoils once.
void draw_valid_inputs(Env& e) {
  e.n = 5 + static_cast<index_t>(e.rng() % 20);
  e.m = 5 + static_cast<index_t>(e.rng() % 20);
  if (e.m == e.n) ++e.m;  // length cases tell the clouds apart by their sizes
  e.d = 1 + static_cast<index_t>(e.rng() % 4);
  e.records = 9 + static_cast<index_t>(e.rng() % 20);
  write_valid_inputs(e);
}

// gtest prints a failing parameter with this (instead of its bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << c.id; }

class BadInput : public ::testing::TestWithParam<Case> {};

TEST_P(BadInput, FailsCleanlyNamingTheInput) {
  const Case& c = GetParam();
  if (testsupport::cli().empty() || !fs::exists(testsupport::cli())) GTEST_SKIP() << "OTCAL_CLI is not set";
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir("otcal_bad");
  Env e{dir, std::mt19937_64(seed)};
  draw_valid_inputs(e);
  c.setup(e);
  if (!c.needs_unreadable.empty() && ::access(e.file(c.needs_unreadable).c_str(), R_OK) == 0)
    GTEST_SKIP() << "this user reads files whatever their mode (root): the unreadable case cannot be made here";
  const RunResult r = testsupport::run_cli(dir, c.args);
  SCOPED_TRACE("otcal " + c.args + "\nexit code " + std::to_string(r.exit_code) + "\nstderr: " + r.err);
  if (const char* log = std::getenv("OTCAL_BAD_INPUTS_LOG"); log != nullptr && *log != '\0') {
    const auto lines = testsupport::error_lines(r.err);
    std::string first = lines.empty() ? r.err.substr(0, r.err.find('\n')) : lines[0];
    std::ofstream(log, std::ios::app) << c.id << '\t' << r.exit_code << '\t' << first << '\n';
  }
  const std::vector<std::string> found = problems(c, dir, r);
  if (!c.known_open.empty())
    GTEST_SKIP() << "known open: " << c.known_open
                 << (found.empty() ? " [it passes now: drop known_open]" : " [" + found.front() + "]");
  for (const std::string& f : found) ADD_FAILURE() << f;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string s = info.param.id;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(Catalogue, BadInput, ::testing::ValuesIn(all_cases()), case_name);

// Every case is run on valid inputs plus its one defect: without defect every command must work,
// or a case could pass for a reason of its own (a base flag the tool no longer accepts, say).
TEST(BadInputControl, TheValidInputsOfEveryCommandWork) {
  if (testsupport::cli().empty() || !fs::exists(testsupport::cli())) GTEST_SKIP() << "OTCAL_CLI is not set";
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir("otcal_bad");
  Env e{dir, std::mt19937_64(seed)};
  draw_valid_inputs(e);
  for (const auto& [args, made] : std::vector<std::pair<std::string, std::string>>{
           {sinkhorn({}), "out/f.npy"},
           {solve({{"--out", "out_solve"}}), "out_solve/plan.npz"},
           {sparsify({}), "plan.npz"},
           {calibrate({{"--out", "out_cal"}}), "out_cal/weights.npy"},
           {demo({}), ""}}) {
    const RunResult r = testsupport::run_cli(dir, args);
    EXPECT_EQ(r.exit_code, 0) << "otcal " << args << "\n" << r.err;
    if (!made.empty()) EXPECT_TRUE(fs::exists(dir.path / made)) << made;
  }
}

// ---- the document ------------------------------------------------------------------------------------

fs::path source_dir() {
  const char* s = std::getenv("OTCAL_SOURCE_DIR");
  return s != nullptr && *s != '\0' ? fs::path(s) : fs::path(__FILE__).parent_path().parent_path();
}

// docs/bad-inputs.md: table rows "| `id` | input | what the tool says | where tested |".
TEST(BadInputDoc, DocumentListsEveryCase) {
  const fs::path doc = source_dir() / "docs" / "bad-inputs.md";
  std::ifstream in(doc);
  ASSERT_TRUE(in) << "cannot read " << doc;
  std::map<std::string, std::string> rows;  // id -> the rest of its row
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    const std::size_t end = line.find('`', 3);
    ASSERT_NE(end, std::string::npos) << line;
    const std::string id = line.substr(3, end - 3);
    EXPECT_TRUE(rows.emplace(id, line.substr(end + 1)).second) << "listed twice in the document: " << id;
  }
  std::set<std::string> table;
  for (const Case& c : all_cases()) {
    EXPECT_TRUE(table.insert(c.id).second) << "two cases have the id " << c.id;
    EXPECT_TRUE(rows.count(c.id)) << "case " << c.id << " is not in " << doc;
  }
  for (const auto& [id, rest] : rows) {
    if (table.count(id)) continue;
    // Not a case here: the row must cite the test that covers it (tests/test_*.cpp, another file).
    const bool cites = rest.find("test_") != std::string::npos && rest.find("test_cli_bad_inputs") == std::string::npos;
    EXPECT_TRUE(cites) << "the document lists '" << id << "', which is neither a case of test_cli_bad_inputs.cpp "
                       << "nor cites the test that covers it";
  }
}

}  // namespace
