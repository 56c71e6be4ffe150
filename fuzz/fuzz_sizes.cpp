// otcal::parse_bytes on arbitrary text (--memory-budget and the other size flags), with the
// properties memory.hpp promises: whatever it accepts is at least one byte; plain decimal bytes
// read back exactly; format_bytes of an accepted size parses back to it when the printed value is
// exact (bytes, or a whole number of KiB/MiB/GiB/TiB), and otherwise to within the rounding of its
// two printed decimals, or is refused as not whole bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "otcal/memory.hpp"

namespace {

void check_round_trips(std::size_t bytes) {
  using otcal::fuzz::finding;
  if (bytes == 0) finding("accepted 0 bytes");
  const std::string plain = std::to_string(bytes);
  try {
    if (otcal::parse_bytes(plain) != bytes) finding("'" + plain + "' does not read back exactly");
  } catch (const otcal::InvalidArgument& e) {
    finding("'" + plain + "' is refused: " + e.what());
  }

  const std::string shown = otcal::format_bytes(bytes);
  double unit = 1;
  while (unit < 1024.0 * 1024 * 1024 * 1024 && static_cast<double>(bytes) / unit >= 1024) unit *= 1024;
  const double printed_step = unit == 1 ? 1 : unit / 100;  // two decimals above bytes
  try {
    const std::size_t back = otcal::parse_bytes(shown);
    const double err = std::fabs(static_cast<double>(back) - static_cast<double>(bytes));
    const bool exact = bytes % static_cast<std::size_t>(unit) == 0;  // in integers: doubles round above 2^53
    if (exact && back != bytes)
      finding("format_bytes(" + plain + ") = '" + shown + "' reads back as " + std::to_string(back));
    // Sizes past 2^53 bytes are computed in double: allow its spacing there (2 KiB near 2^64).
    const double ulp = std::nextafter(static_cast<double>(bytes), INFINITY) - static_cast<double>(bytes);
    if (err > printed_step / 2 * (1 + 1e-9) + 2 * ulp + 1)
      finding("format_bytes(" + plain + ") = '" + shown + "' reads back as " + std::to_string(back));
  } catch (const otcal::InvalidArgument&) {
    // A rounded "1.23 KiB" is 1259.52 bytes: refused as not a whole number, which is the contract.
    if (unit == 1) finding("format_bytes(" + plain + ") = '" + shown + "' is refused");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  otcal::fuzz::expect_accept_or_refuse([&] {
    const std::size_t bytes = otcal::parse_bytes(text, "--memory-budget");
    check_round_trips(bytes);
  });
  return 0;
}
