#include <nanobind/nanobind.h>

namespace otcal::py {
void bind_calibration(nanobind::module_&) {}
}  // namespace otcal::py
