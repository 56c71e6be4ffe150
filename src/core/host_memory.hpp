#pragma once
// What the host can still allocate: one figure for the whole project, so that the default budget,
// the budget warning and the refusal of inputs too large for the machine quote the same number.
#include <cstddef>

namespace otcal::detail {

// MemAvailable from /proc/meminfo (the kernel's estimate of what can be allocated without
// swapping: free memory plus reclaimable cache); sysconf(_SC_AVPHYS_PAGES) where that file cannot
// be read; 0 when neither is known.
std::size_t host_available_bytes();

}  // namespace otcal::detail
