#!/usr/bin/env bash
# oneDNN detection (cmake/onednn.cmake, the oneDNN block of CMakeLists.txt): configures the whole
# project in scratch build directories with a oneDNN whose CMake config fails.
#  1. AUTO, NORMCHECK_ONEDNN_ROOT = a fake prefix whose dnnl-config.cmake calls
#     find_package(NormcheckNoSuchDependency REQUIRED): the configure succeeds, says so in exactly
#     one line naming the failing config and the missing package, and does not build the backend.
#  2. ON, the same prefix: the configure fails and its output names the missing package.
#  3. AUTO, the system's oneDNN with OpenCL hidden (CMAKE_DISABLE_FIND_PACKAGE_OpenCL=ON), when that
#     config calls find_package(OpenCL REQUIRED) as bookworm's libdnnl-dev does: the configure
#     succeeds and the one line names OpenCL; without the flag, where the OpenCL library and
#     headers are installed, the same oneDNN is used (the probe does not reject a working config).
#     Skipped, saying why, when no such config exists or OpenCL is not installed.
# Usage: check_onednn_detect.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/fake/lib/cmake/dnnl"
export NORMCHECK_CACHE=$work/no-cache  # no tools/build-onednn.sh install is preferred
fake_config=$work/fake/lib/cmake/dnnl/dnnl-config.cmake
cat > "$fake_config" <<'CFG'
set(dnnl_VERSION 9.9.9)
find_package(NormcheckNoSuchDependency REQUIRED)
CFG
fail() { echo "FAILED: $*"; exit 1; }

configure() {  # configure NAME ARGS... ; sets rc, log
  log=$work/$1.log
  local name=$1
  shift
  rc=0
  cmake -S "$src" -B "$work/$name" -G Ninja -DNORMCHECK_BUILD_TESTS=OFF -DNORMCHECK_BUILD_BENCH=OFF "$@" > "$log" 2>&1 || rc=$?
}
one_line() {  # one_line PATTERN...: exactly one "oneDNN unusable" line, matching every PATTERN
  local lines
  lines=$(grep -c 'normcheck: oneDNN unusable' "$log" || true)
  [ "$lines" -eq 1 ] || fail "$log: $lines 'oneDNN unusable' lines, expected 1"
  for p in "$@"; do
    grep 'normcheck: oneDNN unusable' "$log" | grep -qF -- "$p" || fail "$log: the line does not name '$p'"
  done
  ! grep -q 'oneDNN backend against' "$log" || fail "$log: the backend is built anyway"
}

configure auto_broken -DNORMCHECK_WITH_ONEDNN=AUTO -DNORMCHECK_ONEDNN_ROOT="$work/fake"
[ "$rc" -eq 0 ] || { tail -n 20 "$log"; fail "AUTO with a failing config: configure exit $rc, expected 0"; }
one_line "$fake_config" NormcheckNoSuchDependency
echo "AUTO, failing config: configure exit 0, one line: $(grep 'oneDNN unusable' "$log")"

configure on_broken -DNORMCHECK_WITH_ONEDNN=ON -DNORMCHECK_ONEDNN_ROOT="$work/fake"
[ "$rc" -ne 0 ] || fail "ON with a failing config: configure exit 0, expected an error"
grep -q NormcheckNoSuchDependency "$log" || fail "ON: the error does not name the missing package"
echo "ON, failing config: configure exit $rc, naming NormcheckNoSuchDependency"

system_config=$(grep -l 'find_package(OpenCL REQUIRED)' /usr/lib/*/cmake/dnnl/dnnl-config.cmake \
                /usr/lib/cmake/dnnl/dnnl-config.cmake 2>/dev/null | head -n 1 || true)
if [ -z "$system_config" ]; then
  echo "SKIPPED case 3: no system dnnl-config.cmake that requires OpenCL"
else
  configure auto_no_opencl -DNORMCHECK_WITH_ONEDNN=AUTO -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=ON
  [ "$rc" -eq 0 ] || { tail -n 20 "$log"; fail "AUTO without OpenCL: configure exit $rc, expected 0"; }
  one_line "$system_config" OpenCL
  echo "AUTO, system oneDNN without OpenCL: configure exit 0, one line: $(grep 'oneDNN unusable' "$log")"
  if [ -z "$(find /usr/lib -maxdepth 2 -name libOpenCL.so 2>/dev/null)" ] || [ ! -f /usr/include/CL/cl.h ]; then
    echo "SKIPPED case 3b: no OpenCL library and headers here (ocl-icd-opencl-dev, opencl-headers), so the" \
         "system oneDNN config cannot work"
  else
    configure auto_system -DNORMCHECK_WITH_ONEDNN=AUTO
    [ "$rc" -eq 0 ] || { tail -n 20 "$log"; fail "AUTO with the system oneDNN: configure exit $rc"; }
    grep -q 'oneDNN backend against' "$log" || fail "$log: the system oneDNN (OpenCL present) is not used"
    ! grep -q 'oneDNN unusable' "$log" || fail "$log: the system oneDNN is reported unusable"
    echo "AUTO, system oneDNN with OpenCL: $(grep 'oneDNN backend against' "$log")"
  fi
fi
echo "oneDNN detection: OK"
