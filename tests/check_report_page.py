"""The report page opens in headless Chromium with no console messages, and a screenshot of it
is written to OUT_DIR/screenshot.png.

Usage: check_report_page.py NORMCHECK FIXTURE_DIR OUT_DIR
Exit 77 (CTest: skipped) with the reason when Debian's chromium is not installed.

The page itself logs "image failed to load: …" for a plot it cannot show (reports/build_report.py),
so a missing plot is a console message too. Chromium prints every console call on stderr as
"INFO:CONSOLE(…)" with --enable-logging=stderr.
"""
import pathlib
import shutil
import subprocess
import sys

normcheck, fixtures, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if not chromium:
    print("SKIP: no chromium on PATH (Debian package chromium; tools/setup.sh installs it)")
    sys.exit(77)
out.mkdir(parents=True, exist_ok=True)
inputs = sorted(map(str, fixtures.glob("*.json")))
subprocess.run([normcheck, "report", *inputs, "-o", str(out / "page")], check=True, stdout=subprocess.DEVNULL)
shot = out / "screenshot.png"
shot.unlink(missing_ok=True)
r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                    "--window-size=1400,3000", f"--screenshot={shot}", (out / "page" / "index.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
console = [l for l in r.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
assert not console, "console messages:\n" + "\n".join(console)
assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot ({r.returncode}): {r.stderr[-500:]}"
# The self-check can fail: a page with a missing plot does log (so the assertion above can fail).
broken = out / "broken"
shutil.copytree(out / "page", broken, dirs_exist_ok=True)
(broken / "accuracy.svg").unlink()
r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                    "--dump-dom", (broken / "index.html").as_uri()], capture_output=True, text=True, timeout=120)
assert any("image failed to load" in l for l in r.stderr.splitlines()), "the missing plot went unnoticed"
print(f"report page: no console messages; screenshot {shot} ({shot.stat().st_size} bytes)")
