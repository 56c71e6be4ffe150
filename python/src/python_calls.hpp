#pragma once
// Library work runs with the GIL released. The library calls back at every check interval (a
// Sinkhorn error evaluation, a calibration epoch or Newton step); there we take the GIL, let Python
// run its pending signal handlers (Ctrl-C raises KeyboardInterrupt) and call the progress callback.
// A Python exception unwinds the operation as nb::python_error (the library's RAII frees its
// workspace) and nanobind raises it again at the boundary.
#include <nanobind/nanobind.h>

#include <utility>

namespace otcal::py {

namespace nb = nanobind;

template <class... Args>
void call_back_into_python(const nb::object& callback, Args&&... args) {
  nb::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw nb::python_error();
  if (callback.is_valid() && !callback.is_none()) callback(std::forward<Args>(args)...);
}

}  // namespace otcal::py
