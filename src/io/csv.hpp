#pragma once
// A small CSV reader for record tables (`otcal calibrate --data`): one header row, comma
// separator, RFC 4180 quoting ("a,b", "say ""hi"""), LF or CRLF line ends. A column whose
// non-empty fields all parse as numbers is numeric (empty = NaN); any other column holds strings
// (empty = missing, ""). Errors are otcal::InvalidArgument naming `what`, the path and the line.
#include <string>

#include "otcal/calibration.hpp"

namespace otcal::io {

RecordTable read_csv(const std::string& path, const std::string& what);
// The same from text in memory; `what` names the source in messages.
RecordTable parse_csv(const std::string& text, const std::string& what);

}  // namespace otcal::io
