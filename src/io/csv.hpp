#pragma once
// A small CSV reader for record tables (`otcal calibrate --data`): one header row, comma
// separator, RFC 4180 quoting ("a,b", "say ""hi"""), LF or CRLF line ends. A column whose
// non-empty fields all parse as numbers is numeric (empty = NaN); any other column holds strings
// (empty = missing, ""). NUL bytes are refused. Errors are otcal::InvalidArgument naming `what`,
// the path and the line.
//
// The file is read in chunks and each column is typed as its fields arrive: a numeric column keeps
// only its numbers. A column that turns out to hold a non-number becomes a string column; the text
// of its earlier fields is then read again from the source (a second pass over that column only),
// so string columns hold their fields verbatim.
#include <cstddef>
#include <string>
#include <string_view>

#include "otcal/calibration.hpp"

namespace otcal::io {

RecordTable read_csv(const std::string& path, const std::string& what);
// The same from text in memory; `what` names the source in messages.
RecordTable parse_csv(const std::string& text, const std::string& what);

// `text` made safe to quote in a message: control bytes written as \0, \t, \n, \r or \xHH.
std::string printable(std::string_view text);

namespace detail {
// parse_csv fed to the parser `chunk_bytes` at a time (tests: chunk boundaries anywhere).
RecordTable parse_csv_chunked(const std::string& text, const std::string& what, std::size_t chunk_bytes);
}  // namespace detail

}  // namespace otcal::io
