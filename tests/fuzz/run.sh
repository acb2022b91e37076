#!/usr/bin/env bash
# Runs every libFuzzer harness built in BUILD_DIR (default build/fuzz, from `cmake --preset fuzz
# && cmake --build --preset fuzz`) for SECONDS each (default 60), starting from the seed corpus in
# tests/fuzz/corpus/NAME/ (new inputs go to a temporary directory; the committed corpus is only
# read). Prints one line per harness with its number of runs.
#
# Exit codes: 0 no finding; 1 a harness found a crash, leak, sanitizer error or property
# violation (its log tail is printed and the input kept under BUILD_DIR/findings/); 2 no
# harness built.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
build=${1:-build/fuzz}
seconds=${2:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/findings"
mapfile -t harnesses < <(find "$build/tests/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' | sort)
if [ "${#harnesses[@]}" -eq 0 ]; then
  echo "run.sh: no fuzz_* harness in $build/tests/fuzz (cmake --preset fuzz && cmake --build --preset fuzz)" >&2
  exit 2
fi
status=0
for exe in "${harnesses[@]}"; do
  name=${exe##*/fuzz_}
  mkdir -p "$work/$name"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build/findings/$name-")
  [ -f "$src/$name.dict" ] && args+=(-dict="$src/$name.dict")
  if "$exe" "${args[@]}" "$work/$name" "$src/corpus/$name" >"$work/$name.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name.log")
    echo "fuzz_$name: ${runs:-?} runs in $seconds s, no finding"
  else
    echo "fuzz_$name: FINDING (input kept under $build/findings/)"
    tail -n 40 "$work/$name.log"
    status=1
  fi
done
exit $status
