"""Runs the shell commands of README.md and docs/**/*.md, so that they cannot drift from the CLI.

Usage: check_doc_commands.py SOURCE_DIR BUILD_DIR WORK_DIR

Every fenced ```sh or ```bash block runs, one line (one command) at a time, with bash, in a
fresh directory of its own under WORK_DIR, where `build` points at the build tree's parent (so
`build/release/normcheck` works) and `normcheck` on PATH is BUILD_DIR/normcheck. A command must
exit 0. An HTML comment on the line before a block's fence changes that:

  <!-- doc-test: skip: REASON -->   the block is not run; the reason is printed
  <!-- doc-test: exit N -->         each command of the block must exit N
  <!-- doc-test: output -->         (before a plain ``` block) every line of it must be a line of
                                    the output of the last command run before it ("…" matches
                                    anything within a line)

A command naming a backend (`--backend NAME`) that the binary it runs does not have (oneDNN not
built here) is skipped with the reason printed. Fails when a command fails, when an output
block does not match, or when no command ran at all.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

source, build, work = (pathlib.Path(a).resolve() for a in sys.argv[1:4])
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
bindir = work / "bin"
bindir.mkdir()
(bindir / "normcheck").symlink_to(build / "normcheck")
env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}")
env.pop("NO_COLOR", None)
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(skip:\s*(?P<skip>.*?)|exit\s+(?P<exit>\d+)|(?P<output>output))\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")


def blocks(path):
    """(line number, language, marker match or None, lines) of each fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        indent, start, body = len(m.group("indent")), i + 1, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        yield start, m.group("lang"), marker, body
        i += 1


def commands(body):
    out, cur = [], ""
    for line in body:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    return out


backend_cache = {}


def backends_of(binary):
    if binary not in backend_cache:
        r = subprocess.run([binary, "list", "--json"], capture_output=True, text=True)
        backend_cache[binary] = {b["name"] for b in json.loads(r.stdout)["backends"]} if r.returncode == 0 else set()
    return backend_cache[binary]


def missing_backend(cmd):
    m = re.search(r"--backend[ =](\S+)", cmd)
    if not m or "/" in m.group(1) or m.group(1).endswith(".so"):
        return None
    words = cmd.split()
    prog = words[0]
    binary = {"normcheck": build / "normcheck"}.get(prog, source / prog if "/" in prog else None)
    if binary is None or not pathlib.Path(binary).exists():
        return None
    return None if m.group(1) in backends_of(str(binary)) else m.group(1)


def line_matches(expected, got_lines):
    if "…" not in expected:
        return expected in got_lines
    pat = re.compile("^" + ".*".join(re.escape(p) for p in expected.split("…")) + "$")
    return any(pat.match(g) for g in got_lines)


failures, ran, skipped = [], 0, 0
t_all = time.monotonic()
docs = [source / "README.md"] + sorted((source / "docs").rglob("*.md"))
for doc in docs:
    rel = doc.relative_to(source)
    last_output = None
    for n, lang, marker, body in blocks(doc):
        where = f"{rel}:{n}"
        if lang not in ("sh", "bash"):
            if marker and marker.group("output"):
                if last_output is None:
                    failures.append(f"{where}: output block with no command run before it")
                    continue
                got = last_output.splitlines()
                for line in body:
                    if line.strip() and not line_matches(line, got):
                        failures.append(f"{where}: the output has no line\n    {line}\n  it was:\n{last_output}")
                        break
                else:
                    print(f"ok    {where}: output matches")
            continue
        if marker and marker.group("skip") is not None:
            print(f"skip  {where}: {marker.group('skip')}")
            skipped += 1
            continue
        want = int(marker.group("exit")) if marker and marker.group("exit") else 0
        cwd = work / f"{rel.as_posix().replace('/', '_')}_{n}"
        cwd.mkdir()
        (cwd / "build").symlink_to(build.parent)
        for cmd in commands(body):
            if (b := missing_backend(cmd)) is not None:
                print(f"skip  {where}: backend {b} is not built here: {cmd}")
                skipped += 1
                continue
            t = time.monotonic()
            r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
            ran += 1
            last_output = r.stdout + r.stderr
            status = "ok" if r.returncode == want else "FAIL"
            print(f"{status:5} {where}: exit {r.returncode} in {time.monotonic() - t:.1f} s: {cmd}")
            if r.returncode != want:
                failures.append(f"{where}: `{cmd}` exited {r.returncode}, expected {want}:\n{last_output[-3000:]}")

print(f"\n{ran} commands run, {skipped} skipped, {len(failures)} failures ({time.monotonic() - t_all:.1f} s)")
for f in failures:
    print("\nFAILED " + f)
sys.exit(1 if failures or ran == 0 else 0)
