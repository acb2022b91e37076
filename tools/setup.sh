#!/usr/bin/env bash
# Installs everything normcheck's build, tests and reports need, from Debian packages by name
# (chromium only for the test that opens the report page headless).
#
# Idempotent: packages already installed are left alone and `apt-get update` runs only when
# something is missing. Works as root or through sudo. Downloads nothing but Debian packages.
#
# Exit codes: 0 everything present; 2 not root and no sudo; apt-get's own code on an apt failure.
set -euo pipefail

packages=(
  g++ cmake ninja-build make pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libboost-dev libmpfr-dev libgmp-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libdnnl-dev ocl-icd-opencl-dev opencl-headers xz-utils
  libtorch-dev
  python3 python3-matplotlib python3-numpy python3-jsonschema
  libssl-dev python3-dev pybind11-dev python3-pytest
  chromium
  clang-16 libclang-rt-16-dev
  slurm-wlm munge
)

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup.sh: needs root or sudo to install Debian packages" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup.sh: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
