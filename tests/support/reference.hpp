#pragma once
// Independent references for the tests: a naive dense float64 log-domain Sinkhorn that follows
// OTT-JAX's formulas literally (docs/sinkhorn.md), written without any otcal code, and random
// input generators.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ref {

using Mat = std::vector<std::vector<double>>;

struct Clouds {
  std::vector<double> x, y;  // row-major [n, d], [m, d]
  std::int64_t n = 0, m = 0, d = 0;
};

// Gaussian clouds with random means; fresh seed per call site.
Clouds random_clouds(std::int64_t n, std::int64_t m, std::int64_t d, std::uint64_t seed, double spread = 1.0);
std::vector<double> random_weights(std::int64_t n, std::uint64_t seed, double zero_fraction = 0.0);

// cost name: sqeuclidean, euclidean, cosine, pnorm, sq_pnorm (with p)
Mat dense_cost(const Clouds& c, const std::string& cost, double p);

struct Options {
  double epsilon = -1;             // absolute target; <0 = default 0.05 std
  std::string relative;            // "", "mean", "std"
  std::string scale = "1";         // number, mean, max_cost, max_norm, max_bound
  double init = 1, decay = 1;
  double tau_a = 1, tau_b = 1;
  double threshold = 1e-3, norm_error = 1;
  int inner = 10, min_iter = 0, max_iter = 2000;
  bool parallel = false;
};

struct Result {
  std::vector<double> f, g, errors;
  double reg_ot_cost = 0, epsilon = 0, scale = 0;
  bool converged = false;
  int n_iters = 0;
  Mat plan;
};

// Scaled cost C = c / s and the resolved s and eps.
Result sinkhorn(const Clouds& c, const std::vector<double>& a, const std::vector<double>& b, const std::string& cost,
                double p, const Options& o);

// numpy's linear-interpolation percentile of a multiset.
double percentile_linear(std::vector<double> v, double q);

}  // namespace ref
