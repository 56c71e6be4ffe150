// .npy reading and writing (format spec: numpy/lib/format.py, versions 1.0-3.0).
#include "io/npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <utility>

#include "io/host_memory.hpp"
#include "otcal/errors.hpp"

namespace otcal::io {

static_assert(std::endian::native == std::endian::little, "otcal's .npy IO assumes a little-endian host");

index_t NpyArray::size() const {
  index_t n = 1;
  for (index_t s : shape) n *= s;
  return n;
}

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kChunkElements = std::size_t{1} << 16;

[[noreturn]] void fail(const std::string& what, const std::string& path, const std::string& problem,
                       const std::string& advice) {
  throw InvalidArgument(what + " '" + path + "' " + problem + ". " + advice);
}

const char* kSaveAdvice = "Save it with numpy.save(path, numpy.ascontiguousarray(arr, dtype=numpy.float64)) "
                          "(or float32)";

// Minimal parser for the header dict numpy writes: {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
struct HeaderDict {
  std::string descr;
  bool fortran_order = false;
  std::vector<index_t> shape;
};

std::size_t skip_space(const std::string& s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

bool parse_header_dict(const std::string& text, HeaderDict& out, std::string& problem) {
  bool have_descr = false, have_order = false, have_shape = false;
  std::size_t i = skip_space(text, 0);
  if (i >= text.size() || text[i] != '{') {
    problem = "the header is not a Python dict";
    return false;
  }
  ++i;
  while (true) {
    i = skip_space(text, i);
    if (i < text.size() && text[i] == '}') break;
    if (i >= text.size() || (text[i] != '\'' && text[i] != '"')) {
      problem = "the header dict is malformed";
      return false;
    }
    const char q = text[i];
    const std::size_t key_end = text.find(q, i + 1);
    if (key_end == std::string::npos) {
      problem = "the header dict is malformed";
      return false;
    }
    const std::string key = text.substr(i + 1, key_end - i - 1);
    i = skip_space(text, key_end + 1);
    if (i >= text.size() || text[i] != ':') {
      problem = "the header dict is malformed";
      return false;
    }
    i = skip_space(text, i + 1);
    if (key == "descr") {
      if (i >= text.size() || (text[i] != '\'' && text[i] != '"')) {
        problem = "the dtype is not a simple type (structured arrays are not supported)";
        return false;
      }
      const char dq = text[i];
      const std::size_t end = text.find(dq, i + 1);
      if (end == std::string::npos) {
        problem = "the header dict is malformed";
        return false;
      }
      out.descr = text.substr(i + 1, end - i - 1);
      i = end + 1;
      have_descr = true;
    } else if (key == "fortran_order") {
      if (text.compare(i, 4, "True") == 0) {
        out.fortran_order = true;
        i += 4;
      } else if (text.compare(i, 5, "False") == 0) {
        out.fortran_order = false;
        i += 5;
      } else {
        problem = "fortran_order is neither True nor False";
        return false;
      }
      have_order = true;
    } else if (key == "shape") {
      if (i >= text.size() || text[i] != '(') {
        problem = "the shape is not a tuple";
        return false;
      }
      ++i;
      out.shape.clear();
      while (true) {
        i = skip_space(text, i);
        if (i < text.size() && text[i] == ')') {
          ++i;
          break;
        }
        std::size_t j = i;
        while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
        if (j == i || j - i > 18) {
          problem = "the shape is not a tuple of non-negative integers";
          return false;
        }
        out.shape.push_back(std::stoll(text.substr(i, j - i)));
        i = skip_space(text, j);
        if (i < text.size() && text[i] == ',') ++i;
        else if (i >= text.size() || text[i] != ')') {
          problem = "the shape is not a tuple of non-negative integers";
          return false;
        }
      }
      have_shape = true;
    } else {
      problem = "the header has an unknown key '" + key + "'";
      return false;
    }
    i = skip_space(text, i);
    if (i < text.size() && text[i] == ',') ++i;
  }
  if (!have_descr || !have_order || !have_shape) {
    problem = "the header lacks descr, fortran_order or shape";
    return false;
  }
  return true;
}

std::string shape_text(const std::vector<index_t>& shape) {
  std::string s = "(";
  for (std::size_t k = 0; k < shape.size(); ++k) s += std::to_string(shape[k]) + (shape.size() == 1 || k + 1 < shape.size() ? "," : "");
  return s + ")";
}

void write_all(const std::string& path, const detail::NpyStream& stream) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InvalidArgument("cannot create '" + path + "': " + std::strerror(errno) + ". Check that the folder exists and is writable");
  out.write(stream.header.data(), static_cast<std::streamsize>(stream.header.size()));
  stream.emit([&](const char* p, std::size_t n) { out.write(p, static_cast<std::streamsize>(n)); });
  out.flush();
  if (!out) throw InvalidArgument("writing '" + path + "' failed (disk full?)");
}

template <class T>
detail::NpyStream raw_stream(const T* data, const std::vector<index_t>& shape, const std::string& descr) {
  detail::NpyStream s;
  s.header = detail::npy_header(descr, shape);
  index_t count = 1;
  for (index_t e : shape) count *= e;
  s.data_bytes = static_cast<std::uint64_t>(count) * sizeof(T);
  s.emit = [data, count](const std::function<void(const char*, std::size_t)>& sink) {
    const std::size_t total = static_cast<std::size_t>(count) * sizeof(T);
    const char* bytes = reinterpret_cast<const char*>(data);
    for (std::size_t off = 0; off < total; off += kChunkElements * sizeof(T))
      sink(bytes + off, std::min(kChunkElements * sizeof(T), total - off));
  };
  return s;
}

}  // namespace

