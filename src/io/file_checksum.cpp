#include "io/file_checksum.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <vector>

#include "otcal/errors.hpp"

namespace otcal::io {

std::uint32_t file_crc32(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(what + " '" + path + "' cannot be opened to compute its checksum");
  std::vector<char> buf(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) crc = crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(got));
  }
  if (in.bad()) throw InvalidArgument(what + " '" + path + "' could not be read to the end to compute its checksum");
  return static_cast<std::uint32_t>(crc);
}

std::uint32_t text_crc32(const std::string& text) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed long strings in pieces.
  std::size_t done = 0;
  while (done < text.size()) {
    const std::size_t piece = std::min<std::size_t>(text.size() - done, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(text.data() + done), static_cast<uInt>(piece));
    done += piece;
  }
  return static_cast<std::uint32_t>(crc);
}

std::string crc32_text(std::uint32_t crc) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "crc32:%08x", static_cast<unsigned>(crc));
  return buf;
}

}  // namespace otcal::io
