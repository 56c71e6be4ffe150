// Dependencies point one way (docs/host-layer.md §11): core below geometry, geometry below the
// solvers, and the two point-cloud solvers (src/sinkhorn, src/sparsify) never include each other.
// Checked on the source tree, so a new include edge fails here before it can grow.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

namespace {

namespace fs = std::filesystem;

// Every `#include "dir/..."` of the files under src/<layer>, as the set of dirs.
std::set<std::string> included_dirs(const fs::path& root, const std::string& layer) {
  std::set<std::string> dirs;
  const std::regex include_re(R"re(^\s*#\s*include\s*"([a-z_]+)/)re");
  for (const auto& entry : fs::recursive_directory_iterator(root / "src" / layer)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path());
    std::string line;
    std::smatch m;
    while (std::getline(in, line))
      if (std::regex_search(line, m, include_re)) dirs.insert(m[1].str() + " (from " + entry.path().filename().string() + ")");
  }
  return dirs;
}

void expect_no_edge(const fs::path& root, const std::string& from, const std::set<std::string>& forbidden) {
  for (const std::string& d : included_dirs(root, from)) {
    const std::string dir = d.substr(0, d.find(' '));
    EXPECT_EQ(forbidden.count(dir), 0u) << "src/" << from << " includes " << d;
  }
}

TEST(Layering, DependenciesPointOneWay) {
  const char* root = std::getenv("OTCAL_SOURCE_DIR");
  if (root == nullptr) GTEST_SKIP() << "OTCAL_SOURCE_DIR is not set";
  const fs::path r(root);
  ASSERT_FALSE(included_dirs(r, "sinkhorn").empty()) << "the scan finds includes at all";
  expect_no_edge(r, "sinkhorn", {"sparsify", "calibration", "cli", "io"});
  expect_no_edge(r, "sparsify", {"sinkhorn", "calibration", "cli", "io"});
  expect_no_edge(r, "geometry", {"sinkhorn", "sparsify", "calibration", "cli", "io"});
  expect_no_edge(r, "core", {"geometry", "sinkhorn", "sparsify", "calibration", "cli", "io"});
  expect_no_edge(r, "calibration", {"sinkhorn", "sparsify", "geometry", "cli", "io"});
  expect_no_edge(r, "cpu", {"sinkhorn", "calibration", "cli", "io"});
}

}  // namespace
