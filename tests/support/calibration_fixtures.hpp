#pragma once
// Helpers shared by the calibration tests that compare a CUDA context with a CPU one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "otcal/context.hpp"

namespace testsupport {

// Context options with a budget and warnings silenced.
inline otcal::ContextOptions quiet_options(std::size_t budget = std::size_t{256} << 20) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.on_warning = [](const std::string&) {};
  return o;
}

// max |a - b| / max(1, |b|)
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(1.0, std::fabs(b[i])));
  return worst;
}

}  // namespace testsupport
