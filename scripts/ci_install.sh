#!/usr/bin/env bash
# Installs what otcal needs to build and test: Debian/Ubuntu packages, then a Python virtual
# environment (.venv, or $VENV) with the Python package's build requirements from PyPI. Idempotent.
# The CUDA toolkit is not installed here: when /usr/local/cuda/bin/nvcc exists the build uses it.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
packages=(build-essential cmake ninja-build ccache git pkg-config libeigen3-dev libcli11-dev
          nlohmann-json3-dev libgtest-dev googletest zlib1g-dev python3 python3-numpy python3-scipy
          python3-dev python3-venv libopenmpi-dev openmpi-bin)
# clang with libFuzzer, for scripts/ci_fuzz.sh only: Debian 12 and Ubuntu 24.04 ship libFuzzer in
# libclang-rt-dev; where that package does not exist the fuzz step says what is missing, and the
# build and tests above do not depend on it.
fuzz_packages=(clang libclang-rt-dev)
# The packages of "$@" that dpkg does not list as installed.
not_installed() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(not_installed "${packages[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci_install: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "ci_install: all packages present"
fi
mapfile -t fuzz_missing < <(not_installed "${fuzz_packages[@]}")
if [ ${#fuzz_missing[@]} -gt 0 ]; then
  echo "ci_install: installing ${fuzz_missing[*]} (for the fuzzers)"
  [ ${#missing[@]} -gt 0 ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${fuzz_missing[@]}" ||
    echo "ci_install: warning: could not install ${fuzz_missing[*]}; scripts/ci_fuzz.sh needs clang with libFuzzer" >&2
fi

# The Python package: built by pip (scikit-build-core + nanobind) in a virtual environment made
# from the system Python, so that its headers match (python3-dev).
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.4" numpy scipy
echo "ci_install: Python environment $VENV ready ($("$VENV/bin/python" --version))"
