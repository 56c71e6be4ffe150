// SciPy sparse .npz reader (see npz_read.hpp): the zip's central directory (Zip64 included), each
// entry inflated (deflate) or read (stored) as a stream with its CRC32 checked at the end, .npy
// headers parsed from the stream, and the arrays converted chunk by chunk into A's CSR.
#include "io/npz_read.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numeric>
#include <vector>

#include "otcal/errors.hpp"

namespace otcal::io {
namespace {

constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
constexpr const char* kSaveAdvice =
    "Write it with scipy.sparse.save_npz(path, matrix) from a csr_matrix or csc_matrix (records x targets)";

std::uint64_t le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

struct Source {
  std::string path, what;
  [[noreturn]] void fail(const std::string& problem, const std::string& advice = kSaveAdvice) const {
    throw InvalidArgument(what + " '" + path + "' " + problem + ". " + advice);
  }
};

struct Entry {
  std::string name;
  int method = 0;  // 0 stored, 8 deflate
  std::uint32_t crc = 0;
  std::uint64_t packed = 0, size = 0, header_offset = 0;
};

// The central directory (PKWARE APPNOTE 4.3.12-4.3.16, Zip64 4.3.14/4.5.3).
std::vector<Entry> read_directory(std::ifstream& in, const Source& src) {
  in.seekg(0, std::ios::end);
  const std::uint64_t file_bytes = static_cast<std::uint64_t>(in.tellg());
  const std::uint64_t tail = std::min<std::uint64_t>(file_bytes, 65535 + 22);
  std::vector<unsigned char> t(tail);
  in.seekg(static_cast<std::streamoff>(file_bytes - tail));
  in.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(tail));
  if (!in) src.fail("cannot be read: " + std::string(std::strerror(errno)));
  std::int64_t eocd = -1;
  for (std::int64_t p = static_cast<std::int64_t>(tail) - 22; p >= 0; --p)
    if (le(&t[p], 4) == 0x06054b50) {
      eocd = p;
      break;
    }
  if (eocd < 0) src.fail("is not a zip archive (.npz)");
  std::uint64_t count = le(&t[eocd + 10], 2), cd_size = le(&t[eocd + 12], 4), cd_offset = le(&t[eocd + 16], 4);
  if (eocd >= 20 && le(&t[eocd - 20], 4) == 0x07064b50) {  // Zip64 end record locator
    const std::uint64_t at = le(&t[eocd - 20 + 8], 8);
    unsigned char z[56];
    in.seekg(static_cast<std::streamoff>(at));
    if (!in.read(reinterpret_cast<char*>(z), 56) || le(z, 4) != 0x06064b50) src.fail("has a bad Zip64 end record");
    count = le(z + 32, 8);
    cd_size = le(z + 40, 8);
    cd_offset = le(z + 48, 8);
  }
  if (cd_offset > file_bytes || cd_size > file_bytes - cd_offset) src.fail("has a central directory past its end");
  std::vector<unsigned char> cd(cd_size);
  in.seekg(static_cast<std::streamoff>(cd_offset));
  in.read(reinterpret_cast<char*>(cd.data()), static_cast<std::streamsize>(cd_size));
  if (!in) src.fail("is truncated (central directory)");
  std::vector<Entry> entries;
  std::size_t p = 0;
  for (std::uint64_t e = 0; e < count; ++e) {
    if (p + 46 > cd.size() || le(&cd[p], 4) != 0x02014b50) src.fail("has a bad central directory");
    Entry m;
    m.method = static_cast<int>(le(&cd[p + 10], 2));
    m.crc = static_cast<std::uint32_t>(le(&cd[p + 16], 4));
    m.packed = le(&cd[p + 20], 4);
    m.size = le(&cd[p + 24], 4);
    const std::size_t name_len = le(&cd[p + 28], 2), extra_len = le(&cd[p + 30], 2), comment = le(&cd[p + 32], 2);
    m.header_offset = le(&cd[p + 42], 4);
    if (p + 46 + name_len + extra_len + comment > cd.size()) src.fail("has a bad central directory");
    m.name.assign(reinterpret_cast<const char*>(&cd[p + 46]), name_len);
    for (std::size_t x = p + 46 + name_len, end = x + extra_len; x + 4 <= end;) {
      const std::uint64_t id = le(&cd[x], 2), len = le(&cd[x + 2], 2);
      if (id == 1) {  // Zip64: the fields that overflowed, in this order
        std::size_t f = x + 4;
        auto take = [&](std::uint64_t& v) {
          if (v == 0xFFFFFFFFu && f + 8 <= x + 4 + len) {
            v = le(&cd[f], 8);
            f += 8;
          }
        };
        take(m.size);
        take(m.packed);
        take(m.header_offset);
      }
      x += 4 + len;
    }
    entries.push_back(m);
    p += 46 + name_len + extra_len + comment;
  }
  for (const Entry& m : entries)
    if (m.header_offset > file_bytes || m.packed > file_bytes - m.header_offset)
      src.fail("has entry " + m.name + " running past the end of the file");
  return entries;
}

// One zip entry's uncompressed bytes, read front to back; the CRC32 is checked when all are read.
class EntryStream {
 public:
  EntryStream(const Source& src, const Entry& e) : src_(src), e_(e), in_(src.path, std::ios::binary) {
    unsigned char h[30];
    in_.seekg(static_cast<std::streamoff>(e.header_offset));
    if (!in_.read(reinterpret_cast<char*>(h), 30) || le(h, 4) != 0x04034b50)
      src.fail("has a bad local header for " + e.name);
    in_.seekg(static_cast<std::streamoff>(e.header_offset + 30 + le(h + 26, 2) + le(h + 28, 2)));
    if (e.method == 8) {
      if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) src.fail("cannot be inflated (zlib)");
      inflating_ = true;
    } else if (e.method != 0) {
      src.fail("has entry " + e.name + " compressed with zip method " + std::to_string(e.method) +
               " (only stored and deflate are read)");
    }
    crc_ = crc32_z(0L, Z_NULL, 0);
  }
  ~EntryStream() {
    if (inflating_) inflateEnd(&z_);
  }
  EntryStream(const EntryStream&) = delete;
  EntryStream& operator=(const EntryStream&) = delete;

