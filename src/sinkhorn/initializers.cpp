// The Gaussian initializer's closed form (docs/sinkhorn.md §7), in float64 on the host: O((n + m) d^2 + d^3).
#include "sinkhorn/initializers.hpp"

#include <Eigen/Dense>
#include <cmath>
#include <string>

#include "otcal/errors.hpp"

namespace otcal::detail {
namespace {

struct Fitted {
  Eigen::VectorXd mean;
  Eigen::MatrixXd cov;
};

// Weighted mean and unbiased weighted covariance (GSL's formula, as OTT's Gaussian.from_samples),
// with the weights normalised to sum 1.
Fitted fit(const std::vector<double>& x, index_t n, index_t d, const std::vector<double>& w, const char* cloud) {
  double total = 0;
  for (double v : w) total += v;
  double sum_sq = 0;
  for (double v : w) sum_sq += (v / total) * (v / total);
  if (!(1 - sum_sq > 0))
    throw InvalidArgument(std::string("initializer gaussian: the weights of ") + cloud +
                          " put all the mass on one point, so its covariance is undefined; use initializer zeros");
  Fitted g{Eigen::VectorXd::Zero(d), Eigen::MatrixXd::Zero(d, d)};
  for (index_t i = 0; i < n; ++i)
    for (index_t k = 0; k < d; ++k) g.mean[k] += (w[i] / total) * x[k * n + i];
  Eigen::VectorXd c(d);
  for (index_t i = 0; i < n; ++i) {
    const double wi = w[i] / total;
    if (wi == 0) continue;
    for (index_t k = 0; k < d; ++k) c[k] = x[k * n + i] - g.mean[k];
    g.cov.noalias() += wi * c * c.transpose();
  }
  g.cov /= 1 - sum_sq;
  return g;
}

// Q diag(lambda^power) Q^T of a symmetric matrix.
Eigen::MatrixXd power(const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>& es, double p) {
  Eigen::VectorXd l = es.eigenvalues();
  for (Eigen::Index k = 0; k < l.size(); ++k) l[k] = std::pow(std::max(l[k], 0.0), p);
  return es.eigenvectors() * l.asDiagonal() * es.eigenvectors().transpose();
}

}  // namespace

std::vector<double> gaussian_potential(const std::vector<double>& x, index_t n, const std::vector<double>& y, index_t m,
                                       index_t d, const std::vector<double>& a, const std::vector<double>& b,
                                       double scale) {
  const Fitted ga = fit(x, n, d, a, "x (--a)");
  const Fitted gb = fit(y, m, d, b, "y (--b)");
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es0(ga.cov);
  const double lo = es0.eigenvalues().minCoeff(), hi = es0.eigenvalues().maxCoeff();
  if (!(lo > 1e-14 * hi && std::isfinite(hi)))
    throw InvalidArgument("initializer gaussian: the weighted covariance of x is singular (smallest eigenvalue " +
                          std::to_string(lo) + ", " + std::to_string(n) + " points in " + std::to_string(d) +
                          " dimensions); use initializer zeros");
  const Eigen::MatrixXd sqrt0 = power(es0, 0.5), isqrt0 = power(es0, -0.5);
  const Eigen::MatrixXd inner = sqrt0 * gb.cov * sqrt0;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es1(0.5 * (inner + inner.transpose()));
  // The Monge map x -> mu_b + A (x - mu_a) between the two Gaussians.
  const Eigen::MatrixXd A = isqrt0 * power(es1, 0.5) * isqrt0;
  std::vector<double> f(static_cast<std::size_t>(n));
  Eigen::VectorXd xi(d), c(d);
  double mean = 0;
  for (index_t i = 0; i < n; ++i) {
    for (index_t k = 0; k < d; ++k) xi[k] = x[k * n + i];
    c = xi - ga.mean;
    // 2 * (|x|^2 / 2 - (x - mu_a)^T A (x - mu_a) / 2 - x . mu_b)
    const double v = xi.squaredNorm() - c.dot(A * c) - 2 * xi.dot(gb.mean);
    f[static_cast<std::size_t>(i)] = v;
    mean += v;
  }
  mean /= static_cast<double>(n);
  for (double& v : f) v = (v - mean) / scale;
  return f;
}

}  // namespace otcal::detail
