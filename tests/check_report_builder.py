"""`normcheck report` on the checked-in fixtures (tests/fixtures/report/) writes the page, the
Markdown and the plots, and its tables say what the fixtures say.

Usage: check_report_builder.py NORMCHECK FIXTURE_DIR OUT_DIR

The expected figures are recomputed here from the fixture JSON (Google Benchmark's median
aggregates, the result cases), not taken from the builder. Also checked: the fixtures match the
shared schemas, the page references only files next to it, and bad input exits 2 in one line.
"""
import collections
import json
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import jsonschema

normcheck, fixtures, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
schemas = pathlib.Path(__file__).resolve().parent.parent / "reports" / "schema"
out.mkdir(parents=True, exist_ok=True)

results = sorted(fixtures.glob("result_*.json"))
benches = sorted(fixtures.glob("bench_*.json"))
assert len(results) >= 2 and len(benches) >= 2, "fixtures missing"

# The fixtures are what the C++ side writes: they match the schemas the builder validates with.
for kind, files in (("result", results), ("bench", benches)):
    v = jsonschema.Draft202012Validator(json.loads((schemas / f"{kind}.schema.json").read_text()))
    for f in files:
        errors = list(v.iter_errors(json.loads(f.read_text())))
        assert not errors, f"{f.name}: {errors[0].message}"

page = out / "page"
r = subprocess.run([normcheck, "report", *map(str, results + benches), "-o", str(page), "--title", "fixture report"],
                   capture_output=True, text=True)
assert r.returncode == 0, r.stderr
md = (page / "report.md").read_text()
html = (page / "index.html").read_text()

# Files: the page, the Markdown, the accuracy plot and one throughput plot per benchmarked suite.
suites = {b["run_name"].split("/", 1)[0] for f in benches for b in json.loads(f.read_text())["benchmarks"]}
for name in (["index.html", "report.md", "accuracy.svg", "ratio_histogram.svg"] + [f"throughput_{s}.svg" for s in suites]
             + [f"accuracy_kappa_{k}.svg" for k in range(len(results))]):
    p = page / name
    assert p.is_file() and p.stat().st_size > 0, f"missing {name}"
    if name.endswith(".svg"):
        assert ET.parse(p).getroot().tag.endswith("svg"), name

# Markdown tables as {first cell: row}.
def table_after(heading):
    lines = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [l for l in lines if l.startswith("| ") and not l.startswith("|---")]
    header = [c.strip() for c in rows[0].strip("|").split(" | ")]
    return header, [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[1:]]

# Accuracy overview: pass/fail/unsupported/error counts per op × pass, recomputed from the cases.
header, rows = table_after("Accuracy overview")
for f in results:
    data = json.loads(f.read_text())
    col = next(i for i, h in enumerate(header) if h.startswith(data["backend"]["name"] + " ("))
    counts = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    for c in data["cases"]:
        k = {"PASS": 0, "WARN": 0, "FAIL": 1, "UNSUPPORTED": 2, "NOT_CERTIFIABLE": 4}.get(c["verdict"], 3)
        counts[(c["op"], c["pass"])][k] += 1
    for (op, ps), n in counts.items():
        row = next(r for r in rows if r[0] == op and r[1] == ps)
        assert row[col].startswith("/".join(map(str, n[:4]))), (f.name, op, ps, row[col], n)
        assert (n[4] == 0) == ("not certifiable" not in row[col]), (row[col], n)
    # Every case that did not pass is listed with its reproducer.
    for c in data["cases"]:
        if c["verdict"] not in ("PASS", "UNSUPPORTED"):
            assert c["reproducer"] in md, c["descriptor"]
            if c["verdict"] == "FAIL":
                assert c["suspected_cause"] and c["suspected_cause"] in md, c["descriptor"]

# Throughput: per case, the median time and the roofline fraction of Google Benchmark's median
# aggregate; per suite, the median of those fractions.
for f in benches:
    data = json.loads(f.read_text())
    name = data["context"]["normcheck_backend_name"]
    med = {b["run_name"]: b for b in data["benchmarks"] if b.get("aggregate_name") == "median"}
    assert med, f"{f.name}: no median aggregates (run with --repetitions ≥ 2)"
    for suite in suites:
        header, rows = table_after(f"Throughput: {suite}")
        col = next(i for i, h in enumerate(header) if h.startswith(name + " ("))
        fractions = []
        for run_name, b in med.items():
            if not run_name.startswith(suite + "/"):
                continue
            row = next(r for r in rows if r[0] == b["label"])
            assert b["time_unit"] == "us"
            expect = f"{b['real_time']:.1f} (" 
            assert row[col].startswith(expect), (row[col], expect)
            assert row[col].endswith(f"{100 * b['roofline_fraction']:.3g}%"), row[col]
            fractions.append(b["roofline_fraction"])
        fractions.sort()
        n = len(fractions)
        median = fractions[n // 2] if n % 2 else (fractions[n // 2 - 1] + fractions[n // 2]) / 2
        header, rows = table_after("Throughput overview")
        row = next(r for r in rows if r[0] == suite and r[1].startswith(name + " ("))
        assert row[4] == f"{100 * median:.3g}%", (row, median)
        roof = float(data["context"]["normcheck_roofline_bytes_per_second"]) / 1e9
        assert row[2] == f"{roof:.2f}", (row, roof)

# Machines and versions: every input file is listed with its backend version.
for f in results + benches:
    assert f"| {f.name} |" in md, f.name

# The page loads nothing from the network, and everything it references is next to it.
refs = re.findall(r'(?:src|href)="([^"]+)"', html)
assert refs, "no plots referenced"
for ref in refs:
    if ref.startswith("#"):  # the table of contents: an anchor on this page
        assert f'id="{ref[1:]}"' in html, f"no anchor {ref}"
        continue
    assert not re.match(r"^[a-z]+:", ref), f"external reference {ref}"
    assert (page / ref).is_file(), f"missing {ref}"
assert "<script src" not in html and "@import" not in html

# Bad input: one line on stderr, exit 2, nothing half-written passed off as a report.
bad = out / "not_normcheck.json"
bad.write_text('{"hello": 1}')
r = subprocess.run([normcheck, "report", str(bad), "-o", str(out / "bad")], capture_output=True, text=True)
assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (r.returncode, r.stderr)
assert not (out / "bad" / "index.html").exists()
broken = json.loads(benches[0].read_text())
del broken["context"]["normcheck_roofline_bytes_per_second"]
(out / "broken_bench.json").write_text(json.dumps(broken))
r = subprocess.run([normcheck, "report", str(out / "broken_bench.json"), "-o", str(out / "bad")],
                   capture_output=True, text=True)
assert r.returncode == 2 and "bench.schema.json" in r.stderr, (r.returncode, r.stderr)
print(f"report builder: {len(results)} result and {len(benches)} bench fixtures, {len(suites)} suite(s): OK")
