"""`normcheck bench` smoke run: tiny shapes, one repetition, no timing assertions.

Usage: check_bench_smoke.py NORMCHECK OUT_DIR

Checks that the Google Benchmark JSON matches reports/schema/bench.schema.json, holds one run per
case with the bytes counter of the docs/bench.md model (recomputed here from the shape), a
positive bandwidth in its context, and that `normcheck report` turns it into a page. Also: a
non-Google-Benchmark flag after -- and a correctness-only option are usage errors (exit 2).
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import jsonschema

normcheck, out = sys.argv[1], pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
schema = json.loads((pathlib.Path(__file__).resolve().parent.parent / "reports/schema/bench.schema.json").read_text())

SIZE = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2}
CASES = {
    # descriptor: bytes by docs/bench.md, worked out from the shape
    "layer_norm,pass=forward_training,dtype=f32,shape=4x8": 4 * (32 + 32) + 4 * (8 + 8) + 4 * (4 + 4),
    "batch_norm,pass=backward_training,dtype=f32,shape=2x3x4": 4 * (24 * 3) + 4 * (3 + 3 + 3) + 4 * (3 + 3),
    "rms_norm,pass=forward_training,dtype=bf16,shape=4x8": 2 * (32 + 32) + 4 * 8 + 4 * 4,
    "batch_norm,pass=forward_inference,dtype=f64,shape=2x3x4,layout=nhwc": 8 * (24 + 24) + 8 * (3 * 4),
}

cmd = [normcheck, "bench", "--backend", "naive", "--repetitions", "1", "--min-time", "0.001",
       "--json", str(out / "bench.json")]
for d in CASES:
    cmd += ["--case", d]
r = subprocess.run(cmd, capture_output=True, text=True)
assert r.returncode == 0, r.stdout[-2000:] + r.stderr
data = json.loads((out / "bench.json").read_text())
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
assert not errors, f"{list(errors[0].path)}: {errors[0].message}"
ctx = data["context"]
assert float(ctx["normcheck_roofline_bytes_per_second"]) > 0
# The naive backend runs its reduction sets on every core by default (NaiveBackend::threads).
assert ctx["normcheck_backend_name"] == "naive" and ctx["normcheck_threads"] == str(os.cpu_count()), ctx
runs = {b["label"]: b for b in data["benchmarks"]}
assert set(runs) == set(CASES), sorted(runs)
for d, expect in CASES.items():
    b = runs[d]
    assert b["bytes"] == expect, (d, b["bytes"], expect)
    assert b["run_name"] == f"cases/{d}/manual_time"  # Google Benchmark marks manual timing
    # The derived figures are consistent with each other (no timing assertion).
    seconds = b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1}[b["time_unit"]]
    assert math.isclose(b["bytes_per_second"], expect / seconds, rel_tol=1e-6), d
    assert math.isclose(b["roofline_fraction"], b["bytes_per_second"] / float(ctx["normcheck_roofline_bytes_per_second"]),
                        rel_tol=1e-3), d

r = subprocess.run([normcheck, "report", str(out / "bench.json"), "-o", str(out / "report")], capture_output=True, text=True)
assert r.returncode == 0 and (out / "report" / "index.html").is_file(), r.stderr

for bad in (["--case", "layer_norm,shape=4x8", "--", "--not_a_benchmark_flag"],
            ["--case", "layer_norm,shape=4x8", "--junit", str(out / "x.xml")],
            ["--case", "layer_norm,shape=4x8", "--repetitions", "0"]):
    r = subprocess.run([normcheck, "bench", "--backend", "naive", *bad], capture_output=True, text=True)
    assert r.returncode == 2 and "error" in r.stderr, (bad, r.returncode, r.stderr)
print(f"bench smoke: {len(CASES)} cases, bytes model agrees, JSON matches the schema")
