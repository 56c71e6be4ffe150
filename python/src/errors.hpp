#pragma once
// otcal's C++ exceptions become the Python classes of otcal/errors.py (InvalidArgument is a
// ValueError, BudgetTooSmall a MemoryError with required_bytes, ...), so callers catch Python's
// own hierarchy.
#include <nanobind/nanobind.h>

namespace otcal::py {
void register_exception_translator(nanobind::module_& m);
}
