#!/usr/bin/env python3
"""normcheck report builder: correctness results, diagnoses, relations and throughput side by side.

Usage (normally through `normcheck report`, which finds a Python with matplotlib):
    build_report.py -o DIR [--title TITLE] [--noise-cv FRACTION] INPUT.json...

Inputs, told apart by content, each validated against its schema in reports/schema/ when
python3-jsonschema is installed:
  - `normcheck --json` results (schema "normcheck-result/1", result.schema.json);
  - `normcheck bench --json` Google Benchmark JSON with normcheck's context (bench.schema.json);
  - `normcheck diagnose --json` probe findings ("normcheck-diagnose/1", diagnose.schema.json);
  - `normcheck metamorphic --json` relation checks ("normcheck-metamorphic/1", metamorphic.schema.json).
Several files (backends, library versions, machines) are compared side by side: each is one
column or one plotted series, labelled by backend name and version (plus the host, then the file
name, when two files share a label). docs/report-format.md ("HTML and Markdown page") lists the
sections.

Writes DIR/index.html, DIR/report.md and the plots next to them (SVG): accuracy.svg (worst ratio
per op and pass), ratio_histogram.svg, accuracy_cases_<k>.svg (per case and output tensor, one per
result file), throughput_<suite>.svg (one per benchmarked suite). The page loads nothing from the
network.

Exit codes: 0 written; 2 bad input (unreadable file, unknown format, schema violation) or an
unwritable DIR, with a one-line message on stderr.
"""
import argparse
import collections
import html
import json
import math
import pathlib
import re
import shlex
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files, searchable labels
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
KINDS = {  # kind: (schema id or None, schema file)
    "result": ("normcheck-result/1", "result.schema.json"),
    "diagnose": ("normcheck-diagnose/1", "diagnose.schema.json"),
    "metamorphic": ("normcheck-metamorphic/1", "metamorphic.schema.json"),
    "bench": (None, "bench.schema.json"),
}
OPS = ["batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm"]
PASSES = ["forward_training", "forward_inference", "backward_training", "backward_inference"]
TENSORS = ["y", "mean", "variance", "mean_square", "inv_std", "inv_rms", "running_mean", "running_var", "dx",
           "dgamma", "dbeta", "y_vs_saved_stats"]
DTYPE_STYLE = {"f64": ("C0", "o"), "f32": ("C1", "s"), "bf16": ("C2", "^"), "f16": ("C3", "D")}
NOISE_CV = 0.10  # default --noise-cv: a coefficient of variation over repetitions above it is flagged
FAILURES = ("FAIL", "ERROR", "CRASH", "TIMEOUT", "OVERRUN")


class InputError(Exception):
    """Bad input: reported in one line, exit code 2."""


def detect_kind(data):
    """"result", "diagnose", "metamorphic" or "bench" from a file's content; None when none fits."""
    if not isinstance(data, dict):
        return None
    for kind, (schema_id, _) in KINDS.items():
        if schema_id and data.get("schema") == schema_id:
            return kind
    if "benchmarks" in data and "normcheck_version" in data.get("context", {}):
        return "bench"
    return None


def load(path):
    """Reads one input file; returns (kind, data). Raises InputError."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read JSON: {e}") from None
    kind = detect_kind(data)
    if kind is None:
        raise InputError(f"{path}: not a `normcheck --json` result, nor `normcheck bench`, `diagnose` or "
                         f"`metamorphic` --json output")
    try:
        import jsonschema
    except ImportError:
        print(f"build_report.py: {path} not validated (python3-jsonschema is not installed)", file=sys.stderr)
        return kind, data
    schema_file = HERE / "schema" / KINDS[kind][1]
    schema = json.loads(schema_file.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise InputError(f"{path}: does not match {schema_file.name} at {list(e.path)}: {e.message}")
    return kind, data


def num(v):
    """JSON numbers, with the strings "nan", "inf", "-inf" of the result format (None: nan)."""
    return math.nan if v is None else float(v)


def short_version(v):
    """'oneDNN 3.7.2 (git …), CPU ISA …' → 'oneDNN 3.7.2'; 'normcheck 0.1.0' stays."""
    m = re.match(r"^(\S+ \d+(?:\.\d+)*)", v)
    return m.group(1) if m else v


def gib(n):
    return f"{int(n) / 2**30:.1f} GiB" if n and int(n) > 0 else "not recorded"


def threads_of_command(command):
    """The --threads value of a correctness run's command line (the reference's threads)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for k, w in enumerate(words):
        if w == "--threads" and k + 1 < len(words):
            return words[k + 1]
        if w.startswith("--threads="):
            return w.split("=", 1)[1]
    return None