  std::uint64_t remaining() const { return e_.size - produced_; }

  // Exactly n bytes, or a "truncated" error.
  void read(char* out, std::size_t n) {
    if (n > remaining()) src_.fail("has a truncated " + e_.name);
    if (!inflating_) {
      if (!in_.read(out, static_cast<std::streamsize>(n))) src_.fail("is truncated in " + e_.name);
    } else {
      z_.next_out = reinterpret_cast<Bytef*>(out);
      z_.avail_out = static_cast<uInt>(n);
      while (z_.avail_out > 0) {
        if (z_.avail_in == 0) {
          const std::uint64_t left = e_.packed - consumed_;
          const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(left, packed_.size()));
          if (take == 0) src_.fail("is truncated in " + e_.name);
          if (!in_.read(packed_.data(), static_cast<std::streamsize>(take))) src_.fail("is truncated in " + e_.name);
          consumed_ += take;
          z_.next_in = reinterpret_cast<Bytef*>(packed_.data());
          z_.avail_in = static_cast<uInt>(take);
        }
        const int rc = inflate(&z_, Z_NO_FLUSH);
        if (rc == Z_STREAM_END && z_.avail_out > 0) src_.fail("has a truncated " + e_.name);
        if (rc != Z_OK && rc != Z_STREAM_END) src_.fail("has a corrupt compressed " + e_.name);
      }
    }
    crc_ = crc32_z(crc_, reinterpret_cast<const Bytef*>(out), n);
    produced_ += n;
    if (produced_ == e_.size && crc_ != e_.crc) src_.fail("has a CRC32 mismatch in " + e_.name + " (corrupt file)");
  }

 private:
  const Source& src_;
  Entry e_;
  std::ifstream in_;
  z_stream z_{};
  bool inflating_ = false;
  std::vector<char> packed_ = std::vector<char>(kChunkBytes);
  std::uint64_t consumed_ = 0, produced_ = 0;
  uLong crc_ = 0;
};

