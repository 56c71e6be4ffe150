#include "io/host_memory.hpp"

#include "core/host_memory.hpp"
#include "otcal/errors.hpp"
#include "otcal/memory.hpp"

namespace otcal::io {

void check_host_memory(std::uint64_t bytes, const std::string& what, const std::string& purpose) {
  const std::uint64_t available = detail::host_available_bytes();
  if (available == 0 || bytes <= available) return;  // unknown: nothing is refused
  throw InvalidArgument(what + " needs " + format_bytes(bytes) + " (" + std::to_string(bytes) + " bytes) of host memory " +
                        purpose + " but only " + format_bytes(available) + " (" + std::to_string(available) +
                        " bytes) are available (MemAvailable in /proc/meminfo): free memory, use a smaller input or "
                        "run on a larger machine");
}

}  // namespace otcal::io
