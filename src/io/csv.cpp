#include "io/csv.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <unordered_set>
#include <vector>

#include "otcal/errors.hpp"

namespace otcal::io {

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (u >= 0x20 && u != 0x7f) {
      out += ch;
      continue;
    }
    switch (ch) {
      case '\0': out += "\\0"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02X", u);
        out += buf;
      }
    }
  }
  return out;
}

namespace {

// Bytes read from a file per chunk: the reader never holds more of the file than this.
constexpr std::size_t kChunkBytes = std::size_t{1} << 20;

// Feeds a source to `take` chunk by chunk until the source ends or `take` returns false. A source
// can be read more than once (the second pass of a column that turned out to hold text).
using ChunkConsumer = std::function<bool(const char*, std::size_t)>;
using ChunkSource = std::function<void(const ChunkConsumer&)>;

// The fields of one record as the parser hands them over: `count` strings of `fields` (the
// vector only grows, so field buffers are reused from record to record).
struct RecordView {
  std::vector<std::string>& fields;
  std::size_t count;
  index_t line;  // where the record starts
};

// Splits CSV text fed in arbitrary chunks into records; quoted fields may hold commas, quotes and
// newlines. `on_record` gets every non-blank record and returns false to stop early.
class CsvSplitter {
 public:
  CsvSplitter(std::string what, std::function<bool(const RecordView&)> on_record)
      : what_(std::move(what)), on_record_(std::move(on_record)) {}

  // False once on_record asked to stop.
  bool feed(const char* p, std::size_t size) {
    for (std::size_t i = 0; i < size && !stopped_; ++i, ++consumed_) step(p[i]);
    return !stopped_;
  }
  // Bytes taken so far (the current record's end while on_record runs).
  std::size_t consumed() const { return consumed_; }
  void finish() {
    if (stopped_) return;
    if (quote_pending_) in_quotes_ = false;  // the closing quote was the last byte
    if (in_quotes_)
      throw InvalidArgument(what_ + ": unterminated quoted field (opened before line " + std::to_string(line_) + ")");
    if (any_) end_record();
  }

 private:
  std::string& field() {
    if (fields_.size() <= count_) fields_.resize(count_ + 1);
    return fields_[count_];
  }
  void step(char ch) {
    if (cr_pending_) {  // CRLF is one line end
      cr_pending_ = false;
      if (ch == '\n') return;
    }
    if (quote_pending_) {  // a quote inside quotes: "" is a quote, anything else closed the field
      quote_pending_ = false;
      if (ch == '"') {
        field() += '"';
        return;
      }
      in_quotes_ = false;
    }
    any_ = true;
    if (ch == '\0') refuse_nul();
    if (in_quotes_) {
      if (ch == '"') {
        quote_pending_ = true;
      } else {
        if (ch == '\n') ++line_;
        field() += ch;
      }
      return;
    }
    if (ch == '"') {
      if (!field().empty() || field_was_quoted_)
        throw InvalidArgument(what_ + ": line " + std::to_string(line_) +
                              ": a quote inside an unquoted field; quote the whole field and double inner quotes");
      in_quotes_ = true;
      field_was_quoted_ = true;
    } else if (ch == ',') {
      end_field();
    } else if (ch == '\n' || ch == '\r') {
      cr_pending_ = ch == '\r';
      end_record();
      ++line_;
      record_line_ = line_;
      any_ = false;
    } else {
      if (field_was_quoted_)
        throw InvalidArgument(what_ + ": line " + std::to_string(line_) + ": text after a closing quote");
      field() += ch;
    }
  }
  void end_field() {
    field();  // an empty field still counts
    ++count_;
    field_was_quoted_ = false;
    if (count_ < fields_.size()) fields_[count_].clear();
  }
  void end_record() {
    end_field();
    // a blank line (one empty unquoted field) is skipped
    if (!(count_ == 1 && fields_[0].empty())) {
      if (header_.empty()) header_.assign(fields_.begin(), fields_.begin() + static_cast<std::ptrdiff_t>(count_));
      if (!on_record_(RecordView{fields_, count_, record_line_})) stopped_ = true;
    }
    count_ = 0;
    if (!fields_.empty()) fields_[0].clear();
  }
  [[noreturn]] void refuse_nul() {
    const std::size_t column = count_ + 1;
    std::string name;
    if (!header_.empty() && column <= header_.size()) name = " ('" + printable(header_[column - 1]) + "')";
    throw InvalidArgument(what_ + ": line " + std::to_string(line_) + ", column " + std::to_string(column) + name +
                          ": a NUL byte in the field \"" + printable(field()) + "\\0\"; a CSV file holds text, "
                          "not NUL bytes: check that --data is the right file and saved as text");
  }