// A 1-D .npy entry of one of the numeric dtypes scipy writes, read as a stream of values of T.
class NpyEntry {
 public:
  NpyEntry(const Source& src, const Entry& e) : src_(src), name_(e.name), s_(src, e) {
    char magic[8];
    s_.read(magic, 8);
    if (std::memcmp(magic, "\x93NUMPY", 6) != 0) src.fail("has an entry " + name_ + " that is not .npy");
    const int version = static_cast<unsigned char>(magic[6]);
    if (version < 1 || version > 3) src.fail("has " + name_ + " in unknown .npy version " + std::to_string(version));
    unsigned char len[4] = {0, 0, 0, 0};
    s_.read(reinterpret_cast<char*>(len), version == 1 ? 2 : 4);
    const std::uint64_t hlen = le(len, version == 1 ? 2 : 4);
    if (hlen > s_.remaining()) src.fail("has " + name_ + " with a header longer than the entry");
    dict_.resize(hlen);
    s_.read(dict_.data(), hlen);
    descr_ = value("descr");
    if (descr_.size() >= 2 && (descr_.front() == '\'' || descr_.front() == '"')) descr_ = descr_.substr(1, descr_.size() - 2);
    if (value("fortran_order") != "False" && shape().size() > 1) src.fail("has " + name_ + " in Fortran order");
    item_ = descr_ == "<i4" || descr_ == "<f4" || descr_ == "<u4" ? 4 : descr_ == "<i8" || descr_ == "<f8" || descr_ == "<u8" ? 8 : 0;
  }

  const std::string& descr() const { return descr_; }
  const std::string& name() const { return name_; }

  // The shape tuple: "(3, 4)" -> {3, 4}, "()" -> {}.
  std::vector<std::int64_t> shape() const {
    const std::string t = value("shape");
    std::vector<std::int64_t> out;
    std::size_t i = t.find('(');
    if (i == std::string::npos) src_.fail("has " + name_ + " with a bad shape");
    for (++i; i < t.size() && t[i] != ')';) {
      if (t[i] == ' ' || t[i] == ',') {
        ++i;
        continue;
      }
      std::size_t used = 0;
      try {
        out.push_back(std::stoll(t.substr(i), &used));
      } catch (const std::exception&) {
        src_.fail("has " + name_ + " with a bad shape " + t);
      }
      i += used;
    }
    return out;
  }

  // A 1-D array of `allowed` dtypes (numpy descrs): its length, checked against the entry's bytes.
  std::int64_t length(std::initializer_list<const char*> allowed) const {
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* d) { return descr_ == d; })) {
      std::string list;
      for (const char* d : allowed) list += std::string(list.empty() ? "" : ", ") + d;
      src_.fail("has " + name_ + " of dtype '" + descr_ + "' (expected one of " + list + ")");
    }
    const std::vector<std::int64_t> s = shape();
    if (s.size() != 1) src_.fail("has " + name_ + " that is not 1-D");
    if (s[0] < 0 || static_cast<std::uint64_t>(s[0]) * item_ != s_.remaining())
      src_.fail("has " + name_ + " whose length does not match its bytes (truncated?)");
    return s[0];
  }

  // The next `count` values converted to T.
  template <class T>
  void read(T* out, std::size_t count) {
    while (count > 0) {
      const std::size_t n = std::min(count, kChunkBytes / 8);
      buf_.resize(n * item_);
      s_.read(buf_.data(), buf_.size());
      const char* b = buf_.data();
      if (descr_ == "<i4") convert<std::int32_t>(b, out, n);
      else if (descr_ == "<i8") convert<std::int64_t>(b, out, n);
      else if (descr_ == "<f4") convert<float>(b, out, n);
      else if (descr_ == "<f8") convert<double>(b, out, n);
      else src_.fail("has " + name_ + " of dtype '" + descr_ + "'");
      out += n;
      count -= n;
    }
  }

  // The remaining raw bytes (small entries: format.npy).
  std::string rest() {
    std::string r(static_cast<std::size_t>(s_.remaining()), '\0');
    s_.read(r.data(), r.size());
    return r;
  }

 private:
  template <class From, class T>
  static void convert(const char* b, T* out, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      From v;
      std::memcpy(&v, b + k * sizeof(From), sizeof(From));
      out[k] = static_cast<T>(v);
    }
  }
  // The text after 'key': up to the next top-level comma (tuples kept whole).
  std::string value(const std::string& key) const {
    const std::size_t k = dict_.find("'" + key + "'");
    if (k == std::string::npos) src_.fail("has " + name_ + " without '" + key + "' in its .npy header");
    std::size_t i = dict_.find(':', k) + 1;
    while (i < dict_.size() && dict_[i] == ' ') ++i;
    std::size_t j = i;
    int depth = 0;
    for (; j < dict_.size(); ++j) {
      if (dict_[j] == '(') ++depth;
      if (dict_[j] == ')') --depth;
      if ((dict_[j] == ',' && depth == 0) || dict_[j] == '}') break;
    }
    std::string v = dict_.substr(i, j - i);
    while (!v.empty() && v.back() == ' ') v.pop_back();
    return v;
  }

  const Source& src_;
  std::string name_;
  EntryStream s_;
  std::string dict_, descr_;
  std::size_t item_ = 0;
  std::vector<char> buf_;
};

