#include "geometry/clouds.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/collective.hpp"
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

namespace {
// Per-coordinate bounds and the largest point norm of one cloud (finite coordinates only), in
// long double: squares of coordinates up to 1.8e308 are representable there (x86 and aarch64).
struct Extent {
  std::vector<long double> lo, hi;
  long double max_norm = 0;
  index_t max_row = 0;
};

void sweep_extent(const ConstMatrix& c, index_t first_row, Extent& e) {
  for (index_t i = 0; i < c.rows; ++i) {
    long double sq = 0;
    for (index_t k = 0; k < c.cols; ++k) {
      const double v = c.at(i, k);
      if (!std::isfinite(v)) continue;
      const auto kk = static_cast<std::size_t>(k);
      e.lo[kk] = std::min<long double>(e.lo[kk], v);
      e.hi[kk] = std::max<long double>(e.hi[kk], v);
      sq += static_cast<long double>(v) * v;
    }
    const long double norm = std::sqrt(sq);
    if (norm > e.max_norm) {
      e.max_norm = norm;
      e.max_row = first_row + i;
    }
  }
}

Extent cloud_extent(const ConstMatrix& c) {
  Extent e;
  e.lo.assign(static_cast<std::size_t>(c.cols), INFINITY);
  e.hi.assign(static_cast<std::size_t>(c.cols), -INFINITY);
  if (c.location == Location::host) {
    sweep_extent(c, 0, e);
    return e;
  }
  // A device cloud is read back in pieces of rows, so the host copy stays small.
  const index_t rows_per_piece = std::max<index_t>(1, (index_t{1} << 20) / std::max<index_t>(c.cols, 1));
  for (index_t r = 0; r < c.rows; r += rows_per_piece) {
    const index_t rows = std::min(rows_per_piece, c.rows - r);
    const std::size_t offset = static_cast<std::size_t>(r * c.cols) * dtype_size(c.dtype);
    const std::vector<double> h = device_to_host(static_cast<const char*>(c.data) + offset, c.dtype,
                                                 static_cast<std::size_t>(rows * c.cols));
    sweep_extent(ConstMatrix::of(h.data(), rows, c.cols), r, e);
  }
  return e;
}

std::string short_num(long double v) {
  std::ostringstream os;
  os.precision(3);
  os << v;
  return os.str();
}
}  // namespace

void check_cost_range(const PointCloud& geom, DType precision) {
  const ConstMatrix& x = geom.x;
  const bool same = geom.y.empty();
  const Extent ex = cloud_extent(x);
  const Extent ey = same ? ex : cloud_extent(geom.y);
  const Cost& cost = geom.options.cost;
  const long double rx = ex.max_norm, ry = ey.max_norm;
  const auto d = static_cast<std::size_t>(x.cols);
  // Two upper bounds on |x_i - y_j| per coordinate and overall: the joint bounding box, and the
  // triangle inequality on the largest norms. Their minimum bounds every pair.
  long double box_sq = 0, box_p = 0;
  const long double p = cost.p;
  for (std::size_t k = 0; k < d; ++k) {
    const long double lo = std::min(ex.lo[k], ey.lo[k]), hi = std::max(ex.hi[k], ey.hi[k]);
    const long double r = hi >= lo ? hi - lo : 0;
    box_sq += r * r;
    if (cost.kind == CostKind::pnorm || cost.kind == CostKind::sq_pnorm) box_p += std::pow(r, p);
  }
  const long double dist_sq = std::min(box_sq, (rx + ry) * (rx + ry));
  // The largest value the cost's accumulator or its result can take (cost_math.hpp's formulas).
  long double worst = 0;
  switch (cost.kind) {
    case CostKind::sqeuclidean:
    case CostKind::euclidean: worst = dist_sq; break;  // euclidean accumulates the square first
    case CostKind::cosine: worst = std::max(rx, ry) * std::max(rx, ry); break;  // the squared norms
    case CostKind::pnorm: worst = box_p; break;
    case CostKind::sq_pnorm: worst = std::max(box_p, 0.5L * std::pow(box_p, 2 / p)); break;
  }
  const long double limit = precision == DType::float32 ? std::numeric_limits<float>::max()
                                                        : std::numeric_limits<double>::max();
  if (!(worst > limit)) return;
  const bool name_y = !same && ry > rx;
  const Extent& big = name_y ? ey : ex;
  const bool float64_fits = precision == DType::float32 && worst <= std::numeric_limits<double>::max();
  throw InvalidArgument(
      std::string(name_y ? "y" : "x") + " has a point of norm " + short_num(big.max_norm) + " (row " +
      std::to_string(big.max_row) + "): the " + cost.name() + " cost between these clouds can reach " +
      short_num(worst) + (cost.kind == CostKind::sqeuclidean ? "" : " (in its accumulation)") + ", beyond " +
      dtype_name(precision) + "'s largest value " + short_num(limit) +
      ", so it overflows to inf: rescale the points before solving (e.g. divide both clouds by " +
      short_num(big.max_norm) + ")" + (float64_fits ? ", or solve in float64" : ""));
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
// `first_row`: the index in the whole cloud of the view's row 0 (a rank checks its own rows).
[[noreturn]] void bad_points(const ConstMatrix& h, const char* name, index_t first_row) {
  if (h.location == Location::device)
    throw InvalidArgument(std::string(name) + " holds NaN or infinite coordinates in rows " +
                          std::to_string(first_row) + ".." + std::to_string(first_row + h.rows - 1) +
                          ": point coordinates must be finite; drop or impute those points");
  for (index_t i = 0; i < h.rows; ++i)
    for (index_t k = 0; k < h.cols; ++k) {
      const double v = h.at(i, k);
      if (!std::isfinite(v)) {
        std::ostringstream os;
        os << name << " holds " << v << " at row " << first_row + i << ", column " << k
           << ": point coordinates must be finite; drop or impute those points";
        throw InvalidArgument(os.str());
      }
    }
  throw InvalidArgument(std::string(name) + " holds non-finite coordinates");
}

// Rows [r.begin, r.end) of a row-major matrix, host or device.
ConstMatrix rows_of(const ConstMatrix& m, const Shard& r) {
  ConstMatrix out = m;
  out.data = static_cast<const char*>(m.data) + static_cast<std::size_t>(r.begin * m.cols) * dtype_size(m.dtype);
  out.rows = r.size();
  return out;
}
}  // namespace

