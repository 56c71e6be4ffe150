// The piece reader of `otcal merge-plan` (io::merge_npz_pieces) on malformed pieces, found by the
// fuzz_npz_piece harness (fuzz/, docs/testing.md §4): each must be refused with InvalidArgument
// naming the piece, never merged into a wrong .npz or failing with another exception.
// Pieces are written here as stored zips entry by entry, so that one entry can be made wrong while
// the rest stays what write_npz_csr writes; a control merge of the same construction succeeds.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "io/npz.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;
using testsupport::fresh_seed;
using testsupport::TempDir;

struct Entry {
  std::string name;
  std::string bytes;  // a whole .npy file
};

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

void put_le(std::string& s, std::uint64_t v, int n) {
  for (int k = 0; k < n; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
}

// Local headers and stored bytes only: all the piece reader walks (CRCs are not its business).
void write_stored_zip(const std::string& path, const std::vector<Entry>& entries) {
  std::string zip;
  for (const Entry& e : entries) {
    put_le(zip, 0x04034b50, 4);
    put_le(zip, 20, 2);  // version needed
    put_le(zip, 0, 2);   // flags
    put_le(zip, 0, 2);   // stored
    put_le(zip, 0, 4);   // time, date
    put_le(zip, 0, 4);   // crc
    put_le(zip, e.bytes.size(), 4);
    put_le(zip, e.bytes.size(), 4);
    put_le(zip, e.name.size(), 2);
    put_le(zip, 0, 2);
    zip += e.name;
    zip += e.bytes;
  }
  std::ofstream(path, std::ios::binary) << zip;
}

// A random piece of `rows` rows over 9 columns, as the entries write_npz_csr writes.
struct Piece {
  std::vector<std::int32_t> indices;
  std::vector<std::int64_t> indptr{0};
  std::vector<double> data;
};

Piece random_piece(index_t rows, std::mt19937_64& rng) {
  Piece p;
  std::bernoulli_distribution keep(0.4);
  std::normal_distribution<double> value(1.0, 2.0);
  for (index_t r = 0; r < rows; ++r) {
    for (std::int32_t c = 0; c < 9; ++c)
      if (keep(rng)) {
        p.indices.push_back(c);
        p.data.push_back(value(rng));
      }
    p.indptr.push_back(static_cast<std::int64_t>(p.data.size()));
  }
  if (p.data.empty()) {  // at least one entry, so that every entry of the piece has bytes
    p.indices.push_back(4);
    p.data.push_back(value(rng));
    p.indptr.back() = 1;
  }
  return p;
}

std::vector<Entry> entries_of(const Piece& p) {
  using otcal::io::detail::npy_header;
  const index_t nnz = static_cast<index_t>(p.data.size());
  return {{"indices.npy", npy_header("<i4", {nnz}) + raw(p.indices)},
          {"indptr.npy", npy_header("<i8", {static_cast<index_t>(p.indptr.size())}) + raw(p.indptr)},
          {"data.npy", npy_header("<f8", {nnz}) + raw(p.data)}};
}

// The same piece listed twice (the second copy's indptr is shifted), merged into dir/merged.npz.
void merge_twice(const TempDir& dir, const Piece& p, const std::vector<Entry>& entries) {
  const std::string piece = (dir.path / "p.npz").string();
  write_stored_zip(piece, entries);
  const std::size_t rows = p.indptr.size() - 1, nnz = p.data.size();
  const std::string manifest = (dir.path / "plan.manifest.json").string();
  std::ofstream(manifest) << "{\"format\": \"otcal csr pieces\", \"version\": 1, \"shape\": [" << 2 * rows
                          << ", 9], \"nnz\": " << 2 * nnz << ", \"pieces\": [{\"file\": \"p.npz\", \"rows\": [0, "
                          << rows << "], \"nnz\": " << nnz << "}, {\"file\": \"p.npz\", \"rows\": [" << rows << ", "
                          << 2 * rows << "], \"nnz\": " << nnz << "}]}";
  otcal::io::merge_npz_pieces(manifest, (dir.path / "merged.npz").string(), "--manifest", 64);
}

// Expects a refusal that names the piece file.
void expect_refused(const TempDir& dir, const Piece& p, const std::vector<Entry>& entries, const std::string& why) {
  SCOPED_TRACE(why);
  try {
    merge_twice(dir, p, entries);
    ADD_FAILURE() << "merged a piece with " << why;
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("p.npz"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an InvalidArgument: " << e.what();
  }
}

TEST(NpzPieceReader, RefusesMalformedEntries) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Piece p = random_piece(std::uniform_int_distribution<index_t>(2, 12)(rng), rng);
  TempDir dir("otcal_npz_piece");

  // Control: the construction itself is a valid piece, merged into the matrix of twice the rows.
  ASSERT_NO_THROW(merge_twice(dir, p, entries_of(p)));
  const std::vector<double> merged_data = [&] {
    // merged.npz is stored: data.npy is its last entry; compare its values with the piece's twice.
    std::ifstream in(dir.path / "merged.npz", std::ios::binary);
    const std::string z{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const std::size_t at = z.rfind(std::string("data.npy") + "\x93NUMPY");
    EXPECT_NE(at, std::string::npos);
    const std::string npy = z.substr(at + 8, otcal::io::detail::npy_header("<f8", {0}).size() + 16 * p.data.size());
    std::ofstream(dir.path / "d.npy", std::ios::binary) << npy;
    return otcal::io::read_npy((dir.path / "d.npy").string(), "merged data").values();
  }();
  ASSERT_EQ(merged_data.size(), 2 * p.data.size());
  for (std::size_t k = 0; k < merged_data.size(); ++k) EXPECT_EQ(merged_data[k], p.data[k % p.data.size()]);

  using otcal::io::detail::npy_header;
  const index_t nnz = static_cast<index_t>(p.data.size());
  {  // indptr in int32: its values would be read as int64 (old code: merged silently, or overran a buffer)
    std::vector<Entry> e = entries_of(p);
    const std::vector<std::int32_t> narrow(p.indptr.begin(), p.indptr.end());
    e[1].bytes = npy_header("<i4", {static_cast<index_t>(narrow.size())}) + raw(narrow);
    expect_refused(dir, p, e, "an int32 indptr");
  }
  {  // data.npy claims nnz values and holds one fewer (old code: merged, a data entry short of its header)
    std::vector<Entry> e = entries_of(p);
    const std::vector<double> short_data(p.data.begin(), p.data.end() - 1);
    e[2].bytes = npy_header("<f8", {nnz}) + raw(short_data);
    expect_refused(dir, p, e, "fewer values than its shape");
  }
  {  // a header dict cut after 'descr': (old code: std::out_of_range from substr)
    std::vector<Entry> e = entries_of(p);
    std::string dict = "{'descr':";
    std::string npy = std::string("\x93NUMPY\x01\x00", 8);
    put_le(npy, dict.size(), 2);
    e[0].bytes = npy + dict + raw(p.indices);
    expect_refused(dir, p, e, "a header dict cut short");
  }
}

}  // namespace
