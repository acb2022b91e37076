#!/usr/bin/env bash
# The README's "Gate your own kernels in CI" steps, as a user runs them: install normcheck, build
# the example plugin out of tree with find_package(normcheck), gate it with JUnit output, and see
# a crashing plugin reported, not fatal.
# Usage: check_install.sh BUILD_DIR SOURCE_DIR CRASHING_PLUGIN WORK_DIR
set -euo pipefail
build=$1 src=$2 crashing=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cp -r "$src/examples/plugin-c" "$work/plugin-c"
cmake -S "$work/plugin-c" -B "$work/plugin-c/build" -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/plugin-c/build" > "$work/build.log"
"$work/prefix/bin/normcheck" --backend "$work/plugin-c/build/libnormcheck_example.so" --suite edge \
  --junit "$work/junit.xml" -q
grep -q '<testsuites name="normcheck"' "$work/junit.xml"
set +e
"$work/prefix/bin/normcheck" --backend "$crashing" --suite smoke -q > "$work/crash.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || { echo "crashing plugin: exit $rc, expected 1"; cat "$work/crash.log"; exit 1; }
grep -q "CRASH" "$work/crash.log"
grep -q "errors" "$work/crash.log"
test -f "$work/prefix/share/normcheck/suites/edge.txt"
echo "install, out-of-tree plugin build, CI gate and crash isolation: OK"
