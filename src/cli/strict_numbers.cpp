#include "cli/strict_numbers.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>

namespace otcal::cli {
namespace {

template <class I>
std::string strict_integer(std::string& text, const char* what) {
  const std::string accepts = std::string("accepts ") + what + " from " +
                              std::to_string(std::numeric_limits<I>::min()) + " to " +
                              std::to_string(std::numeric_limits<I>::max()) +
                              " in plain decimal digits (no spaces, '+', hex, fraction or exponent)";
  I v = 0;
  const char* first = text.data();
  const char* last = first + text.size();
  const auto [end, ec] = std::from_chars(first, last, v, 10);
  if (ec == std::errc::result_out_of_range) return "'" + text + "' is out of range: it " + accepts;
  if (text.empty() || ec != std::errc() || end != last) return "'" + text + "' is not a whole number: it " + accepts;
  text = std::to_string(v);
  return "";
}

std::string strict_float(std::string& text) {
  const std::string accepts =
      "accepts a finite decimal number such as 0.05, 1e-3 or 2 (no spaces, '+', hex, inf or nan)";
  double v = 0;
  const char* first = text.data();
  const char* last = first + text.size();
  // chars_format::general: no hex, no leading '+' or space; inf and nan are refused below.
  const auto [end, ec] = std::from_chars(first, last, v, std::chars_format::general);
  const bool whole = ec != std::errc::invalid_argument && end == last && !text.empty();
  if (!whole) return "'" + text + "' is not a number: it " + accepts;
  const bool nonzero_digits = text.find_first_of("123456789") < text.find_first_of("eE");
  if (ec == std::errc::result_out_of_range) {
    // libstdc++ reports both overflow and underflow as out of range: tell them apart by the exponent.
    const std::size_t e = text.find_first_of("eE");
    const bool tiny = e != std::string::npos && e + 1 < text.size() && text[e + 1] == '-';
    return "'" + text + "' is " + (tiny ? "too small: it underflows to 0 in float64" : "too large for float64") +
           "; the flag " + accepts;
  }
  if (!std::isfinite(v)) return "'" + text + "' is not finite: the flag " + accepts;
  if (v == 0 && nonzero_digits) return "'" + text + "' is too small: it underflows to 0 in float64; the flag " + accepts;
  if (std::fpclassify(v) == FP_SUBNORMAL)
    return "'" + text + "' is too small: it is subnormal in float64 (below 2.2e-308); the flag " + accepts;
  std::ostringstream os;
  os.precision(17);
  os << v;
  text = os.str();
  return "";
}

}  // namespace

std::string strict_number(const std::string& type_name, std::string& text) {
  if (type_name == "INT") return strict_integer<std::int64_t>(text, "a whole number");
  if (type_name == "UINT") return strict_integer<std::uint64_t>(text, "a whole number");
  if (type_name == "FLOAT") return strict_float(text);
  return "";
}

void install_strict_numbers(CLI::App& app) {
  auto all = [](const CLI::App*) { return true; };
  for (CLI::Option* opt : app.get_options([](const CLI::Option*) { return true; })) {
    const std::string type = opt->get_type_name();
    if (type != "INT" && type != "UINT" && type != "FLOAT") continue;
    // No description: the help text stays as it was.
    opt->transform(CLI::Validator([type](std::string& text) { return strict_number(type, text); }, ""));
  }
  for (CLI::App* sub : app.get_subcommands(all)) install_strict_numbers(*sub);
}

}  // namespace otcal::cli
