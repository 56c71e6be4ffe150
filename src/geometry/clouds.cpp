#include "sinkhorn/problem.hpp"

#include <cmath>
#include <sstream>

#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

Shape check_geometry(const PointCloud& geom) {
  const ConstMatrix& x = geom.x;
  const ConstMatrix& y = geom.y_or_x();
  if (x.empty() || x.rows <= 0) throw InvalidArgument("x is empty: the source cloud needs at least one point");
  if (x.cols <= 0) throw InvalidArgument("x has no columns: points need at least one coordinate");
  if (y.rows <= 0) throw InvalidArgument("y is empty: the target cloud needs at least one point");
  if (y.cols != x.cols)
    throw InvalidArgument("x has " + std::to_string(x.cols) + " columns but y has " + std::to_string(y.cols) +
                          ": both clouds must live in the same dimension");
  if (x.location != Location::host || y.location != Location::host)
    throw InvalidArgument("device-resident point clouds are not accepted yet: pass host arrays");
  const Cost& c = geom.options.cost;
  if ((c.kind == CostKind::pnorm || c.kind == CostKind::sq_pnorm) && !(std::isfinite(c.p) && c.p >= 1))
    throw InvalidArgument("cost exponent p = " + std::to_string(c.p) + " must be finite and >= 1");
  return {x.rows, y.rows, x.cols};
}

std::vector<double> host_weights(const ConstVector& w, index_t size, const char* name, const char* points) {
  std::vector<double> out(static_cast<std::size_t>(size), 1.0 / static_cast<double>(size));
  if (w.empty()) return out;
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

std::size_t cloud_bytes(const Shape& s, const Cost& cost, std::size_t value_size) {
  std::size_t values = static_cast<std::size_t>((s.n + s.m) * s.d);
  if (cost.kind == CostKind::cosine) values += static_cast<std::size_t>(s.n + s.m);
  return values * value_size + 4 * kDefaultAlignment;
}

namespace {
[[noreturn]] void bad_points(const ConstMatrix& h, const char* name) {
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
ResidentClouds<T> upload_clouds(Backend<T>& be, MemoryResource& mr, const PointCloud& geom, const Shape& s) {
  ResidentClouds<T> r;
  const bool same = geom.y.empty();
  r.cost = {geom.options.cost.kind, geom.options.cost.p};
  r.x = Buffer<T>(mr, static_cast<std::size_t>(s.n * s.d));
  be.upload_cloud(geom.x, r.x.data());
  if (be.value_flags(r.x.data(), s.n * s.d) != 0) bad_points(geom.x, "x");
  if (!same) {
    r.y = Buffer<T>(mr, static_cast<std::size_t>(s.m * s.d));
    be.upload_cloud(geom.y, r.y.data());
    if (be.value_flags(r.y.data(), s.m * s.d) != 0) bad_points(geom.y, "y");
  }
  const T* yptr = same ? r.x.data() : r.y.data();
  r.cx = {r.x.data(), nullptr, s.n, static_cast<int>(s.d)};
  r.cy = {yptr, nullptr, s.m, static_cast<int>(s.d)};
  if (r.cost.kind == CostKind::cosine) {
    r.norms_x = Buffer<T>(mr, static_cast<std::size_t>(s.n));
    be.point_norms(r.x.data(), s.n, static_cast<int>(s.d), r.norms_x.data());
    r.cx.norms = r.norms_x.data();
    if (same) {
      r.cy.norms = r.norms_x.data();
    } else {
      r.norms_y = Buffer<T>(mr, static_cast<std::size_t>(s.m));
      be.point_norms(yptr, s.m, static_cast<int>(s.d), r.norms_y.data());
      r.cy.norms = r.norms_y.data();
    }
  }
  return r;
}

template ResidentClouds<float> upload_clouds<float>(Backend<float>&, MemoryResource&, const PointCloud&, const Shape&);
template ResidentClouds<double> upload_clouds<double>(Backend<double>&, MemoryResource&, const PointCloud&,
                                                      const Shape&);

}  // namespace otcal::detail