class Source:
    """One input file: its kind, label and the provenance the report shows ("" when not recorded)."""

    def __init__(self, path, kind, data):
        self.path, self.kind, self.data = path, kind, data
        self.name = pathlib.Path(path).name
        getattr(self, f"_init_{kind}")(data)
        self.label = f"{self.backend} ({short_version(self.version)})"

    def _init_result(self, d):
        b, m = d["backend"], d["machine"]
        self.backend, self.version = b["name"], b["version"]
        self.host, self.cpu, self.compiler, self.suite = m.get("host", ""), m["cpu"], m["compiler"], d["suite"]
        self.os, self.memory = m.get("os", ""), gib(m.get("memory_bytes", 0))
        self.date, self.command = d["started_utc"], d["command"]
        self.normcheck = d["normcheck_version"] + (f" ({d['normcheck_commit']})" if d.get("normcheck_commit") else
                                                   " (commit not recorded)")
        t = threads_of_command(d["command"])
        self.threads = (f"reference {t} (--threads)" if t else "reference: all hardware threads (no --threads)") + \
            "; backend: its default"

    def _init_bench(self, d):
        c = d["context"]
        self.backend, self.version = c["normcheck_backend_name"], c["normcheck_backend_version"]
        self.host, self.cpu, self.compiler, self.suite = c["host_name"], c["normcheck_cpu"], c["normcheck_compiler"], \
            c["normcheck_suite"]
        self.os, self.memory = c.get("normcheck_os", ""), gib(c.get("normcheck_memory_bytes", 0))
        self.date, self.command = c["date"], c["normcheck_command"]
        self.normcheck = c["normcheck_version"] + (f" ({c['normcheck_commit']})" if c.get("normcheck_commit") else
                                                   " (commit not recorded)")
        self.threads = f"{c['normcheck_threads']} per call ({c['num_cpus']} CPUs)"

    def _init_probe_file(self, d, suite):
        self.backend, self.version = d["backend"]["name"], d["backend"]["version"]
        self.host = self.cpu = self.compiler = self.os = self.date = self.command = ""
        self.memory, self.threads, self.suite = "not recorded", "not recorded", suite
        self.normcheck = d["normcheck_version"] + " (commit not recorded)"

    def _init_diagnose(self, d):
        self._init_probe_file(d, "diagnose probes")

    def _init_metamorphic(self, d):
        self._init_probe_file(d, d["suite"])


def label_sources(sources):
    """Makes labels unique within a kind: adds the host, then the file name, where two files share one."""
    for extra in (lambda s: s.host, lambda s: s.name):
        counts = collections.Counter((s.kind, s.label) for s in sources)
        for s in sources:
            if counts[(s.kind, s.label)] > 1 and extra(s):
                s.label = f"{s.label} @ {extra(s)}"


# ---------------------------------------------------------------- tables


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(out)


def cell_class(text):
    """CSS class of a table cell: failures red, warnings and flags amber."""
    t = str(text)
    m = re.match(r"^(\d+)/(\d+)/(\d+)/(\d+), worst", t)  # an overview cell: pass/fail/unsupported/error
    if m:
        return "bad" if int(m.group(2)) or int(m.group(4)) else ""
    if t.startswith(FAILURES) or t.startswith("VIOLATED") or "NOISY" in t or "BUSY MACHINE" in t:
        return "bad"
    if t.startswith(("WARN", "WEAK", "NOT_CERTIFIABLE", "not run", "UNSUPPORTED", "NOTE")):
        return "flag"
    return ""