  std::string what_;
  std::function<bool(const RecordView&)> on_record_;
  std::vector<std::string> fields_;
  std::vector<std::string> header_;  // for messages
  std::size_t count_ = 0;            // finished fields of the current record
  std::size_t consumed_ = 0;
  bool in_quotes_ = false, quote_pending_ = false, cr_pending_ = false;
  bool field_was_quoted_ = false, any_ = false, stopped_ = false;
  index_t line_ = 1, record_line_ = 1;
};

bool parse_double(const std::string& s, double& out) {
  const char* b = s.c_str();
  while (*b == ' ') ++b;
  if (*b == '\0') return false;
  char* end = nullptr;
  out = std::strtod(b, &end);
  while (*end == ' ') ++end;
  return *end == '\0';
}

// One column as it is read: numbers until a field is not a number, then strings. `text_from` is
// the record where it turned into strings: the text of the records before it is read again.
struct ColumnBuilder {
  std::string name;
  bool numeric = true;
  std::vector<double> numbers;
  std::vector<std::string> strings;
  std::size_t text_from = 0;
};

void check_header(const RecordView& r, const std::string& what) {
  std::unordered_set<std::string> seen;
  for (std::size_t c = 0; c < r.count; ++c) {
    if (r.fields[c].empty())
      throw InvalidArgument(what + ": column " + std::to_string(c + 1) + " of the header has no name");
    if (!seen.insert(r.fields[c]).second)
      throw InvalidArgument(what + ": column '" + printable(r.fields[c]) + "' appears twice in the header");
  }
}

// The number of records a source of `size_bytes` holds, judged from the first `n` records that
// took `consumed` bytes, with 5% to spare.
std::size_t estimate_records(std::size_t n, std::size_t consumed, std::size_t size_bytes) {
  if (consumed == 0 || size_bytes <= consumed) return n;
  return static_cast<std::size_t>(static_cast<double>(n) * static_cast<double>(size_bytes) /
                                  static_cast<double>(consumed) * 1.05) + 16;
}

// `size_bytes` (0 when unknown) sizes the numeric columns once the first records are read: each
// column's vector is reserved for the estimated record count, so it is not regrown (a regrowth
// holds a column twice) and pages it does not reach are never touched.
RecordTable parse_source(const ChunkSource& source, const std::string& what, std::size_t size_bytes) {
  constexpr std::size_t kSizingRecords = 4096;
  std::vector<ColumnBuilder> cols;
  bool have_header = false;
  std::size_t n = 0;
  CsvSplitter* splitter = nullptr;
  CsvSplitter first(what, [&](const RecordView& r) {
    if (n == kSizingRecords && size_bytes > 0) {
      const std::size_t expected = estimate_records(n, splitter->consumed(), size_bytes);
      try {
        for (auto& col : cols)
          if (col.numeric) col.numbers.reserve(expected);
      } catch (const std::bad_alloc&) {  // an estimate thrown off by odd first records: just grow
      }
    }
    if (!have_header) {
      check_header(r, what);
      cols.resize(r.count);
      for (std::size_t c = 0; c < r.count; ++c) cols[c].name = r.fields[c];
      have_header = true;
      return true;
    }
    if (r.count != cols.size())
      throw InvalidArgument(what + ": line " + std::to_string(r.line) + " has " + std::to_string(r.count) +
                            " fields, the header has " + std::to_string(cols.size()));
    for (std::size_t c = 0; c < cols.size(); ++c) {
      ColumnBuilder& col = cols[c];
      std::string& f = r.fields[c];
      if (col.numeric) {
        double v = std::numeric_limits<double>::quiet_NaN();
        if (f.empty() || parse_double(f, v)) {
          col.numbers.push_back(v);
          continue;
        }
        // The rare path: the column holds text after all; its earlier fields are read again below.
        col.numeric = false;
        col.text_from = n;
        std::vector<double>().swap(col.numbers);
        col.strings.resize(n);
      }
      col.strings.push_back(f);
    }
    ++n;
    return true;
  });
  splitter = &first;
  source([&](const char* p, std::size_t size) { return first.feed(p, size); });
  first.finish();
  if (!have_header) throw InvalidArgument(what + ": no header row; the first line must name the columns");

  // Second pass, only over the records before the last column turned into strings.
  std::size_t reread_until = 0;
  for (const auto& col : cols)
    if (!col.numeric) reread_until = std::max(reread_until, col.text_from);
  if (reread_until > 0) {
    std::size_t record = 0;
    bool header_seen = false;
    CsvSplitter again(what, [&](const RecordView& r) {
      if (!header_seen) return header_seen = true;
      if (r.count != cols.size()) throw InvalidArgument(what + ": the file changed while it was being read");
      for (auto& col : cols)
        if (!col.numeric && record < col.text_from) col.strings[record] = r.fields[&col - cols.data()];
      return ++record < reread_until;
    });
    source([&](const char* p, std::size_t size) { return again.feed(p, size); });
    again.finish();
    if (record < reread_until) throw InvalidArgument(what + ": the file changed while it was being read");
  }

  RecordTable table;
  table.n_records = static_cast<index_t>(n);
  for (auto& col : cols) {
    if (col.numeric)
      table.add_numeric(std::move(col.name), std::move(col.numbers));
    else
      table.add_strings(std::move(col.name), std::move(col.strings));
  }
  return table;
}

ChunkSource text_source(const std::string& text, std::size_t chunk_bytes) {
  return [&text, chunk_bytes](const ChunkConsumer& take) {
    for (std::size_t off = 0; off < text.size(); off += chunk_bytes)
      if (!take(text.data() + off, std::min(chunk_bytes, text.size() - off))) return;
  };
}

}  // namespace

