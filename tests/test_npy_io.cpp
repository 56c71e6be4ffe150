// .npy reading/writing and atomic outputs (src/io). Round trips on fresh random arrays, files
// written by hand byte by byte for every rejection, numpy itself as the independent reference
// (when /usr/bin/python3 has numpy), and the all-or-nothing behaviour of AtomicOutputDir/File.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "io/npy.hpp"
#include "io/output.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using otcal::DType;
using otcal::index_t;

namespace {

using testsupport::fresh_seed;
using testsupport::TempDir;

std::vector<double> random_values(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> z(0.0, 10.0);
  std::vector<double> v(n);
  for (double& x : v) x = z(rng);
  return v;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A .npy file assembled by hand: magic, version, little-endian header length, the dict, padding.
std::string npy_file(const std::string& dict, const std::string& payload, int major = 1) {
  std::string h = dict;
  const std::size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64 != 0) h.push_back(' ');
  h.push_back('\n');
  std::string f = "\x93NUMPY";
  f.push_back(static_cast<char>(major));
  f.push_back(0);
  const std::size_t len = h.size();
  for (std::size_t k = 0; k < (major == 1 ? 2u : 4u); ++k) f.push_back(static_cast<char>((len >> (8 * k)) & 0xff));
  return f + h + payload;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Expect InvalidArgument whose message names the input and contains `fragment`.
void expect_rejected(const std::string& path, const std::string& fragment) {
  SCOPED_TRACE(path);
  try {
    otcal::io::read_npy(path, "--input-under-test");
    FAIL() << "accepted " << path;
  } catch (const otcal::InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--input-under-test"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

bool have_numpy() { return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0; }

}  // namespace

TEST(NpyIo, RoundTripFloat64And32In1DAnd2D) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  std::uniform_int_distribution<index_t> dim(1, 60);
  const std::vector<std::vector<index_t>> shapes = {{dim(rng)}, {dim(rng), dim(rng)}, {1, dim(rng)}, {dim(rng), 1}, {0}, {0, 3}};
  for (const auto& shape : shapes)
    for (DType dt : {DType::float64, DType::float32}) {
      std::size_t count = 1;
      for (index_t e : shape) count *= static_cast<std::size_t>(e);
      const std::vector<double> v = random_values(count, rng);
      const std::string path = dir.file("a.npy");
      otcal::io::write_npy(path, v.data(), shape, dt);
      const otcal::io::NpyArray back = otcal::io::read_npy(path, "--a");
      EXPECT_EQ(back.dtype, dt);
      EXPECT_EQ(back.shape, shape);
      ASSERT_EQ(static_cast<std::size_t>(back.size()), count);
      for (std::size_t k = 0; k < count; ++k) {
        const double want = dt == DType::float32 ? static_cast<double>(static_cast<float>(v[k])) : v[k];
        ASSERT_EQ(back.at(k), want) << k;  // bitwise: float32 narrowing is the only change
      }
      // Data starts on a 64-byte boundary (numpy's alignment rule).
      EXPECT_EQ((fs::file_size(path) - count * otcal::dtype_size(dt)) % 64, 0u);
    }
}

TEST(NpyIo, ReadsHeaderVersions2And3) {
  TempDir dir;
  const std::vector<double> v = {1.5, -2.25, 3e300};
  for (int major : {2, 3}) {
    const std::string path = dir.file("v" + std::to_string(major) + ".npy");
    write_bytes(path, npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", raw(v), major));
    const auto a = otcal::io::read_npy(path, "--x");
    EXPECT_EQ(a.shape, std::vector<index_t>{3});
    EXPECT_EQ(a.values(), v);
  }
}

TEST(NpyIo, RejectsWhatItCannotRead) {
  TempDir dir;
  const std::vector<double> six(6, 1.0);
  const std::vector<std::int64_t> ints(6, 7);
  auto make = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir.file(name), bytes);
    return dir.file(name);
  };
  expect_rejected(make("int.npy", npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", raw(ints))),
                  "dtype '<i8'");
  expect_rejected(make("fortran.npy", npy_file("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", raw(six))),
                  "Fortran");
  expect_rejected(make("big.npy", npy_file("{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }", raw(six))),
                  "big-endian");
  expect_rejected(make("trunc.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
                                             raw(six).substr(0, 40))),
                  "truncated");
  expect_rejected(make("trunc_header.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", "")
                                               .substr(0, 30)),
                  "truncated");
  expect_rejected(make("text.npy", "x,y\n1,2\n3,4\n"), "not a NumPy .npy file");
  expect_rejected(make("empty.npy", ""), "not a NumPy .npy file");
  expect_rejected(make("version9.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }", raw(six), 9)),
                  "version");
  expect_rejected(make("badshape.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3), }", raw(six))),
                  "shape");
  expect_rejected(make("structured.npy",
                       npy_file("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (6,), }", raw(six))),
                  "structured");
  expect_rejected(dir.file("missing.npy"), "cannot be opened");
  expect_rejected(dir.path.string(), "directory");
}