def html_table(header, rows, fold=25):
    """A table; one of more than `fold` rows is folded in a <details> element (the Markdown keeps every row)."""
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)

    def td(c):
        cls = cell_class(c)
        return f'<td class="{cls}">' if cls else "<td>"

    body = "".join("<tr>" + "".join(f"{td(c)}{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"
    if len(rows) > fold:
        return f"<details><summary>{len(rows)} rows (click to show)</summary>{table}</details>"
    return table


class Section:
    """One heading of the page: Markdown and HTML bodies, and the plots shown above them."""

    def __init__(self, heading, md="", html_body="", images=()):
        self.heading, self.md, self.html, self.images = heading, md, html_body, list(images)

    def para(self, text):
        self.md += text + "\n\n"
        self.html += f"<p>{html.escape(text)}</p>"
        return self

    def table(self, header, rows):
        if rows:
            self.md += md_table(header, rows) + "\n\n"
            self.html += html_table(header, rows)
        return self

    def bullets(self, items):
        if items:
            self.md += "\n".join(f"- {t}" for t in items) + "\n\n"
            self.html += "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul>"
        return self


# ---------------------------------------------------------------- provenance


def provenance_section(sources):
    header = ["file", "label", "date (UTC)", "host", "OS", "CPU", "memory", "threads", "normcheck (commit), compiler",
              "backend build", "run"]
    rows, commands = [], []
    for s in sources:
        rows.append([s.name, s.label, s.date or "not recorded", s.host or "not recorded", s.os or "not recorded",
                     s.cpu or "not recorded", s.memory, s.threads, f"{s.normcheck}, {s.compiler or 'compiler not recorded'}",
                     s.version, f"{s.kind}: {run_text(s)}"])
        if s.command:
            commands.append(f"{s.name}: {s.command}")
    sec = Section("Provenance: machines, versions and commands")
    sec.para("Per input file: where, when and how it was produced. \"not recorded\": the file predates the field "
             "(docs/report-format.md) or its kind does not carry it.")
    return sec.table(header, rows).bullets(commands)


def run_text(s):
    if s.kind == "bench":
        c = s.data["context"]
        load = c.get("load_avg") or []
        busy = f"load average {load[0]:.2f} on {c['num_cpus']} CPUs" if load else "load not recorded"
        if load and load[0] > c["num_cpus"]:
            busy += " (BUSY MACHINE: timings are not representative)"
        measured = ""
        if c.get("normcheck_stream_measured_utc"):  # the bandwidth cache (docs/bench.md)
            measured = (f", measured {c['normcheck_stream_measured_utc']}"
                        + (" (cached)" if c.get("normcheck_stream_cached") == "true" else ""))
        return (f"{busy}, {c['normcheck_cache']} cache, STREAM copy {float(c['normcheck_stream_copy_bytes_per_second']) / 1e9:.2f}"
                f" / triad {float(c['normcheck_stream_triad_bytes_per_second']) / 1e9:.2f} GB/s{measured}, Google Benchmark "
                f"library built {c.get('library_build_type', '?')}")
    if s.kind == "result":
        d = s.data
        ref = d["reference"]
        ref_text = {"fast": "exact (fast)", "slow": f"slow, {ref['precision_bits']} bits"}.get(
            ref.get("kind", ""), f"{ref['precision_bits']} bits (kind not recorded)")
        return (f"{len(d['cases'])} cases, reference {ref_text}, "
                f"{'complete' if d['complete'] else 'INCOMPLETE: ' + d.get('incomplete_reason', '')}, "
                f"{d['wall_seconds']:.1f} s")
    return "no machine, date or command recorded in this kind of file"


# ---------------------------------------------------------------- accuracy


def case_kind(c):
    """The overview column a case counts in: pass, fail, unsupported, error, not_certifiable or weak."""
    v = c["verdict"]
    kind = {"PASS": "pass", "WARN": "pass", "FAIL": "fail", "NONDETERMINISTIC": "fail", "UNSUPPORTED": "unsupported",
            "NOT_CERTIFIABLE": "not_certifiable"}.get(v, "error")
    return "weak" if kind == "pass" and c.get("weak_check") else kind  # a weak check is never a pass


def accuracy_table(results, keep=None):
    """{(op, pass): {label: {"pass": n, "fail": n, …, "worst": ratio}}}; keep: descriptors to count (None: all)."""
    table = collections.defaultdict(dict)
    for s in results:
        for c in s.data["cases"]:
            if keep is not None and c["descriptor"] not in keep:
                continue
            cell = table[(c["op"], c["pass"])].setdefault(
                s.label, {"pass": 0, "fail": 0, "unsupported": 0, "error": 0, "warn": 0, "not_certifiable": 0, "weak": 0,
                          "worst": None})
            cell[case_kind(c)] += 1
            cell["warn"] += c["verdict"] == "WARN"
            for t in c.get("tensors", []):
                r = num(t["worst_ratio"])
                if cell["worst"] is None or r > cell["worst"] or math.isnan(r):
                    cell["worst"] = r
    order = {(o, p): (OPS.index(o) if o in OPS else 99, PASSES.index(p) if p in PASSES else 99) for o, p in table}
    return dict(sorted(table.items(), key=lambda kv: order[kv[0]]))


def fmt_ratio(r):
    if r is None:
        return "—"
    if math.isnan(r) or math.isinf(r):
        return str(r)
    return f"{r:.3g}"


def cell_text(cell):
    if cell is None:
        return "not run"
    counts = f"{cell['pass']}/{cell['fail']}/{cell['unsupported']}/{cell['error']}"
    extra = "".join(f", {cell[k]} {name}" for k, name in (("warn", "warn"), ("weak", "weak check"),
                                                          ("not_certifiable", "not certifiable"))
                    if cell.get(k))
    return f"{counts}, worst {fmt_ratio(cell['worst'])}{extra}"


def plot_accuracy(table, labels, path):
    keys = list(table)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) + 2) + 3, 4.2))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs, ys = [], []
        for k, key in enumerate(keys):
            cell = table[key].get(label)
            if cell and cell["worst"] is not None and math.isfinite(cell["worst"]) and cell["worst"] > 0:
                xs.append(k + (i - (len(labels) - 1) / 2) * width)
                ys.append(cell["worst"])
        ax.bar(xs, ys, width=width, label=label)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="budget (ratio 1)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{o}\n{p}" for o, p in keys], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("worst error / budget")
    ax.set_title("Accuracy: worst error-to-budget ratio per op and pass (below 1 passes)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def common_descriptors(results):
    """Descriptors every result file holds, and {descriptor: {label: verdict}} for the others."""
    sets = {s.label: {c["descriptor"]: c["verdict"] for c in s.data["cases"]} for s in results}
    every = set.intersection(*(set(v) for v in sets.values())) if sets else set()
    partial = {}
    for s in results:
        for c in s.data["cases"]:
            d = c["descriptor"]
            if d not in every and d not in partial:
                partial[d] = {label: cases.get(d, "not run") for label, cases in sets.items()}
    return every, partial


def overview_sections(results, out):
    table = accuracy_table(results)
    labels = [s.label for s in results]
    header = ["op", "pass"] + labels
    rows = [[o, p] + [cell_text(cells.get(l)) for l in labels] for (o, p), cells in table.items()]
    totals = []
    for s in results:
        sm = s.data["summary"]
        totals.append(f"{s.label}: {sm['pass']} pass ({sm.get('warn', 0)} with WARN), "
                      f"{sm.get('weak', 0)} weak check (not a pass), {sm['fail']} fail, "
                      f"{sm['unsupported']} unsupported, {sm['error']} error, "
                      f"{sm.get('not_certifiable', 0)} not certifiable of {sm['total']}")
    note = ("Cells: pass/fail/unsupported/error case counts (WARN counts as a pass and is listed; a weak "
            "check is counted apart, never as a pass; NOT "
            "CERTIFIABLE is listed apart), then the worst error-to-budget ratio over every compared tensor "
            "(docs/comparison.md; below 1 is within budget). \"not run\": that file has no case of this op and pass.")
    plot_accuracy(table, labels, out / "accuracy.svg")
    secs = [Section("Accuracy overview", images=["accuracy.svg"]).para(note).table(header, rows).bullets(totals)]
    if len(results) > 1:
        secs.append(common_section(results))
    return secs


def common_section(results):
    """Cases not run by every result file, and the overview restricted to the common ones."""
    every, partial = common_descriptors(results)
    labels = [s.label for s in results]
    sec = Section("Accuracy: cases not run by every backend")
    if not partial:
        return sec.para(f"Every result file holds the same {len(every)} cases: the columns compare like with like.")
    sec.para(f"{len(partial)} case(s) are not in every result file (a different suite, --case or --dtype): "
             f"they are flagged \"not run\" below, and the table after them counts only the {len(every)} cases "
             f"every file holds.")
    rows = [[d] + [v[l] for l in labels] for d, v in partial.items()]
    shown = 300
    sec.table(["case"] + labels, rows[:shown])
    if len(rows) > shown:
        sec.para(f"… and {len(rows) - shown} more.")
    table = accuracy_table(results, keep=every)
    rows = [[o, p] + [cell_text(cells.get(l)) for l in labels] for (o, p), cells in table.items()]
    sec.para(f"Common cases only ({len(every)}): pass/fail/unsupported/error, worst ratio, as in the overview.")
    return sec.table(["op", "pass"] + labels, rows)


def attention_category(c):
    """Why a case needs a reader's attention ("" when it passed sharply without a note)."""
    v = c["verdict"]
    if v in FAILURES or v in ("NOT_CERTIFIABLE", "UNSUPPORTED"):
        return v
    if c.get("weak_check"):
        return "WEAK"
    if v == "WARN":
        return "WARN"
    return "NOTE" if c.get("reason") else ""


ATTENTION_ORDER = ["FAIL", "ERROR", "CRASH", "TIMEOUT", "OVERRUN", "WARN", "WEAK", "NOT_CERTIFIABLE", "NOTE",
                   "UNSUPPORTED"]
ATTENTION_TEXT = {
    "WEAK": "weak check: passed, but the tolerance is too wide to be informative (docs/comparison.md \"Weak checks\")",
    "NOTE": "passed, with elements not compared or another remark",
    "NOT_CERTIFIABLE": "no informative budget exists for this case (docs/comparison.md)",
    "UNSUPPORTED": "the backend declined the case, with its reason (grouped by reason)",
}


def attention_section(s):
    """Every case of one result file that did not pass sharply and silently, with its reason."""
    cases = s.data["cases"]
    groups = collections.defaultdict(list)
    for c in cases:
        k = attention_category(c)
        if k:
            groups[k].append(c)
    counts = ", ".join(f"{len(groups[k])} {k}" for k in ATTENTION_ORDER if groups.get(k))
    sec = Section(f"Accuracy: {s.suite} on {s.label}")
    bad = sum(len(v) for k, v in groups.items() if k != "UNSUPPORTED" and k != "NOTE")
    sec.para(f"{bad} of {len(cases)} cases did not pass cleanly (FAIL, WARN, weak checks, NOT CERTIFIABLE, "
             f"errors); listed by category: {counts or 'none'}.")
    hdr = ["verdict", "case", "reason", "suspected cause", "worst tensor", "reproduce"]
    for k in ATTENTION_ORDER:
        if k == "UNSUPPORTED" or not groups.get(k):
            continue
        if k in ATTENTION_TEXT:
            sec.para(f"{k}: {ATTENTION_TEXT[k]}.")
        sec.table(hdr, [[k, c["descriptor"], c["reason"], c.get("suspected_cause", ""), worst_tensor_text(c),
                         c["reproducer"]] for c in groups[k]])
    if groups.get("UNSUPPORTED"):
        by_reason = collections.defaultdict(list)
        for c in groups["UNSUPPORTED"]:
            by_reason[c["reason"]].append(c["descriptor"])
        sec.para(f"UNSUPPORTED: {ATTENTION_TEXT['UNSUPPORTED']}.")
        sec.table(["verdict", "reason", "cases", "examples"],
                  [["UNSUPPORTED", r, len(d), "; ".join(d[:3]) + (" …" if len(d) > 3 else "")]
                   for r, d in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))])
    return sec


