// otcal._otcal: the nanobind extension behind the otcal package. It binds the library's resident
// problems, solvers and calibrators; the OTT-, moscot- and microcalibrate-shaped API is Python
// (python/otcal).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "context_handle.hpp"
#include "errors.hpp"

namespace nb = nanobind;

namespace otcal::py {

void bind_ot(nb::module_& m);
void bind_calibration(nb::module_& m);

ContextHandle make_context(const std::string& device, std::size_t memory_budget, int threads) {
  auto log = std::make_shared<WarningLog>();
  ContextOptions options;
  options.memory_budget = memory_budget;
  options.threads = threads;
  options.on_warning = [log](const std::string& message) { log->add(message); };
  return {log, Context::from_string(device, options)};
}

namespace {

void bind_context(nb::module_& m) {
  nb::class_<ContextHandle>(m, "Context",
                            "Where operations run (the CPU, or one CUDA device) and the byte budget their "
                            "workspaces must fit.")
      .def("__init__",
           [](ContextHandle* self, const std::string& device, std::size_t memory_budget, int threads) {
             new (self) ContextHandle(make_context(device, memory_budget, threads));
           },
           nb::arg("device") = "auto", nb::arg("memory_budget") = 0, nb::arg("threads") = 0,
           "device: 'auto', 'cpu', 'cuda' or 'cuda:N'. memory_budget: bytes, 0 = a quarter of the device's "
           "memory. threads: CPU threads, 0 = OpenMP's default.")
      .def_prop_ro("kind", [](const ContextHandle& h) { return h.ctx.kind() == DeviceKind::cuda ? "cuda" : "cpu"; })
      .def_prop_ro("device_id", [](const ContextHandle& h) { return h.ctx.device_id(); })
      .def_prop_ro("device_name", [](const ContextHandle& h) { return h.ctx.device_name(); })
      .def_prop_ro("selection_note", [](const ContextHandle& h) { return h.ctx.selection_note(); })
      .def_prop_ro("memory_budget", [](const ContextHandle& h) { return h.ctx.memory_budget(); })
      .def_prop_ro("threads", [](const ContextHandle& h) { return h.ctx.threads(); })
      .def_prop_ro("cloud_uploads", [](const ContextHandle& h) { return h.ctx.cloud_uploads(); },
                   "Point clouds uploaded to this context's device so far.")
      .def("drain_warnings", [](ContextHandle& h) { return h.warnings->drain(); },
           "The library warnings emitted since the last call (the Python layer re-issues them).");
}

}  // namespace
}  // namespace otcal::py

NB_MODULE(_otcal, m) {
  m.doc() = "otcal's compiled core; use the otcal package's Python API.";
  otcal::py::register_exception_translator(m);
  otcal::py::bind_context(m);
  m.def("built_with_cuda", [] { return otcal::system_info().built_with_cuda; });
  m.def("system_info", [] {
    const otcal::SystemInfo s = otcal::system_info();
    nb::dict d;
    d["built_with_cuda"] = s.built_with_cuda;
    d["cuda_runtime_version"] = s.cuda_runtime_version;
    d["cuda_status"] = s.cuda_status;
    d["cpu_threads"] = s.cpu_threads;
    d["host_memory_bytes"] = s.host_memory_bytes;
    nb::list devices;
    for (const auto& dev : s.devices) {
      nb::dict e;
      e["id"] = dev.id;
      e["name"] = dev.name;
      e["total_bytes"] = dev.total_bytes;
      e["free_bytes"] = dev.free_bytes;
      e["compute_capability"] = nb::make_tuple(dev.compute_major, dev.compute_minor);
      devices.append(e);
    }
    d["devices"] = devices;
    return d;
  });
  m.def("data_address", &otcal::py::data_address, nb::arg("array"),
        "Address of the array's first element as the library sees it (no copy is made).");
  otcal::py::bind_ot(m);
  otcal::py::bind_calibration(m);
}
