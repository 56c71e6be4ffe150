#include "support/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace ref {

namespace {
const double kInf = std::numeric_limits<double>::infinity();
double fin(double v) { return std::isfinite(v) ? v : 0.0; }
double lse(const std::vector<double>& z) {
  double mx = -kInf;
  for (double v : z) mx = std::max(mx, v);
  if (!std::isfinite(mx)) return mx;
  double s = 0;
  for (double v : z) s += std::exp(v - mx);
  return mx + std::log(s);
}
}  // namespace

Clouds random_clouds(std::int64_t n, std::int64_t m, std::int64_t d, std::uint64_t seed, double spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 1.0);
  Clouds c;
  c.n = n;
  c.m = m;
  c.d = d;
  std::vector<double> mu_x(d), mu_y(d);
  for (auto& v : mu_x) v = N(rng);
  for (auto& v : mu_y) v = N(rng) + 0.5;
  c.x.resize(n * d);
  c.y.resize(m * d);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < d; ++k) c.x[i * d + k] = mu_x[k] + spread * N(rng);
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t k = 0; k < d; ++k) c.y[j * d + k] = mu_y[k] + spread * 0.7 * N(rng);
  return c;
}

std::vector<double> random_weights(std::int64_t n, std::uint64_t seed, double zero_fraction) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0.2, 1.0), Z(0.0, 1.0);
  std::vector<double> w(n);
  double s = 0;
  for (auto& v : w) {
    v = Z(rng) < zero_fraction ? 0.0 : U(rng);
    s += v;
  }
  if (s == 0) {
    w[0] = 1;
    s = 1;
  }
  for (auto& v : w) v /= s;
  return w;
}

Mat dense_cost(const Clouds& c, const std::string& cost, double p) {
  Mat C(c.n, std::vector<double>(c.m));
  for (std::int64_t i = 0; i < c.n; ++i)
    for (std::int64_t j = 0; j < c.m; ++j) {
      const double* x = &c.x[i * c.d];
      const double* y = &c.y[j * c.d];
      double v = 0;
      if (cost == "sqeuclidean" || cost == "euclidean") {
        for (std::int64_t k = 0; k < c.d; ++k) v += (x[k] - y[k]) * (x[k] - y[k]);
        if (cost == "euclidean") v = std::sqrt(v);
      } else if (cost == "cosine") {
        double dot = 0, nx = 0, ny = 0;
        for (std::int64_t k = 0; k < c.d; ++k) {
          dot += x[k] * y[k];
          nx += x[k] * x[k];
          ny += y[k] * y[k];
        }
        v = 1 - dot / (std::sqrt(nx) * std::sqrt(ny) + 1e-8);
      } else if (cost == "pnorm") {
        for (std::int64_t k = 0; k < c.d; ++k) v += std::pow(std::fabs(x[k] - y[k]), p);
        v /= p;
      } else if (cost == "sq_pnorm") {
        for (std::int64_t k = 0; k < c.d; ++k) v += std::pow(std::fabs(x[k] - y[k]), p);
        v = 0.5 * std::pow(v, 2.0 / p);
      } else {
        throw std::runtime_error("unknown cost " + cost);
      }
      C[i][j] = v;
    }
  return C;
}