def worst_tensor_text(c):
    ts = [t for t in c.get("tensors", []) if t["name"] != "y_vs_saved_stats"] or c.get("tensors", [])
    if not ts:
        return "—"
    t = max(ts, key=lambda t: (math.isnan(num(t["worst_ratio"])), num(t["worst_ratio"])))
    w = t.get("worst")
    at = f" at {w['coords']}: got {num(w['got']):.9g}, expected {num(w['expected']):.9g}" if w else ""
    return f"{t['name']} {fmt_ratio(num(t['worst_ratio']))}× budget{at}"


# ------------------------------------------------ per-case plots and histogram

HIST_BINS = ["exactly 0", "< 1e-6"] + [f"[1e{k}, 1e{k + 1})" for k in range(-6, 0)] + ["[1, 10)", "≥ 10", "not finite"]


def hist_bin(r):
    """Index in HIST_BINS of one worst ratio: zero and non-finite ratios have bins of their own."""
    if not math.isfinite(r):
        return len(HIST_BINS) - 1
    if r == 0:
        return 0
    if r < 1e-6:
        return 1
    if r >= 10:
        return len(HIST_BINS) - 2
    return min(8, 2 + int(math.floor(math.log10(r))) + 6)


def ratio_points(s):
    """Per compared tensor of one result file: name, dtype, κ1, set size, worst ratio, pass."""
    pts = []
    for c in s.data["cases"]:
        for t in c.get("tensors", []):
            pts.append({"tensor": t["name"], "dtype": c["dtype"], "kappa": num(c["condition_number"]),
                        "set_size": c.get("set_size"), "ratio": num(t["worst_ratio"]), "pass": t["pass"]})
    return pts


