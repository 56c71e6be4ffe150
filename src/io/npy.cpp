// .npy reading and writing (format spec: numpy/lib/format.py, versions 1.0-3.0).
#include "io/npy.hpp"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

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

NpyArray read_npy(const std::string& path, const std::string& what) {
  errno = 0;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(what, path, "is a directory, not a .npy file", "Check the path");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const std::string why = errno ? std::strerror(errno) : "cannot open";
    fail(what, path, "cannot be opened (" + why + ")", "Check the path");
  }
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  char pre[8];
  if (file_size < 10 || !in.read(pre, 8) || std::memcmp(pre, kMagic, 6) != 0)
    fail(what, path, "is not a NumPy .npy file (no \\x93NUMPY magic)", kSaveAdvice);
  const int major = static_cast<unsigned char>(pre[6]);
  std::uint64_t header_len = 0;
  std::size_t prefix = 0;
  if (major == 1) {
    unsigned char l[2];
    in.read(reinterpret_cast<char*>(l), 2);
    header_len = l[0] | (std::uint64_t{l[1]} << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    unsigned char l[4];
    in.read(reinterpret_cast<char*>(l), 4);
    for (int k = 0; k < 4; ++k) header_len |= std::uint64_t{l[k]} << (8 * k);
    prefix = 12;
  } else {
    fail(what, path, "has unsupported .npy format version " + std::to_string(major), kSaveAdvice);
  }
  if (!in || prefix + header_len > file_size)
    fail(what, path, "is truncated inside its .npy header", kSaveAdvice);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  HeaderDict dict;
  std::string problem;
  if (!parse_header_dict(header, dict, problem)) fail(what, path, "has an unreadable .npy header: " + problem, kSaveAdvice);

  NpyArray arr;
  if (dict.descr == "<f8") arr.dtype = DType::float64;
  else if (dict.descr == "<f4") arr.dtype = DType::float32;
  else if (dict.descr == ">f8" || dict.descr == ">f4")
    fail(what, path, "is big-endian (dtype '" + dict.descr + "'); otcal reads little-endian float32/float64 only",
         "Convert it with arr.astype('<f8')");
  else
    fail(what, path, "has dtype '" + dict.descr + "'; otcal reads float32 ('<f4') or float64 ('<f8') only",
         "Convert it with arr.astype(numpy.float64)");
  if (dict.fortran_order)
    fail(what, path, "is stored in Fortran (column-major) order; otcal reads C order only",
         "Save numpy.ascontiguousarray(arr) instead");
  arr.shape = dict.shape;
  std::uint64_t count = 1;
  for (index_t e : arr.shape) {
    if (e != 0 && count > std::numeric_limits<std::uint64_t>::max() / 16 / static_cast<std::uint64_t>(e))
      fail(what, path, "has an impossible shape " + shape_text(arr.shape), kSaveAdvice);
    count *= static_cast<std::uint64_t>(e);
  }
  const std::size_t elem = dtype_size(arr.dtype);
  const std::uint64_t data_bytes = count * elem;
  const std::uint64_t available = file_size - prefix - header_len;
  if (available < data_bytes)
    fail(what, path,
         "is truncated: shape " + shape_text(arr.shape) + " needs " + std::to_string(data_bytes) + " data bytes but only " +
             std::to_string(available) + " are present",
         "Re-save the array");
  arr.data.resize(count);
  if (arr.dtype == DType::float64) {
    in.read(reinterpret_cast<char*>(arr.data.data()), static_cast<std::streamsize>(data_bytes));
  } else {
    std::vector<float> chunk(kChunkElements);
    for (std::uint64_t off = 0; off < count && in; off += kChunkElements) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunkElements, count - off));
      in.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(n * sizeof(float)));
      for (std::size_t k = 0; k < n; ++k) arr.data[off + k] = chunk[k];
    }
  }
  if (!in) fail(what, path, "could not be read completely", "Check the file");
  return arr;
}

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