// A refused file closes its descriptor: the reader's constructor throws, and a constructor that
// throws runs no destructor (a fuzzer hit the process's descriptor limit after ~1000 refusals).
TEST(NpyIo, RefusalsLeaveNoDescriptorOpen) {
  TempDir dir;
  const std::vector<double> six(6, 1.0);
  write_bytes(dir.file("fortran.npy"),
              npy_file("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", raw(six)));
  write_bytes(dir.file("text.npy"), "x,y\n1,2\n");
  auto open_descriptors = [] {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++count;
    return count;
  };
  const std::size_t before = open_descriptors();
  for (int k = 0; k < 200; ++k)
    for (const char* name : {"fortran.npy", "text.npy"})
      EXPECT_THROW(otcal::io::read_npy(dir.file(name), "--x"), otcal::InvalidArgument);
  EXPECT_EQ(open_descriptors(), before) << "descriptors leaked by 400 refused reads";
}

// A float32 file stays float32: the view is the file's own bytes, mapped, not a widened copy.
TEST(NpyIo, Float32IsViewedInPlaceInItsOwnDtype) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  std::uniform_int_distribution<index_t> dim(1, 40);
  const index_t rows = dim(rng), cols = dim(rng);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  std::normal_distribution<float> z(0.0f, 10.0f);
  for (float& x : v) x = z(rng);
  const std::string path = dir.file("x32.npy");
  write_bytes(path, otcal::io::detail::npy_header("<f4", {rows, cols}) + raw(v));
  const otcal::io::NpyArray a = otcal::io::read_npy(path, "--x");
  ASSERT_EQ(a.dtype, DType::float32);
  EXPECT_TRUE(a.mapped()) << "a regular file is viewed in a mapping, not copied";
  ASSERT_EQ(std::memcmp(a.data<float>(), v.data(), v.size() * sizeof(float)), 0) << "not bit-exact";
  const otcal::ConstMatrix m = a.matrix();
  EXPECT_EQ(m.dtype, DType::float32);
  EXPECT_EQ(m.data, static_cast<const void*>(a.data<float>()));
  EXPECT_EQ(m.rows, rows);
  EXPECT_EQ(m.cols, cols);
  EXPECT_THROW(a.data<double>(), otcal::InvalidArgument);
  // values() widens exactly, for the callers that need doubles.
  const std::vector<double> wide = a.values();
  for (std::size_t k = 0; k < v.size(); ++k) ASSERT_EQ(wide[k], static_cast<double>(v[k])) << k;
}

// A payload that a hand-made header leaves misaligned for its dtype is copied into aligned memory.
TEST(NpyIo, MisalignedPayloadIsCopiedAligned) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::vector<double> v = random_values(11, rng);
  // 10-byte prefix + 75-byte dict: the payload starts at byte 85.
  std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (11,), }";
  dict.append(74 - dict.size(), ' ');
  dict.push_back('\n');
  std::string f = "\x93NUMPY";
  f += std::string{'\x01', '\x00', static_cast<char>(dict.size()), '\x00'};
  const std::string path = dir.file("odd.npy");
  write_bytes(path, f + dict + raw(v));
  const otcal::io::NpyArray a = otcal::io::read_npy(path, "--x");
  EXPECT_FALSE(a.mapped());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data<double>()) % alignof(double), 0u);
  EXPECT_EQ(a.values(), v);
}

// The header is read (and its size known) before the payload: a huge sparse file costs nothing.
TEST(NpyIo, HeaderIsKnownBeforeThePayloadIsRead) {
  TempDir dir;
  const std::string path = dir.file("huge.npy");
  const std::string header = otcal::io::detail::npy_header("<f8", {1000000, 600});
  write_bytes(path, header);
  fs::resize_file(path, header.size() + std::uint64_t{1000000} * 600 * 8);  // sparse: no disk blocks
  const otcal::io::NpyInput in(path, "--x");
  EXPECT_EQ(in.shape(), (std::vector<index_t>{1000000, 600}));
  EXPECT_EQ(in.dtype(), DType::float64);
  EXPECT_EQ(in.payload_bytes(), std::uint64_t{4800000000});
  EXPECT_FALSE(in.copies());
}

