#include "geometry/clouds.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/cuda_runtime.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

namespace {
template <class V>
std::vector<double> widened(const void* device, std::size_t count) {
  std::vector<V> raw(count);
  cuda_copy_to_host(raw.data(), device, count * sizeof(V));
  return std::vector<double>(raw.begin(), raw.end());
}

// A host float64 copy of a caller's device array (O(size): weights, or clouds for norm statistics).
std::vector<double> device_to_host(const void* data, DType dtype, std::size_t count) {
  return dtype == DType::float32 ? widened<float>(data, count) : widened<double>(data, count);
}
}  // namespace

Shape check_geometry(const PointCloud& geom, DeviceKind device) {
  const ConstMatrix& x = geom.x;
  const ConstMatrix& y = geom.y_or_x();
  if (x.empty() || x.rows <= 0) throw InvalidArgument("x is empty: the source cloud needs at least one point");
  if (x.cols <= 0) throw InvalidArgument("x has no columns: points need at least one coordinate");
  if (y.rows <= 0) throw InvalidArgument("y is empty: the target cloud needs at least one point");
  if (y.cols != x.cols)
    throw InvalidArgument("x has " + std::to_string(x.cols) + " columns but y has " + std::to_string(y.cols) +
                          ": both clouds must live in the same dimension");
  if (!geom.y.empty() && geom.y.location != x.location)
    throw InvalidArgument("x and y live in different places (one on the host, one on the device): pass both from "
                          "the same place");
  if (x.location == Location::device && device != DeviceKind::cuda)
    throw InvalidArgument("x is a device array but the context runs on the cpu: pass host arrays or use a CUDA "
                          "context");
  const Cost& c = geom.options.cost;
  if ((c.kind == CostKind::pnorm || c.kind == CostKind::sq_pnorm) && !(std::isfinite(c.p) && c.p >= 1))
    throw InvalidArgument("cost exponent p = " + std::to_string(c.p) + " must be finite and >= 1");
  return {x.rows, y.rows, x.cols};
}

std::vector<double> host_weights(const ConstVector& w, index_t size, const char* name, const char* points) {
  std::vector<double> out(static_cast<std::size_t>(size), 1.0 / static_cast<double>(size));
  if (w.empty()) return out;
  if (w.location == Location::device) {
    if (w.size != size)
      throw InvalidArgument(std::string(name) + " has " + std::to_string(w.size) + " entries but " + points +
                            " has " + std::to_string(size) + " points: give one weight per point");
    const std::vector<double> h = device_to_host(w.data, w.dtype, static_cast<std::size_t>(size));
    return host_weights(ConstVector::of(h.data(), size), size, name, points);
  }
  if (w.size != size)
    throw InvalidArgument(std::string(name) + " has " + std::to_string(w.size) + " entries but " + points + " has " +
                          std::to_string(size) + " points: give one weight per point");
  double total = 0;
  for (index_t i = 0; i < size; ++i) {
    const double v = w.at(i);
    if (!std::isfinite(v) || v < 0) {
      std::ostringstream os;
      os << name << "[" << i << "] = " << v << ": weights must be finite and >= 0";
      throw InvalidArgument(os.str());
    }
    out[static_cast<std::size_t>(i)] = v;
    total += v;
  }
  if (!(total > 0))
    throw InvalidArgument(std::string(name) + " sums to 0: at least one weight must be positive");
  return out;
}

