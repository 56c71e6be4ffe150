#pragma once
// A stored (uncompressed) zip archive written front to back, with Zip64 records (PKWARE APPNOTE
// 4.5.3) when a size or offset does not fit in 32 bits. Each entry's CRC32 and size are given
// before its bytes, so an entry can be streamed from anywhere (local arrays, other ranks, other
// files) without being held. Shared by the .npz writers (npz.cpp, npz_pieces.cpp).
#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "otcal/errors.hpp"

namespace otcal::io::detail {

constexpr std::uint64_t k32 = 0xFFFFFFFFu;
constexpr std::uint16_t kDosDate1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: reproducible archives

struct Bytes {
  std::string s;
  void u16(std::uint16_t v) { for (int k = 0; k < 2; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
  void u32(std::uint32_t v) { for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
  void u64(std::uint64_t v) { for (int k = 0; k < 8; ++k) s.push_back(static_cast<char>((v >> (8 * k)) & 0xff)); }
};

using ByteSink = std::function<void(const char*, std::size_t)>;
// Calls the sink with an entry's bytes, in order, in chunks of any size.
using ByteEmitter = std::function<void(const ByteSink&)>;

struct ZipEntry {
  std::string name;
  std::uint32_t crc = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
};

// CRC32 (zlib) of everything an emitter produces.
inline std::uint32_t crc32_of(const ByteEmitter& emit) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  emit([&](const char* p, std::size_t n) { crc = crc32_z(crc, reinterpret_cast<const Bytef*>(p), n); });
  return static_cast<std::uint32_t>(crc);
}

class ZipWriter {
 public:
  ZipWriter(const std::string& path, bool force_zip64) : path_(path), force_zip64_(force_zip64), out_(path, std::ios::binary | std::ios::trunc) {
    if (!out_)
      throw InvalidArgument("cannot create '" + path + "': " + std::strerror(errno) +
                            ". Check that the folder exists and is writable");
  }

  // A stored entry whose CRC32 and size are known before its bytes: `emit` must produce exactly
  // `size` bytes (the caller computed both, in one pass of its own or from pieces).
  void add(const std::string& name, std::uint32_t crc, std::uint64_t size, const ByteEmitter& emit) {
    ZipEntry m{name, crc, size, position_};
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
    const std::uint64_t begin = position_;
    emit([&](const char* p, std::size_t n) { write(p, n); });
    if (position_ - begin != size)
      throw InvalidArgument("writing '" + path_ + "': entry " + name + " has " + std::to_string(position_ - begin) +
                            " bytes, expected " + std::to_string(size));
    members_.push_back(m);
  }

  void finish() {
    const std::uint64_t cd_offset = position_;
    for (const ZipEntry* m = members_.data(); m != members_.data() + members_.size(); ++m) {
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
  std::vector<ZipEntry> members_;
};

}  // namespace otcal::io::detail
