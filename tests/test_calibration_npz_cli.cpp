// `otcal calibrate --matrix M.npz --targets T.csv` (docs/calibration.md "Inputs"): estimate matrices
// written by the real scipy.sparse.save_npz (run by /usr/bin/python3, as in test_npz_scipy.cpp) in
// every layout a user can have (CSR and CSC, compressed or stored, int32 or int64 indices, float32
// or float64 data, duplicate entries, unsorted indices) give the weights of the same problem given
// densely through --data/--spec; bad inputs are refused naming the flag and the file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "support/process.hpp"

namespace {

using testsupport::fresh_seed;
using testsupport::run_cli;
using testsupport::slurp;
using testsupport::TempDir;

bool have_scipy() { return std::system("/usr/bin/python3 -c 'import scipy.sparse' >/dev/null 2>&1") == 0; }

// Writes into argv[2]: data.csv (one column per target plus "weight", every value printed exactly),
// spec.json (a continuous target per column), targets.csv, w0.npy, and M in every layout as
// m_<fmt>_<z|s>_i<32|64>_f<32|64>.npz; dup_csr.npz / dup_csc.npz hold some entries split into two
// halves (v/2 + v/2 = v exactly), the CSC one with every column's record indices reversed.
const char* kMakeInputs = R"PY(
import sys, json, numpy as np, scipy.sparse as sp
seed, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(seed)
n, k = int(rng.integers(150, 400)), int(rng.integers(3, 11))
M = sp.random(n, k, density=float(rng.uniform(0.2, 0.6)), random_state=rng, format='csr',
              data_rvs=lambda s: rng.uniform(0.5, 3.0, s))
M.data = M.data.astype(np.float32).astype(np.float64)   # the same values in float32 and float64 files
w0 = rng.uniform(0.5, 2.0, n)
t = M.T @ (w0 * rng.uniform(0.8, 1.25, n))
names = [f"t{j}" for j in range(k)]
D = M.toarray()
with open(f"{out}/data.csv", "w") as f:
    f.write(",".join(names + ["weight"]) + "\n")
    for i in range(n):
        f.write(",".join(repr(float(x)) for x in D[i]) + "," + repr(float(w0[i])) + "\n")
json.dump({"continuous": {nm: float(v) for nm, v in zip(names, t)}}, open(f"{out}/spec.json", "w"))
with open(f"{out}/targets.csv", "w") as f:
    f.write("name,value\n" + "".join(f"{nm},{float(v)!r}\n" for nm, v in zip(names, t)))
np.save(f"{out}/w0.npy", w0)
for fmt in ("csr", "csc"):
    for z in (True, False):
        for ib in (32, 64):
            for db in (32, 64):
                m = M.asformat(fmt).copy()
                m.indices = m.indices.astype(np.int64 if ib == 64 else np.int32)
                m.indptr = m.indptr.astype(np.int64 if ib == 64 else np.int32)
                m.data = m.data.astype(np.float32 if db == 32 else np.float64)
                sp.save_npz(f"{out}/m_{fmt}_{'z' if z else 's'}_i{ib}_f{db}.npz", m, compressed=z)
C = M.tocoo()
split = rng.random(C.nnz) < 0.5
rows = np.concatenate([C.row, C.row[split]]); cols = np.concatenate([C.col, C.col[split]])
vals = np.concatenate([np.where(split, C.data / 2, C.data), C.data[split] / 2])
order = np.lexsort((cols, rows))
rows, cols, vals = rows[order], cols[order], vals[order]
indptr = np.searchsorted(rows, np.arange(n + 1))
dup = sp.csr_matrix((vals, cols, indptr), shape=(n, k))
assert dup.nnz > M.nnz  # scipy kept the duplicates
sp.save_npz(f"{out}/dup_csr.npz", dup)
order = np.lexsort((-rows, cols))
cptr = np.searchsorted(cols[order], np.arange(k + 1))
dupc = sp.csc_matrix((vals[order], rows[order], cptr), shape=(n, k))
dupc.has_sorted_indices = False
sp.save_npz(f"{out}/dup_csc.npz", dupc)
)PY";

struct Inputs {
  TempDir dir;
  bool made = false;
};

void make_inputs(Inputs& in, std::uint64_t seed) {
  std::ofstream(in.dir.file("make.py")) << kMakeInputs;
  const std::string cmd =
      "/usr/bin/python3 " + in.dir.file("make.py") + " " + std::to_string(seed % 1000000007) + " " + in.dir.path.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  in.made = true;
}

std::vector<double> weights_of(const TempDir& dir, const std::string& out) {
  return otcal::io::read_npy(dir.file(out + "/weights.npy"), "weights").values();
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(std::fabs(b[i]), 1e-300));
  return worst;
}

const std::vector<std::string> kLayouts = [] {
  std::vector<std::string> v;
  for (const char* fmt : {"csr", "csc"})
    for (const char* z : {"z", "s"})
      for (const char* ib : {"32", "64"})
        for (const char* db : {"32", "64"}) v.push_back(std::string("m_") + fmt + "_" + z + "_i" + ib + "_f" + db + ".npz");
  v.push_back("dup_csr.npz");
  v.push_back("dup_csc.npz");
  return v;
}();