def histogram_section(results, out):
    counts = {s.label: [0] * len(HIST_BINS) for s in results}
    for s in results:
        for p in ratio_points(s):
            counts[s.label][hist_bin(p["ratio"])] += 1
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / max(1, len(results))
    for i, s in enumerate(results):
        xs = [k + (i - (len(results) - 1) / 2) * width for k in range(len(HIST_BINS))]
        bars = ax.bar(xs, counts[s.label], width=width, label=s.label)
        ax.bar_label(bars, labels=[str(n) if n else "" for n in counts[s.label]], fontsize=6)
    ax.axvline(7.5, color="black", linestyle="--", linewidth=1, label="budget (ratio 1)")
    ax.set_xticks(range(len(HIST_BINS)))
    ax.set_xticklabels(HIST_BINS, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("compared tensors")
    ax.set_title("Worst error / budget per compared tensor (exact results in the first bin)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "ratio_histogram.svg")
    plt.close(fig)
    sec = Section("Accuracy: error-ratio histogram", images=["ratio_histogram.svg"])
    sec.para("Worst |error|/budget of every compared tensor of every case, in decades. \"exactly 0\": the backend "
             "returned the correctly rounded value everywhere (a log axis would drop these); ratios of 1 or more "
             "are over budget.")
    return sec.table(["ratio"] + [s.label for s in results],
                     [[b] + [counts[s.label][k] for s in results] for k, b in enumerate(HIST_BINS)])


def decade_label(t):
    """10.0**-3 → '10⁻³' (plain text: mathtext labels cost more than the plot)."""
    return "10" + str(int(round(math.log10(t)))).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def scatter_panel(ax, pts, xkey, floor, top):
    """One panel: ratio against pts[xkey], by dtype; zero ratios drawn on the floor line, labelled 0."""
    for dtype, (color, marker) in DTYPE_STYLE.items():
        sel = [p for p in pts if p["dtype"] == dtype and p[xkey] is not None and math.isfinite(p[xkey])
               and p[xkey] > 0 and math.isfinite(p["ratio"])]
        if sel:
            ax.scatter([p[xkey] for p in sel], [max(p["ratio"], floor) for p in sel], s=14, color=color,
                       marker=marker, alpha=0.7, label=dtype, rasterized=len(sel) > 3000)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.axhline(floor, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, top)
    decades = range(int(math.log10(floor)) + 1, int(math.floor(math.log10(top))) + 1)
    step = max(1, len(decades) // 4)
    ticks = [10.0 ** d for d in decades if d % step == 0 or d == 0]
    ax.set_yticks([floor] + ticks, ["0"] + [decade_label(t) for t in ticks])
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.tick_params(axis="both", which="both", labelsize=6)
    xs = [p[xkey] for p in pts if p[xkey] is not None and math.isfinite(p[xkey]) and p[xkey] > 0]
    if xs:  # whole decades, so that every panel has labelled major ticks and no crowded minor labels
        lo, hi = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
        ax.set_xlim(10.0 ** lo / 1.3, 10.0 ** max(hi, lo + 1) * 1.3)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: decade_label(v) if v > 0 and abs(math.log10(v) - round(math.log10(v))) < 1e-9 else ""))


def case_grid(s, pts, names, xkey, xlabel, path):
    """Small multiples: one panel per output tensor, ratio against xkey, coloured by dtype."""
    positive = [p["ratio"] for p in pts if math.isfinite(p["ratio"]) and p["ratio"] > 0]
    floor = 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e-8
    top = max([3.0] + [p["ratio"] * 3 for p in pts if math.isfinite(p["ratio"])])
    ncols = len(names) + 1 if len(names) < 4 else 4 if len(names) % 4 else 5  # a spare panel for the legend
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 0.6, 2.0 * nrows + 1.0), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes.flat, names):
        scatter_panel(ax, [p for p in pts if p["tensor"] == name], xkey, floor, top)
        ax.set_title(name, fontsize=8)
    spare = list(axes.flat)[len(names):]
    for ax in spare:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("error / budget", fontsize=7)
    for k, ax in enumerate(axes.flat[:len(names)]):
        if k + ncols >= len(names):  # no panel below it
            ax.set_xlabel(xlabel, fontsize=7)
    present = [d for d in DTYPE_STYLE if any(p["dtype"] == d for p in pts)]
    handles = [matplotlib.lines.Line2D([], [], color=DTYPE_STYLE[d][0], marker=DTYPE_STYLE[d][1], linestyle="",
                                       label=d) for d in present]
    handles.append(matplotlib.lines.Line2D([], [], color="black", linestyle="--", label="budget (1)"))
    handles.append(matplotlib.lines.Line2D([], [], color="grey", linestyle=":", label="exactly 0"))
    if spare:
        spare[0].legend(handles=handles, loc="center", fontsize=7, title="dtype", title_fontsize=7)
    else:
        axes[0][0].legend(handles=handles, loc="upper left", fontsize=6, framealpha=0.8)
    fig.suptitle(f"{s.label}: worst error/budget per case and output tensor, against {xlabel}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)


def case_plot_section(s, k, out):
    """Ratio against κ1 and against set size, one panel per output tensor, for one result file."""
    pts = ratio_points(s)
    names = [n for n in TENSORS if any(p["tensor"] == n for p in pts)]
    if not names:
        return None
    images = [f"accuracy_kappa_{k}.svg"]
    case_grid(s, pts, names, "kappa", "κ1 (condition number)", out / images[0])
    ns = sum(1 for p in pts if not p["set_size"])
    if ns < len(pts):
        images.append(f"accuracy_setsize_{k}.svg")
        case_grid(s, pts, names, "set_size", "elements per reduction set", out / images[1])
    nk = sum(1 for p in pts if not (math.isfinite(p["kappa"]) and p["kappa"] > 0))
    nr = sum(1 for p in pts if not math.isfinite(p["ratio"]))
    zero = sum(1 for p in pts if p["ratio"] == 0)
    sec = Section(f"Accuracy per case: {s.suite} on {s.label}", images=images)
    missing = (f"{ns} without a set size (the file predates set_size, so no set-size plot)" if ns == len(pts) else
               f"{ns} without a set size")
    return sec.para(f"{len(pts)} compared tensors, {zero} with ratio exactly 0 (drawn on the dotted line labelled 0). "
                    f"Not drawn: {nk} without a finite positive κ1, {missing}, {nr} with a non-finite ratio.")


# ---------------------------------------------------------------- throughput


TIME_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def bench_rows(s, noise_cv=NOISE_CV):
    """Per benchmark of one bench file: suite, descriptor, median/min/max time (s) over repetitions,
    cv, repetitions, GB/s, roofline fraction, noisy (cv above noise_cv). Returns (rows, roofline GB/s)."""
    ctx = s.data["context"]
    runs = collections.defaultdict(dict)
    reps = collections.defaultdict(list)
    errors = {}
    for b in s.data["benchmarks"]:
        name = b["run_name"]
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "error")
            continue
        if b["run_type"] == "aggregate":
            runs[name].setdefault(b.get("aggregate_name", ""), b)
        else:
            runs[name].setdefault("iteration", b)
            reps[name].append(b["real_time"] * TIME_UNIT[b["time_unit"]])
    rows = [bench_row(name, r, reps[name], noise_cv) for name, r in runs.items()]
    for name, msg in errors.items():
        suite, descriptor = name.split("/", 1)
        rows.append({"suite": suite, "descriptor": descriptor, "error": msg})
    return rows, float(ctx["normcheck_roofline_bytes_per_second"]) / 1e9