RowShards row_shards(const Context& ctx, const Shape& s, bool same_clouds) {
  Communicator& comm = ctx.communicator();
  RowShards sh;
  sh.split = comm.size() > 1;
  sh.x = shard_rows(s.n, comm.rank(), comm.size());
  sh.y = same_clouds ? sh.x : shard_rows(s.m, comm.rank(), comm.size());
  return sh;
}

template <class T>
ResidentClouds<T> upload_clouds(const Context& ctx, Backend<T>& be, const PointCloud& geom, const Shape& s,
                                const RowShards& sh, const Workspace& w, const ResidentLayout<T>& l) {
  ResidentClouds<T> r;
  const bool same = geom.y.empty();
  const int d = static_cast<int>(s.d);
  r.cost = {geom.options.cost.kind, geom.options.cost.p};
  r.own_x = sh.x;
  r.own_y = sh.y;
  T* const x = w.get(l.x);
  T* const y = same ? x : w.get(l.y);
  be.upload_cloud(geom.x, x);
  count_cloud_upload(ctx);
  if (!same) {
    be.upload_cloud(geom.y, y);
    count_cloud_upload(ctx);
  }
  r.cx = {x, nullptr, s.n, d};
  r.cy = {y, nullptr, s.m, d};
  r.cx_own = r.cx;
  r.cy_own = r.cy;
  if (sh.split) {
    T* const xo = w.get(l.x_own);
    be.upload_cloud(rows_of(geom.x, sh.x), xo);
    r.cx_own = {xo, nullptr, sh.x.size(), d};
    r.cy_own = r.cx_own;
    if (!same) {
      T* const yo = w.get(l.y_own);
      be.upload_cloud(rows_of(geom.y, sh.y), yo);
      r.cy_own = {yo, nullptr, sh.y.size(), d};
    }
  }
  // Each rank checks the rows it owns (the owned copies when split, else the whole clouds).
  std::exception_ptr failure;
  try {
    if (be.value_flags(r.cx_own.x, r.cx_own.n * s.d) != 0) bad_points(rows_of(geom.x, sh.x), "x", sh.x.begin);
    if (!same && be.value_flags(r.cy_own.x, r.cy_own.n * s.d) != 0)
      bad_points(rows_of(geom.y, sh.y), "y", sh.y.begin);
  } catch (...) {
    failure = std::current_exception();
  }
  agree(ctx.communicator(), failure);
  if (r.cost.kind == CostKind::cosine) {
    auto norms = [&](Cloud<T>& c, T* out) {
      be.point_norms(c.x, c.n, d, out);
      c.norms = out;
    };
    norms(r.cx, w.get(l.norms_x));
    if (same) r.cy.norms = r.cx.norms;
    else norms(r.cy, w.get(l.norms_y));
    if (sh.split) {
      norms(r.cx_own, w.get(l.norms_x_own));
      if (same) r.cy_own.norms = r.cx_own.norms;
      else norms(r.cy_own, w.get(l.norms_y_own));
    } else {
      r.cx_own.norms = r.cx.norms;
      r.cy_own.norms = r.cy.norms;
    }
  }
  return r;
}

template ResidentClouds<float> upload_clouds<float>(const Context&, Backend<float>&, const PointCloud&, const Shape&,
                                                    const RowShards&, const Workspace&, const ResidentLayout<float>&);
template ResidentClouds<double> upload_clouds<double>(const Context&, Backend<double>&, const PointCloud&,
                                                      const Shape&, const RowShards&, const Workspace&,
                                                      const ResidentLayout<double>&);

}  // namespace otcal::detail
