// io::parse_spec_json on arbitrary text (`otcal calibrate --spec`), against a fixed three-record
// table with a numeric column "age" and a categorical column "region". The spec's folder holds
// coef.npy (three values), so relative "coefficients" paths reach the real .npy reader.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "io/npy.hpp"
#include "io/spec_json.hpp"

namespace {

const otcal::RecordTable& table() {
  static const otcal::RecordTable t = [] {
    otcal::RecordTable r;
    r.add_numeric("age", {23.0, 41.5, 67.0});
    r.add_strings("region", {"north", "south", "north"});
    return r;
  }();
  return t;
}

const std::string& spec_path() {
  static const std::string path = [] {
    const double coef[3] = {0.5, -1.25, 2.0};
    otcal::io::write_npy((otcal::fuzz::scratch_dir() / "coef.npy").string(), coef, {3}, otcal::DType::float64);
    return (otcal::fuzz::scratch_dir() / "spec.json").string();
  }();
  return path;
}

// An absolute "coefficients" path would let the fuzzer open any file of the machine (/dev/stdin
// blocks, /dev/zero never ends); JSON escapes (\u...) could spell one. Such inputs are skipped:
// they test the filesystem, not the reader.
bool names_outside_files(const std::string& text) {
  return text.find('/') != std::string::npos || text.find("\\u") != std::string::npos ||
         text.find("..") != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (names_outside_files(text)) return -1;  // not added to the corpus
  otcal::fuzz::expect_accept_or_refuse([&] {
    const otcal::ConstraintSpec spec = otcal::io::parse_spec_json(text, spec_path(), table(), "weight");
    if (spec.weight_column != "weight") otcal::fuzz::finding("the weights column was not kept");
    for (const otcal::LinearConstraint& c : spec.linear)
      if (c.coefficients.size() != 3) otcal::fuzz::finding("linear constraint '" + c.name + "' has " +
                                                           std::to_string(c.coefficients.size()) + " coefficients");
  });
  return 0;
}