def bench_row(name, r, times, noise_cv):
    med = r.get("median") or r.get("iteration")
    unit = TIME_UNIT[med["time_unit"]]
    low = min(times) if times else (r.get("min") or med)["real_time"] * unit
    high = max(times) if times else med["real_time"] * unit
    cv = r.get("cv")
    cv = cv["real_time"] if cv else None
    suite, descriptor = name.split("/", 1)
    return {"suite": suite, "descriptor": med.get("label", descriptor), "bytes": med["bytes"],
            "seconds": med["real_time"] * unit, "min_seconds": low, "max_seconds": high, "cv": cv,
            "repetitions": max(len(times), 1), "gbps": med["bytes_per_second"] / 1e9,
            "fraction": med["roofline_fraction"], "noisy": cv is not None and cv > noise_cv}


def plot_throughput(suite, series, path):
    """series: [(label, roofline GB/s, rows)]; GB/s against bytes moved on log axes: colour = backend,
    marker = op and pass, min–max error bars over repetitions, noisy points ringed red, roofline dashed."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    markers = "osD^v<>phH*XdP8"
    kinds = sorted({kind_of(r) for _, _, rows in series for r in rows if "error" not in r})
    handles = []
    for i, (label, roof, rows) in enumerate(series):
        color = f"C{i}"
        handles.append(matplotlib.lines.Line2D([], [], color=color, label=f"{label} (dashed: {roof:.1f} GB/s STREAM)"))
        ax.axhline(roof, color=color, linestyle="--", linewidth=1)
        by_kind = collections.defaultdict(list)  # one line per op and pass, sorted by size
        for r in rows:
            if "error" not in r:
                by_kind[kind_of(r)].append(r)
        for kind, pts in sorted(by_kind.items()):
            pts.sort(key=lambda r: r["bytes"])
            y = [r["gbps"] for r in pts]
            err = [[max(r["gbps"] - r["bytes"] / r["max_seconds"] / 1e9, 0) for r in pts],
                   [max(r["bytes"] / r["min_seconds"] / 1e9 - r["gbps"], 0) for r in pts]]
            ax.errorbar([r["bytes"] for r in pts], y, yerr=err, linestyle="-", marker=markers[kinds.index(kind) % len(markers)],
                        color=color, markersize=4, linewidth=0.8, capsize=2, elinewidth=0.6)
            noisy = [r for r in pts if r["noisy"]]
            ax.scatter([r["bytes"] for r in noisy], [r["gbps"] for r in noisy], s=70, facecolors="none",
                       edgecolors="red", linewidths=1)
    handles += [matplotlib.lines.Line2D([], [], color="grey", marker=markers[k % len(markers)], linestyle="", label=" ".join(kind))
                for k, kind in enumerate(kinds)]
    handles.append(matplotlib.lines.Line2D([], [], color="red", marker="o", markerfacecolor="none", linestyle="",
                                           markersize=8, label="NOISY (cv over the threshold)"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes moved per call (docs/bench.md model)")
    ax.set_ylabel("achieved GB/s (median; bars: min–max)")
    ax.set_title(f"Throughput vs size: {suite}", fontsize=10)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def kind_of(r):
    m = re.match(r"^([a-z_]+),pass=([a-z_]+)", r["descriptor"])
    return m.groups() if m else ("?", "?")


def throughput_cell(r):
    if r is None:
        return "not run"
    if "error" in r:
        return "ERROR: " + r["error"]
    if r["cv"] is None:
        spread = f", {r['repetitions']} repetition(s), spread unknown"
    else:
        spread = f", cv {100 * r['cv']:.1f}%" + (" NOISY" if r["noisy"] else "")
    return (f"{r['seconds'] * 1e6:.1f} ({r['min_seconds'] * 1e6:.1f}–{r['max_seconds'] * 1e6:.1f}{spread}) · "
            f"{r['gbps']:.3g} · {pct(r['fraction'])}")


def pct(f):
    """A fraction as a percentage with three significant digits: 0.0001234 → '0.0123%'."""
    return f"{100 * f:.3g}%"


def speedup_text(base, other):
    """Median time of base / median time of other (above 1: other is faster); flagged when noisy."""
    if base is None or other is None or "error" in base or "error" in other:
        return "—"
    text = f"×{base['seconds'] / other['seconds']:.3g}"
    return text + " (noisy)" if base["noisy"] or other["noisy"] else text


def throughput_sections(benches, out, noise_cv):
    per_suite = collections.defaultdict(list)  # suite → [(label, roof, rows)]
    summary_rows = []
    for s in benches:
        rows, roof = bench_rows(s, noise_cv)
        c = s.data["context"]
        by_suite = collections.defaultdict(list)
        for r in rows:
            by_suite[r["suite"]].append(r)
        for suite, rs in by_suite.items():
            per_suite[suite].append((s.label, roof, rs))
            ok = [r for r in rs if "error" not in r]
            summary_rows.append([suite, s.label, f"{roof:.2f}", len(ok),
                                 pct(statistics.median([r["fraction"] for r in ok])) if ok else "—",
                                 f"{statistics.median([r['gbps'] for r in ok]):.3g}" if ok else "—",
                                 c["normcheck_threads"], c["normcheck_cache"],
                                 f"{sum(r['noisy'] for r in ok)} NOISY" if any(r["noisy"] for r in ok) else "0",
                                 len(rs) - len(ok)])
    hdr = ["suite", "backend", "measured bandwidth GB/s", "cases", "median roofline fraction", "median GB/s",
           "threads", "cache", f"noisy (cv > {100 * noise_cv:.0f}%)", "errors"]
    sec = Section("Throughput overview").para(
        "Roofline fraction = bytes moved (docs/bench.md model) / median time / the bandwidth STREAM measured at the "
        f"start of the same run. A case whose coefficient of variation over repetitions exceeds {100 * noise_cv:.0f}% "
        "is flagged NOISY: its figures are not a measurement to quote.")
    secs = [sec.table(hdr, summary_rows)]
    for suite, series in sorted(per_suite.items()):
        secs.append(suite_section(suite, series, out))
    return secs


def suite_section(suite, series, out):
    image = f"throughput_{re.sub(r'[^A-Za-z0-9_.-]', '_', suite)}.svg"
    plot_throughput(suite, series, out / image)
    labels = [label for label, _, _ in series]
    cases = list(dict.fromkeys(r["descriptor"] for _, _, rows in series for r in rows))
    index = {(label, r["descriptor"]): r for label, _, rows in series for r in rows}
    hdr = ["case", "MB moved"] + [f"{l}: median µs (min–max, cv) · GB/s · roofline" for l in labels]
    hdr += [f"speed-up {l} vs {labels[0]}" for l in labels[1:]]
    rows = []
    for d in cases:
        first = next(index[(l, d)] for l in labels if (l, d) in index)
        row = [d, f"{first['bytes'] / 1e6:.3f}" if "bytes" in first else "—"]
        row += [throughput_cell(index.get((l, d))) for l in labels]
        row += [speedup_text(index.get((labels[0], d)), index.get((l, d))) for l in labels[1:]]
        rows.append(row)
    sec = Section(f"Throughput: {suite}", images=[image])
    if len(labels) > 1:
        sec.para(f"Speed-up: median time of {labels[0]} / median time of the other (above 1: the other is faster).")
    return sec.table(hdr, rows)


# ---------------------------------------------------- diagnose and metamorphic


def diagnose_section(diags):
    labels = [s.label for s in diags]
    points = list(dict.fromkeys(p["point"] for s in diags for p in s.data["probes"]))
    index = {(s.label, p["point"]): p for s in diags for p in s.data["probes"]}
    rows = []
    for point in points:
        row = [point]
        for l in labels:
            p = index.get((l, point))
            row.append("not probed" if p is None else
                       f"{p['finding']} — {p['evidence']}" + ("" if p["determined"] else " (NOT DETERMINED)"))
        rows.append(row)
    determined = [f"{s.label}: {sum(p['determined'] for p in s.data['probes'])} of {len(s.data['probes'])} points "
                  f"determined" for s in diags]
    sec = Section("Diagnose: what each backend computes (normcheck diagnose)")
    sec.para("Each probe runs ordinary cases built to tell candidate conventions and algorithms apart "
             "(docs/diagnose.md): finding — evidence.")
    return sec.table(["point"] + labels, rows).bullets(determined)


def relation_status(r):
    if r.get("fault"):
        return "fault"
    return "skipped" if r["skipped"] else "held" if r["holds"] else "violated"


def skip_reason(r):
    """The detail of a skipped relation without the descriptor it may start with, so that reasons group."""
    return re.sub(r"^[a-z_]+,pass=\S+?: ", "", r["detail"])


def metamorphic_section(metas):
    labels = [s.label for s in metas]
    counts = collections.defaultdict(lambda: collections.Counter())
    for s in metas:
        for r in s.data["results"]:
            counts[(r["relation"], s.label)][relation_status(r)] += 1
    relations = list(dict.fromkeys(r["relation"] for s in metas for r in s.data["results"]))

    def cell(c):
        if not c:
            return "not checked"
        text = f"{c['held']}/{c['violated']}/{c['skipped']}" + (f", {c['fault']} fault" if c["fault"] else "")
        return ("VIOLATED " if c["violated"] or c["fault"] else "") + text

    sec = Section("Metamorphic relations (normcheck metamorphic)")
    sec.para("Relations a correct kernel satisfies without an expected value (docs/metamorphic.md). Cells: "
             "held/violated/skipped checks; a fault is a run of the backend that failed (an error, not a skip).")
    sec.table(["relation"] + labels, [[rel] + [cell(counts.get((rel, l))) for l in labels] for rel in relations])
    bad = [[r.get("fault") or "VIOLATED", s.label, r["relation"], r["descriptor"], fmt_ratio(num(r["worst_ratio"])),
            r["detail"], f"normcheck metamorphic --backend {s.data['backend']['name']} --case {r['descriptor']}"]
           for s in metas for r in s.data["results"] if relation_status(r) in ("violated", "fault")]
    skipped = collections.Counter((s.label, r["relation"], skip_reason(r)) for s in metas for r in s.data["results"]
                                  if relation_status(r) == "skipped")
    sec.para(f"{len(bad)} violation(s) and fault(s)" + (":" if bad else "."))
    sec.table(["status", "backend", "relation", "case", "× allowance", "detail", "reproduce"], bad)
    if skipped:
        sec.para("Skipped checks, by reason:")
        sec.table(["backend", "relation", "reason", "checks"], [[l, rel, d, n] for (l, rel, d), n in skipped.items()])
    return sec


# ---------------------------------------------------------------- output


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1500px; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.8em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
td.bad {{ background: #fdd; }}
td.flag {{ background: #fff3cd; }}
td {{ overflow-wrap: anywhere; max-width: 40em; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
nav li {{ font-size: 0.9em; }}
</style></head><body>
{body}
<script>
// Self-check for the page test: a plot that failed to load is reported on the console.
window.addEventListener("load", () => {{
  for (const img of document.images)
    if (!img.complete || img.naturalWidth === 0) console.error("image failed to load: " + img.src);
}});
</script>
</body></html>
"""


