// SciPy sparse .npz writer: a stored (uncompressed) zip of .npy members, with Zip64 records
// (PKWARE APPNOTE 4.5.3) when a size or offset does not fit in 32 bits.
#include "io/npz.hpp"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "io/npy.hpp"
#include "otcal/errors.hpp"

namespace otcal::io {
namespace {

constexpr std::uint64_t k32 = 0xFFFFFFFFu;
constexpr std::uint16_t kDosDate1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: reproducible archives

struct Bytes {
  std::string s;
  void u16(std::uint16_t v) { for (int k = 0; k < 2; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
  void u32(std::uint32_t v) { for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
  void u64(std::uint64_t v) { for (int k = 0; k < 8; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
};

struct Member {
  std::string name;
  detail::NpyStream stream;
  std::uint32_t crc = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
};

class ZipWriter {
 public:
  ZipWriter(const std::string& path, bool force_zip64) : path_(path), force_zip64_(force_zip64), out_(path, std::ios::binary | std::ios::trunc) {
    if (!out_)
      throw InvalidArgument("cannot create '" + path + "': " + std::strerror(errno) +
                            ". Check that the folder exists and is writable");
  }

  void add(Member& m) {
    // Pass 1: CRC32 and size, without holding the bytes.
    uLong crc = crc32_z(0L, Z_NULL, 0);
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(m.stream.header.data()), m.stream.header.size());
    m.stream.emit([&](const char* p, std::size_t n) { crc = crc32_z(crc, reinterpret_cast<const Bytef*>(p), n); });
    m.crc = static_cast<std::uint32_t>(crc);
    m.size = m.stream.total_bytes();
    m.offset = position_;
    const bool zip64 = force_zip64_ || m.size >= k32;
    Bytes h;
    h.u32(0x04034b50);
    h.u16(zip64 ? 45 : 20);
    h.u16(0);  // flags
    h.u16(0);  // stored
    h.u16(0);
    h.u16(kDosDate1980);
    h.u32(m.crc);
    h.u32(zip64 ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(m.size));
    h.u32(zip64 ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(m.size));
    h.u16(static_cast<std::uint16_t>(m.name.size()));
    h.u16(zip64 ? 20 : 0);
    h.s += m.name;
    if (zip64) {
      h.u16(0x0001);
      h.u16(16);
      h.u64(m.size);
      h.u64(m.size);
    }
    write(h.s.data(), h.s.size());
    // Pass 2: the bytes.
    write(m.stream.header.data(), m.stream.header.size());
    m.stream.emit([&](const char* p, std::size_t n) { write(p, n); });
    members_.push_back(&m);
  }

  void finish() {
    const std::uint64_t cd_offset = position_;
    for (const Member* m : members_) {
      const bool big_size = force_zip64_ || m->size >= k32;
      const bool big_offset = force_zip64_ || m->offset >= k32;
      Bytes extra;
      if (big_size || big_offset) {
        Bytes fields;
        if (big_size) {
          fields.u64(m->size);
          fields.u64(m->size);
        }
        if (big_offset) fields.u64(m->offset);
        extra.u16(0x0001);
        extra.u16(static_cast<std::uint16_t>(fields.s.size()));
        extra.s += fields.s;
      }
      const bool zip64 = !extra.s.empty();
      Bytes c;
      c.u32(0x02014b50);
      c.u16(zip64 ? 45 : 20);  // made by: MS-DOS attributes, spec version
      c.u16(zip64 ? 45 : 20);
      c.u16(0);
      c.u16(0);
      c.u16(0);
      c.u16(kDosDate1980);
      c.u32(m->crc);
      c.u32(big_size ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(m->size));
      c.u32(big_size ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(m->size));
      c.u16(static_cast<std::uint16_t>(m->name.size()));
      c.u16(static_cast<std::uint16_t>(extra.s.size()));
      c.u16(0);  // comment
      c.u16(0);  // disk
      c.u16(0);  // internal attributes
      c.u32(0);  // external attributes
      c.u32(big_offset ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(m->offset));
      c.s += m->name;
      c.s += extra.s;
      write(c.s.data(), c.s.size());
    }
    const std::uint64_t cd_size = position_ - cd_offset;
    const std::uint64_t count = members_.size();
    const bool zip64_end = force_zip64_ || cd_offset >= k32 || cd_size >= k32 || count >= 0xFFFF;
    Bytes e;
    if (zip64_end) {
      const std::uint64_t eocd64_offset = position_;
      e.u32(0x06064b50);
      e.u64(44);
      e.u16(45);
      e.u16(45);
      e.u32(0);
      e.u32(0);
      e.u64(count);
      e.u64(count);
      e.u64(cd_size);
      e.u64(cd_offset);
      e.u32(0x07064b50);  // locator
      e.u32(0);
      e.u64(eocd64_offset);
      e.u32(1);
    }
    e.u32(0x06054b50);
    e.u16(0);
    e.u16(0);
    e.u16(zip64_end ? 0xFFFF : static_cast<std::uint16_t>(count));
    e.u16(zip64_end ? 0xFFFF : static_cast<std::uint16_t>(count));
    e.u32(zip64_end ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(cd_size));
    e.u32(zip64_end ? static_cast<std::uint32_t>(k32) : static_cast<std::uint32_t>(cd_offset));
    e.u16(0);
    write(e.s.data(), e.s.size());
    out_.flush();
    if (!out_) throw InvalidArgument("writing '" + path_ + "' failed (disk full?)");
  }

 private:
  void write(const char* p, std::size_t n) {
    out_.write(p, static_cast<std::streamsize>(n));
    position_ += n;
  }
  std::string path_;
  bool force_zip64_;
  std::ofstream out_;
  std::uint64_t position_ = 0;
  std::vector<const Member*> members_;
};

void check_csr(const CsrMatrix& m) {
  const std::string where = "CSR matrix (" + std::to_string(m.rows) + " x " + std::to_string(m.cols) + ")";
  if (m.rows < 0 || m.cols < 0) throw InvalidArgument(where + ": negative shape");
  if (static_cast<index_t>(m.indptr.size()) != m.rows + 1)
    throw InvalidArgument(where + ": indptr has " + std::to_string(m.indptr.size()) + " entries, expected rows + 1");
  if (m.indptr.front() != 0) throw InvalidArgument(where + ": indptr[0] must be 0");
  for (index_t r = 0; r < m.rows; ++r)
    if (m.indptr[r + 1] < m.indptr[r]) throw InvalidArgument(where + ": indptr decreases at row " + std::to_string(r));
  const auto nnz = static_cast<std::size_t>(m.nnz());
  const std::size_t n_indices = m.wide_indices() ? m.indices64.size() : m.indices32.size();
  if (m.values.size() != nnz || n_indices != nnz)
    throw InvalidArgument(where + ": nnz " + std::to_string(nnz) + " but " + std::to_string(m.values.size()) +
                          " values and " + std::to_string(n_indices) + " indices (" +
                          (m.wide_indices() ? "int64" : "int32") + ")");
  for (std::size_t k = 0; k < nnz; ++k) {
    const std::int64_t c = m.index(static_cast<std::int64_t>(k));
    if (c < 0 || c >= m.cols) throw InvalidArgument(where + ": column index " + std::to_string(c) + " out of range");
  }
}

}  // namespace

void write_npz_csr(const std::string& path, const CsrMatrix& m, const NpzWriteOptions& options) {
  check_csr(m);
  const index_t nnz = m.nnz();
  const std::vector<std::int64_t> shape = {m.rows, m.cols};
  // scipy.sparse.save_npz member order.
  Member members[5];
  members[0].name = "indices.npy";
  members[0].stream = m.wide_indices() ? detail::npy_stream(m.indices64.data(), {nnz})
                                       : detail::npy_stream(m.indices32.data(), {nnz});
  members[1].name = "indptr.npy";
  members[1].stream = detail::npy_stream(m.indptr.data(), {m.rows + 1});
  members[2].name = "format.npy";
  members[2].stream = detail::npy_stream_unicode_scalar("csr");
  members[3].name = "shape.npy";
  members[3].stream = detail::npy_stream(shape.data(), {2});
  members[4].name = "data.npy";
  members[4].stream = detail::npy_stream(m.values.data(), {nnz}, m.dtype);
  ZipWriter zip(path, options.force_zip64);
  for (Member& member : members) zip.add(member);
  zip.finish();
}

}  // namespace otcal::io