// Values of an index or pointer entry, one at a time through a buffer.
class Values {
 public:
  Values(const Source& src, const Entry& e) : npy_(src, e) {}
  NpyEntry& npy() { return npy_; }
  template <class T>
  T next() {
    if (at_ == buf_.size()) {
      buf_.resize(static_cast<std::size_t>(std::min<std::int64_t>(left_, 1 << 16)));
      npy_.read(buf_.data(), buf_.size());
      left_ -= static_cast<std::int64_t>(buf_.size());
      at_ = 0;
    }
    return static_cast<T>(buf_[at_++]);
  }
  void start(std::int64_t count) { left_ = count; }

 private:
  NpyEntry npy_;
  std::vector<double> buf_;  // exact for indices below 2^53 and for float32/float64 data
  std::size_t at_ = 0;
  std::int64_t left_ = 0;
};

const Entry& find(const std::vector<Entry>& entries, const std::string& name, const Source& src) {
  for (const Entry& e : entries)
    if (e.name == name) return e;
  src.fail("is not a scipy.sparse .npz: it has no " + name +
           (name == "format.npy" ? " (a numpy.savez archive of plain arrays?)" : ""));
}

void set_index(CsrMatrix& A, std::int64_t q, std::int64_t v) {
  if (A.wide_indices())
    A.indices64[static_cast<std::size_t>(q)] = v;
  else
    A.indices32[static_cast<std::size_t>(q)] = static_cast<std::int32_t>(v);
}

void check_pointer(const Source& src, const char* axis, std::int64_t at, std::int64_t prev, std::int64_t v,
                   std::int64_t nnz) {
  if (at == 0 && v != 0) src.fail("has indptr[0] = " + std::to_string(v) + ", expected 0");
  if (v < prev || v > nnz)
    src.fail("has indptr decreasing or past nnz at " + std::string(axis) + " " + std::to_string(at) + " (" +
             std::to_string(v) + ")");
}

[[noreturn]] void bad_index(const Source& src, const char* axis, std::int64_t v, std::int64_t bound) {
  src.fail("has a " + std::string(axis) + " index " + std::to_string(v) + " out of range [0, " + std::to_string(bound) +
           ")");
}

void check_value(const Source& src, double v, std::int64_t record, std::int64_t target) {
  if (!std::isfinite(v))
    src.fail("has a non-finite value (" + std::string(std::isnan(v) ? "NaN" : "inf") + ") at record " +
                 std::to_string(record) + ", target " + std::to_string(target),
             "Replace NaN/inf entries (e.g. matrix.data[~numpy.isfinite(matrix.data)] = 0) before save_npz");
}

