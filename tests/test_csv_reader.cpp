// The calibration CSV reader (src/io/csv.hpp): chunked parsing gives the same table wherever the
// chunks end, columns are typed as they stream (a late text field keeps the earlier fields
// verbatim), the file is never held whole (peak memory well below the file size for numeric
// data), and NUL or control bytes never reach a message raw.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>

#include "io/csv.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace {

using testsupport::TempDir;

// A random table written as CSV with every construct the reader knows, and what it must read.
struct Generated {
  std::string text;
  std::vector<std::vector<double>> numbers;        // the numeric columns
  std::vector<std::vector<std::string>> strings;   // the text columns
};

std::string quote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Columns: x (numbers, some empty), name (text with commas, quotes, newlines), late (numbers in
// forms that do not survive a round trip through double, then text from record `flip` on).
Generated generate(std::uint64_t seed, int n, int flip) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1000, 1000);
  const char* pieces[] = {"a", "b,c", "say \"hi\"", "two\nlines", " ", "z"};
  const char* numeric_forms[] = {"007", "1e3", " 5 ", "0x10", "+2.50", "-0"};
  Generated g;
  g.numbers.resize(1);
  g.strings.resize(2);
  g.text = "x,name,late\r\n";
  for (int i = 0; i < n; ++i) {
    std::string x;
    if (rng() % 5 == 0) {
      g.numbers[0].push_back(NAN);
    } else {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", u(rng));
      x = buf;
      g.numbers[0].push_back(std::strtod(buf, nullptr));
    }
    std::string name = std::string(pieces[rng() % 6]) + pieces[rng() % 6];
    std::string late = i < flip ? numeric_forms[rng() % 6] : "t" + std::to_string(rng() % 100);
    g.strings[0].push_back(name);
    g.strings[1].push_back(late);
    const bool quote_late = rng() % 2 == 0;
    g.text += x + "," + quote(name) + "," + (quote_late ? quote(late) : late) + (rng() % 2 ? "\r\n" : "\n");
    if (rng() % 7 == 0) g.text += "\n";  // blank lines are skipped
  }
  return g;
}

void expect_table(const otcal::RecordTable& t, const Generated& g) {
  ASSERT_EQ(t.columns.size(), 3u);
  ASSERT_TRUE(t.columns[0].numeric);
  ASSERT_EQ(t.columns[0].numbers.size(), g.numbers[0].size());
  for (std::size_t i = 0; i < g.numbers[0].size(); ++i) {
    if (std::isnan(g.numbers[0][i]))
      ASSERT_TRUE(std::isnan(t.columns[0].numbers[i])) << "record " << i;
    else
      ASSERT_EQ(t.columns[0].numbers[i], g.numbers[0][i]) << "record " << i;
  }
  ASSERT_FALSE(t.columns[1].numeric);
  EXPECT_EQ(t.columns[1].strings, g.strings[0]);
  ASSERT_FALSE(t.columns[2].numeric);
  EXPECT_EQ(t.columns[2].strings, g.strings[1]);  // "007", "1e3", ... verbatim, not re-rendered
}

TEST(CsvReader, ChunkBoundariesAnywhereGiveTheSameTable) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int n = 300, flip = 211;
  const Generated g = generate(seed, n, flip);
  for (std::size_t chunk : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{64}, g.text.size()}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const otcal::RecordTable t = otcal::io::detail::parse_csv_chunked(g.text, "test", chunk);
    ASSERT_EQ(t.n_records, n);
    expect_table(t, g);
  }
  // From a file too: the second pass over the column that turned into text reads the file again.
  TempDir tmp;
  std::ofstream(tmp.file("d.csv"), std::ios::binary) << g.text;
  expect_table(otcal::io::read_csv(tmp.file("d.csv"), "--data"), g);
  // From a pipe (--data <(zcat data.csv.gz)): it can be read once, so the second pass must not
  // read it again (it did: the column that turned into text lost its first 211 fields).
  ASSERT_EQ(::mkfifo(tmp.file("pipe.csv").c_str(), 0600), 0);
  std::thread writer([&] { std::ofstream(tmp.file("pipe.csv"), std::ios::binary) << g.text; });
  const otcal::RecordTable piped = otcal::io::read_csv(tmp.file("pipe.csv"), "--data");
  writer.join();
  ASSERT_EQ(piped.n_records, n);
  expect_table(piped, g);
}

// Bytes from /proc/self/status ("VmHWM" or "VmRSS"), 0 when unavailable.
std::size_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1)) * 1024;
  return 0;
}

