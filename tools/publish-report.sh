#!/usr/bin/env bash
# tools/publish-report.sh — the published comparison of real libraries, in one command.
#
# Builds (or reuses) normcheck against Debian's oneDNN 2.6.3 with the pytorch backend, and a
# second tree against oneDNN 3.7.2 when tools/build-onednn.sh has built it; runs naive, onednn
# (2.6.3), onednn (3.7.2, when built) and pytorch over every correctness suite in every dtype
# (f32, f64, bf16, f16) and both layouts (NCHW, NHWC), plus `normcheck diagnose`,
# `normcheck metamorphic` and a short throughput bench per library; writes the Markdown and HTML
# page (reports/build_report.py, through `normcheck report`) with its plots into
# docs/results/<date>-<machine>/, next to the JSON it was built from.
#
# A dtype or layout a library lacks is one UNSUPPORTED line per case with the library's reason,
# never a silent gap. The README.md of the result directory (findings per library) is written by
# hand from these files; this script writes SUMMARY.md, the counts it can compute.
#
# Usage: tools/publish-report.sh [--suites small|models|all] [--out DIR] [--build-dir DIR]
#                                [--onednn-root PREFIX] [--bench-suite NAME] [--jobs N] [--no-build]
#   --suites small   smoke, edge, coverage, adversarial (default; ~2 min on 2 loaded cores)
#            models  small + resnet50_bn, sd_unet_gn, transformer_norms (f32 and bf16 only;
#                    ~18 min: 559 s naive, 195 s oneDNN, 310 s PyTorch on 2 loaded cores)
#            all     models + size_sweep, large, model_scale (hours; memory-checked per case)
#   --out DIR        result directory (default docs/results/<UTC date>-<hostname -s>)
#   --build-dir DIR  the Debian-oneDNN + pytorch tree (default build/publish-debian); it is
#                    configured with -DNORMCHECK_ONEDNN_ROOT=/usr so that a oneDNN in the cache
#                    cannot replace Debian's 2.6.3 there
#   --onednn-root P  the second oneDNN (default ~/.cache/normcheck/onednn-3.7.2/install)
#   --bench-suite S  suite for the throughput bench (default smoke)
#   --jobs N         build jobs (default 2)
#   --no-build       use the trees as they are
#
# Exit codes: 0 written; 2 usage error or a build failure; the failing normcheck's own code
# otherwise (1 = FAIL is expected for real libraries and does not stop the script).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
suites_set=small
out=""
build="$root/build/publish-debian"
cache="${NORMCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/normcheck}"
onednn_root="$cache/onednn-3.7.2/install"
bench_suite=smoke
jobs=2
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --suites) suites_set=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --onednn-root) onednn_root=$2; shift 2 ;;
    --bench-suite) bench_suite=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "publish-report: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$suites_set" in
  small) suites=(smoke edge coverage adversarial); big=() ;;
  models) suites=(smoke edge coverage adversarial); big=(resnet50_bn sd_unet_gn transformer_norms) ;;
  all) suites=(smoke edge coverage adversarial); big=(resnet50_bn sd_unet_gn transformer_norms size_sweep large model_scale) ;;
  *) echo "publish-report: --suites must be small, models or all" >&2; exit 2 ;;
esac
[ -n "$out" ] || out="$root/docs/results/$(date -u +%Y-%m-%d)-$(hostname -s)"
out=$(realpath -m "$out")
build=$(realpath -m "$build")
py=/usr/bin/python3
[ -x "$py" ] || py=python3
raw="$build/publish-raw"  # large intermediate files stay in the build tree
mkdir -p "$out" "$raw"
log() { printf 'publish-report: %s\n' "$*"; }