namespace detail {
RecordTable parse_csv_chunked(const std::string& text, const std::string& what, std::size_t chunk_bytes) {
  return parse_source(text_source(text, std::max<std::size_t>(chunk_bytes, 1)), what, text.size());
}
}  // namespace detail

RecordTable parse_csv(const std::string& text, const std::string& what) {
  return parse_source(text_source(text, kChunkBytes), what, text.size());
}

RecordTable read_csv(const std::string& path, const std::string& what) {
  const std::string named = what + " '" + printable(path) + "'";
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InvalidArgument(named + " is a folder; give the path of a CSV file");
  const ChunkSource file = [&](const ChunkConsumer& take) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw InvalidArgument(what + ": cannot open '" + printable(path) + "' for reading: " + std::strerror(errno));
    std::vector<char> buf(kChunkBytes);
    for (;;) {
      const std::size_t got = std::fread(buf.data(), 1, buf.size(), f.get());
      if (got > 0 && !take(buf.data(), got)) return;
      if (got < buf.size()) {
        if (std::ferror(f.get())) throw InvalidArgument(named + ": reading failed: " + std::strerror(errno));
        return;
      }
    }
  };
  if (!std::filesystem::is_regular_file(path, ec)) {
    // A pipe (--data <(zcat data.csv.gz)) can be read only once, and a column that turns out to
    // hold text is read twice: keep the stream's text (its size is the price of a pipe).
    std::string text;
    file([&](const char* p, std::size_t n) {
      text.append(p, n);
      return true;
    });
    return parse_source(text_source(text, kChunkBytes), named, text.size());
  }
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  return parse_source(file, named, ec ? 0 : static_cast<std::size_t>(size));
}

}  // namespace otcal::io
