#pragma once
// The starting potentials of a Sinkhorn solve other than zeros (docs/sinkhorn.md §7).
#include <vector>

#include "otcal/types.hpp"

namespace otcal::detail {

// OTT-JAX's GaussianInitializer for the sqeuclidean cost: f_i = 2 phi(x_i) - mean_k 2 phi(x_k),
// phi the Brenier potential between the Gaussians fitted to (x, a) and (y, b) (weighted mean,
// unbiased weighted covariance), divided by `scale` (the cost is |x - y|^2 / scale). x and y
// are host copies dimension-major (coordinate k of point i at x[k * n + i]). Throws
// InvalidArgument when the covariance of x is not positive definite. Zero weights are not
// masked here.
std::vector<double> gaussian_potential(const std::vector<double>& x, index_t n, const std::vector<double>& y, index_t m,
                                       index_t d, const std::vector<double>& a, const std::vector<double>& b,
                                       double scale);

}  // namespace otcal::detail
