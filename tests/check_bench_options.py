"""`normcheck bench` options (issue 17); no timing assertions.

Usage: check_bench_options.py NORMCHECK OUT_DIR

- `--` passes Google Benchmark flags after any option, a multi-value one included;
- a Google Benchmark flag it rejects is exit 2 before the bandwidth is measured;
- the STREAM bandwidth is measured once per machine and thread count, cached under
  $XDG_CACHE_HOME/normcheck with its date (in the JSON context too), and measured again with
  --remeasure-bandwidth;
- with an even --repetitions, the median and min rows' rates are the rates of their own times
  (bytes / median time, bytes / fastest time), and the roofline fraction follows from that rate;
- the console's rates are decimal (G = 10^9) and the fraction is not printed as a rate ("/s").
"""
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

normcheck, out = sys.argv[1], pathlib.Path(sys.argv[2])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
cache_home = out / "cache"
env = dict(os.environ, XDG_CACHE_HOME=str(cache_home))
UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
CASES = ["layer_norm,pass=forward_training,dtype=f32,shape=4x8", "rms_norm,pass=forward_training,dtype=f32,shape=4x8"]
MEASURING = "measuring memory bandwidth"


def bench(*args, tail=()):
    """normcheck bench ARGS --case A --case B TAIL: the cases last, so that TAIL's `--` follows --case."""
    cmd = [normcheck, "bench", "--min-time", "0.001"] + list(args) + [a for d in CASES for a in ("--case", d)]
    return subprocess.run(cmd + list(tail), capture_output=True, text=True, env=env)


# A bad Google Benchmark flag value: refused before STREAM runs (no cache yet, so it would).
r = bench(tail=("--", "--benchmark_min_time=abc"))
assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
assert MEASURING not in r.stdout and "benchmark_min_time=abc" in r.stderr, (r.stdout, r.stderr)
assert not (cache_home / "normcheck").exists()

# First run: measured and cached; `--` right after the multi-value --case.
js1 = out / "b1.json"
r = bench("--repetitions", "2", "--json", str(js1), tail=("--", "--benchmark_filter=layer_norm"))
assert r.returncode == 0, (r.stdout[-3000:], r.stderr)
assert MEASURING in r.stdout, r.stdout
cache = json.loads((cache_home / "normcheck/stream-bandwidth.json").read_text())
(entry,) = cache.values()
# STREAM runs on the backend's thread count: the naive backend's default is every core.
assert entry["threads"] == os.cpu_count() and entry["copy_bytes_per_second"] > 0 and re.match(r"\d{4}-\d\d-\d\dT", entry["measured_utc"])
d1 = json.loads(js1.read_text())
names = {b["run_name"] for b in d1["benchmarks"]}
assert names == {f"cases/{CASES[0]}/manual_time"}, names  # the filter after -- was applied
assert d1["context"]["normcheck_stream_cached"] == "false"
assert d1["context"]["normcheck_stream_measured_utc"] == entry["measured_utc"]

# Aggregates from one repetition's own time: median and min rows, rate = bytes / their time.
roof = float(d1["context"]["normcheck_roofline_bytes_per_second"])
reps = [b for b in d1["benchmarks"] if b["run_type"] == "iteration"]
aggs = {b["aggregate_name"]: b for b in d1["benchmarks"] if b["run_type"] == "aggregate"}
assert len(reps) == 2 and {"median", "min", "mean"} <= set(aggs), (len(reps), sorted(aggs))
times = sorted(b["real_time"] * UNIT[b["time_unit"]] for b in reps)
nbytes = reps[0]["bytes"]
for name, t in (("median", (times[0] + times[1]) / 2), ("min", times[0])):
    a = aggs[name]
    assert math.isclose(a["real_time"] * UNIT[a["time_unit"]], t, rel_tol=1e-9), (name, a["real_time"], t)
    assert math.isclose(a["bytes_per_second"], nbytes / t, rel_tol=1e-6), (name, a["bytes_per_second"], nbytes / t)
    assert math.isclose(a["roofline_fraction"], nbytes / t / roof, rel_tol=1e-3), name
for b in reps:  # each repetition: its own rate
    assert math.isclose(b["bytes_per_second"], nbytes / (b["real_time"] * UNIT[b["time_unit"]]), rel_tol=1e-6)

# Console: decimal rates, the fraction as a percentage, never "/s" on it.
m = re.search(r"bytes_per_second=([0-9.]+)([kMGT]?)/s", r.stdout)
assert m, r.stdout
scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
shown = float(m.group(1)) * scale
rates = [b["bytes_per_second"] for b in d1["benchmarks"]]
assert any(math.isclose(shown, x, rel_tol=5e-3) for x in rates), (shown, rates)  # 2^30 would be 7 % off
assert "roofline_fraction" not in r.stdout and "roofline_%=" in r.stdout, r.stdout

# Second run: the cached bandwidth, with its date; --remeasure-bandwidth measures again.
js2 = out / "b2.json"
r = bench("--repetitions", "1", "--json", str(js2))
assert r.returncode == 0, (r.stdout[-3000:], r.stderr)
assert MEASURING not in r.stdout and "cached in" in r.stdout and entry["measured_utc"] in r.stdout, r.stdout
c2 = json.loads(js2.read_text())["context"]
assert c2["normcheck_stream_cached"] == "true" and c2["normcheck_stream_measured_utc"] == entry["measured_utc"]
assert float(c2["normcheck_roofline_bytes_per_second"]) == float(d1["context"]["normcheck_roofline_bytes_per_second"])
# The report page says when the bandwidth was measured, and that it came from the cache.
r = subprocess.run([normcheck, "report", str(js2), "-o", str(out / "report")], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
md = (out / "report" / "report.md").read_text()
assert f"measured {entry['measured_utc']} (cached)" in md, md[:3000]
r = bench("--repetitions", "1", "--remeasure-bandwidth")
assert r.returncode == 0 and MEASURING in r.stdout, (r.stdout[-3000:], r.stderr)
print("bench options: ok")
