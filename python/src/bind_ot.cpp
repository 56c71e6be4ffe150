#include <nanobind/nanobind.h>

namespace otcal::py {
void bind_ot(nanobind::module_&) {}
}  // namespace otcal::py
