"""Real normcheck JSON reports validate against reports/schema/result.schema.json, and the JUnit
XML of the same runs parses and agrees with them.

Usage: check_report_schema.py SCHEMA NORMCHECK_WITH_MUTANTS OUT_DIR. Runs a passing suite and a
failing (mutant) suite, so every field appears with its pass and fail values, and validates both.
"""
import json
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import jsonschema

schema_path, binary, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
schema = json.loads(pathlib.Path(schema_path).read_text())
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for backend, expected_exit in (("naive", 0), ("mutant_unbiased_variance", 1)):
    report = out / f"{backend}.json"
    rc = subprocess.run([binary, "--backend", backend, "--suite", "smoke", "--suite", "edge",
                         "--json", str(report), "-q"], stdout=subprocess.DEVNULL).returncode
    assert rc == expected_exit, (backend, rc)
    data = json.loads(report.read_text())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    verdicts = {c["verdict"] for c in data["cases"]}
    # The JUnit XML of the same run parses and agrees with the JSON summary.
    junit = out / f"{backend}.xml"
    subprocess.run([binary, "--backend", backend, "--suite", "smoke", "--suite", "edge",
                    "--junit", str(junit), "-q"], stdout=subprocess.DEVNULL)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites", root.tag
    assert int(root.get("tests")) == data["summary"]["total"]
    assert int(root.get("failures")) == data["summary"]["fail"]
    assert len(root.findall("./testsuite/testcase")) == data["summary"]["total"]
    assert len(root.findall("./testsuite/testcase/failure")) == data["summary"]["fail"]
    print(f"{backend}: {len(data['cases'])} cases valid, verdicts {sorted(verdicts)}")
