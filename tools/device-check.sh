#!/usr/bin/env bash
# tools/device-check.sh — the cuDNN backend on a GPU machine, in one go (docs/backends/cudnn.md).
#
# Run from the repository root:   OUT=/some/dir bash tools/device-check.sh
# It builds normcheck with -DNORMCHECK_WITH_CUDNN=ON (reusing $BUILD when it holds a configured
# tree), then runs, against `cudnn`, `cudnn_persistent` and `cudnn_graph`: the smoke, edge and
# adversarial suites, `normcheck diagnose`, a model-scale subset and a short `normcheck bench`
# (in that order of importance), and builds the report page from the JSON. Everything lands under $OUT:
#   $OUT/logs/<step>.log       stdout+stderr of each step (the engine choices are on stderr)
#   $OUT/json/<step>.json      result, diagnose and bench JSON
#   $OUT/md/<step>.md          Markdown summaries of the runs
#   $OUT/report/               index.html and report.md (`normcheck report`, needs matplotlib)
#   $OUT/summary.txt           one line per step: status, exit code, seconds, log
# A failing step is recorded and the next one runs. Sized for < 5 minutes on one GPU with 16
# cores; DEVICE_CHECK_BUDGET_S (default 280) skips the steps that would start after it.
#
# Exit codes:
#   0  every step exited 0
#   1  at least one step failed or was skipped (summary.txt names them)
#   2  usage: not run from the repository root, or $OUT not writable
#   3  no CUDA device: nothing was built or run (the reason is printed)
#   4  the build failed ($OUT/logs/build.log)
set -u
set -o pipefail

readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_NO_DEVICE=3 EXIT_BUILD=4
OUT=${OUT:-$PWD/device-check-out}
BUILD=${BUILD:-build/device-check}
BUDGET=${DEVICE_CHECK_BUDGET_S:-280}
STEP_TIMEOUT=${DEVICE_CHECK_STEP_TIMEOUT_S:-150}
JOBS=$(nproc 2>/dev/null || echo 4)
START=$SECONDS

if [[ ! -f CMakeLists.txt || ! -d backends/cudnn ]]; then
  echo "device-check: run from the normcheck repository root (no backends/cudnn here: $PWD)" >&2
  exit $EXIT_USAGE
fi
if ! mkdir -p "$OUT/logs" "$OUT/json" "$OUT/md" 2>/dev/null || [[ ! -w $OUT ]]; then
  echo "device-check: cannot write under OUT=$OUT" >&2
  exit $EXIT_USAGE
fi
: >"$OUT/summary.txt"

# --- is there a device? Decided before building, so a machine without one costs nothing. ---
device_reason() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    local gpus
    if gpus=$(nvidia-smi -L 2>&1) && grep -q '^GPU ' <<<"$gpus"; then
      return 0
    fi
    echo "nvidia-smi lists no GPU: $(head -n1 <<<"$gpus")"
    return 1
  fi
  if [[ -e /dev/nvidia0 && -r /proc/driver/nvidia/version ]]; then
    return 0
  fi
  echo "no NVIDIA driver or GPU (no nvidia-smi, no /dev/nvidia0)"
  return 1
}
if ! why=$(device_reason); then
  echo "device-check: no CUDA device: $why; nothing built or run (exit $EXIT_NO_DEVICE)"
  echo "no-device  -  $why" >>"$OUT/summary.txt"
  exit $EXIT_NO_DEVICE
fi
nvidia-smi -L 2>/dev/null | head -n 4

# --- build ---
failed=()
record() {  # name status rc seconds
  printf '%-34s %-8s rc=%-4s %4ss  logs/%s.log\n' "$1" "$2" "$3" "$4" "$1" | tee -a "$OUT/summary.txt"
}
build() {
  local gen=()
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DNORMCHECK_WITH_CUDNN=ON \
      -DNORMCHECK_BUILD_TESTS=OFF -DNORMCHECK_BUILD_BENCH=OFF -DNORMCHECK_PYTHON=OFF -DNORMCHECK_FUZZ=OFF || return 1
  else
    cmake "$BUILD" -DNORMCHECK_WITH_CUDNN=ON || return 1
  fi
  cmake --build "$BUILD" --target normcheck -j "$JOBS"
}
t0=$SECONDS
if ! build >"$OUT/logs/build.log" 2>&1; then
  record build FAILED 1 $((SECONDS - t0))
  tail -n 20 "$OUT/logs/build.log"
  exit $EXIT_BUILD
