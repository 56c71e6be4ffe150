#include "errors.hpp"

#include <exception>

#include "otcal/errors.hpp"

namespace otcal::py {

namespace nb = nanobind;

namespace {

// The classes live in otcal.errors (pure Python) so that they can subclass ValueError, MemoryError
// and the like; imported when the first error is raised.
void raise_as(const char* cls, const char* message) {
  nb::object type = nb::module_::import_("otcal.errors").attr(cls);
  PyErr_SetObject(type.ptr(), nb::str(message).ptr());
}

}  // namespace

void register_exception_translator(nb::module_&) {
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const BudgetTooSmall& e) {
      nb::object type = nb::module_::import_("otcal.errors").attr("BudgetTooSmall");
      nb::object error = type(nb::str(e.what()), e.required_bytes());
      PyErr_SetObject(type.ptr(), error.ptr());
    } catch (const InvalidArgument& e) {
      raise_as("InvalidArgument", e.what());
    } catch (const OutOfBudget& e) {
      raise_as("OutOfBudget", e.what());
    } catch (const OutOfMemory& e) {
      raise_as("OutOfMemory", e.what());
    } catch (const NumericalError& e) {
      raise_as("NumericalError", e.what());
    } catch (const CalibrationFailed& e) {
      raise_as("CalibrationFailed", e.what());
    } catch (const DeviceError& e) {
      raise_as("DeviceError", e.what());
    } catch (const Error& e) {
      raise_as("OtcalError", e.what());
    }
  });
}

}  // namespace otcal::py
