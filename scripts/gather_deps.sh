#!/usr/bin/env bash
# Copies otcal's header-only dependencies (Eigen, CLI11, nlohmann-json) with their CMake package
# files, zlib's headers and static library, and the GoogleTest sources from this machine into
# .deps/ (git-ignored), so that a machine with only the CUDA toolkit, CMake and a compiler (the lent
# GPU machines, a bare container) can build and test otcal:
#
#   scripts/gather_deps.sh            # here, where the packages are installed
#   cmake -S . -B build -DOTCAL_DEPS_DIR=$PWD/.deps -DOTCAL_GTEST_SOURCE_DIR=$PWD/.deps/googletest
#
# The top-level CMakeLists adds OTCAL_DEPS_DIR to CMAKE_PREFIX_PATH. The package files compute their
# prefix from their own location (three folders up), so the layout below mirrors /usr:
#   .deps/include/{eigen3,CLI,nlohmann,zlib.h,zconf.h}
#   .deps/share/eigen3/cmake/  .deps/share/cmake/{CLI11,nlohmann_json}/  .deps/lib/libz.a
#   .deps/googletest/
# zlib is carried because find_package(ZLIB) is REQUIRED and a CUDA base image may lack zlib1g-dev.
# Source folders can be overridden through the environment (EIGEN_INCLUDE, CLI11_INCLUDE, ...).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.deps}"

EIGEN_INCLUDE="${EIGEN_INCLUDE:-/usr/include/eigen3}"
EIGEN_CMAKE="${EIGEN_CMAKE:-/usr/share/eigen3/cmake}"
CLI11_INCLUDE="${CLI11_INCLUDE:-/usr/include/CLI}"
NLOHMANN_INCLUDE="${NLOHMANN_INCLUDE:-/usr/include/nlohmann}"
GTEST_SOURCE="${GTEST_SOURCE:-/usr/src/googletest}"

# A package's CMake folder: the first of the candidates that holds <Name>Config.cmake.
find_config() {  # name candidates...
  local name="$1"; shift
  for dir in "$@"; do
    if [[ -f "$dir/${name}Config.cmake" || -f "$dir/$(echo "$name" | tr '[:upper:]' '[:lower:]')-config.cmake" ]]; then
      echo "$dir"; return 0
    fi
  done
  return 1
}

need() {  # path what
  if [[ ! -e "$1" ]]; then
    echo "gather_deps: $2 not found at $1 (install it, or set the matching environment variable)" >&2
    exit 1
  fi
}

need "$EIGEN_INCLUDE/Eigen/Core" "Eigen headers"
need "$CLI11_INCLUDE/CLI.hpp" "CLI11 headers"
need "$NLOHMANN_INCLUDE/json.hpp" "nlohmann-json headers"
need "$GTEST_SOURCE/CMakeLists.txt" "GoogleTest sources"
CLI11_CMAKE="${CLI11_CMAKE:-$(find_config CLI11 /usr/share/cmake/CLI11 /usr/lib/cmake/CLI11 /usr/lib/x86_64-linux-gnu/cmake/CLI11 || true)}"
NLOHMANN_CMAKE="${NLOHMANN_CMAKE:-$(find_config nlohmann_json /usr/share/cmake/nlohmann_json /usr/lib/cmake/nlohmann_json /usr/lib/x86_64-linux-gnu/cmake/nlohmann_json || true)}"
need "$EIGEN_CMAKE/Eigen3Config.cmake" "Eigen3 CMake package"
need "${CLI11_CMAKE:-/nonexistent}/CLI11Config.cmake" "CLI11 CMake package"
need "${NLOHMANN_CMAKE:-/nonexistent}/nlohmann_jsonConfig.cmake" "nlohmann_json CMake package"

rm -rf "$dest"
mkdir -p "$dest/include" "$dest/share/eigen3" "$dest/share/cmake" "$dest/lib"

cp -a "$EIGEN_INCLUDE" "$dest/include/eigen3"
cp -a "$EIGEN_CMAKE" "$dest/share/eigen3/cmake"
cp -a "$CLI11_INCLUDE" "$dest/include/CLI"
cp -a "$CLI11_CMAKE" "$dest/share/cmake/CLI11"
cp -a "$NLOHMANN_INCLUDE" "$dest/include/nlohmann"
cp -a "$NLOHMANN_CMAKE" "$dest/share/cmake/nlohmann_json"
cp -a "$GTEST_SOURCE" "$dest/googletest"

# zlib: headers plus the static library (FindZLIB accepts it; no runtime libz.so needed).
zlib_h="$(echo '#include <zlib.h>' | ${CXX:-c++} -E -x c++ - 2>/dev/null | sed -n 's/^# [0-9]* "\(.*zlib\.h\)".*/\1/p' | head -n1)"
zlib_a="$(${CXX:-c++} -print-file-name=libz.a)"
if [[ -n "$zlib_h" && -f "$zlib_h" && -f "$zlib_a" && "$zlib_a" = /* ]]; then
  cp "$zlib_h" "$dest/include/"
  zconf_h="$(dirname "$zlib_h")/zconf.h"
  [[ -f "$zconf_h" ]] || zconf_h="$(echo '#include <zconf.h>' | ${CXX:-c++} -E -x c++ - 2>/dev/null | sed -n 's/^# [0-9]* "\(.*zconf\.h\)".*/\1/p' | head -n1)"
  cp "$zconf_h" "$dest/include/"
  cp "$zlib_a" "$dest/lib/libz.a"
else
  echo "gather_deps: warning: zlib headers or libz.a not found; the target machine needs zlib1g-dev" >&2
fi

# Provenance, for the results files.
{
  echo "gathered $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  grep -m1 -h 'EIGEN_WORLD_VERSION\|EIGEN_MAJOR_VERSION\|EIGEN_MINOR_VERSION' "$EIGEN_INCLUDE/Eigen/src/Core/util/Macros.h" 2>/dev/null | tr -s ' ' || true
  grep -h '^#define CLI11_VERSION ' "$CLI11_INCLUDE/Version.hpp" 2>/dev/null || true
  grep -rh 'define NLOHMANN_JSON_VERSION_' "$NLOHMANN_INCLUDE" 2>/dev/null | sort -u | head -n3 || true
  grep -h '^#define ZLIB_VERSION' "$dest/include/zlib.h" 2>/dev/null || true
} > "$dest/VERSIONS.txt"

echo "gather_deps: wrote $dest ($(du -sh "$dest" | cut -f1))"
echo "configure with: -DOTCAL_DEPS_DIR=$dest -DOTCAL_GTEST_SOURCE_DIR=$dest/googletest"