namespace detail {

std::string npy_header(const std::string& descr, const std::vector<index_t>& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // magic(6) + version(2) + length(2 or 4) + dict + padding + '\n', total a multiple of 64.
  std::size_t prefix = 10;
  int major = 1;
  auto padded = [&](std::size_t pre) { return (pre + dict.size() + 1 + 63) / 64 * 64; };
  if (padded(10) - 10 > 65535) {
    prefix = 12;
    major = 2;
  }
  const std::size_t total = padded(prefix);
  const std::size_t header_len = total - prefix;
  std::string h(kMagic, 6);
  h.push_back(static_cast<char>(major));
  h.push_back(0);
  if (major == 1) {
    h.push_back(static_cast<char>(header_len & 0xff));
    h.push_back(static_cast<char>((header_len >> 8) & 0xff));
  } else {
    for (int k = 0; k < 4; ++k) h.push_back(static_cast<char>((header_len >> (8 * k)) & 0xff));
  }
  h += dict;
  h.append(total - h.size() - 1, ' ');
  h.push_back('\n');
  return h;
}

NpyStream npy_stream(const double* data, const std::vector<index_t>& shape, DType dtype) {
  if (dtype == DType::float64) return raw_stream(data, shape, "<f8");
  NpyStream s;
  s.header = npy_header("<f4", shape);
  index_t count = 1;
  for (index_t e : shape) count *= e;
  s.data_bytes = static_cast<std::uint64_t>(count) * sizeof(float);
  s.emit = [data, count](const std::function<void(const char*, std::size_t)>& sink) {
    std::vector<float> chunk(kChunkElements);
    for (index_t off = 0; off < count; off += static_cast<index_t>(kChunkElements)) {
      const std::size_t n = static_cast<std::size_t>(std::min<index_t>(kChunkElements, count - off));
      for (std::size_t k = 0; k < n; ++k) chunk[k] = static_cast<float>(data[off + static_cast<index_t>(k)]);
      sink(reinterpret_cast<const char*>(chunk.data()), n * sizeof(float));
    }
  };
  return s;
}

NpyStream npy_stream(const std::int32_t* data, const std::vector<index_t>& shape) {
  return raw_stream(data, shape, "<i4");
}
NpyStream npy_stream(const std::int64_t* data, const std::vector<index_t>& shape) {
  return raw_stream(data, shape, "<i8");
}

NpyStream npy_stream_unicode_scalar(const std::string& ascii) {
  NpyStream s;
  s.header = npy_header("<U" + std::to_string(ascii.size()), {});
  auto bytes = std::make_shared<std::string>();
  for (char c : ascii) {
    bytes->push_back(c);
    bytes->append(3, '\0');
  }
  s.data_bytes = bytes->size();
  s.emit = [bytes](const std::function<void(const char*, std::size_t)>& sink) { sink(bytes->data(), bytes->size()); };
  return s;
}

}  // namespace detail

// ---- reading -----------------------------------------------------------------------------------

template <class T>
const T* NpyArray::data() const {
  if (dtype != dtype_of<T>())
    throw InvalidArgument(std::string("the array holds ") + dtype_name(dtype) + ", not " + dtype_name(dtype_of<T>()));
  return static_cast<const T*>(payload_);
}
template const float* NpyArray::data<float>() const;
template const double* NpyArray::data<double>() const;

std::vector<double> NpyArray::values() const {
  std::vector<double> v(static_cast<std::size_t>(size()));
  for (std::size_t k = 0; k < v.size(); ++k) v[k] = at(k);
  return v;
}

ConstMatrix NpyArray::matrix() const { return {payload_, dtype, shape.at(0), shape.at(1), Location::host}; }
ConstVector NpyArray::vector() const { return {payload_, dtype, shape.at(0), Location::host}; }

