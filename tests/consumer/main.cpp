// Solves a small problem through the installed headers and library; checks the marginals.
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
  otcal::SinkhornOptions opt;
  opt.threshold = 1e-8;
  const auto r = otcal::sinkhorn(ctx, geom, {}, {}, opt);
  const auto col = otcal::marginal(ctx, geom, r, 0);
  double err = 0;
  for (double v : col) err += std::fabs(v - 1.0 / m);
  std::printf("otcal consumer: converged=%d iterations=%lld marginal error=%.3g\n", int(r.converged),
              static_cast<long long>(r.n_iters), err);
  return r.converged && err < 1e-7 ? 0 : 1;
}
