// io::read_npy on arbitrary bytes written to a file (the tool reads --x, --y, weights and
// coefficient arrays this way). Accepted arrays must be self-consistent.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = otcal::fuzz::write_scratch_file("input.npy", reinterpret_cast<const char*>(data), size);
  otcal::fuzz::expect_accept_or_refuse([&] {
    const otcal::io::NpyArray a = otcal::io::read_npy(path, "--x");
    otcal::index_t count = 1;
    for (otcal::index_t d : a.shape) {
      if (d < 0) otcal::fuzz::finding("accepted a negative dimension");
      count *= d;
    }
    if (count != a.size()) otcal::fuzz::finding("size() differs from the product of the shape");
    // The payload is in the file: an accepted array cannot hold more bytes than the input.
    const std::size_t item = a.dtype == otcal::DType::float32 ? 4 : 8;
    if (static_cast<std::size_t>(count) * item > size) otcal::fuzz::finding("accepted array larger than its file");
    // Every element is readable (a payload view past the mapping or buffer is a sanitizer report).
    const std::vector<double> values = a.values();
    if (values.size() != static_cast<std::size_t>(count))
      otcal::fuzz::finding("accepted array holds " + std::to_string(values.size()) + " values, its shape says " +
                           std::to_string(count));
  });
  return 0;
}
