"""The pytest plugin, run in an inner pytest session (pytester): one test per suite case,
failure messages with per-tensor figures and the reproducer, -k on descriptors."""
import os
import sys

import normcheck
from normcheck.pytest_plugin import cases_for

HERE = os.path.dirname(os.path.abspath(__file__))

INNER = """
import sys
sys.path.insert(0, {here!r})
import pytest
import normcheck.pytest_plugin as ncp
from implementations import layer_norm, layer_norm_unbiased

@pytest.mark.normcheck_suite("smoke", "edge", ops=["layer_norm"], passes=["forward_training"])
def test_numpy_layer_norm(normcheck_descriptor):
    ncp.assert_case(layer_norm, normcheck_descriptor)

@pytest.mark.normcheck_suite(descriptors=["layer_norm,shape=8x64", "layer_norm,shape=4x32,dtype=bf16"])
def test_wrong_layer_norm(normcheck_descriptor):
    ncp.assert_case(layer_norm_unbiased, normcheck_descriptor)
"""


def _write(pytester):
    pytester.makepyfile(test_inner=INNER.format(here=HERE))


def test_one_test_per_case_correct_passes_wrong_fails_with_reproducer(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMCHECK_INPUT_DIR", str(tmp_path))
    _write(pytester)
    n = len(cases_for(["smoke", "edge"], ops=["layer_norm"], passes=["forward_training"]))
    assert n >= 5
    res = pytester.runpytest("-p", "normcheck.pytest_plugin", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=n, failed=2)
    out = res.stdout.str()
    assert "reproduce: normcheck.check_fn(fn, 'layer_norm,pass=forward_training,dtype=f32,shape=8x64')" in out
    assert "y: FAIL" in out and "worst ratio" in out and "suspected cause:" in out
    # test ids are the canonical descriptors
    assert "test_numpy_layer_norm[layer_norm,pass=forward_training,dtype=f32,shape=3x5x7]" in "\n".join(
        pytester.runpytest("-p", "normcheck.pytest_plugin", "--collect-only", "-q").stdout.lines)


def test_k_selects_on_descriptors(pytester):
    _write(pytester)
    res = pytester.runpytest("-p", "normcheck.pytest_plugin", "-p", "no:cacheprovider", "-k", "wrong and bf16")
    outcomes = res.parseoutcomes()
    assert outcomes.get("failed") == 1 and not outcomes.get("passed"), outcomes
    res = pytester.runpytest("-p", "normcheck.pytest_plugin", "-p", "no:cacheprovider", "-k", "numpy and 2x3x4x5")
    assert res.parseoutcomes().get("passed") == 2  # norm_dims 1 and 3


def test_marker_missing_or_matching_nothing_is_a_usage_error(pytester):
    pytester.makepyfile(test_bad="""
import pytest
def test_nomark(normcheck_descriptor):
    pass
@pytest.mark.normcheck_suite("smoke", ops=["no_such_op"])
def test_empty(normcheck_descriptor):
    pass
""")
    res = pytester.runpytest("-p", "normcheck.pytest_plugin")
    assert res.ret != 0
    out = res.stdout.str() + res.stderr.str()
    assert "has no @pytest.mark.normcheck_suite" in out or "no normcheck case matches" in out
