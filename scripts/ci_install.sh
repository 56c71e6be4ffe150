#!/usr/bin/env bash
# Installs what otcal needs to build and test, from Debian/Ubuntu packages. Idempotent.
# The CUDA toolkit is not installed here: when /usr/local/cuda/bin/nvcc exists the build uses it.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
packages=(build-essential cmake ninja-build ccache git pkg-config libeigen3-dev libcli11-dev
          nlohmann-json3-dev libgtest-dev googletest zlib1g-dev python3 python3-numpy python3-scipy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci_install: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "ci_install: all packages present"
fi
