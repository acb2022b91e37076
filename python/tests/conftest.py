"""pytest configuration for normcheck's own Python tests (run by the ctest python_package_pytest).

Loads the normcheck plugin (and pytester, for the tests of the plugin itself), and fails the
session when fewer than $NORMCHECK_MIN_PASSED tests passed: an import problem that skips or
deselects everything must not look green (pytest's exit code 5, no tests collected, is non-zero
and fails the ctest by itself).
"""
import os

import pytest

pytest_plugins = ["pytester", "normcheck.pytest_plugin"]


def pytest_sessionfinish(session, exitstatus):
    need = int(os.environ.get("NORMCHECK_MIN_PASSED", "0"))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if passed < need and exitstatus == 0:
        if reporter:
            reporter.write_line(f"normcheck: only {passed} tests passed, at least {need} expected "
                                "(NORMCHECK_MIN_PASSED): failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
