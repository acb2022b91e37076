#!/usr/bin/env bash
# Builds oneDNN (CPU only) from the Debian source package of a given suite (default: stable),
# into a cache directory outside the repository, for the onednn backend to build against.
#
#   bash tools/build-onednn.sh            # Debian stable's onednn (3.7.2 in trixie)
#   ONEDNN_SUITE=testing bash tools/build-onednn.sh
#
# The system's apt sources are untouched: a private apt configuration under the cache directory
# fetches only the source package (apt-get source --download-only); no binary is downloaded.
# Result: $NORMCHECK_CACHE/onednn-<version>/install (lib/cmake/dnnl), and a symlink
# $NORMCHECK_CACHE/onednn-latest to it, which CMake looks for (see README, "oneDNN").
# Needs: cmake, ninja-build, g++ (tools/setup.sh installs them), xz-utils. About 30 minutes on 2 cores.
# Exit codes: 0 built (or already built); 1 a step failed (its output says which).
set -euo pipefail

suite=${ONEDNN_SUITE:-stable}
cache=${NORMCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/normcheck}
jobs=${JOBS:-$(nproc)}
apt_root=$cache/apt-$suite
mkdir -p "$apt_root"/{lists/partial,cache/archives/partial,etc} "$cache/src"

echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
  > "$apt_root/etc/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_root/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_root/lists" -o "Dir::Cache=$apt_root/cache" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=root")
echo "build-onednn: fetching the onednn source package from Debian $suite"
apt-get "${apt_opts[@]}" -qq update
(cd "$cache/src" && apt-get "${apt_opts[@]}" -qq source --download-only onednn)

orig=$(ls -t "$cache"/src/onednn_*.orig.tar.* | head -1)
version=$(basename "$orig" | sed -E 's/^onednn_([0-9.]+).*/\1/')
dest=$cache/onednn-$version
if [ -f "$dest/install/lib/cmake/dnnl/dnnlConfig.cmake" ]; then
  echo "build-onednn: oneDNN $version already built in $dest/install"
else
  rm -rf "$dest/source" "$dest/build"
  mkdir -p "$dest/source"
  tar -xf "$orig" -C "$dest/source" --strip-components=1
  echo "build-onednn: building oneDNN $version (CPU, OpenMP) with $jobs jobs into $dest/install"
  cmake -S "$dest/source" -B "$dest/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$dest/install" -DDNNL_CPU_RUNTIME=OMP -DDNNL_GPU_RUNTIME=NONE \
    -DONEDNN_BUILD_GRAPH=OFF -DDNNL_BUILD_EXAMPLES=OFF -DDNNL_BUILD_TESTS=OFF -DDNNL_LIBRARY_TYPE=SHARED
  cmake --build "$dest/build" -j "$jobs"
  cmake --install "$dest/build"
fi
ln -sfn "$dest" "$cache/onednn-latest"
echo "build-onednn: done: $dest/install (linked as $cache/onednn-latest)"
