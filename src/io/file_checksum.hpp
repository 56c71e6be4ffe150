#pragma once
// zlib crc32 of a whole file, read in chunks: ties an output (sinkhorn potentials) to the exact
// files it was computed from and wrote (result.json "provenance", docs/sinkhorn.md).
#include <cstdint>
#include <string>

namespace otcal::io {

// crc32 of every byte of `path`; InvalidArgument naming `what` (e.g. "--x") when it cannot be read.
std::uint32_t file_crc32(const std::string& path, const std::string& what);

// crc32 of a byte string (the provenance seal over its fields).
std::uint32_t text_crc32(const std::string& text);

// "crc32:1a2b3c4d": the form result.json records (8 lowercase hex digits).
std::string crc32_text(std::uint32_t crc);

}  // namespace otcal::io