namespace {

// read() until `n` bytes arrived or the stream ended (EINTR retried); returns the count read.
std::uint64_t read_fully(int fd, char* out, std::uint64_t n) {
  std::uint64_t got = 0;
  while (got < n) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n - got, std::uint64_t{1} << 30));
    const ssize_t r = ::read(fd, out + got, want);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::uint64_t>(r);
  }
  return got;
}

}  // namespace

NpyInput::NpyInput(const std::string& path, const std::string& what) : path_(path), what_(what) {
  // A constructor that throws runs no destructor: without this, every refused file leaked its
  // descriptor (the fuzzer ran out of them after ~1000 refusals).
  try {
    open_and_read_header();
  } catch (...) {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    throw;
  }
}

void NpyInput::open_and_read_header() {
  const std::string& path = path_;
  const std::string& what = what_;
  errno = 0;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(what, path, "is a directory, not a .npy file", "Check the path");
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const std::string why = errno ? std::strerror(errno) : "cannot open";
    fail(what, path, "cannot be opened (" + why + ")", "Check the path");
  }
  struct stat st {};
  regular_ = ::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  // A regular file is read from its start whatever the descriptor's offset (e.g. /dev/stdin
  // redirected from a file); a stream is read from where it is, sequentially.
  if (regular_) {
    file_size_ = static_cast<std::uint64_t>(st.st_size);
    ::lseek(fd_, 0, SEEK_SET);
  }
  char pre[8];
  std::uint64_t consumed = read_fully(fd_, pre, 8);
  if (consumed < 8 || std::memcmp(pre, kMagic, 6) != 0 || (regular_ && file_size_ < 10))
    fail(what, path, "is not a NumPy .npy file (no \\x93NUMPY magic)", kSaveAdvice);
  const int major = static_cast<unsigned char>(pre[6]);
  std::uint64_t header_len = 0;
  std::size_t len_bytes = 0;
  if (major == 1) len_bytes = 2;
  else if (major == 2 || major == 3) len_bytes = 4;
  else fail(what, path, "has unsupported .npy format version " + std::to_string(major), kSaveAdvice);
  unsigned char l[4] = {};
  if (read_fully(fd_, reinterpret_cast<char*>(l), len_bytes) < len_bytes)
    fail(what, path, "is truncated inside its .npy header", kSaveAdvice);
  for (std::size_t k = 0; k < len_bytes; ++k) header_len |= std::uint64_t{l[k]} << (8 * k);
  consumed += len_bytes;
  if (regular_ && consumed + header_len > file_size_) fail(what, path, "is truncated inside its .npy header", kSaveAdvice);
  std::string header(header_len, '\0');
  if (read_fully(fd_, header.data(), header_len) < header_len)
    fail(what, path, "is truncated inside its .npy header", kSaveAdvice);
  consumed += header_len;
  HeaderDict dict;
  std::string problem;
  if (!parse_header_dict(header, dict, problem)) fail(what, path, "has an unreadable .npy header: " + problem, kSaveAdvice);

  if (dict.descr == "<f8") dtype_ = DType::float64;
  else if (dict.descr == "<f4") dtype_ = DType::float32;
  else if (dict.descr == ">f8" || dict.descr == ">f4")
    fail(what, path, "is big-endian (dtype '" + dict.descr + "'); otcal reads little-endian float32/float64 only",
         "Convert it with arr.astype('<f8')");
  else
    fail(what, path, "has dtype '" + dict.descr + "'; otcal reads float32 ('<f4') or float64 ('<f8') only",
         "Convert it with arr.astype(numpy.float64)");
  if (dict.fortran_order)
    fail(what, path, "is stored in Fortran (column-major) order; otcal reads C order only",
         "Save numpy.ascontiguousarray(arr) instead");
  shape_ = dict.shape;
  std::uint64_t count = 1;
  for (index_t e : shape_) {
    if (e != 0 && count > std::numeric_limits<std::uint64_t>::max() / 16 / static_cast<std::uint64_t>(e))
      fail(what, path, "has an impossible shape " + shape_text(shape_), kSaveAdvice);
    count *= static_cast<std::uint64_t>(e);
  }
  payload_offset_ = consumed;
  payload_bytes_ = count * dtype_size(dtype_);
  if (regular_ && file_size_ - payload_offset_ < payload_bytes_)
    fail(what, path,
         "is truncated: shape " + shape_text(shape_) + " needs " + std::to_string(payload_bytes_) +
             " data bytes but only " + std::to_string(file_size_ - payload_offset_) + " are present",
         "Re-save the array");
  // numpy.load ignores them; here they mean the header's shape does not describe the data.
  if (regular_ && file_size_ - payload_offset_ > payload_bytes_)
    fail(what, path,
         "has " + std::to_string(file_size_ - payload_offset_ - payload_bytes_) +
             " bytes after the data its header describes (shape " + shape_text(shape_) + ", " +
             std::to_string(payload_bytes_) + " bytes): the header does not match the data",
         kSaveAdvice);
}