// CSC of M (n x k): A's arrays as they are. Rows of A (M's columns) whose record indices are not
// ascending are sorted, duplicates summed, and the entries compacted.
void read_csc(const Source& src, const std::vector<Entry>& entries, CsrMatrix& A, std::int64_t n, std::int64_t k) {
  NpyEntry ptr(src, find(entries, "indptr.npy", src)), idx(src, find(entries, "indices.npy", src)),
      dat(src, find(entries, "data.npy", src));
  if (ptr.length({"<i4", "<i8"}) != k + 1)
    src.fail("has indptr of length " + std::to_string(ptr.length({"<i4", "<i8"})) + " for a CSC matrix of " +
             std::to_string(k) + " columns (targets)");
  const std::int64_t nnz = idx.length({"<i4", "<i8"});
  if (dat.length({"<f4", "<f8"}) != nnz) src.fail("has data and indices of different lengths");
  A.indptr.resize(static_cast<std::size_t>(k + 1));
  ptr.read(A.indptr.data(), A.indptr.size());
  for (std::int64_t j = 0; j <= k; ++j) check_pointer(src, "target", j, j ? A.indptr[j - 1] : 0, A.indptr[j], nnz);
  if (A.indptr[k] != nnz) src.fail("has indptr ending at " + std::to_string(A.indptr[k]) + ", not nnz " + std::to_string(nnz));
  if (A.wide_indices()) {
    A.indices64.resize(static_cast<std::size_t>(nnz));
    idx.read(A.indices64.data(), A.indices64.size());
  } else {
    A.indices32.resize(static_cast<std::size_t>(nnz));
    idx.read(A.indices32.data(), A.indices32.size());  // int64 files narrowed: checked below against n < 2^31
  }
  A.values.resize(static_cast<std::size_t>(nnz));
  dat.read(A.values.data(), A.values.size());
  if (!A.wide_indices() && idx.descr() == "<i8") {  // narrowing could wrap an out-of-range index: re-read it wide
    NpyEntry again(src, find(entries, "indices.npy", src));
    again.length({"<i8"});
    std::vector<std::int64_t> chunk;
    for (std::int64_t p = 0; p < nnz;) {
      chunk.resize(static_cast<std::size_t>(std::min<std::int64_t>(nnz - p, 1 << 16)));
      again.read(chunk.data(), chunk.size());
      for (std::int64_t v : chunk)
        if (v < 0 || v >= n) bad_index(src, "record (row)", v, n);
      p += static_cast<std::int64_t>(chunk.size());
    }
  }
  std::int64_t write = 0;
  std::vector<std::int64_t> order;
  std::vector<std::pair<std::int64_t, double>> row;
  for (std::int64_t j = 0; j < k; ++j) {
    const std::int64_t b = A.indptr[j], e = A.indptr[j + 1];
    bool ascending = true;
    for (std::int64_t p = b; p < e; ++p) {
      const std::int64_t i = A.index(p);
      if (i < 0 || i >= n) bad_index(src, "record (row)", i, n);
      check_value(src, A.values[static_cast<std::size_t>(p)], i, j);
      if (p > b && i <= A.index(p - 1)) ascending = false;
    }
    A.indptr[j] = write;
    if (ascending) {
      for (std::int64_t p = b; p < e; ++p, ++write) {
        set_index(A, write, A.index(p));
        A.values[static_cast<std::size_t>(write)] = A.values[static_cast<std::size_t>(p)];
      }
      continue;
    }
    row.clear();
    for (std::int64_t p = b; p < e; ++p) row.emplace_back(A.index(p), A.values[static_cast<std::size_t>(p)]);
    std::stable_sort(row.begin(), row.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (std::size_t q = 0; q < row.size(); ++q) {
      if (q > 0 && row[q].first == row[q - 1].first) {  // a duplicate: summed into the entry before
        A.values[static_cast<std::size_t>(write - 1)] += row[q].second;
        check_value(src, A.values[static_cast<std::size_t>(write - 1)], row[q].first, j);
        continue;
      }
      set_index(A, write, row[q].first);
      A.values[static_cast<std::size_t>(write++)] = row[q].second;
    }
  }
  A.indptr[k] = write;
  if (write < nnz) {
    A.indices32.resize(A.wide_indices() ? 0 : static_cast<std::size_t>(write));
    A.indices64.resize(A.wide_indices() ? static_cast<std::size_t>(write) : 0);
    A.values.resize(static_cast<std::size_t>(write));
    A.indices32.shrink_to_fit();
    A.indices64.shrink_to_fit();
    A.values.shrink_to_fit();
  }
}

// CSR of M (n x k): the counting-sort transpose, streamed twice. Pass 1 counts each target's
// distinct records (validating pointers and indices); pass 2 places every entry, summing a
// duplicate into the slot its record already took in that target's row.
void read_csr(const Source& src, const std::vector<Entry>& entries, CsrMatrix& A, std::int64_t n, std::int64_t k) {
  const Entry &e_ptr = find(entries, "indptr.npy", src), &e_idx = find(entries, "indices.npy", src),
              &e_dat = find(entries, "data.npy", src);
  std::int64_t nnz = 0;
  std::vector<std::int64_t> count(static_cast<std::size_t>(k) + 1, 0), last(static_cast<std::size_t>(k), -1);
  {
    Values ptr(src, e_ptr), idx(src, e_idx);
    if (ptr.npy().length({"<i4", "<i8"}) != n + 1)
      src.fail("has indptr of length " + std::to_string(ptr.npy().length({"<i4", "<i8"})) + " for a CSR matrix of " +
               std::to_string(n) + " rows (records)");
    nnz = idx.npy().length({"<i4", "<i8"});
    NpyEntry dat(src, e_dat);
    if (dat.length({"<f4", "<f8"}) != nnz) src.fail("has data and indices of different lengths");
    ptr.start(n + 1);
    idx.start(nnz);
    std::int64_t prev = ptr.next<std::int64_t>();
    check_pointer(src, "record", 0, 0, prev, nnz);
    for (std::int64_t r = 0; r < n; ++r) {
      const std::int64_t end = ptr.next<std::int64_t>();
      check_pointer(src, "record", r + 1, prev, end, nnz);
      for (std::int64_t p = prev; p < end; ++p) {
        const double t = idx.next<double>();
        if (!(t >= 0 && t < static_cast<double>(k))) bad_index(src, "target (column)", static_cast<std::int64_t>(t), k);
        const auto j = static_cast<std::size_t>(t);
        if (last[j] != r) ++count[j + 1];
        last[j] = r;
      }
      prev = end;
    }
    if (prev != nnz) src.fail("has indptr ending at " + std::to_string(prev) + ", not nnz " + std::to_string(nnz));
  }
  A.indptr.assign(count.begin(), count.end());
  std::partial_sum(A.indptr.begin(), A.indptr.end(), A.indptr.begin());
  const std::int64_t distinct = A.indptr[static_cast<std::size_t>(k)];
  if (A.wide_indices())
    A.indices64.resize(static_cast<std::size_t>(distinct));
  else
    A.indices32.resize(static_cast<std::size_t>(distinct));
  A.values.resize(static_cast<std::size_t>(distinct));
  std::vector<std::int64_t> cursor(A.indptr.begin(), A.indptr.end() - 1);
  std::fill(last.begin(), last.end(), -1);
  Values ptr(src, e_ptr), idx(src, e_idx), dat(src, e_dat);
  ptr.npy().length({"<i4", "<i8"});
  idx.npy().length({"<i4", "<i8"});
  dat.npy().length({"<f4", "<f8"});
  ptr.start(n + 1);
  idx.start(nnz);
  dat.start(nnz);
  std::int64_t prev = ptr.next<std::int64_t>();
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t end = ptr.next<std::int64_t>();
    for (std::int64_t p = prev; p < end; ++p) {
      const auto j = static_cast<std::size_t>(idx.next<double>());
      const double v = dat.next<double>();
      check_value(src, v, r, static_cast<std::int64_t>(j));
      if (last[j] == r) {  // a duplicate (record r, target j): summed
        double& s = A.values[static_cast<std::size_t>(cursor[j] - 1)];
        s += v;
        check_value(src, s, r, static_cast<std::int64_t>(j));
        continue;
      }
      last[j] = r;
      set_index(A, cursor[j], r);
      A.values[static_cast<std::size_t>(cursor[j]++)] = v;
    }
    prev = end;
  }
}

}  // namespace

