"""What `normcheck report` shows beyond the overview (docs/report-format.md, "HTML and Markdown
page"), each checked on input whose answer is known independently of the builder:

- weak, NOTE, unsupported and not-certifiable cases are listed with their reasons;
- cases run by one result file only are flagged "not run" for the others;
- the error-ratio histogram counts ratios of exactly 0 in a bin of their own;
- per-case plots against κ1 and the reduction set size (set_size recomputed here by hand);
- provenance of a fresh run: host, OS, memory and the git commit, recomputed here from the system;
- diagnose and metamorphic JSON are accepted and rendered; a hand-made violation and fault are listed;
- throughput: min–max over repetitions, a speed-up column, and the NOISY flag for a hand-made
  coefficient of variation of 110 % (and none at 5 %);
- a diagnose file that breaks its schema exits 2 in one line.

Usage: check_report_features.py NORMCHECK FIXTURE_DIR OUT_DIR
"""
import copy
import json
import pathlib
import re
import shutil
import socket
import subprocess
import sys

normcheck, fixtures, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
repo = pathlib.Path(__file__).resolve().parent.parent
out.mkdir(parents=True, exist_ok=True)

# A fresh run: exact zeros (a set of one element per channel), a NOTE (running_var of one value
# is undefined), a weak check (mean 10000, spread 0.01) and a group_norm case.
ZERO_NOTE = "batch_norm,pass=forward_training,dtype=f32,shape=1x4x1x1"
WEAK = "layer_norm,pass=forward_training,dtype=f32,shape=8x64,data=normal:10000:0.01"
GN = "group_norm,pass=forward_training,dtype=f32,shape=2x6x4x4,groups=3"
SET_SIZE = {ZERO_NOTE: 1 * 1 * 1, WEAK: 64, GN: (6 // 3) * 4 * 4}  # BN: N·spatial; LN: last dim; GN: C/G·spatial
fresh = out / "result_fresh.json"
cmd = [normcheck, "--backend", "naive", "-q", "--json", str(fresh)]
for d in SET_SIZE:
    cmd += ["--case", d]
r = subprocess.run(cmd, capture_output=True, text=True)
assert r.returncode == 0, r.stdout + r.stderr
data = json.loads(fresh.read_text())
cases = {c["descriptor"]: c for c in data["cases"]}
assert set(cases) == set(SET_SIZE), sorted(cases)
for d, n in SET_SIZE.items():
    assert cases[d]["set_size"] == n, (d, cases[d].get("set_size"), n)
assert cases[WEAK]["weak_check"] and cases[WEAK]["reason"], cases[WEAK]
assert not cases[ZERO_NOTE]["weak_check"] and "running_var not compared" in cases[ZERO_NOTE]["reason"]
zeros = sum(1 for c in data["cases"] for t in c["tensors"] if float(t["worst_ratio"]) == 0)
assert zeros > 0, "the fresh run has no exact result to count"

# A report that lacks the provenance fields (an earlier version's) does not acquire this machine's
# when merged here; a fresh one keeps its own.
old = json.loads(fresh.read_text())
for k in ("host", "os", "memory_bytes"):
    del old["machine"][k]
del old["normcheck_commit"]
(out / "result_old.json").write_text(json.dumps(old))
for src, expect in ((out / "result_old.json", ("", "", 0, "")), (fresh, None)):
    r = subprocess.run([normcheck, "merge", str(src), "-o", str(out / "merged.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "merged.json").read_text())
    got = (m["machine"]["host"], m["machine"]["os"], m["machine"]["memory_bytes"], m["normcheck_commit"])
    want = expect or (data["machine"]["host"], data["machine"]["os"], data["machine"]["memory_bytes"],
                      data["normcheck_commit"])
    assert got == want, (src.name, got, want)
    assert [c["set_size"] for c in m["cases"]] == [SET_SIZE[c["descriptor"]] for c in m["cases"]]

# Hand-made inputs: a metamorphic violation and a fault; a bench with cv 110 % on one case.
meta = json.loads((fixtures / "metamorphic_naive.json").read_text())
bad_meta = copy.deepcopy(meta)
bad_meta["backend"]["name"] = bad_meta["backend"]["id"] = "handmade"
held = [r for r in bad_meta["results"] if r["holds"] and not r["skipped"]]
held[0].update(holds=False, worst_ratio=3.5, detail="y differs at [0, 1]: hand-made violation")
held[1].update(holds=False, fault="CRASH", detail="the permuted run crashed: hand-made fault")
(out / "metamorphic_handmade.json").write_text(json.dumps(bad_meta))
bench = json.loads((fixtures / "bench_naive.json").read_text())
cvs = [b for b in bench["benchmarks"] if b.get("aggregate_name") == "cv"]
for b in cvs:
    b["real_time"] = 0.05
cvs[0]["real_time"] = 1.10
noisy_case = cvs[0]["label"]
(out / "bench_noisy.json").write_text(json.dumps(bench))

inputs = [fresh, fixtures / "result_naive.json", fixtures / "result_onednn.json",
          fixtures / "diagnose_naive.json", fixtures / "diagnose_onednn.json", fixtures / "metamorphic_naive.json",
          out / "metamorphic_handmade.json", out / "bench_noisy.json", fixtures / "bench_onednn.json"]
page = out / "page"
r = subprocess.run([normcheck, "report", *map(str, inputs), "-o", str(page)], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
md = (page / "report.md").read_text()
html = (page / "index.html").read_text()


def section(heading_start):
    parts = [p for p in md.split("\n## ") if p.startswith(heading_start)]
    assert parts, f"no section {heading_start!r}"
    return parts[0]


def rows_of(text):
    rows = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("|---")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]


# Weak, NOTE, unsupported, not certifiable: each listed with its reason.
sec = section("Accuracy: cases on naive")  # the fresh run (suite "cases")
weak_row = next(r for r in rows_of(sec) if r[:2] == ["WEAK", WEAK])
assert weak_row[2] == cases[WEAK]["reason"].replace("|", "\\|"), weak_row
note_row = next(r for r in rows_of(sec) if r[:2] == ["NOTE", ZERO_NOTE])
assert note_row[2] == cases[ZERO_NOTE]["reason"].replace("|", "\\|"), note_row
for f, verdict in (("result_onednn.json", "UNSUPPORTED"), ("result_naive.json", "NOT_CERTIFIABLE")):
    for c in json.loads((fixtures / f).read_text())["cases"]:
        if c["verdict"] == verdict:
            assert any(r[0] == verdict and c["reason"] in r for r in rows_of(md)), (f, c["descriptor"])

# Cases run by one file only: flagged "not run" for the others.
sec = section("Accuracy: cases not run by every backend")
only = {c["descriptor"] for c in json.loads((fixtures / "result_naive.json").read_text())["cases"]} - \
    {c["descriptor"] for c in json.loads((fixtures / "result_onednn.json").read_text())["cases"]}
assert only
for d in only:
    row = next(r for r in rows_of(sec) if r[0] == d)
    assert row.count("not run") >= 1, row

# The histogram: exact zeros counted in their own bin, every compared tensor counted once.
sec = section("Accuracy: error-ratio histogram")
rows = rows_of(sec)
# Two files are labelled "naive (normcheck …)": the builder tells them apart by the host, which
# only the fresh one records.
col = next(i for i, h in enumerate(rows[0]) if h.startswith("naive (") and h.endswith(f"@ {socket.gethostname()}"))
zero_row = next(r for r in rows if r[0] == "exactly 0")
assert int(zero_row[col]) == zeros, (zero_row, zeros)
assert sum(int(r[col]) for r in rows[1:]) == sum(len(c["tensors"]) for c in data["cases"])
assert (page / "ratio_histogram.svg").is_file()

# Per-case plots: κ1 for every result file, set size for the files that record it (the fresh one).
imgs = re.findall(r'src="(accuracy_(?:kappa|setsize)_\d+\.svg)"', html)
assert sum(i.startswith("accuracy_kappa_") for i in imgs) == 3 and \
    sum(i.startswith("accuracy_setsize_") for i in imgs) == 1, imgs
for i in imgs:
    assert (page / i).is_file(), i

# Provenance of the fresh run, recomputed from the system.
host = socket.gethostname()
mem = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
pretty = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME="))
prov = next(r for r in rows_of(section("Provenance")) if r[0] == "result_fresh.json")
assert prov[3] == host and pretty in prov[4] and prov[6] == f"{mem / 2**30:.1f} GiB", prov
git = shutil.which("git")  # a machine may have the checkout without git (tools/check-fresh-machine.sh)
head = subprocess.run([git, "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() if git else ""
if head:
    # The binary may predate the last commit (ctest without a rebuild): the commit it names must be
    # this repository's HEAD or an ancestor of it.
    commit = re.search(r"\(([0-9a-f]{12})(-dirty)?\)", prov[8])
    assert commit, prov[8]
    r = subprocess.run([git, "-C", str(repo), "merge-base", "--is-ancestor", commit.group(1), head])
    assert r.returncode == 0, (prov[8], head)
else:
    print("note: not a git checkout, or no git on this machine; commit not compared")
assert any(r[0] == "result_naive.json" and r[3] == "not recorded" for r in rows_of(section("Provenance")))

# Diagnose: every probe of every file shown with its finding.
sec = section("Diagnose")
for f in ("diagnose_naive.json", "diagnose_onednn.json"):
    for p in json.loads((fixtures / f).read_text())["probes"]:
        row = next(r for r in rows_of(sec) if r[0] == p["point"])
        assert any(c.startswith(p["finding"].replace("|", "\\|")) for c in row[1:]), (p["point"], row)

# Metamorphic: counts per relation recomputed; the hand-made violation and fault listed.
sec = section("Metamorphic")
rows = rows_of(sec)
col = next(i for i, h in enumerate(rows[0]) if h.startswith("naive ("))
for rel in {r["relation"] for r in meta["results"]}:
    rs = [r for r in meta["results"] if r["relation"] == rel]
    held_n = sum(r["holds"] and not r["skipped"] for r in rs)
    skip_n = sum(r["skipped"] for r in rs)
    row = next(r for r in rows if r[0] == rel)
    assert row[col] == f"{held_n}/{len(rs) - held_n - skip_n}/{skip_n}", (rel, row[col])
v = next(r for r in rows if r[0] == "VIOLATED" and r[3] == held[0]["descriptor"] and r[2] == held[0]["relation"])
assert v[4] == "3.5" and v[6] == f"normcheck metamorphic --backend handmade --case {held[0]['descriptor']}", v
assert any(r[0] == "CRASH" and r[3] == held[1]["descriptor"] for r in rows)

# Throughput: min–max over the repetitions, NOISY only for the cv of 110 %, the speed-up column.
sec = section("Throughput: ")
rows = rows_of(sec)
hdr = rows[0]
col = next(i for i, h in enumerate(hdr) if h.startswith("naive (") and "median" in h)
sp = next(i for i, h in enumerate(hdr) if h.startswith("speed-up onednn"))
unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1}
for row in rows[1:]:
    its = [b for b in bench["benchmarks"] if b["run_type"] == "iteration" and b["label"] == row[0]]
    times = [b["real_time"] * unit[b["time_unit"]] for b in its]
    assert f"({min(times) * 1e6:.1f}–{max(times) * 1e6:.1f}, cv" in row[col], (row[col], times)
    assert ("NOISY" in row[col]) == (row[0] == noisy_case), row[col]
    med = {b["label"]: b["real_time"] * unit[b["time_unit"]] for b in bench["benchmarks"]
           if b.get("aggregate_name") == "median"}
    other = {b["label"]: b["real_time"] * unit[b["time_unit"]]
             for b in json.loads((fixtures / "bench_onednn.json").read_text())["benchmarks"]
             if b.get("aggregate_name") == "median"}
    if row[0] in other:
        assert row[sp].startswith(f"×{med[row[0]] / other[row[0]]:.3g}"), (row[sp], med[row[0]], other[row[0]])
over = next(r for r in rows_of(section("Throughput overview")) if r[1].startswith("naive ("))
assert over[8] == "1 NOISY", over
threads = json.loads((fixtures / "bench_onednn.json").read_text())["context"]["normcheck_threads"]
assert next(r for r in rows_of(section("Throughput overview")) if r[1].startswith("onednn ("))[6] == threads

# A diagnose file without its probes is bad input: exit 2, one line naming the schema.
broken = json.loads((fixtures / "diagnose_naive.json").read_text())
del broken["probes"]
(out / "broken_diagnose.json").write_text(json.dumps(broken))
r = subprocess.run([normcheck, "report", str(out / "broken_diagnose.json"), "-o", str(out / "bad")],
                   capture_output=True, text=True)
assert r.returncode == 2 and "diagnose.schema.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
print(f"report features: {zeros} exact zeros counted, weak/NOTE/unsupported/not-certifiable reasons, provenance, "
      f"diagnose, metamorphic, noise flag and speed-up: OK")