TEST(CsvReader, NumericFileIsNeverHeldWhole) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir tmp;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1e4, 1e4);
  const int n = 120000, cols = 8;
  {
    std::ofstream out(tmp.file("big.csv"), std::ios::binary);
    for (int c = 0; c < cols; ++c) out << (c ? "," : "") << "c" << c;
    out << "\n";
    char buf[40];
    for (int i = 0; i < n; ++i) {
      for (int c = 0; c < cols; ++c) {
        std::snprintf(buf, sizeof buf, "%.17g", u(rng));
        out << (c ? "," : "") << buf;
      }
      out << "\n";
    }
  }
  const auto file_bytes = static_cast<std::size_t>(std::filesystem::file_size(tmp.file("big.csv")));
  // Reset the peak-RSS mark (Linux: "5" > clear_refs), so the peak below is this read's.
  if (!(std::ofstream("/proc/self/clear_refs") << "5") || proc_status_bytes("VmHWM") == 0)
    GTEST_SKIP() << "no /proc/self/clear_refs to reset the peak resident size";
  const std::size_t before = proc_status_bytes("VmRSS");
  std::size_t n_read = 0;
  {
    const otcal::RecordTable t = otcal::io::read_csv(tmp.file("big.csv"), "--data");
    n_read = static_cast<std::size_t>(t.n_records);
    for (const auto& c : t.columns) ASSERT_TRUE(c.numeric);
  }
  const std::size_t peak = proc_status_bytes("VmHWM");
  ASSERT_EQ(n_read, static_cast<std::size_t>(n));
  const std::size_t grew = peak > before ? peak - before : 0;
  std::cout << "file " << file_bytes << " bytes, table " << n * cols * 8 << " bytes, peak RSS growth " << grew
            << " bytes\n";
  // The numbers are 8 bytes per ~21-byte field (the table is ~40% of the file, plus one 1 MiB
  // chunk); holding the text whole, let alone a string per cell, costs at least the file.
  EXPECT_LT(grew, file_bytes);
}

TEST(CsvReader, NulAndControlBytesAreRefusedOrEscaped) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // A NUL byte in the field at a random line and column, quoted or not.
  const int lines = 3 + static_cast<int>(rng() % 5), bad_line = 2 + static_cast<int>(rng() % (lines - 1));
  const int bad_col = 1 + static_cast<int>(rng() % 3);
  const bool quoted = rng() % 2;
  std::string text = "alpha,beta,gamma\n";
  for (int l = 2; l <= lines; ++l) {
    for (int c = 1; c <= 3; ++c) {
      std::string f = std::to_string(rng() % 1000);
      if (l == bad_line && c == bad_col) f = "ab" + std::string(1, '\0') + "cd";
      text += (c > 1 ? "," : "") + (quoted ? "\"" + f + "\"" : f);
    }
    text += "\n";
  }
  try {
    otcal::io::parse_csv(text, "--data 'x.csv'");
    FAIL() << "a NUL byte was accepted";
  } catch (const otcal::InvalidArgument& e) {
    const std::string msg = e.what();
    const char* names[] = {"alpha", "beta", "gamma"};
    EXPECT_NE(msg.find("line " + std::to_string(bad_line) + ", column " + std::to_string(bad_col)), std::string::npos) << msg;
    EXPECT_NE(msg.find(names[bad_col - 1]), std::string::npos) << msg;
    EXPECT_NE(msg.find("ab\\0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--data 'x.csv'"), std::string::npos) << msg;
  }
  // Control bytes in header names are shown escaped, never raw.
  const std::string ctl(1, static_cast<char>(1 + rng() % 8));
  try {
    otcal::io::parse_csv("a" + ctl + "\t,a" + ctl + "\t\n1,2\n", "t");
    FAIL() << "a duplicate column was accepted";
  } catch (const otcal::InvalidArgument& e) {
    const std::string msg = e.what();
    for (char ch : msg) EXPECT_FALSE(static_cast<unsigned char>(ch) < 0x20) << "raw control byte in: " << msg;
    char esc[8];
    std::snprintf(esc, sizeof esc, "\\x%02X", static_cast<unsigned>(ctl[0]));
    EXPECT_NE(msg.find(std::string("a") + esc + "\\t"), std::string::npos) << msg;
  }
}

TEST(CsvReader, FolderIsNamedAsAFolder) {
  TempDir tmp;
  try {
    otcal::io::read_csv(tmp.path.string(), "--data");
    FAIL() << "a folder was read as a CSV";
  } catch (const otcal::InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("is a folder"), std::string::npos) << msg;
    EXPECT_NE(msg.find(tmp.path.string()), std::string::npos) << msg;
    EXPECT_EQ(msg.find("no header row"), std::string::npos) << msg;
  }
}

}  // namespace