namespace {
// Reads `bytes` through a pipe (/dev/fd/N), written by a thread.
otcal::io::NpyArray read_through_pipe(const std::string& bytes) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t w = ::write(fds[1], bytes.data() + off, bytes.size() - off);
      if (w <= 0) break;
      off += static_cast<std::size_t>(w);
    }
    ::close(fds[1]);
  });
  struct Join {
    std::thread& t;
    int fd;
    ~Join() {
      t.join();
      ::close(fd);
    }
  } join{writer, fds[0]};
  return otcal::io::read_npy("/dev/fd/" + std::to_string(fds[0]), "--x");
}
}  // namespace

TEST(NpyIo, ReadsAPipeAndRefusesATruncatedOne) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // More than a pipe buffer (64 KiB), so that the reader takes it in several reads.
  const std::vector<double> v = random_values(3 * 5000, rng);
  const std::string file = otcal::io::detail::npy_header("<f8", {5000, 3}) + raw(v);
  const otcal::io::NpyArray a = read_through_pipe(file);
  EXPECT_EQ(a.shape, (std::vector<index_t>{5000, 3}));
  EXPECT_FALSE(a.mapped());
  EXPECT_EQ(a.values(), v);
  std::uniform_int_distribution<std::size_t> cut(1, v.size() * sizeof(double) - 1);
  try {
    read_through_pipe(file.substr(0, file.size() - cut(rng)));
    FAIL() << "a truncated stream was accepted";
  } catch (const otcal::InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--x"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("120000"), std::string::npos) << "names the bytes the header announced: " << msg;
  }
}

TEST(NpyIo, IntegerWriterAndUnicodeScalarHeaders) {
  TempDir dir;
  const std::vector<std::int32_t> i32 = {0, -1, 2147483647};
  const std::vector<std::int64_t> i64 = {0, -1, std::int64_t{1} << 40};
  otcal::io::write_npy(dir.file("i32.npy"), i32.data(), {3});
  otcal::io::write_npy(dir.file("i64.npy"), i64.data(), {3});
  for (const auto& [name, descr, bytes] : {std::tuple{"i32.npy", "<i4", raw(i32)}, std::tuple{"i64.npy", "<i8", raw(i64)}}) {
    std::ifstream in(dir.file(name), std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), {});
    ASSERT_EQ(all.size() % 64, bytes.size() % 64);
    EXPECT_NE(all.find(std::string("'descr': '") + descr + "'"), std::string::npos);
    EXPECT_EQ(all.substr(all.size() - bytes.size()), bytes);
  }
  const auto u = otcal::io::detail::npy_stream_unicode_scalar("csr");
  EXPECT_NE(u.header.find("'descr': '<U3'"), std::string::npos);
  EXPECT_NE(u.header.find("'shape': ()"), std::string::npos);
  EXPECT_EQ(u.data_bytes, 12u);
}

// numpy is the independent reference: it reads what we write and we read what it writes.
TEST(NpyIo, AgreesWithNumpy) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  // numpy -> otcal: numpy writes, and dumps every value as float.hex text.
  const std::string script =
      "import numpy as np, sys\n"
      "rng = np.random.default_rng(" + std::to_string(seed % 1000000007) + ")\n"
      "a = rng.normal(size=(7, 5)) * 1e3\n"
      "np.save(sys.argv[1] + '/np64.npy', a)\n"
      "np.save(sys.argv[1] + '/np32.npy', a.astype(np.float32))\n"
      "open(sys.argv[1] + '/np.txt', 'w').write(' '.join(float(v).hex() for v in a.ravel()))\n";
  write_bytes(dir.file("gen.py"), script);
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir.file("gen.py") + " " + dir.path.string()).c_str()), 0);
  std::ifstream txt(dir.file("np.txt"));
  std::vector<double> want;
  for (std::string tok; txt >> tok;) want.push_back(std::strtod(tok.c_str(), nullptr));
  ASSERT_EQ(want.size(), 35u);
  const auto a64 = otcal::io::read_npy(dir.file("np64.npy"), "--x");
  const auto a32 = otcal::io::read_npy(dir.file("np32.npy"), "--x");
  EXPECT_EQ(a64.shape, (std::vector<index_t>{7, 5}));
  EXPECT_EQ(a32.dtype, DType::float32);
  for (std::size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(a64.at(k), want[k]);
    EXPECT_EQ(a32.data<float>()[k], static_cast<float>(want[k]));  // numpy's float32, no widened copy
  }
  // otcal -> numpy: numpy loads our file and prints the values as float.hex.
  const std::vector<double> v = random_values(4 * 3, rng);
  otcal::io::write_npy(dir.file("ours.npy"), v.data(), {4, 3}, DType::float64);
  const std::string cmd = "/usr/bin/python3 -c \"import numpy as np,sys; a=np.load(sys.argv[1]); "
                          "assert a.dtype==np.float64 and a.shape==(4,3) and a.flags.c_contiguous; "
                          "print(' '.join(float(x).hex() for x in a.ravel()))\" " + dir.file("ours.npy") + " > " +
                          dir.file("ours.txt");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream back(dir.file("ours.txt"));
  std::size_t k = 0;
  for (std::string tok; back >> tok; ++k) {
    ASSERT_LT(k, v.size());
    EXPECT_EQ(std::strtod(tok.c_str(), nullptr), v[k]);
  }
  EXPECT_EQ(k, v.size());
}

