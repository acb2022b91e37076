"""pytest plugin: one test per normcheck suite case (docs/python.md).

Enable it with ``-p normcheck.pytest_plugin`` on the command line, or
``pytest_plugins = ["normcheck.pytest_plugin"]`` in a conftest.py. Then mark a test function
with the suite(s) it runs over and take the ``normcheck_descriptor`` argument::

    @pytest.mark.normcheck_suite("smoke", ops=["layer_norm"], passes=["forward_training"])
    def test_my_layer_norm(normcheck_descriptor):
        normcheck.pytest_plugin.assert_case(my_layer_norm, normcheck_descriptor)

The test is parametrized with one case per matching suite line; each test id is the canonical
descriptor, so ``-k`` selects on it (``-k "bf16 and not nhwc"``; pytest's -k words cannot hold
``=`` or ``,``). ``dtypes=`` and ``descriptors=`` (a list of extra descriptors) filter and extend
the same way. A failing case fails with the message of :meth:`normcheck.Result.message`: the
verdict, per-tensor ratios and worst elements, the suspected cause and the reproducer.
``--normcheck-suite NAME`` replaces the suite of every marked test for one run.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional

import pytest

import normcheck

_MARK = "normcheck_suite"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("normcheck")
    group.addoption("--normcheck-suite", action="append", default=None, metavar="NAME",
                    help="run the marked normcheck tests over this suite (built-in name or file) instead")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", f"{_MARK}(*suites, ops=None, passes=None, dtypes=None, descriptors=None): parametrize "
                   "normcheck_descriptor over the cases of normcheck suites (normcheck.pytest_plugin)")


def _matches(desc: str, ops: Optional[Iterable[str]], passes: Optional[Iterable[str]],
             dtypes: Optional[Iterable[str]]) -> bool:
    fields = desc.split(",")
    kv = dict(f.split("=", 1) for f in fields[1:])
    return ((ops is None or fields[0] in ops) and (passes is None or kv.get("pass") in passes)
            and (dtypes is None or kv.get("dtype") in dtypes))


def cases_for(suites: Iterable[str], ops: Optional[Iterable[str]] = None, passes: Optional[Iterable[str]] = None,
              dtypes: Optional[Iterable[str]] = None, descriptors: Optional[Iterable[str]] = None) -> List[str]:
    """Canonical descriptors of the suites' cases (and the extra descriptors) that match the filters."""
    out: List[str] = []
    for s in suites:
        out += [normcheck.canonical(d) for d, _note in normcheck.suite(s)]
    out += [normcheck.canonical(d) for d in (descriptors or [])]
    seen, unique = set(), []
    for d in out:
        if d not in seen and _matches(d, ops, passes, dtypes):
            seen.add(d)
            unique.append(d)
    return unique


def pytest_generate_tests(metafunc: Any) -> None:
    if "normcheck_descriptor" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker(_MARK)
    if mark is None:
        raise pytest.UsageError(f"{metafunc.function.__name__} takes normcheck_descriptor but has no "
                                f"@pytest.mark.{_MARK}(...)")
    suites = metafunc.config.getoption("--normcheck-suite") or list(mark.args)
    descs = cases_for(suites, mark.kwargs.get("ops"), mark.kwargs.get("passes"), mark.kwargs.get("dtypes"),
                      mark.kwargs.get("descriptors"))
    if not descs:
        raise pytest.UsageError(f"{metafunc.function.__name__}: no normcheck case matches suites {suites} and "
                                f"the filters {dict(mark.kwargs)}")
    metafunc.parametrize("normcheck_descriptor", descs, ids=descs)


def assert_case(fn: Callable, descriptor: str, **kw: Any) -> normcheck.Result:
    """Runs :func:`normcheck.check_fn` and fails the test unless the verdict is PASS or WARN.

    UNSUPPORTED fails too (the function was asked for a case it cannot run; filter the suite
    instead). The failure message carries the per-tensor figures and the reproducer.
    """
    r = normcheck.check_fn(fn, descriptor, **kw)
    if not r.passed:
        pytest.fail(r.message(), pytrace=False)
    return r
