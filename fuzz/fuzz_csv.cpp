// io::parse_csv on arbitrary text (`otcal calibrate --data`). Accepted tables must be rectangular.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "io/csv.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  otcal::fuzz::expect_accept_or_refuse([&] {
    const otcal::RecordTable t = otcal::io::parse_csv(text, "--data 'fuzz.csv'");
    for (const otcal::TableColumn& c : t.columns) {
      const std::size_t n = c.numeric ? c.numbers.size() : c.strings.size();
      if (n != static_cast<std::size_t>(t.n_records))
        otcal::fuzz::finding("column '" + c.name + "' has " + std::to_string(n) + " values for " +
                             std::to_string(t.n_records) + " records");
    }
  });
  return 0;
}