configure_and_build() {  # DIR EXTRA-CMAKE-ARGS...
  local dir=$1; shift
  if [ "$do_build" = 1 ]; then
    nice -n 10 cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
      { log "configure of $dir failed; see $dir.configure.log"; exit 2; }
    grep -E '^-- normcheck:' "$dir.configure.log" | sed 's/^/  /'
    nice -n 10 cmake --build "$dir" -j "$jobs" --target normcheck >"$dir.build.log" 2>&1 ||
      { log "build of $dir failed; see $dir.build.log"; exit 2; }
  fi
  [ -x "$dir/normcheck" ] || { log "$dir/normcheck missing (run without --no-build)"; exit 2; }
}

mkdir -p "$(dirname "$build")"
log "tree 1: $build (Debian oneDNN, pytorch)"
configure_and_build "$build" -DNORMCHECK_ONEDNN_ROOT=/usr -DNORMCHECK_WITH_PYTORCH=AUTO
bin1="$build/normcheck"
bin2=""
if [ -f "$onednn_root/lib/cmake/dnnl/dnnlConfig.cmake" ]; then
  build2="$(dirname "$build")/publish-onednn-$(basename "$(dirname "$onednn_root")")"
  log "tree 2: $build2 (oneDNN at $onednn_root)"
  configure_and_build "$build2" -DNORMCHECK_ONEDNN_ROOT="$onednn_root" -DNORMCHECK_WITH_ONEDNN=ON \
    -DNORMCHECK_WITH_PYTORCH=OFF -DNORMCHECK_BUILD_TESTS=OFF -DNORMCHECK_BUILD_BENCH=OFF \
    -DNORMCHECK_PYTHON=OFF -DNORMCHECK_FUZZ=OFF
  bin2="$build2/normcheck"
else
  log "skipped: no second oneDNN at $onednn_root (tools/build-onednn.sh builds 3.7.2 there)"
fi

# Runs: label, binary, backend. Every library gets every dtype and both layouts; what it lacks
# is answered UNSUPPORTED with its reason.
list1=$("$bin1" list)
list2=""
[ -n "$bin2" ] && list2=$("$bin2" list)
version_of() {  # LISTING BACKEND LIBRARY: the library version `normcheck list` shows, or nothing
  sed -n "s/^  $2  *$3 \([0-9.]*\).*/\1/p" <<<"$1"
}
runs=("naive|$bin1|naive")
v=$(version_of "$list1" onednn oneDNN)
if [ -n "$v" ]; then runs+=("onednn-$v|$bin1|onednn"); else log "skipped: onednn backend not built in $build"; fi
if [ -n "$bin2" ]; then
  v2=$(version_of "$list2" onednn oneDNN)
  if [ -n "$v2" ] && [ "$v2" != "$v" ]; then runs+=("onednn-$v2|$bin2|onednn"); else log "skipped: tree 2 has no second oneDNN version"; fi
fi
v=$(version_of "$list1" pytorch PyTorch)
if [ -n "$v" ]; then runs+=("pytorch-$v|$bin1|pytorch"); else log "skipped: pytorch backend not built in $build (install libtorch-dev)"; fi

# Suites expanded over dtype × layout, one file per suite, so that one run per library covers
# them all (the descriptor's own dtype= and layout= are replaced).
expand() {  # SUITE DTYPES...
  local name=$1; shift
  "$py" - "$root/suites/$name.txt" "$raw/suites/$name.txt" "$@" <<'EOF'
import pathlib, re, sys
src, dst, dtypes = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
dst.parent.mkdir(parents=True, exist_ok=True)
lines, seen = [], set()
for line in src.read_text().splitlines():
    if not line.strip() or line.startswith("#"):
        if line.startswith("# title:"):
            lines.append(line + f" — expanded over dtype ({', '.join(dtypes)}) × layout (nchw, nhwc)")
        continue
    desc, _, note = line.partition("  #")
    fields = [f for f in desc.strip().split(",") if not re.match(r"^(dtype|layout)=", f)]
    for dt in dtypes:
        for lay in ("nchw", "nhwc"):
            d = ",".join(fields[:1] + [f"dtype={dt}", f"layout={lay}"] + fields[1:])
            if d not in seen:
                seen.add(d)
                lines.append(d + ("  #" + note if note else ""))
dst.write_text("\n".join(lines) + "\n")
EOF
}
suite_args=()
# (run from $raw, so that the reports name them suites/NAME.txt)
for s in "${suites[@]}"; do expand "$s" f32 f64 bf16 f16; suite_args+=(--suite "suites/$s.txt"); done
for s in "${big[@]}"; do expand "$s" f32 bf16; suite_args+=(--suite "suites/$s.txt"); done