CsrMatrix read_estimate_matrix_npz(const std::string& path, const std::string& what) {
  const Source src{path, what};
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(what + " '" + path + "': cannot open it: " + std::strerror(errno));
  const std::vector<Entry> entries = read_directory(in, src);
  std::string format;
  {
    NpyEntry f(src, find(entries, "format.npy", src));
    const std::string raw = f.rest();  // '<U3': UTF-32LE; 'S3'/'|S3': bytes (old scipy)
    for (std::size_t i = 0; i < raw.size(); i += f.descr().rfind("<U", 0) == 0 ? 4 : 1)
      if (raw[i] != '\0') format.push_back(raw[i]);
  }
  if (format != "csr" && format != "csc")
    src.fail("holds a sparse matrix in format '" + format + "'; only csr and csc are read",
             "Convert it first: scipy.sparse.save_npz(path, matrix.tocsr())");
  std::int64_t shape[2];
  {
    NpyEntry s(src, find(entries, "shape.npy", src));
    if (s.length({"<i4", "<i8"}) != 2) src.fail("has a shape.npy that is not two numbers");
    s.read(shape, 2);
  }
  const std::int64_t n = shape[0], k = shape[1];
  if (n < 1 || k < 1)
    src.fail("has shape (" + std::to_string(n) + ", " + std::to_string(k) + "): it needs at least one record (row) and one target (column)");
  CsrMatrix A;
  A.rows = k;
  A.cols = n;
  A.dtype = DType::float64;
  if (format == "csc")
    read_csc(src, entries, A, n, k);
  else
    read_csr(src, entries, A, n, k);
  return A;
}

}  // namespace otcal::io
