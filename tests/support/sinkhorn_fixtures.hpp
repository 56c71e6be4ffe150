#pragma once
// Small fixtures shared by the CPU Sinkhorn tests: a CPU context that keeps warnings quiet, a
// PointCloud over reference clouds, and bitwise equality of two results.
#include <cstring>
#include <string>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/geometry.hpp"
#include "support/reference.hpp"

namespace testsupport {

inline otcal::Context quiet_cpu(std::size_t budget = std::size_t{256} << 20, int threads = 0) {
  return otcal::Context::cpu({.memory_budget = budget, .threads = threads, .on_warning = [](const std::string&) {}});
}

inline otcal::PointCloud geometry(const ref::Clouds& c, const std::string& cost = "sqeuclidean",
                                  const std::string& scale = "mean") {
  otcal::PointCloud g;
  g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  g.options.cost = otcal::Cost::parse(cost);
  g.options.scale = otcal::ScaleCost::parse(scale);
  return g;
}

inline bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

}  // namespace testsupport