inputs=()
for r in "${runs[@]}"; do
  IFS='|' read -r label bin backend <<<"$r"
  log "$label: correctness: ${suites[*]} × 4 dtypes${big[*]:+, ${big[*]} × f32, bf16}; × 2 layouts"
  start=$(date +%s)
  rc=0
  (cd "$raw" && nice -n 5 "$bin" --backend "$backend" "${suite_args[@]}" -q --json "$raw/$label.json" \
    --report "$out/$label.md") >"$out/$label.txt" 2>&1 || rc=$?
  log "$label: exit $rc in $(( $(date +%s) - start )) s: $(tail -1 "$out/$label.txt")"
  [ "$rc" -le 1 ] || [ "$rc" -eq 5 ] || { log "$label: normcheck failed (exit $rc); see $out/$label.txt"; exit "$rc"; }
  inputs+=("$raw/$label.json")
  rc=0
  "$bin" diagnose --backend "$backend" --json "$out/$label-diagnose.json" >"$out/$label-diagnose.txt" 2>&1 || rc=$?
  log "$label: diagnose exit $rc"
  rc=0
  "$bin" metamorphic --backend "$backend" --suite smoke --suite edge --suite coverage --suite adversarial \
    --json "$out/$label-metamorphic.json" >"$out/$label-metamorphic.txt" 2>&1 || rc=$?
  log "$label: metamorphic exit $rc: $(tail -1 "$out/$label-metamorphic.txt")"
  rc=0
  "$bin" bench --backend "$backend" --suite "$bench_suite" --repetitions 5 --min-time 0.05 \
    --json "$out/$label-bench.json" >"$out/$label-bench.txt" 2>&1 || rc=$?
  log "$label: bench exit $rc"
  [ "$rc" -eq 0 ] && inputs+=("$out/$label-bench.json")
done

