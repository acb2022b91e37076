#!/usr/bin/env python3
"""normcheck report builder: correctness results and throughput benchmarks side by side.

Usage (normally through `normcheck report`, which finds a Python with matplotlib):
    build_report.py -o DIR [--title TITLE] RESULTS.json...

Inputs, told apart by content, each validated against its schema in reports/schema/ when
python3-jsonschema is installed:
  - `normcheck --json` results (schema "normcheck-result/1", result.schema.json);
  - `normcheck bench --json` Google Benchmark JSON with normcheck's context (bench.schema.json).
Several files (backends, library versions, machines) are compared side by side: each is one
column or one plotted series, labelled by backend name and version (plus the host when two files
share a label).

Writes DIR/index.html, DIR/report.md and the plots next to them (accuracy.svg, one
throughput_<suite>.svg per benchmarked suite). The page loads nothing from the network.

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
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SCHEMAS = {"result": HERE / "schema" / "result.schema.json", "bench": HERE / "schema" / "bench.schema.json"}
OPS = ["batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm"]
PASSES = ["forward_training", "forward_inference", "backward_training", "backward_inference"]


class InputError(Exception):
    """Bad input: reported in one line, exit code 2."""


def load(path):
    """Reads one input file; returns (kind, data) with kind "result" or "bench"."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read JSON: {e}") from None
    if isinstance(data, dict) and data.get("schema") == "normcheck-result/1":
        kind = "result"
    elif isinstance(data, dict) and "benchmarks" in data and "normcheck_version" in data.get("context", {}):
        kind = "bench"
    else:
        raise InputError(f"{path}: neither a `normcheck --json` result nor a `normcheck bench --json` file")
    try:
        import jsonschema
    except ImportError:
        print(f"build_report.py: {path} not validated (python3-jsonschema is not installed)", file=sys.stderr)
        return kind, data
    schema = json.loads(SCHEMAS[kind].read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise InputError(f"{path}: does not match {SCHEMAS[kind].name} at {list(e.path)}: {e.message}")
    return kind, data


def num(v):
    """JSON numbers, with the strings "nan", "inf", "-inf" of the result format."""
    return float(v)


def short_version(v):
    """'oneDNN 3.7.2 (git …), CPU ISA …' → 'oneDNN 3.7.2'; 'normcheck 0.1.0' stays."""
    m = re.match(r"^(\S+ \d+(?:\.\d+)*)", v)
    return m.group(1) if m else v


class Source:
    """One input file: its kind, label and the fields the report shows."""

    def __init__(self, path, kind, data):
        self.path, self.kind, self.data = path, kind, data
        if kind == "result":
            b = data["backend"]
            self.backend, self.version = b["name"], b["version"]
            self.host, self.cpu = "", data["machine"]["cpu"]
            self.compiler, self.suite = data["machine"]["compiler"], data["suite"]
        else:
            c = data["context"]
            self.backend, self.version = c["normcheck_backend_name"], c["normcheck_backend_version"]
            self.host, self.cpu = c["host_name"], c["normcheck_cpu"]
            self.compiler, self.suite = c["normcheck_compiler"], c["normcheck_suite"]
        self.label = f"{self.backend} ({short_version(self.version)})"


def label_sources(sources):
    """Makes labels unique: adds the host, then the file name, where two files share one."""
    for extra in (lambda s: s.host, lambda s: pathlib.Path(s.path).name):
        counts = collections.Counter((s.kind, s.label) for s in sources)
        for s in sources:
            if counts[(s.kind, s.label)] > 1 and extra(s):
                s.label = f"{s.label} @ {extra(s)}"


# ---------------------------------------------------------------- accuracy


def accuracy_table(results):
    """{(op, pass): {label: {"pass": n, "fail": n, "unsupported": n, "error": n, "worst": ratio}}}."""
    table = collections.defaultdict(dict)
    for s in results:
        for c in s.data["cases"]:
            cell = table[(c["op"], c["pass"])].setdefault(
                s.label, {"pass": 0, "fail": 0, "unsupported": 0, "error": 0, "warn": 0, "not_certifiable": 0, "weak": 0,
                          "worst": None})
            v = c["verdict"]
            kind = {"PASS": "pass", "WARN": "pass", "FAIL": "fail", "NONDETERMINISTIC": "fail", "UNSUPPORTED": "unsupported",
                    "NOT_CERTIFIABLE": "not_certifiable"}.get(v, "error")
            if kind == "pass" and c.get("weak_check"):
                kind = "weak"  # a weak check is counted apart, never as a pass
            cell[kind] += 1
            cell["warn"] += v == "WARN"
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
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) + 2), 4.2))
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
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- throughput