NormStats norm_stats(const ConstMatrix& x, const ConstMatrix& y) {
  if (x.location == Location::device) {
    const std::vector<double> hx = device_to_host(x.data, x.dtype, static_cast<std::size_t>(x.rows * x.cols));
    const std::vector<double> hy = &y == &x || y.data == x.data
                                       ? hx
                                       : device_to_host(y.data, y.dtype, static_cast<std::size_t>(y.rows * y.cols));
    return norm_stats(ConstMatrix::of(hx.data(), x.rows, x.cols), ConstMatrix::of(hy.data(), y.rows, y.cols));
  }
  NormStats s;
  const index_t d = x.cols;
  std::vector<double> mx(static_cast<std::size_t>(d), 0.0), my(static_cast<std::size_t>(d), 0.0);
  // Sum and max of the squared norms, and the coordinate sums, of one cloud.
  auto sweep = [d](const ConstMatrix& c, double& sum_sq, double& max_sq, std::vector<double>& sums) {
    for (index_t i = 0; i < c.rows; ++i) {
      double sq = 0;
      for (index_t k = 0; k < d; ++k) {
        const double v = c.at(i, k);
        sq += v * v;
        sums[static_cast<std::size_t>(k)] += v;
      }
      sum_sq += sq;
      max_sq = std::max(max_sq, sq);
    }
  };
  sweep(x, s.mean_sq_x, s.max_sq_x, mx);
  sweep(y, s.mean_sq_y, s.max_sq_y, my);
  s.mean_sq_x /= static_cast<double>(x.rows);
  s.mean_sq_y /= static_cast<double>(y.rows);
  for (index_t k = 0; k < d; ++k)
    s.dot_means += mx[static_cast<std::size_t>(k)] / static_cast<double>(x.rows) * my[static_cast<std::size_t>(k)] /
                   static_cast<double>(y.rows);
  return s;
}

namespace {
[[noreturn]] void bad_points(const ConstMatrix& h, const char* name) {
  if (h.location == Location::device)
    throw InvalidArgument(std::string(name) + " holds NaN or infinite coordinates: point coordinates must be "
                          "finite; drop or impute those points");
  for (index_t i = 0; i < h.rows; ++i)
    for (index_t k = 0; k < h.cols; ++k) {
      const double v = h.at(i, k);
      if (!std::isfinite(v)) {
        std::ostringstream os;
        os << name << " holds " << v << " at row " << i << ", column " << k
           << ": point coordinates must be finite; drop or impute those points";
        throw InvalidArgument(os.str());
      }
    }
  throw InvalidArgument(std::string(name) + " holds non-finite coordinates");
}
}  // namespace

template <class T>
ResidentClouds<T> upload_clouds(const Context& ctx, Backend<T>& be, const PointCloud& geom, const Shape& s, T* x,
                                T* y, T* norms_x, T* norms_y) {
  ResidentClouds<T> r;
  const bool same = geom.y.empty();
  r.cost = {geom.options.cost.kind, geom.options.cost.p};
  be.upload_cloud(geom.x, x);
  count_cloud_upload(ctx);
  if (be.value_flags(x, s.n * s.d) != 0) bad_points(geom.x, "x");
  if (!same) {
    be.upload_cloud(geom.y, y);
    count_cloud_upload(ctx);
    if (be.value_flags(y, s.m * s.d) != 0) bad_points(geom.y, "y");
  }
  const T* yptr = same ? x : y;
  r.cx = {x, nullptr, s.n, static_cast<int>(s.d)};
  r.cy = {yptr, nullptr, s.m, static_cast<int>(s.d)};
  if (r.cost.kind == CostKind::cosine) {
    be.point_norms(x, s.n, static_cast<int>(s.d), norms_x);
    r.cx.norms = norms_x;
    if (same) {
      r.cy.norms = norms_x;
    } else {
      be.point_norms(yptr, s.m, static_cast<int>(s.d), norms_y);
      r.cy.norms = norms_y;
    }
  }
  return r;
}

template ResidentClouds<float> upload_clouds<float>(const Context&, Backend<float>&, const PointCloud&, const Shape&,
                                                    float*, float*, float*, float*);
template ResidentClouds<double> upload_clouds<double>(const Context&, Backend<double>&, const PointCloud&,
                                                      const Shape&, double*, double*, double*, double*);

}  // namespace otcal::detail
