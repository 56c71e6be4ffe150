#pragma once
// The host memory an input may still take: inputs are checked against it before anything large is
// allocated, so that a file too big for the machine is refused with a message instead of ending in
// std::bad_alloc (or the kernel's OOM killer).
#include <cstdint>
#include <string>

namespace otcal::io {

// InvalidArgument when `bytes` exceed the available host memory: "<what> needs <size> of host
// memory <purpose> but only <available> are available ...". `what` names the input (e.g.
// "--x 'x.npy'"), `purpose` says what the memory is for (e.g. "to read it from a pipe").
void check_host_memory(std::uint64_t bytes, const std::string& what, const std::string& purpose);

}  // namespace otcal::io