def bench_rows(s):
    """Per benchmark of one bench file: suite, descriptor, median/min time (s), cv, GB/s, fraction."""
    ctx = s.data["context"]
    runs = collections.defaultdict(dict)
    errors = {}
    for b in s.data["benchmarks"]:
        name = b["run_name"]
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "error")
            continue
        kind = b.get("aggregate_name", "") if b["run_type"] == "aggregate" else "iteration"
        runs[name].setdefault(kind, b)
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    rows = []
    for name, r in runs.items():
        med = r.get("median") or r.get("iteration")
        low = r.get("min") or med
        cv = r.get("cv")
        suite, descriptor = name.split("/", 1)
        rows.append({
            "suite": suite, "descriptor": med.get("label", descriptor),
            "bytes": med["bytes"], "seconds": med["real_time"] * unit[med["time_unit"]],
            "min_seconds": low["real_time"] * unit[low["time_unit"]],
            "cv": cv["real_time"] if cv else None,
            "gbps": med["bytes_per_second"] / 1e9, "fraction": med["roofline_fraction"],
        })
    for name, msg in errors.items():
        suite, descriptor = name.split("/", 1)
        rows.append({"suite": suite, "descriptor": descriptor, "error": msg})
    return rows, float(ctx["normcheck_roofline_bytes_per_second"]) / 1e9


