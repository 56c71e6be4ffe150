// SciPy-compatible .npz CSR files (src/io/npz.cpp): scipy.sparse.load_npz, run by /usr/bin/python3,
// is the independent reader. It loads our file, checks format/shape/dtypes, and writes every array
// back as float64 .npy, which we compare entry by entry with the matrix we wrote.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/npy.hpp"
#include "io/npz.hpp"
#include "otcal/csr.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using otcal::CsrMatrix;
using otcal::DType;
using otcal::index_t;

namespace {

using testsupport::fresh_seed;
using testsupport::TempDir;

bool have_scipy() { return std::system("/usr/bin/python3 -c 'import scipy.sparse' >/dev/null 2>&1") == 0; }

// Random CSR with about `density` of the entries set, some rows forced empty, sorted columns.
CsrMatrix random_csr(index_t rows, index_t cols, double density, DType dtype, std::mt19937_64& rng) {
  CsrMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.dtype = dtype;
  m.indptr.push_back(0);
  std::bernoulli_distribution keep(density), empty_row(0.25);
  std::normal_distribution<double> value(0.0, 3.0);
  std::uniform_int_distribution<std::int64_t> far(0, cols - 1);
  for (index_t r = 0; r < rows; ++r) {
    if (!empty_row(rng)) {
      if (m.wide_indices()) {  // huge column space: a few sorted random columns
        std::vector<std::int64_t> cs;
        for (int k = 0; k < 3; ++k) cs.push_back(far(rng));
        std::sort(cs.begin(), cs.end());
        cs.erase(std::unique(cs.begin(), cs.end()), cs.end());
        for (auto c : cs) {
          m.indices64.push_back(c);
          m.values.push_back(value(rng));
        }
      } else {
        for (index_t c = 0; c < cols; ++c)
          if (keep(rng)) {
            m.indices32.push_back(static_cast<std::int32_t>(c));
            double v = value(rng);
            if (dtype == DType::float32) v = static_cast<float>(v);
            m.values.push_back(v);
          }
      }
    }
    m.indptr.push_back(static_cast<std::int64_t>(m.values.size()));
  }
  return m;
}

// Loads `npz` with scipy and writes indptr/indices/data/shape back as float64 .npy (exact for
// integers below 2^53), after checking what load_npz made of it.
void scipy_roundtrip(const TempDir& dir, const std::string& npz, const CsrMatrix& m) {
  const std::string script =
      "import sys, numpy as np, scipy.sparse as sp\n"
      "p, out, want_dtype, want_idx = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]\n"
      "m = sp.load_npz(p)\n"
      "assert m.format == 'csr', m.format\n"
      "assert m.dtype == np.dtype(want_dtype), m.dtype\n"
      "raw = np.load(p)\n"
      "assert str(raw['format']) == 'csr'\n"
      "assert raw['indices'].dtype == np.dtype(want_idx), raw['indices'].dtype\n"
      "assert raw['indptr'].dtype == np.int64 and raw['shape'].dtype == np.int64\n"
      "for name, a in [('indptr', m.indptr), ('indices', m.indices), ('data', m.data), ('shape', np.array(m.shape))]:\n"
      "    np.save(out + '/' + name + '.npy', np.asarray(a, dtype=np.float64))\n"
      "print('nnz', m.nnz, 'sum', float(m.data.sum()))\n";
  std::ofstream(dir.file("load.py")) << script;
  const std::string cmd = "/usr/bin/python3 " + dir.file("load.py") + " " + npz + " " + dir.path.string() + " " +
                          (m.dtype == DType::float32 ? "float32" : "float64") + " " +
                          (m.wide_indices() ? "int64" : "int32");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto indptr = otcal::io::read_npy(dir.file("indptr.npy"), "indptr");
  const auto indices = otcal::io::read_npy(dir.file("indices.npy"), "indices");
  const auto data = otcal::io::read_npy(dir.file("data.npy"), "data");
  const auto shape = otcal::io::read_npy(dir.file("shape.npy"), "shape");
  ASSERT_EQ(shape.values(), (std::vector<double>{double(m.rows), double(m.cols)}));
  ASSERT_EQ(static_cast<std::size_t>(indptr.size()), m.indptr.size());
  for (std::size_t r = 0; r < m.indptr.size(); ++r) ASSERT_EQ(indptr.at(r), double(m.indptr[r])) << "indptr " << r;
  ASSERT_EQ(static_cast<std::size_t>(indices.size()), static_cast<std::size_t>(m.nnz()));
  ASSERT_EQ(static_cast<std::size_t>(data.size()), static_cast<std::size_t>(m.nnz()));
  for (std::int64_t k = 0; k < m.nnz(); ++k) {
    ASSERT_EQ(indices.at(k), double(m.index(k))) << "index " << k;
    const double want = m.dtype == DType::float32 ? double(float(m.values[k])) : m.values[k];
    ASSERT_EQ(data.at(k), want) << "value " << k;
  }
}

}  // namespace

TEST(NpzScipy, LoadNpzReadsEveryEntry) {
  if (!have_scipy()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<index_t> dim(1, 80);
  for (DType dt : {DType::float64, DType::float32})
    for (bool zip64 : {false, true}) {
      SCOPED_TRACE(std::string(otcal::dtype_name(dt)) + (zip64 ? " zip64" : ""));
      TempDir dir;
      const CsrMatrix m = random_csr(dim(rng), dim(rng), 0.2, dt, rng);
      const std::string path = dir.file("plan.npz");
      otcal::io::write_npz_csr(path, m, {.force_zip64 = zip64});
      scipy_roundtrip(dir, path, m);
    }
}

TEST(NpzScipy, EmptyMatrixAndWideIndices) {
  if (!have_scipy()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  {
    TempDir dir;
    CsrMatrix empty;
    empty.rows = 4;
    empty.cols = 9;
    empty.indptr.assign(5, 0);
    otcal::io::write_npz_csr(dir.file("e.npz"), empty);
    scipy_roundtrip(dir, dir.file("e.npz"), empty);
  }
  {
    TempDir dir;  // more columns than int32 can index: int64 indices
    const CsrMatrix wide = random_csr(6, index_t{3} << 31, 0, DType::float64, rng);
    ASSERT_TRUE(wide.wide_indices());
    otcal::io::write_npz_csr(dir.file("w.npz"), wide);
    scipy_roundtrip(dir, dir.file("w.npz"), wide);
  }
}

TEST(NpzScipy, RejectsInconsistentMatrices) {
  TempDir dir;
  CsrMatrix m;
  m.rows = 2;
  m.cols = 3;
  m.indptr = {0, 1, 2};
  m.indices32 = {0, 3};  // column 3 is out of range
  m.values = {1.0, 2.0};
  EXPECT_THROW(otcal::io::write_npz_csr(dir.file("bad.npz"), m), otcal::InvalidArgument);
  m.indices32 = {0, 2};
  m.indptr = {0, 2, 1};  // decreasing
  EXPECT_THROW(otcal::io::write_npz_csr(dir.file("bad.npz"), m), otcal::InvalidArgument);
  m.indptr = {0, 1};  // wrong length
  EXPECT_THROW(otcal::io::write_npz_csr(dir.file("bad.npz"), m), otcal::InvalidArgument);
  m.indptr = {0, 1, 2};
  m.values = {1.0};  // nnz mismatch
  EXPECT_THROW(otcal::io::write_npz_csr(dir.file("bad.npz"), m), otcal::InvalidArgument);
}
