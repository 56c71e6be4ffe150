#pragma once
// NumPy .npy files: the tool's array format (DESIGN.md "Command-line tool and files").
// Reading accepts what numpy.save writes for float arrays: little-endian float32/float64, C order,
// header versions 1.0, 2.0 and 3.0. Everything else is refused with an otcal::InvalidArgument
// that names the input (e.g. "--x"), the path and what to do.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "otcal/types.hpp"

namespace otcal::io {

struct NpyArray {
  DType dtype = DType::float64;       // the file's dtype; values below are widened to double
  std::vector<index_t> shape;         // empty for a 0-d array
  std::vector<double> data;           // C order, product(shape) values

  index_t size() const;               // product of shape (1 for 0-d)
  index_t dim(std::size_t k) const { return shape.at(k); }
};

// `what` names the input in messages, e.g. "--x".
NpyArray read_npy(const std::string& path, const std::string& what);

// float32 or float64 (values narrowed to float32 when dtype says so).
void write_npy(const std::string& path, const double* data, const std::vector<index_t>& shape, DType dtype);
// Integer arrays (CSR indices and indptr).
void write_npy(const std::string& path, const std::int32_t* data, const std::vector<index_t>& shape);
void write_npy(const std::string& path, const std::int64_t* data, const std::vector<index_t>& shape);

namespace detail {
// The complete .npy header (magic, version, length, dict, padding to 64 bytes) for a numpy
// descr such as "<f8", "<i4" or "<U3". Version 1.0 while the dict fits in 65535 bytes.
std::string npy_header(const std::string& descr, const std::vector<index_t>& shape);

// An .npy payload streamed in chunks: the header and then the element bytes. Used by the .npz
// writer, which passes over each entry twice (CRC32 and size, then the bytes) instead of
// building a copy in memory.
struct NpyStream {
  std::string header;
  std::uint64_t data_bytes = 0;
  // Calls sink(bytes, count) for consecutive chunks of the element bytes.
  std::function<void(const std::function<void(const char*, std::size_t)>& sink)> emit;
  std::uint64_t total_bytes() const { return header.size() + data_bytes; }
};
NpyStream npy_stream(const double* data, const std::vector<index_t>& shape, DType dtype);
NpyStream npy_stream(const std::int32_t* data, const std::vector<index_t>& shape);
NpyStream npy_stream(const std::int64_t* data, const std::vector<index_t>& shape);
// A 0-d numpy unicode string (descr "<U{len}", UTF-32LE); ASCII text only.
NpyStream npy_stream_unicode_scalar(const std::string& ascii);
}  // namespace detail

}  // namespace otcal::io