# The result JSON next to the page, compacted (same content, no indentation); one still over
# 2 MB is kept xz-compressed instead.
for f in "${inputs[@]}"; do
  case "$f" in
    "$raw"/*)
      "$py" -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"), ensure_ascii=False)' \
        "$f" "$out/$(basename "$f")"
      if [ "$(stat -c %s "$out/$(basename "$f")")" -gt 2000000 ]; then xz -f -9 "$out/$(basename "$f")"; fi ;;
  esac
done
page_inputs=("${inputs[@]}")
for f in "$out"/*-diagnose.json "$out"/*-metamorphic.json; do [ -f "$f" ] && page_inputs+=("$f"); done
title="normcheck: naive, oneDNN and PyTorch on $(hostname -s), $(date -u +%Y-%m-%d)"
if ! "$bin1" report "${page_inputs[@]}" -o "$out" --title "$title" >"$raw/report.log" 2>&1; then
  log "the report builder refused the diagnose/metamorphic JSON ($(tail -1 "$raw/report.log")); page from results and benches only"
  "$bin1" report "${inputs[@]}" -o "$out" --title "$title"
fi

# SUMMARY.md: counts per library × op × pass × dtype, from the result JSON.
"$py" - "$out/SUMMARY.md" "${inputs[@]}" <<'EOF'
import collections, json, pathlib, sys
rows = collections.defaultdict(collections.Counter)
libs = []
for path in sys.argv[2:]:
    d = json.loads(pathlib.Path(path).read_text())
    if d.get("schema") != "normcheck-result/1":
        continue
    b = d["backend"]
    lib = f"{b['name']} ({b['version'].split(' (')[0]})"
    libs.append(lib)
    for c in d["cases"]:
        key = (lib, c["op"], c["pass"], c["dtype"])
        v = c["verdict"]
        rows[key]["WEAK" if v == "PASS" and c.get("weak_check") else v] += 1
verdicts = ["PASS", "WEAK", "WARN", "FAIL", "ERROR", "UNSUPPORTED", "NOT_CERTIFIABLE"]
out = ["# Counts per library × op × pass × dtype (both layouts together)", "",
       "Generated by tools/publish-report.sh from the result JSON. WEAK: passed, but the budget is "
       "too wide there to tell right from wrong (docs/comparison.md); every non-passing case is "
       "listed with its reason in the library's .txt.", "",
       "| library | op | pass | dtype | " + " | ".join(verdicts) + " |",
       "|---|---|---|---|" + "---:|" * len(verdicts)]
for key in sorted(rows):
    cnt = rows[key]
    out.append("| " + " | ".join(key) + " | " + " | ".join(str(cnt.get(v, 0)) for v in verdicts) + " |")
others = sorted({v for c in rows.values() for v in c} - set(verdicts))
if others:
    out.append("")
    out.append("Other verdicts: " + ", ".join(others))

# Every FAIL and WARN of a library other than naive, with its evidence, and every violated
# metamorphic relation (from the *-metamorphic.json next to SUMMARY.md).
def fmt(v):
    return f"{float(v):.6g}"
out += ["", "# Every FAIL and WARN (libraries other than naive)", "",
        "| library | verdict | case | failing tensors: worst element got / expected (ratio to budget) | suspected cause |",
        "|---|---|---|---|---|"]
for path in sys.argv[2:]:
    d = json.loads(pathlib.Path(path).read_text())
    if d.get("schema") != "normcheck-result/1" or d["backend"]["name"] == "naive":
        continue
    lib = f"{d['backend']['name']} ({d['backend']['version'].split(' (')[0]})"
    for c in d["cases"]:
        if c["verdict"] not in ("FAIL", "WARN"):
            continue
        bad = [t for t in c["tensors"] if not t["pass"] or t.get("warn")]
        ev = "; ".join(f"{t['name']} {t['over_tolerance']}/{t['numel']} at {t['worst']['coords']}: "
                       f"{fmt(t['worst']['got'])} / {fmt(t['worst']['expected'])} ({fmt(t['worst_ratio'])}×"
                       + (f", {fmt(t['worst_ratio_prob'])}× the probabilistic budget" if t.get('worst_ratio_prob', 0) > 1 else "")
                       + ")" for t in bad)
        cause = c["suspected_cause"].replace("|", "\\|") or "—"
        out.append(f"| {lib} | {c['verdict']} | `{c['descriptor']}` | {ev} | {cause} |")
out += ["", "# Every violated metamorphic relation", "", "| library | relation | case | detail |", "|---|---|---|---|"]
for mpath in sorted(pathlib.Path(sys.argv[1]).parent.glob("*-metamorphic.json")):
    m = json.loads(mpath.read_text())
    for r in m.get("results", []):
        if not r.get("holds", True) and not r.get("skipped"):
            out.append(f"| {mpath.name.removesuffix('-metamorphic.json')} | {r['relation']} | `{r['descriptor']}` | "
                       f"{r['detail']} ({fmt(r['worst_ratio'])}× the allowance) |")
out += ["", "Reproduce any line: `normcheck --backend NAME --case DESCRIPTOR` (relations: "
        "`normcheck metamorphic --backend NAME --case DESCRIPTOR`)."]
pathlib.Path(sys.argv[1]).write_text("\n".join(out) + "\n")
EOF
log "written: $out (index.html, report.md, SUMMARY.md, per-library .txt/.md/.json)"