def plot_throughput(suite, series, path):
    """series: [(label, roofline GB/s, rows)]; GB/s against bytes moved, roofline dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = "osD^v<>"
    for i, (label, roof, rows) in enumerate(series):
        color = f"C{i}"
        by_kind = collections.defaultdict(list)  # one line per op and pass, sorted by size
        for r in rows:
            if "error" not in r:
                m = re.match(r"^([a-z_]+),pass=([a-z_]+)", r["descriptor"])
                by_kind[m.groups() if m else ("?", "?")].append((r["bytes"], r["gbps"]))
        if not by_kind:
            continue
        for k, ((op, ps), pts) in enumerate(sorted(by_kind.items())):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="-", marker=markers[k % len(markers)],
                    color=color, markersize=4, linewidth=0.8, label=f"{label}: {op} {ps}")
        ax.axhline(roof, color=color, linestyle="--", linewidth=1)
        ax.annotate(f"{label}: measured bandwidth {roof:.1f} GB/s", (min(p[0] for v in by_kind.values() for p in v), roof),
                    color=color, fontsize=7, xytext=(0, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bytes moved per call (docs/bench.md model)")
    ax.set_ylabel("achieved GB/s (median)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput vs size: {suite} (dashed: measured STREAM bandwidth)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- output


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def html_table(header, rows):
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def build(paths, out, title):
    sources = []
    for p in paths:
        kind, data = load(p)
        sources.append(Source(p, kind, data))
    label_sources(sources)
    results = [s for s in sources if s.kind == "result"]
    benches = [s for s in sources if s.kind == "bench"]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e}") from None

    sections = []  # (heading, markdown, html, image or None)

    machine_rows = []
    for s in sources:
        extra = ""
        if s.kind == "bench":
            c = s.data["context"]
            extra = (f"{c['normcheck_threads']} threads, {c['normcheck_cache']} cache, STREAM copy "
                     f"{float(c['normcheck_stream_copy_bytes_per_second']) / 1e9:.2f} / triad "
                     f"{float(c['normcheck_stream_triad_bytes_per_second']) / 1e9:.2f} GB/s")
            if c.get("normcheck_stream_measured_utc"):  # the bandwidth cache (docs/bench.md)
                extra += (f", measured {c['normcheck_stream_measured_utc']}"
                          + (" (cached)" if c.get("normcheck_stream_cached") == "true" else ""))
        else:
            d = s.data
            extra = f"reference {d['reference']['precision_bits']} bits, {'complete' if d['complete'] else 'INCOMPLETE'}"
        machine_rows.append([pathlib.Path(s.path).name, s.kind, s.label, s.version, s.suite,
                             s.cpu + (f" ({s.host})" if s.host else ""), s.compiler, extra])
    header = ["file", "kind", "label", "backend version", "suite", "machine", "compiler", "run"]
    sections.append(("Machines and versions", md_table(header, machine_rows), html_table(header, machine_rows), None))

    if results:
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
                "(docs/comparison.md; below 1 is within budget).")
        plot_accuracy(table, labels, out / "accuracy.svg")
        md = note + "\n\n" + md_table(header, rows) + "\n\n" + "\n".join(f"- {t}" for t in totals)
        ht = f"<p>{html.escape(note)}</p>" + html_table(header, rows) + "<ul>" + "".join(
            f"<li>{html.escape(t)}</li>" for t in totals) + "</ul>"
        sections.append(("Accuracy overview", md, ht, "accuracy.svg"))
        # Per suite: the cases that did not pass, with their reproducers.
        for s in results:
            bad = [c for c in s.data["cases"]
                   if c["verdict"] not in ("PASS", "UNSUPPORTED") or (c["verdict"] == "PASS" and c.get("weak_check"))]
            rows = [[c["verdict"], c["descriptor"], c["reason"], c.get("suspected_cause", ""), c["reproducer"]]
                    for c in bad]
            text = (f"{len(bad)} of {len(s.data['cases'])} cases did not pass cleanly (FAIL, WARN, weak checks, "
                    f"NOT CERTIFIABLE, errors).")
            hdr = ["verdict", "case", "reason", "suspected cause", "reproduce"]
            sections.append((f"Accuracy: {s.suite} on {s.label}", text + ("\n\n" + md_table(hdr, rows) if rows else ""),
                             f"<p>{html.escape(text)}</p>" + (html_table(hdr, rows) if rows else ""), None))

    if benches:
        per_suite = collections.defaultdict(list)  # suite → [(label, roof, rows)]
        summary_rows = []
        for s in benches:
            rows, roof = bench_rows(s)
            by_suite = collections.defaultdict(list)
            for r in rows:
                by_suite[r["suite"]].append(r)
            for suite, rs in by_suite.items():
                per_suite[suite].append((s.label, roof, rs))
                ok = [r["fraction"] for r in rs if "error" not in r]
                summary_rows.append([suite, s.label, f"{roof:.2f}", len(ok),
                                     f"{100 * statistics.median(ok):.1f}%" if ok else "—",
                                     f"{statistics.median([r['gbps'] for r in rs if 'error' not in r]):.2f}" if ok else "—"])
        hdr = ["suite", "backend", "measured bandwidth GB/s", "cases", "median roofline fraction", "median GB/s"]
        note = ("Roofline fraction = bytes moved (docs/bench.md model) / median time / the bandwidth STREAM "
                "measured at the start of the same run.")
        sections.append(("Throughput overview", note + "\n\n" + md_table(hdr, summary_rows),
                         f"<p>{html.escape(note)}</p>" + html_table(hdr, summary_rows), None))
        for suite, series in sorted(per_suite.items()):
            image = f"throughput_{re.sub(r'[^A-Za-z0-9_.-]', '_', suite)}.svg"
            plot_throughput(suite, series, out / image)
            labels = [label for label, _, _ in series]
            cases = []
            for _, _, rows in series:
                for r in rows:
                    if r["descriptor"] not in cases:
                        cases.append(r["descriptor"])
            index = {(label, r["descriptor"]): r for label, _, rows in series for r in rows}
            hdr = ["case", "MB moved"] + [f"{l}: median µs (min, cv) · GB/s · roofline" for l in labels]
            rows = []
            for d in cases:
                first = next(index[(l, d)] for l in labels if (l, d) in index)
                row = [d, f"{first['bytes'] / 1e6:.3f}" if "bytes" in first else "—"]
                for l in labels:
                    r = index.get((l, d))
                    if r is None:
                        row.append("not run")
                    elif "error" in r:
                        row.append("ERROR: " + r["error"])
                    else:
                        cv = f", cv {100 * r['cv']:.1f}%" if r["cv"] is not None else ""
                        row.append(f"{r['seconds'] * 1e6:.1f} ({r['min_seconds'] * 1e6:.1f}{cv}) · "
                                   f"{r['gbps']:.2f} · {100 * r['fraction']:.1f}%")
                rows.append(row)
            sections.append((f"Throughput: {suite}", md_table(hdr, rows), html_table(hdr, rows), image))

    md = [f"# {title}", ""]
    for heading, text, _, image in sections:
        md += [f"## {heading}", ""]
        if image:
            md += [f"![{heading}]({image})", ""]
        md += [text, ""]
    (out / "report.md").write_text("\n".join(md))

    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, _, body, image in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if image:
            parts.append(f'<img src="{html.escape(image)}" alt="{html.escape(heading)}">')
        parts.append(body)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
img {{ max-width: 100%; }}
</style></head><body>
{''.join(parts)}
<script>
// Self-check for the page test: a plot that failed to load is reported on the console.
window.addEventListener("load", () => {{
  for (const img of document.images)
    if (!img.complete || img.naturalWidth === 0) console.error("image failed to load: " + img.src);
}});
</script>
</body></html>
"""
    (out / "index.html").write_text(page)
    return [out / "index.html", out / "report.md"] + sorted(out.glob("*.svg"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="result and bench JSON files")
    ap.add_argument("-o", "--output", required=True, type=pathlib.Path, help="output directory")
    ap.add_argument("--title", default="normcheck report")
    args = ap.parse_args()
    try:
        written = build(args.inputs, args.output, args.title)
    except InputError as e:
        print(f"normcheck report: error: {e}", file=sys.stderr)
        return 2
    print(f"normcheck report: wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