Result sinkhorn(const Clouds& cl, const std::vector<double>& a, const std::vector<double>& b, const std::string& cost,
                double p, const Options& o) {
  const std::int64_t n = cl.n, m = cl.m;
  Mat c = dense_cost(cl, cost, p);
  // scale
  double s = 0;
  if (o.scale == "mean") {
    for (auto& r : c)
      for (double v : r) s += v;
    s /= double(n) * double(m);
  } else if (o.scale == "max_cost") {
    for (auto& r : c)
      for (double v : r) s = std::max(s, std::fabs(v));
  } else if (o.scale == "max_norm" || o.scale == "max_bound") {
    double X = 0, Y = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double q = 0;
      for (std::int64_t k = 0; k < cl.d; ++k) q += cl.x[i * cl.d + k] * cl.x[i * cl.d + k];
      X = std::max(X, q);
    }
    for (std::int64_t j = 0; j < m; ++j) {
      double q = 0;
      for (std::int64_t k = 0; k < cl.d; ++k) q += cl.y[j * cl.d + k] * cl.y[j * cl.d + k];
      Y = std::max(Y, q);
    }
    s = o.scale == "max_norm" ? std::max(X, Y) : X + Y + 2 * std::sqrt(X * Y);
  } else {
    s = std::stod(o.scale);
  }
  Mat C = c;
  double mean = 0, mean2 = 0;
  for (auto& r : C)
    for (double& v : r) {
      v /= s;
      mean += v;
      mean2 += v * v;
    }
  mean /= double(n) * double(m);
  mean2 /= double(n) * double(m);
  const double sd = std::sqrt(std::max(0.0, mean2 - mean * mean));
  double eps;
  if (o.relative == "mean") eps = (o.epsilon > 0 ? o.epsilon : 0.05) * mean;
  else if (o.relative == "std") eps = (o.epsilon > 0 ? o.epsilon : 0.05) * sd;
  else eps = o.epsilon > 0 ? o.epsilon : 0.05 * sd;

  const double rho_a = o.tau_a >= 1 ? kInf : eps * o.tau_a / (1 - o.tau_a);
  const double rho_b = o.tau_b >= 1 ? kInf : eps * o.tau_b / (1 - o.tau_b);
  std::vector<double> f(n), g(m);
  for (std::int64_t i = 0; i < n; ++i) f[i] = a[i] > 0 ? 0 : -kInf;
  for (std::int64_t j = 0; j < m; ++j) g[j] = b[j] > 0 ? 0 : -kInf;

  // OTT's apply_lse_kernel with the potential of the reduced side removed, literally.
  auto col_term = [&](const std::vector<double>& ff, const std::vector<double>& gg, double e) {
    std::vector<double> out(m);
    std::vector<double> z(n);
    for (std::int64_t j = 0; j < m; ++j) {
      for (std::int64_t i = 0; i < n; ++i) z[i] = (ff[i] + gg[j] - C[i][j]) / e;
      out[j] = e * lse(z) - fin(gg[j]);
    }
    return out;
  };
  auto row_term = [&](const std::vector<double>& ff, const std::vector<double>& gg, double e) {
    std::vector<double> out(n);
    std::vector<double> z(m);
    for (std::int64_t i = 0; i < n; ++i) {
      for (std::int64_t j = 0; j < m; ++j) z[j] = (ff[i] + gg[j] - C[i][j]) / e;
      out[i] = e * lse(z) - fin(ff[i]);
    }
    return out;
  };
  auto marg_b = [&](const std::vector<double>& ff, const std::vector<double>& gg) {
    auto z = col_term(ff, gg, eps);
    std::vector<double> out(m);
    for (std::int64_t j = 0; j < m; ++j) out[j] = std::exp((z[j] + gg[j]) / eps);
    return out;
  };
  auto marg_a = [&](const std::vector<double>& ff, const std::vector<double>& gg) {
    auto z = row_term(ff, gg, eps);
    std::vector<double> out(n);
    for (std::int64_t i = 0; i < n; ++i) out[i] = std::exp((z[i] + ff[i]) / eps);
    return out;
  };
  auto pnorm = [&](const std::vector<double>& u, const std::vector<double>& t) {
    double acc = 0;
    for (std::size_t i = 0; i < u.size(); ++i) acc += std::pow(std::fabs(u[i] - t[i]), o.norm_error);
    return std::pow(acc, 1.0 / o.norm_error);
  };
  auto target = [&](const std::vector<double>& w, const std::vector<double>& pot, double rho) {
    std::vector<double> t(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) t[i] = (w[i] == 0) ? 0 : (std::isinf(rho) ? w[i] : w[i] * std::exp(-pot[i] / rho));
    return t;
  };
  const bool balanced = o.tau_a == 1 && o.tau_b == 1;
  auto error = [&]() {
    if (balanced && !o.parallel) return pnorm(marg_b(f, g), b);
    return pnorm(marg_a(f, g), target(a, f, rho_a)) + pnorm(marg_b(f, g), target(b, g, rho_b));
  };
  auto eps_t = [&](int t) { return std::max(o.init * std::pow(o.decay, t), 1.0) * eps; };
  auto iterate = [&](int t) {
    const double e = eps_t(t);
    auto upd_g = [&](const std::vector<double>& ff) {
      auto z = col_term(ff, g, e);
      for (std::int64_t j = 0; j < m; ++j) g[j] = o.tau_b * (e * std::log(b[j]) - fin(z[j]));
    };
    auto upd_f = [&](const std::vector<double>& gg) {
      auto z = row_term(f, gg, e);
      for (std::int64_t i = 0; i < n; ++i) f[i] = o.tau_a * (e * std::log(a[i]) - fin(z[i]));
    };
    if (o.parallel) {
      auto f_old = f, g_old = g;
      upd_g(f_old);
      f = f_old;
      upd_f(g_old);
    } else {
      upd_g(f);
      upd_f(g);
    }
  };

  Result r;
  r.epsilon = eps;
  r.scale = s;
  const int B = (o.max_iter + o.inner - 1) / o.inner;
  r.errors.assign(B, -1.0);
  int it = 0;
  bool conv_stop = false;
  double last = kInf;
  while (it < o.max_iter) {
    for (int t = it; t < it + o.inner; ++t) {
      iterate(t);
      const bool comp = t == o.max_iter - 1 || ((t + 1) % o.inner == 0 && t >= o.min_iter);
      r.errors[t / o.inner] = comp ? error() : kInf;
      if (comp) last = r.errors[t / o.inner];
    }
    it += o.inner;
    if (o.min_iter == o.max_iter) continue;
    if (it < o.min_iter) continue;
    const double e = r.errors[it / o.inner - 1];
    if (e < o.threshold) {
      conv_stop = true;
      break;
    }
  }
  r.n_iters = it;
  r.errors.resize(static_cast<std::size_t>(it / o.inner));  // the library keeps the blocks run only
  r.converged = conv_stop || (std::isfinite(last) && last < o.threshold);
  r.f = f;
  r.g = g;
  // plan and reg_ot_cost at the target eps
  r.plan.assign(n, std::vector<double>(m));
  double total = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) {
      r.plan[i][j] = std::exp((f[i] + g[j] - C[i][j]) / eps);
      total += r.plan[i][j];
    }
  auto div = [&](const std::vector<double>& w, const std::vector<double>& pot, double tau, double rho) {
    double acc = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (w[i] <= 0) continue;
      const double h = pot[i] - eps * std::log(w[i]);
      acc += tau >= 1 ? w[i] * h : -w[i] * rho * (std::exp(-h / rho) - 1);
    }
    return acc;
  };
  double sa = 0, sb = 0;
  for (double v : a) sa += v;
  for (double v : b) sb += v;
  r.reg_ot_cost = div(a, f, o.tau_a, rho_a) + div(b, g, o.tau_b, rho_b) + eps * (sa * sb - total);
  return r;
}

double percentile_linear(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double h = q / 100.0 * double(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  const double t = h - double(lo);
  const double a = v[lo], b = v[hi];
  return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1 - t);
}

}  // namespace ref
