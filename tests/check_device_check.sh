#!/usr/bin/env bash
# tools/device-check.sh on a machine without a CUDA device: it builds and runs nothing, says so in
# one line and exits 3 (its documented code), with the reason in $OUT/summary.txt. Where the
# machine has an NVIDIA device the script would build and run for minutes, so this check is
# skipped (exit 77) there, saying why.
# Usage: check_device_check.sh SOURCE_DIR WORK_DIR
set -uo pipefail
src=$1 work=$2
if command -v nvidia-smi >/dev/null 2>&1 || [[ -e /dev/nvidia0 ]]; then
  echo "skipped: this machine has an NVIDIA driver or device; run tools/device-check.sh itself"
  exit 77
fi
bash -n "$src/tools/device-check.sh" || { echo "FAILED: shell syntax"; exit 1; }
rm -rf "$work" && mkdir -p "$work"
out=$(cd "$src" && OUT="$work/out" BUILD="$work/build" bash tools/device-check.sh 2>&1)
rc=$?
echo "$out"
((rc == 3)) || { echo "FAILED: exit $rc, expected 3"; exit 1; }
[[ $(wc -l <<<"$out") == 1 ]] || { echo "FAILED: expected one line"; exit 1; }
grep -q '^device-check: no CUDA device: .*nothing built or run (exit 3)$' <<<"$out" || { echo "FAILED: message"; exit 1; }
grep -q '^no-device' "$work/out/summary.txt" || { echo "FAILED: summary.txt"; exit 1; }
[[ ! -e $work/build ]] || { echo "FAILED: it built something"; exit 1; }
echo "device-check without a device: exit 3, one line: ok"
