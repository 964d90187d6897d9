"""``genievm plugins --check``: run the contract self-checks that installed plugins declare.

A plugin declares self-checks with the ``genievm_register_self_checks`` hook:
a name and a module of pytest test classes (usually subclasses of the contract
suites of ``genievm_core.testing``). Each runs in its own pytest process, in a
temporary folder that is removed afterwards, with pytest's plugin autoload off
(only GenieVM's fixtures, ``genievm_core.testing.plugin``, are loaded) and no
conftest files, so what an operator's environment holds does not change the
outcome. Results are read from pytest's JUnit XML report.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from genievm_core.plugin.host import PluginHost

__all__ = ["DISABLED_ENV", "CheckResult", "run_self_checks"]

DISABLED_ENV = "GENIEVM_TEST_DISABLED_PLUGINS"  # comma-separated; the genievm_host fixture does not load them

Outcome = Literal["passed", "failed", "error"]
DEFAULT_TIMEOUT = 600.0


@dataclass
class CheckResult:
    """The outcome of one self-check of one plugin."""

    plugin: str
    name: str
    tests: str
    outcome: Outcome
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # "test: first line of the failure"

    @property
    def ok(self) -> bool:
        return self.outcome == "passed"


def run_self_checks(
    host: PluginHost, *, plugins: Iterable[str] = (), disabled: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT
) -> list[CheckResult]:
    """Run the self-checks of ``plugins`` (all plugins when empty), one after another.

    ``disabled`` plugins (``--disable-plugin``) are not loaded by the checks' plugin host either.
    """
    skip = ",".join(disabled)
    wanted = set(plugins)
    checks = [r for r in host.self_checks if not wanted or r.plugin in wanted]
    results = []
    for registered in checks:
        result = CheckResult(registered.plugin, registered.name, registered.value, "error")
        if importlib.util.find_spec("pytest") is None:
            result.problems.append("pytest is not installed here: install it (pip install pytest) to run self-checks")
        else:
            _run(result, timeout, skip)
        results.append(result)
    return results


def _run(result: CheckResult, timeout: float, disabled: str) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="genievm-check-") as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n")
        report = folder / "report.xml"
        args = [
            sys.executable, "-m", "pytest", "--pyargs", result.tests,
            "-c", str(folder / "pytest.ini"), "--rootdir", str(folder), "--noconftest",
            "-p", "no:cacheprovider", "-p", "genievm_core.testing.plugin",
            "--basetemp", str(folder / "tmp"), "--junitxml", str(report), "-q", "--no-header", "-rN",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIEVM_", "PYTEST_"))}
        env |= {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "GENIEVM_JOB_DB": str(folder / "jobs.sqlite")}
        if disabled:
            env[DISABLED_ENV] = disabled
        try:
            proc = subprocess.run(
                args, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            result.problems.append(f"did not finish within {timeout:.0f} s")
            result.seconds = time.monotonic() - started
            return
        result.seconds = time.monotonic() - started
        if report.exists():
            _read_report(result, report)
        if proc.returncode == 0 and result.passed:
            result.outcome = "passed"
        elif proc.returncode in (1,) and result.problems:
            result.outcome = "failed"
        else:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            tail = lines[-1] if lines else "no output"
            result.problems.append(f"pytest exited {proc.returncode}: {tail}")


def _read_report(result: CheckResult, report: Path) -> None:
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name', '')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            result.failed += 1
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            result.problems.append(f"{test}: {message[0] if message else 'failed'}")
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1
