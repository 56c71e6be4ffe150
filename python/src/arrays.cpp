#include "arrays.hpp"

#include "otcal/errors.hpp"

namespace otcal::py {

namespace {

DType float_dtype(const AnyArray& a, const std::string& name) {
  if (a.dtype() == nb::dtype<double>()) return DType::float64;
  if (a.dtype() == nb::dtype<float>()) return DType::float32;
  throw InvalidArgument(name + ": expected a float32 or float64 array; convert it with .astype(numpy.float64)");
}

Location location_of(const AnyArray& a, const std::string& name) {
  if (a.device_type() == nb::device::cpu::value) return Location::host;
  if (a.device_type() == nb::device::cuda::value) return Location::device;
  throw InvalidArgument(name + ": arrays must live in host memory or on a CUDA device (DLPack device type " +
                        std::to_string(a.device_type()) + " is not supported); move it with .cpu() or numpy.asarray");
}

// C order: the last axis has stride 1 and each earlier stride is the product of the later extents.
bool c_contiguous(const AnyArray& a) {
  std::int64_t expected = 1;
  for (std::size_t k = a.ndim(); k-- > 0;) {
    if (a.shape(k) != 1 && a.stride(k) != expected) return false;
    expected *= static_cast<std::int64_t>(a.shape(k));
  }
  return true;
}

}  // namespace

ConstMatrix matrix_view(const AnyArray& a, const std::string& name) {
  if (a.ndim() != 2)
    throw InvalidArgument(name + ": expected a 2-D array (points x dimensions), got " + std::to_string(a.ndim()) +
                          " dimensions");
  if (!c_contiguous(a))
    throw InvalidArgument(name + ": expected a C-contiguous array; pass numpy.ascontiguousarray(" + name + ")");
  ConstMatrix v;
  v.dtype = float_dtype(a, name);
  v.rows = static_cast<index_t>(a.shape(0));
  v.cols = static_cast<index_t>(a.shape(1));
  v.location = location_of(a, name);
  v.data = a.data();
  return v;
}

ConstVector vector_view(const AnyArray& a, const std::string& name, std::int64_t expected) {
  if (a.ndim() != 1)
    throw InvalidArgument(name + ": expected a 1-D array, got " + std::to_string(a.ndim()) + " dimensions");
  if (a.shape(0) > 1 && a.stride(0) != 1)
    throw InvalidArgument(name + ": expected a contiguous array; pass numpy.ascontiguousarray(" + name + ")");
  if (expected >= 0 && static_cast<std::int64_t>(a.shape(0)) != expected)
    throw InvalidArgument(name + ": expected length " + std::to_string(expected) + ", got " +
                          std::to_string(a.shape(0)));
  ConstVector v;
  v.dtype = float_dtype(a, name);
  v.size = static_cast<index_t>(a.shape(0));
  v.location = location_of(a, name);
  v.data = a.data();
  return v;
}

std::uintptr_t data_address(const AnyArray& a) { return reinterpret_cast<std::uintptr_t>(a.data()); }

}  // namespace otcal::py
