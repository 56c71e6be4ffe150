// Solves a small problem through the installed headers and library (the README's example, on a
// resident problem); checks the marginals and that the sparsified plan carries the mass.
#include <otcal/otcal.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<double> N;
  const otcal::index_t n = 50, m = 40, d = 2;
  std::vector<double> x(n * d), y(m * d);
  for (auto& v : x) v = N(rng);
  for (auto& v : y) v = N(rng) + 1;
  otcal::Context ctx = otcal::Context::cpu({.memory_budget = std::size_t{64} << 20});
  otcal::PointCloud geom{otcal::ConstMatrix::of(x.data(), n, d), otcal::ConstMatrix::of(y.data(), m, d), {}};
  const otcal::Problem problem = otcal::Problem::upload(ctx, geom);
  otcal::SinkhornOptions opt;
  opt.threshold = 1e-8;
  const otcal::SinkhornResult r = otcal::sinkhorn(problem, opt);
  const auto col = otcal::marginal(problem, r, 0);
  double err = 0;
  for (double v : col) err += std::fabs(v - 1.0 / m);
  otcal::SparsifyOptions sp{.mode = otcal::SparsifyMode::mass, .value = 0.99, .batch_size = 7, .max_k = 40};
  const otcal::CsrMatrix plan = otcal::sparsify(problem, r, sp).csr;
  double mass = 0;
  for (double v : plan.values) mass += v;
  std::printf("otcal consumer: converged=%d iterations=%lld marginal error=%.3g sparse mass=%.4f\n",
              int(r.converged), static_cast<long long>(r.n_iters), err, mass);
  return r.converged && err < 1e-7 && mass > 0.98 && mass <= 1 + 1e-9 ? 0 : 1;
}