NpyInput::~NpyInput() {
  if (fd_ >= 0) ::close(fd_);
}

NpyInput::NpyInput(NpyInput&& o) noexcept { *this = std::move(o); }

NpyInput& NpyInput::operator=(NpyInput&& o) noexcept {
  if (this == &o) return *this;
  if (fd_ >= 0) ::close(fd_);
  path_ = std::move(o.path_);
  what_ = std::move(o.what_);
  fd_ = std::exchange(o.fd_, -1);
  regular_ = o.regular_;
  file_size_ = o.file_size_;
  payload_offset_ = o.payload_offset_;
  payload_bytes_ = o.payload_bytes_;
  dtype_ = o.dtype_;
  shape_ = std::move(o.shape_);
  return *this;
}

NpyArray NpyInput::read() {
  if (fd_ < 0) throw InvalidArgument(what_ + " '" + path_ + "' was already read");
  NpyArray arr;
  arr.dtype = dtype_;
  arr.shape = shape_;
  const std::size_t elem = dtype_size(dtype_);
  const auto bytes = static_cast<std::size_t>(payload_bytes_);
  // Double-aligned storage for a copied payload (float64 and float32 alike).
  auto owned = [&](std::size_t n) {
    check_host_memory(n, what_ + " '" + path_ + "'", regular_ ? "to copy its misaligned payload" : "to read it from a stream");
    return std::shared_ptr<double[]>(new double[std::max<std::size_t>(1, (n + 7) / 8)]);
  };
  if (regular_) {
    // Mapped read-only and private: pages come from the page cache as they are touched, and the
    // caller's later changes to the file cannot reach a view (a truncated file would, with SIGBUS;
    // numpy.load(mmap_mode='r') shares that risk).
    void* map = ::mmap(nullptr, static_cast<std::size_t>(file_size_), PROT_READ, MAP_PRIVATE, fd_, 0);
    if (map == MAP_FAILED) fail(what_, path_, std::string("could not be mapped (") + std::strerror(errno) + ")", "Check the file");
    const std::size_t size = static_cast<std::size_t>(file_size_);
    std::shared_ptr<const void> mapping(map, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
    const char* payload = static_cast<const char*>(map) + payload_offset_;
    if (reinterpret_cast<std::uintptr_t>(payload) % elem == 0) {
      arr.adopt(std::move(mapping), payload, true);
    } else {  // numpy pads headers to 64 (older numpy: 16) bytes; a hand-made file may not
      std::shared_ptr<double[]> buf = owned(bytes);
      if (bytes > 0) std::memcpy(buf.get(), payload, bytes);
      arr.adopt(std::shared_ptr<const void>(buf, buf.get()), buf.get(), false);
    }
  } else {
    std::shared_ptr<double[]> buf = owned(bytes);
    const std::uint64_t got = read_fully(fd_, reinterpret_cast<char*>(buf.get()), payload_bytes_);
    if (got < payload_bytes_)
      fail(what_, path_,
           "is truncated: shape " + shape_text(shape_) + " needs " + std::to_string(payload_bytes_) +
               " data bytes but the stream ended after " + std::to_string(got),
           "Re-save the array, or check the program writing the stream");
    char extra = 0;
    if (read_fully(fd_, &extra, 1) != 0)
      fail(what_, path_,
           "continues after the " + std::to_string(payload_bytes_) + " data bytes its header describes (shape " +
               shape_text(shape_) + "): the header does not match the data",
           "Re-save the array, or check the program writing the stream");
    arr.adopt(std::shared_ptr<const void>(buf, buf.get()), buf.get(), false);
  }
  ::close(std::exchange(fd_, -1));
  return arr;
}

NpyArray read_npy(const std::string& path, const std::string& what) { return NpyInput(path, what).read(); }

void write_npy(const std::string& path, const double* data, const std::vector<index_t>& shape, DType dtype) {
  write_all(path, detail::npy_stream(data, shape, dtype));
}
void write_npy(const std::string& path, const std::int32_t* data, const std::vector<index_t>& shape) {
  write_all(path, detail::npy_stream(data, shape));
}
void write_npy(const std::string& path, const std::int64_t* data, const std::vector<index_t>& shape) {
  write_all(path, detail::npy_stream(data, shape));
}

}  // namespace otcal::io
