#pragma once
// NumPy .npy files: the tool's array format (DESIGN.md "Command-line tool and files").
// Reading accepts what numpy.save writes for float arrays: little-endian float32/float64, C order,
// header versions 1.0, 2.0 and 3.0. Everything else is refused with an otcal::InvalidArgument
// that names the input (e.g. "--x"), the path and what to do.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/types.hpp"

namespace otcal::io {

// An array read from an .npy file, in the file's own dtype (float32 stays float32: no widened
// copy). The payload is viewed in place in a read-only mapping of the file when the input is a
// regular file, or held in an owned buffer when it came through a pipe (or was misaligned).
// Copies share the payload.
struct NpyArray {
  DType dtype = DType::float64;       // the file's dtype
  std::vector<index_t> shape;         // empty for a 0-d array

  index_t size() const;               // product of shape (1 for 0-d)
  index_t dim(std::size_t k) const { return shape.at(k); }
  // The payload, C order, size() elements of `dtype`.
  const void* bytes() const { return payload_; }
  // Typed pointer; InvalidArgument unless T matches dtype.
  template <class T>
  const T* data() const;
  // Element k widened to double.
  double at(std::size_t k) const {
    return dtype == DType::float32 ? static_cast<const float*>(payload_)[k] : static_cast<const double*>(payload_)[k];
  }
  // All elements widened to double: for the small inputs that need doubles (potentials, coefficients).
  std::vector<double> values() const;
  // Views in the file's dtype: [dim(0), dim(1)] and [dim(0)].
  ConstMatrix matrix() const;
  ConstVector vector() const;
  // True when the payload is viewed in a mapping of the file (nothing was copied).
  bool mapped() const { return mapped_; }

  // Set by the reader: the storage that keeps `payload` alive (a mapping or a buffer).
  void adopt(std::shared_ptr<const void> storage, const void* payload, bool mapped) {
    storage_ = std::move(storage);
    payload_ = payload;
    mapped_ = mapped;
  }

 private:
  std::shared_ptr<const void> storage_;
  const void* payload_ = nullptr;
  bool mapped_ = false;
};

// An .npy input whose header has been read and validated, its payload not yet: callers check the
// size the header announces (against the budget, the host memory) before anything large is read.
// Regular files are mapped; pipes and other streams are read sequentially, once.
class NpyInput {
 public:
  // Opens `path` and validates the header; `what` names the input in messages, e.g. "--x".
  NpyInput(const std::string& path, const std::string& what);
  ~NpyInput();
  NpyInput(NpyInput&& other) noexcept;
  NpyInput& operator=(NpyInput&& other) noexcept;
  NpyInput(const NpyInput&) = delete;
  NpyInput& operator=(const NpyInput&) = delete;

  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }
  DType dtype() const { return dtype_; }
  const std::vector<index_t>& shape() const { return shape_; }
  std::uint64_t payload_bytes() const { return payload_bytes_; }
  // Whether read() will copy the payload into host memory (a pipe or stream) instead of mapping it.
  bool copies() const { return !regular_; }
  // Maps or reads the payload (once). A copy is first checked against the host's available
  // memory; a stream that ends early is refused as truncated.
  NpyArray read();

 private:
  void open_and_read_header();  // the constructor's work; it closes fd_ itself if this throws

  std::string path_, what_;
  int fd_ = -1;
  bool regular_ = false;
  std::uint64_t file_size_ = 0, payload_offset_ = 0, payload_bytes_ = 0;
  DType dtype_ = DType::float64;
  std::vector<index_t> shape_;
};

// NpyInput(path, what).read(): `what` names the input in messages, e.g. "--x".
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
