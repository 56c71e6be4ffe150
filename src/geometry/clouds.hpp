#pragma once
// The resident form of a point-cloud problem on a backend: clouds uploaded dimension-major, norms
// for the cosine cost, weights. Shared by sinkhorn(), apply_transport(), marginal() and sparsify().
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/planner.hpp"

namespace otcal::detail {

// Checks x and y (shapes, p of the cost) and returns (n, m, d). Names the bad input.
struct Shape {
  index_t n = 0, m = 0, d = 0;
};
Shape check_geometry(const PointCloud& geom);

// Weights as float64 host vectors: uniform when empty; validated (length, sign, finite, mass).
std::vector<double> host_weights(const ConstVector& w, index_t size, const char* name, const char* points);

// Bytes of the resident clouds (+ norms) on a backend.
std::size_t cloud_bytes(const Shape& s, const Cost& cost, std::size_t value_size);

template <class T>
struct ResidentClouds {
  Buffer<T> x, y, norms_x, norms_y;
  Cloud<T> cx, cy;
  CostParams cost;
};

// Uploads both clouds (y = x when y is empty) and checks them for NaN/Inf on the backend.
template <class T>
ResidentClouds<T> upload_clouds(Backend<T>& be, MemoryResource& mr, const PointCloud& geom, const Shape& s);

}  // namespace otcal::detail