fi
record build ok 0 $((SECONDS - t0))
NC=$BUILD/normcheck
"$NC" list >"$OUT/logs/list.log" 2>&1
grep -A1 -E '^  cudnn' "$OUT/logs/list.log"
if grep -q 'cannot run: no CUDA device' "$OUT/logs/list.log"; then
  echo "device-check: the driver sees a GPU but cuDNN cannot use it:"
  grep -m1 'cannot run' "$OUT/logs/list.log"
  exit $EXIT_NO_DEVICE
fi

# --- steps ---
step() {  # name command...   (runs within the budget and the per-step timeout)
  local name=$1
  shift
  if ((SECONDS - START > BUDGET)); then
    record "$name" SKIPPED - 0
    failed+=("$name (skipped: budget of ${BUDGET}s spent)")
    return
  fi
  local t=$SECONDS rc=0
  timeout "$STEP_TIMEOUT" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  if ((rc == 0)); then
    record "$name" ok 0 $((SECONDS - t))
  else
    record "$name" FAILED "$rc" $((SECONDS - t))
    failed+=("$name (exit $rc$( ((rc == 124)) && echo ": timed out after ${STEP_TIMEOUT}s"))")
  fi
}

# shellcheck disable=SC2034  # read through the nameref in cases_for
MODEL_CASES=(  # batch_norm first: the first three run on all three backends
  "batch_norm,pass=forward_training,dtype=f32,shape=32x2048x7x7"
  "batch_norm,pass=backward_training,dtype=f32,shape=32x2048x7x7,layout=nhwc"
  "batch_norm,pass=forward_training,dtype=f16,shape=8x256x56x56,layout=nhwc"
  "layer_norm,pass=forward_training,dtype=f32,shape=4096x1024,data=normal:1000:1"
  "layer_norm,pass=backward_training,dtype=f32,shape=4096x1024"
  "rms_norm,pass=forward_training,dtype=bf16,shape=4096x8192"
)
# shellcheck disable=SC2034
BENCH_CASES=(
  "batch_norm,pass=forward_training,dtype=f32,shape=32x256x56x56"
  "batch_norm,pass=forward_training,dtype=f16,shape=32x256x56x56,layout=nhwc"
  "batch_norm,pass=backward_training,dtype=f32,shape=32x256x56x56"
  "layer_norm,pass=forward_training,dtype=f32,shape=4096x8192"
  "rms_norm,pass=backward_training,dtype=bf16,shape=4096x8192"
)
case_args() { local c; for c in "$@"; do printf -- '--case\n%s\n' "$c"; done; }
BACKENDS=(cudnn cudnn_persistent cudnn_graph)  # the last two run batch_norm only
cases_for() {  # backend kind -> the --case arguments, one per line
  local -n list=$2
  if [[ $1 == cudnn ]]; then case_args "${list[@]}"; else case_args "${list[@]:0:3}"; fi
}

# Most important first, so that a spent budget skips the least important steps.
for s in smoke edge adversarial; do
  for b in "${BACKENDS[@]}"; do
    step "$b-$s" "$NC" --backend "$b" --suite "$s" --quiet --json "$OUT/json/$b-$s.json" --report "$OUT/md/$b-$s.md"
  done
done
for b in "${BACKENDS[@]}"; do
  step "$b-diagnose" "$NC" diagnose --backend "$b" --json "$OUT/json/$b-diagnose.json"
done
for b in "${BACKENDS[@]}"; do
  mapfile -t args < <(cases_for "$b" MODEL_CASES)
  step "$b-model-scale" "$NC" --backend "$b" "${args[@]}" --threads 0 --json "$OUT/json/$b-model-scale.json" \
    --report "$OUT/md/$b-model-scale.md"
done
for b in "${BACKENDS[@]}"; do
  mapfile -t args < <(cases_for "$b" BENCH_CASES)
  step "$b-bench" "$NC" bench --backend "$b" "${args[@]}" --repetitions 3 --min-time 0.05 --json "$OUT/json/$b-bench.json"
done

reports=()
for f in "$OUT"/json/*.json; do
  [[ $f == *-diagnose.json || ! -s $f ]] || reports+=("$f")
done
if ((${#reports[@]})); then
  step report "$NC" report "${reports[@]}" -o "$OUT/report" --title "normcheck cuDNN device check"
else
  record report SKIPPED - 0
  failed+=("report (no JSON to build it from)")
fi

echo
echo "device-check: $((SECONDS - START)) s; summary in $OUT/summary.txt"
cat "$OUT/summary.txt"
if ((${#failed[@]})); then
  printf 'device-check: %d step(s) not ok:\n' "${#failed[@]}"
  printf '  %s\n' "${failed[@]}"
  exit $EXIT_FAILED
fi
echo "device-check: every step ok"
exit 0
