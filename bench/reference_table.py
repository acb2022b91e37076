#!/usr/bin/env python3
"""The issue-11 table from normcheck_bench_reference JSON output (Google Benchmark format).

Usage: bench/reference_table.py RESULT.json[.xz] [RESULT.json[.xz] ...] > table.md

One row per op × pass × size found in the files, from the BM_ReferenceVsFloat64 benchmarks
(bench/bench_reference.cpp documents every counter):
  ref cpu_ratio      the fast reference alone over the float64 two-pass, thread CPU time, 1 thread
  ref ns/el          wall nanoseconds per element, 1 thread → all threads, and the speed-up
  whole cpu_ratio    the whole run_case against the naive backend, 1 thread
  own ratio          the whole case less the backend's calls (normcheck's own cost), 1 thread
  whole ns/el        1 thread → all threads, and the speed-up
  ref peak B/el      the reference's peak resident bytes per element, its inputs included
  whole own B/el     the whole case's own peak resident bytes per element
A benchmark measured more than once (--benchmark_repetitions, or in several files) shows its
fastest run: on a shared machine other jobs only ever slow a run down. A missing measurement
prints "–". Peak bytes read 0 where the case fit in memory the process already held (below about
2^20 elements).
"""
import json
import lzma
import sys

OPS = ["batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm"]


def load(paths):
    rows = {}
    for path in paths:
        with (lzma.open(path, "rt") if path.endswith(".xz") else open(path)) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            name = b["name"].split("/min_time")[0].split("/")
            if name[0] != "BM_ReferenceVsFloat64" or b.get("run_type") == "aggregate":
                continue
            op, log2, pas, threads, whole = name[1], int(name[2]), int(name[3]), int(name[4]), int(name[5])
            key = (op, pas, log2, whole, threads)
            if key not in rows or b["ns_per_element"] < rows[key]["ns_per_element"]:
                rows[key] = b
    return rows


def cell(b, key, fmt):
    return fmt % b[key] if b is not None and key in b else "–"


def speedup(one, all_threads):
    if one is None or all_threads is None:
        return "–"
    return "%.2f×" % (one["ns_per_element"] / all_threads["ns_per_element"])


def main(paths):
    rows = load(paths)
    print("| op | pass | elements | ref cpu_ratio | ref ns/el, 1 → all threads | whole cpu_ratio | own ratio "
          "| whole ns/el, 1 → all threads | ref peak B/el | whole own B/el |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    sizes = sorted({k[2] for k in rows})
    for op in OPS:
        for pas in (0, 1):
            for log2 in sizes:
                r1, ra = rows.get((op, pas, log2, 0, 1)), rows.get((op, pas, log2, 0, 0))
                w1, wa = rows.get((op, pas, log2, 1, 1)), rows.get((op, pas, log2, 1, 0))
                if not any((r1, ra, w1, wa)):
                    continue
                print("| %s | %s | 2^%d | %s | %s → %s (%s) | %s | %s | %s → %s (%s) | %s | %s |" % (
                    op, "forward" if pas == 0 else "backward", log2, cell(r1, "cpu_ratio", "%.2f"),
                    cell(r1, "ns_per_element", "%.1f"), cell(ra, "ns_per_element", "%.1f"), speedup(r1, ra),
                    cell(w1, "cpu_ratio", "%.2f"), cell(w1, "own_ratio", "%.2f"), cell(w1, "ns_per_element", "%.1f"),
                    cell(wa, "ns_per_element", "%.1f"), speedup(w1, wa), cell(r1, "peak_bytes_per_element", "%.1f"),
                    cell(w1, "own_peak_bytes_per_element", "%.1f")))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: reference_table.py RESULT.json [RESULT.json ...]")
    main(sys.argv[1:])
