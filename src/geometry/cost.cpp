#include "otcal/geometry.hpp"

#include <cmath>
#include <sstream>

#include "otcal/errors.hpp"

namespace otcal {

namespace {
double parse_p(const std::string& text, const std::string& digits) {
  std::size_t pos = 0;
  double p = 0;
  try {
    p = std::stod(digits, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos != digits.size() || !std::isfinite(p) || p < 1)
    throw InvalidArgument("cost '" + text + "': the exponent p must be a finite number >= 1 (e.g. pnorm:1.5)");
  return p;
}

std::string format_number(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
}  // namespace

Cost Cost::parse(const std::string& text) {
  if (text == "sqeuclidean" || text == "sq_euclidean") return {CostKind::sqeuclidean, 2};
  if (text == "euclidean") return {CostKind::euclidean, 2};
  if (text == "cosine") return {CostKind::cosine, 2};
  for (const char* prefix : {"pnorm:", "pnorm_"})
    if (text.rfind(prefix, 0) == 0) return {CostKind::pnorm, parse_p(text, text.substr(6))};
  for (const char* prefix : {"sq_pnorm:", "sq_pnorm_"})
    if (text.rfind(prefix, 0) == 0) return {CostKind::sq_pnorm, parse_p(text, text.substr(9))};
  throw InvalidArgument("cost '" + text + "' is not one of sqeuclidean, euclidean, cosine, pnorm:P, sq_pnorm:P");
}

std::string Cost::name() const {
  switch (kind) {
    case CostKind::sqeuclidean: return "sqeuclidean";
    case CostKind::euclidean: return "euclidean";
    case CostKind::cosine: return "cosine";
    case CostKind::pnorm: return "pnorm:" + format_number(p);
    default: return "sq_pnorm:" + format_number(p);
  }
}

ScaleCost ScaleCost::parse(const std::string& text) {
  if (text == "mean") return {Kind::mean, 0};
  if (text == "max_cost") return {Kind::max_cost, 0};
  if (text == "max_norm") return {Kind::max_norm, 0};
  if (text == "max_bound") return {Kind::max_bound, 0};
  if (text == "median") return {Kind::median, 0};
  std::size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != text.size())
    throw InvalidArgument("scale_cost '" + text + "' is not a number or one of mean, max_cost, max_norm, max_bound, median");
  if (!(v > 0) || !std::isfinite(v))
    throw InvalidArgument("scale_cost " + text + " must be a finite number > 0");
  return {Kind::value, v};
}

std::string ScaleCost::name() const {
  switch (kind) {
    case Kind::mean: return "mean";
    case Kind::max_cost: return "max_cost";
    case Kind::max_norm: return "max_norm";
    case Kind::max_bound: return "max_bound";
    case Kind::median: return "median";
    default: return format_number(value);
  }
}

}  // namespace otcal