def write_pages(sections, out, title):
    md = [f"# {title}", ""]
    for sec in sections:
        md += [f"## {sec.heading}", ""]
        md += [f"![{sec.heading}]({image})\n" for image in sec.images]
        md += [sec.md.rstrip(), ""]
    (out / "report.md").write_text("\n".join(md))
    anchors = [f"s{k}" for k in range(len(sections))]
    parts = [f"<h1>{html.escape(title)}</h1>", "<nav><ul>"]
    parts += [f'<li><a href="#{a}">{html.escape(sec.heading)}</a></li>' for a, sec in zip(anchors, sections)]
    parts.append("</ul></nav>")
    for a, sec in zip(anchors, sections):
        parts.append(f'<h2 id="{a}">{html.escape(sec.heading)}</h2>')
        parts += [f'<img src="{html.escape(image)}" alt="{html.escape(sec.heading)}">' for image in sec.images]
        parts.append(sec.html)
    (out / "index.html").write_text(PAGE.format(title=html.escape(title), body="\n".join(parts)))


def build(paths, out, title, noise_cv=NOISE_CV):
    sources = []
    for p in paths:
        kind, data = load(p)
        sources.append(Source(p, kind, data))
    label_sources(sources)
    of = {k: [s for s in sources if s.kind == k] for k in KINDS}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e}") from None
    for pattern in ("accuracy*.svg", "ratio_histogram.svg", "throughput_*.svg"):
        for old in out.glob(pattern):  # plots of an earlier build here would pass for current ones
            old.unlink()
    sections = [provenance_section(sources)]
    if of["result"]:
        sections += overview_sections(of["result"], out)
        sections.append(histogram_section(of["result"], out))
        sections += [attention_section(s) for s in of["result"]]
        sections += [sec for k, s in enumerate(of["result"]) if (sec := case_plot_section(s, k, out))]
    if of["diagnose"]:
        sections.append(diagnose_section(of["diagnose"]))
    if of["metamorphic"]:
        sections.append(metamorphic_section(of["metamorphic"]))
    if of["bench"]:
        sections += throughput_sections(of["bench"], out, noise_cv)
    write_pages(sections, out, title)
    return [out / "index.html", out / "report.md"] + sorted(out.glob("*.svg"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="result, bench, diagnose and metamorphic JSON files")
    ap.add_argument("-o", "--output", required=True, type=pathlib.Path, help="output directory")
    ap.add_argument("--title", default="normcheck report")
    ap.add_argument("--noise-cv", type=float, default=NOISE_CV,
                    help=f"flag a benchmark as NOISY above this coefficient of variation (default {NOISE_CV})")
    args = ap.parse_args()
    try:
        written = build(args.inputs, args.output, args.title, args.noise_cv)
    except InputError as e:
        print(f"normcheck report: error: {e}", file=sys.stderr)
        return 2
    print(f"normcheck report: wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
