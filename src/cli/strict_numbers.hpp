#pragma once
// Every numeric flag of every subcommand read exactly, in one place. CLI11 reads numbers with
// strtoll/strtold: "99999999999999999999" saturates, " 5", "0x10" and "010" (octal) are taken,
// and "1e-400" silently becomes 0. The checks installed here refuse those with the flag's name.
#include <CLI/CLI.hpp>

#include <string>

namespace otcal::cli {

// What a flag of CLI11 type `type_name` ("INT", "UINT", "FLOAT") accepts: "" when `text` is
// valid, else why not (without the flag's name). Valid text is rewritten to its canonical decimal
// form, which CLI11 then converts exactly (no base prefixes or leading zeros left to reinterpret).
// INT: an optional '-' and decimal digits within int64; UINT: decimal digits within uint64; FLOAT:
// a finite decimal number (sign, point, exponent) that neither overflows nor, when not zero,
// underflows to 0 or a subnormal. No spaces, hex, '+', inf or nan anywhere.
std::string strict_number(const std::string& type_name, std::string& text);

// Attaches the check to every INT, UINT and FLOAT option of `app` and its subcommands (call after
// they are all set up). A narrower target (int) is still range-checked by CLI11's conversion.
void install_strict_numbers(CLI::App& app);

}  // namespace otcal::cli