TEST(CalibrationNpzCli, EveryScipyLayoutGivesTheDenseWeights) {
  if (!have_scipy()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Inputs in;
  make_inputs(in, seed);
  ASSERT_TRUE(in.made);
  const TempDir& d = in.dir;
  for (const std::string method : {"gradient --epochs 20 --learning-rate 0.05", "linear", "raking"}) {
    SCOPED_TRACE(method);
    const auto ref = run_cli(d, "calibrate -q --data data.csv --spec spec.json --method " + method + " --out ref");
    ASSERT_EQ(ref.exit_code, 0) << ref.err;
    const std::vector<double> want = weights_of(d, "ref");
    for (const std::string& m : kLayouts) {
      SCOPED_TRACE(m);
      // Design weights from --data's weight column for the matrices, from --weights for the rest.
      const std::string weights = m[0] == 'd' ? " --data data.csv" : " --weights w0.npy";
      const auto r = run_cli(d, "calibrate -q --matrix " + m + " --targets targets.csv" + weights + " --method " +
                                    method + " --out out_" + m);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_LE(max_rel_diff(weights_of(d, "out_" + m), want), 1e-12);
    }
  }
}

// Float32 gradient (docs/calibration.md §3): weights are float32 values and stay within float32
// rounding of the float64 run (20 epochs at lr 0.05; see test_calibration_gradient.cpp for the bound).
TEST(CalibrationNpzCli, Float32PrecisionIsCloseToFloat64) {
  if (!have_scipy()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Inputs in;
  make_inputs(in, seed);
  ASSERT_TRUE(in.made);
  const std::string common = "calibrate -q --matrix m_csr_z_i32_f64.npz --targets targets.csv --weights w0.npy "
                             "--method gradient --epochs 20 --learning-rate 0.05";
  ASSERT_EQ(run_cli(in.dir, common + " --out f64").exit_code, 0);
  const auto r = run_cli(in.dir, common + " --precision float32 --out f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<double> w64 = weights_of(in.dir, "f64"), w32 = weights_of(in.dir, "f32");
  for (double w : w32) ASSERT_EQ(w, static_cast<double>(static_cast<float>(w)));
  EXPECT_NE(w32, w64);
  EXPECT_LE(max_rel_diff(w32, w64), 1e-4);
  EXPECT_NE(slurp(in.dir.path / "f32/report.json").find("\"precision\": \"float32\""), std::string::npos);
}

TEST(CalibrationNpzCli, RefusesBadInputsNamingFlagAndFile) {
  if (!have_scipy()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Inputs in;
  make_inputs(in, seed);
  ASSERT_TRUE(in.made);
  const TempDir& d = in.dir;
  // Hand-made archives in save_npz's layout (np.savez with its five names) for what scipy would not
  // write itself, and the matrix a user may pass by mistake.
  const std::string script = R"PY(
import sys, numpy as np, scipy.sparse as sp
out = sys.argv[1]
M = sp.load_npz(out + "/m_csr_z_i32_f64.npz"); n, k = M.shape
def save(name, fmt="csr", indices=M.indices, indptr=M.indptr, shape=M.shape, data=M.data):
    np.savez(f"{out}/{name}.npz", indices=indices, indptr=indptr, format=np.array(fmt), shape=np.array(shape), data=data)
bad = M.indices.copy(); bad[len(bad) // 2] = k; save("index_out_of_range", indices=bad)
C = M.tocsc(); bad = C.indices.copy(); bad[0] = n + 3
save("record_out_of_range", fmt="csc", indices=bad, indptr=C.indptr, data=C.data)
bad = M.data.copy(); bad[len(bad) // 3] = np.nan; save("nan", data=bad)
bad = M.data.copy(); bad[0] = np.inf; save("inf", data=bad)
save("wrong_shape", shape=(n - 1, k))
bad = M.indptr.copy(); bad[2], bad[3] = bad[3], bad[2] - 1; save("indptr_decreasing", indptr=bad)
np.savez(f"{out}/dense.npz", estimate_matrix=M.toarray())
sp.save_npz(f"{out}/coo.npz", M.tocoo())
np.save(f"{out}/short_w.npy", np.ones(n - 1))
with open(f"{out}/one_less.csv", "w") as f:
    f.write("name,value\n" + "".join(f"t{j},1.5\n" for j in range(k - 1)))
)PY";
  std::ofstream(d.file("bad.py")) << script;
  ASSERT_EQ(std::system(("/usr/bin/python3 " + d.file("bad.py") + " " + d.path.string()).c_str()), 0);
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"--matrix index_out_of_range.npz --targets targets.csv", "--matrix 'index_out_of_range.npz' has a target (column) index"},
      {"--matrix record_out_of_range.npz --targets targets.csv", "--matrix 'record_out_of_range.npz' has a record (row) index"},
      {"--matrix nan.npz --targets targets.csv", "--matrix 'nan.npz' has a non-finite value (NaN)"},
      {"--matrix inf.npz --targets targets.csv", "--matrix 'inf.npz' has a non-finite value (inf)"},
      {"--matrix wrong_shape.npz --targets targets.csv", "--matrix 'wrong_shape.npz' has indptr of length"},
      {"--matrix indptr_decreasing.npz --targets targets.csv", "--matrix 'indptr_decreasing.npz' has indptr decreasing"},
      {"--matrix dense.npz --targets targets.csv", "--matrix 'dense.npz' is not a scipy.sparse .npz"},
      {"--matrix coo.npz --targets targets.csv", "--matrix 'coo.npz' holds a sparse matrix in format 'coo'"},
      {"--matrix m_csc_z_i64_f32.npz --targets one_less.csv", "--targets 'one_less.csv' has"},
      {"--matrix m_csr_s_i32_f32.npz --targets targets.csv --weights short_w.npy", "--weights 'short_w.npy' must be a 1-D"},
      {"--matrix m_csr_s_i32_f32.npz --targets targets.csv --spec spec.json --data data.csv", "--spec and --matrix are exclusive"},
      {"--matrix m_csr_s_i32_f32.npz", "--matrix needs --targets"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cli(d, "calibrate -q " + c.args + " --out never");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("otcal: error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(d.path / "never"));
  }
}

}  // namespace
