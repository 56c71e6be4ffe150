#include "io/csv.hpp"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "otcal/errors.hpp"

namespace otcal::io {

namespace {

// Splits CSV text into records of fields; quoted fields may hold commas, quotes and newlines.
std::vector<std::vector<std::string>> split_records(const std::string& text, const std::string& what,
                                                    std::vector<index_t>& line_of_record) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> fields;
  std::string field;
  bool in_quotes = false, field_was_quoted = false, any = false;
  index_t line = 1, record_line = 1;
  auto end_field = [&] {
    fields.push_back(std::move(field));
    field.clear();
    field_was_quoted = false;
  };
  auto end_record = [&] {
    end_field();
    // a blank line (one empty unquoted field) is skipped
    if (!(fields.size() == 1 && fields[0].empty())) {
      records.push_back(std::move(fields));
      line_of_record.push_back(record_line);
    }
    fields.clear();
  };
  for (std::size_t p = 0; p < text.size(); ++p) {
    const char ch = text[p];
    any = true;
    if (in_quotes) {
      if (ch == '"') {
        if (p + 1 < text.size() && text[p + 1] == '"') {
          field += '"';
          ++p;
        } else {
          in_quotes = false;
        }
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"') {
      if (!field.empty() || field_was_quoted)
        throw InvalidArgument(what + ": line " + std::to_string(line) + ": a quote inside an unquoted field; quote the whole field and double inner quotes");
      in_quotes = true;
      field_was_quoted = true;
    } else if (ch == ',') {
      end_field();
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && p + 1 < text.size() && text[p + 1] == '\n') ++p;
      end_record();
      ++line;
      record_line = line;
      any = false;
    } else {
      if (field_was_quoted)
        throw InvalidArgument(what + ": line " + std::to_string(line) + ": text after a closing quote");
      field += ch;
    }
  }
  if (in_quotes) throw InvalidArgument(what + ": unterminated quoted field (opened before line " + std::to_string(line) + ")");
  if (any) end_record();
  return records;
}

bool parse_double(const std::string& s, double& out) {
  const char* b = s.c_str();
  while (*b == ' ') ++b;
  if (*b == '\0') return false;
  char* end = nullptr;
  out = std::strtod(b, &end);
  while (*end == ' ') ++end;
  return *end == '\0';
}

}  // namespace

RecordTable parse_csv(const std::string& text, const std::string& what) {
  std::vector<index_t> lines;
  auto records = split_records(text, what, lines);
  if (records.empty()) throw InvalidArgument(what + ": no header row; the first line must name the columns");
  const auto& header = records[0];
  {
    std::unordered_set<std::string> seen;
    for (std::size_t c = 0; c < header.size(); ++c) {
      if (header[c].empty())
        throw InvalidArgument(what + ": column " + std::to_string(c + 1) + " of the header has no name");
      if (!seen.insert(header[c]).second) throw InvalidArgument(what + ": column '" + header[c] + "' appears twice in the header");
    }
  }
  const std::size_t n_cols = header.size();
  const std::size_t n = records.size() - 1;
  for (std::size_t r = 1; r < records.size(); ++r)
    if (records[r].size() != n_cols)
      throw InvalidArgument(what + ": line " + std::to_string(lines[r]) + " has " + std::to_string(records[r].size()) +
                            " fields, the header has " + std::to_string(n_cols));
  RecordTable table;
  table.n_records = static_cast<index_t>(n);
  for (std::size_t c = 0; c < n_cols; ++c) {
    std::vector<double> numbers(n);
    bool numeric = true;
    for (std::size_t r = 0; r < n && numeric; ++r) {
      const std::string& f = records[r + 1][c];
      if (f.empty())
        numbers[r] = std::numeric_limits<double>::quiet_NaN();
      else
        numeric = parse_double(f, numbers[r]);
    }
    if (numeric) {
      table.add_numeric(header[c], std::move(numbers));
    } else {
      std::vector<std::string> strings(n);
      for (std::size_t r = 0; r < n; ++r) strings[r] = std::move(records[r + 1][c]);
      table.add_strings(header[c], std::move(strings));
    }
  }
  return table;
}

RecordTable read_csv(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(what + ": cannot open '" + path + "' for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_csv(ss.str(), what + " '" + path + "'");
}

}  // namespace otcal::io
