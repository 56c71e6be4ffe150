#pragma once
// Input checks and the resident layout of a point-cloud problem: clouds dimension-major (coordinate
// k of point i at x[k * n + i]), norms for the cosine cost, weights. Written once for every backend.
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/workspace.hpp"
#include "otcal/communicator.hpp"
#include "otcal/geometry.hpp"
#include "otcal/planner.hpp"

namespace otcal::detail {

// Checks x and y (shapes, locations, p of the cost) and returns (n, m, d). Names the bad input.
struct Shape {
  index_t n = 0, m = 0, d = 0;
};
Shape check_geometry(const PointCloud& geom, DeviceKind device);

// Refuses clouds whose costs can overflow the working precision (`precision`, the type the costs
// are accumulated in): coordinates near 1e154 and beyond make the sqeuclidean cost +inf in
// float64 (near 1.8e19 in float32), which otherwise surfaces later as "epsilon resolved to 0" or
// a silent unconverged solve. O((n + m) d): the largest cost is bounded from each cloud's
// bounding box and largest point norm, never from the n*m pairs. Non-finite coordinates are
// skipped (the upload names them). InvalidArgument names the cloud, its largest point norm, the
// cost and the bound, and says to rescale the points.
void check_cost_range(const PointCloud& geom, DType precision);

// Weights as float64 host vectors: uniform when empty; validated (length, sign, finite, mass).
// Device views are read back once (O(n)) to be validated and kept on the host.
std::vector<double> host_weights(const ConstVector& w, index_t size, const char* name, const char* points);

// Host-side statistics of the inputs (O((n + m) d)), for the sqeuclidean closed forms.
struct NormStats {
  double mean_sq_x = 0, mean_sq_y = 0, max_sq_x = 0, max_sq_y = 0, dot_means = 0;
};
NormStats norm_stats(const ConstMatrix& x, const ConstMatrix& y);

// The rows of each cloud this rank owns (docs/distributed.md): all of them in one process.
struct RowShards {
  Shard x, y;
  bool split = false;  // more than one rank: the owned rows get their own resident copy
};
RowShards row_shards(const Context& ctx, const Shape& s, bool same_clouds);

template <class T>
struct ResidentClouds {
  Cloud<T> cx, cy;
  // The owned rows as clouds of their own (the kernels read dimension-major clouds with no
  // stride): the LSE of a rank's rows runs on them against the whole other cloud.
  Cloud<T> cx_own, cy_own;
  Shard own_x, own_y;
  CostParams cost;
};

// The resident buffers of a problem, declared once: the upload allocates exactly these.
template <class T>
struct ResidentLayout {
  WorkspaceDecl decl;
  BufferId<T> x, y, norms_x, norms_y, x_own, y_own, norms_x_own, norms_y_own, a, b;
};
template <class T>
ResidentLayout<T> resident_layout(const Shape& s, const Cost& cost, bool same_clouds, const RowShards& sh) {
  const auto n = static_cast<std::size_t>(s.n), m = static_cast<std::size_t>(s.m), d = static_cast<std::size_t>(s.d);
  const auto own_n = static_cast<std::size_t>(sh.split ? sh.x.size() : 0);
  const auto own_m = static_cast<std::size_t>(sh.split && !same_clouds ? sh.y.size() : 0);
  const bool cosine = cost.kind == CostKind::cosine;
  ResidentLayout<T> l;
  l.decl.operation = "upload";
  l.x = l.decl.template add<T>("x", n * d);
  l.y = l.decl.template add<T>("y", same_clouds ? 0 : m * d);
  l.norms_x = l.decl.template add<T>("norms_x", cosine ? n : 0);
  l.norms_y = l.decl.template add<T>("norms_y", cosine && !same_clouds ? m : 0);
  l.x_own = l.decl.template add<T>("x_own", own_n * d);
  l.y_own = l.decl.template add<T>("y_own", own_m * d);
  l.norms_x_own = l.decl.template add<T>("norms_x_own", cosine ? own_n : 0);
  l.norms_y_own = l.decl.template add<T>("norms_y_own", cosine ? own_m : 0);
  l.a = l.decl.template add<T>("a", n);
  l.b = l.decl.template add<T>("b", m);
  return l;
}

// Uploads both clouds into the layout's buffers (y = x when y is empty), the owned rows again when
// they are split, computes the norms, and checks the owned coordinates for NaN/Inf on the backend
// (one flag word per rank, agreed across ranks: nothing is gathered to check).
template <class T>
ResidentClouds<T> upload_clouds(const Context& ctx, Backend<T>& be, const PointCloud& geom, const Shape& s,
                                const RowShards& shards, const Workspace& w, const ResidentLayout<T>& layout);

}  // namespace otcal::detail