// ---- atomic outputs -------------------------------------------------------------------------------

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AtomicOutput, CommitPublishesEverythingAndFailureLeavesNothing) {
  TempDir dir;
  const fs::path out = dir.path / "run";
  {
    otcal::io::AtomicOutputDir o(out);
    write_bytes(o.file("f.txt"), "f");
    EXPECT_FALSE(fs::exists(out)) << "visible before commit";
    o.commit();
  }
  EXPECT_EQ(listing(out), (std::vector<std::string>{".otcal-output", "f.txt"}));
  EXPECT_EQ(listing(dir.path), std::vector<std::string>{"run"});

  // Replacing an earlier otcal output: the old files go, the new ones appear together.
  {
    otcal::io::AtomicOutputDir o(out);
    write_bytes(o.file("g.txt"), "g");
    o.commit();
  }
  EXPECT_EQ(listing(out), (std::vector<std::string>{".otcal-output", "g.txt"}));
  EXPECT_EQ(listing(dir.path), std::vector<std::string>{"run"});

  // A failure (no commit) leaves no trace, and the earlier output untouched.
  const fs::path fresh = dir.path / "fresh";
  try {
    otcal::io::AtomicOutputDir o(fresh);
    otcal::io::AtomicOutputDir o2(out);
    write_bytes(o.file("half.txt"), "half");
    write_bytes(o2.file("half.txt"), "half");
    throw std::runtime_error("solver failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(listing(dir.path), std::vector<std::string>{"run"});
  EXPECT_EQ(listing(out), (std::vector<std::string>{".otcal-output", "g.txt"}));

  // An empty existing folder is accepted; trailing slashes name the same folder.
  fs::create_directory(dir.path / "empty");
  {
    otcal::io::AtomicOutputDir o((dir.path / "empty").string() + "/");
    write_bytes(o.file("h.txt"), "h");
    o.commit();
  }
  EXPECT_EQ(listing(dir.path / "empty"), (std::vector<std::string>{".otcal-output", "h.txt"}));
  EXPECT_EQ(listing(dir.path), (std::vector<std::string>{"empty", "run"}));
}

TEST(AtomicOutput, RefusesFilesForeignFoldersAndMissingParents) {
  TempDir dir;
  write_bytes(dir.file("file"), "x");
  fs::create_directory(dir.path / "foreign");
  write_bytes((dir.path / "foreign" / "notes.txt").string(), "mine");
  for (const fs::path& bad : {dir.path / "file", dir.path / "foreign", dir.path / "no" / "such" / "parent"}) {
    SCOPED_TRACE(bad.string());
    try {
      otcal::io::AtomicOutputDir o(bad, "--out");
      FAIL() << "accepted";
    } catch (const otcal::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("--out"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(listing(dir.path), (std::vector<std::string>{"file", "foreign"}));
  EXPECT_EQ(listing(dir.path / "foreign"), std::vector<std::string>{"notes.txt"});
}

TEST(AtomicOutput, AtomicFileReplacesOnCommitOnly) {
  TempDir dir;
  const std::string path = dir.file("plan.npz");
  {
    otcal::io::AtomicFile f(path);
    write_bytes(f.temp_path(), "new");
    EXPECT_FALSE(fs::exists(path));
    f.commit();
  }
  EXPECT_EQ(listing(dir.path), std::vector<std::string>{"plan.npz"});
  {
    otcal::io::AtomicFile f(path);
    write_bytes(f.temp_path(), "newer but abandoned");
  }
  EXPECT_EQ(listing(dir.path), std::vector<std::string>{"plan.npz"});
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "new");
  EXPECT_THROW(otcal::io::AtomicFile(dir.path, "--out"), otcal::InvalidArgument);  // a folder
}
