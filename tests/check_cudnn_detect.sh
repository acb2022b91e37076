#!/usr/bin/env bash
# cuDNN detection (cmake/cudnn.cmake, the cuDNN block of CMakeLists.txt): configures the whole
# project in scratch build directories and checks the one line each configure prints.
#  1. OFF: the configure succeeds and says in one line that the backend is not built (OFF).
#  2. AUTO with NORMCHECK_CUDA_ROOT = a directory that does not exist (CUDA absent): the configure
#     succeeds, one line names what is missing where, and NORMCHECK_HAVE_CUDNN is not set.
#  3. ON with the same root: the configure fails, naming what is missing.
#  4. AUTO with NORMCHECK_CUDA_ROOT = the toolkit this build found (when it found one): one line
#     names the cuDNN version. Skipped, saying so, when this build has no cuDNN.
# Usage: check_cudnn_detect.sh SOURCE_DIR WORK_DIR [CUDA_ROOT_FOUND]
set -euo pipefail
src=$1 work=$2 found=${3:-}
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAILED: $*"; exit 1; }
configure() {  # configure NAME ARGS... ; sets rc, log
  log=$work/$1.log
  local name=$1
  shift
  rc=0
  cmake -S "$src" -B "$work/$name" -G Ninja -DNORMCHECK_BUILD_TESTS=OFF -DNORMCHECK_BUILD_BENCH=OFF \
    -DNORMCHECK_WITH_ONEDNN=OFF -DNORMCHECK_PYTHON=OFF -DNORMCHECK_FUZZ=OFF "$@" > "$log" 2>&1 || rc=$?
}
lines() { grep -c "$1" "$log" || true; }

configure off -DNORMCHECK_WITH_CUDNN=OFF
((rc == 0)) || fail "OFF: configure failed (see $log)"
[[ $(lines 'normcheck:.*cudnn') == 1 ]] || fail "OFF: expected one cudnn line in $log"
grep -q 'the cudnn backend is not built (NORMCHECK_WITH_CUDNN=OFF)' "$log" || fail "OFF: no reason in $log"

configure absent -DNORMCHECK_WITH_CUDNN=AUTO -DNORMCHECK_CUDA_ROOT="$work/no-cuda-here"
((rc == 0)) || fail "AUTO without CUDA: configure failed (see $log)"
[[ $(lines 'normcheck:.*cudnn') == 1 ]] || fail "AUTO without CUDA: expected one cudnn line in $log"
grep -q "the cudnn backend is not built: no cuda_runtime.h, libcudart, cudnn_backend.h, libcudnn in NORMCHECK_CUDA_ROOT=$work/no-cuda-here" "$log" \
  || fail "AUTO without CUDA: the line does not say what is missing where ($log)"
grep -q '^NORMCHECK_HAVE_CUDNN' "$work/absent/CMakeCache.txt" && fail "AUTO without CUDA: NORMCHECK_HAVE_CUDNN cached"
grep -q 'NORMCHECK_HAVE_CUDNN' "$work/absent/build.ninja" && fail "AUTO without CUDA: the backend is compiled in"

configure on -DNORMCHECK_WITH_CUDNN=ON -DNORMCHECK_CUDA_ROOT="$work/no-cuda-here"
((rc != 0)) || fail "ON without CUDA: configure succeeded"
# CMake wraps a FATAL_ERROR message over several lines: join them first.
tr -s ' \n' ' ' < "$log" | grep -q 'NORMCHECK_WITH_CUDNN=ON but the cudnn backend cannot be built: no cuda_runtime.h' \
  || fail "ON: no reason in $log"

if [[ -n $found ]]; then
  configure found -DNORMCHECK_WITH_CUDNN=AUTO -DNORMCHECK_CUDA_ROOT="$found"
  ((rc == 0)) || fail "AUTO with $found: configure failed (see $log)"
  grep -q 'normcheck: cudnn backend against cuDNN 9\.' "$log" || fail "AUTO with $found: cuDNN not found ($log)"
else
  echo "skipped case 4: this build found no cuDNN"
fi
echo "cudnn detection: OFF, AUTO without CUDA, ON without CUDA${found:+, AUTO with $found}: ok"
