"""``genievm_core.logging.get_logger``: structlog is imported for the first event the configured level shows."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from genievm_core.logging import bound, configure_logging, get_logger
log = get_logger("genievm.test")
if sys.argv[1] == "configured":
    configure_logging("warning", "json")
    log.info("hidden", n=1)
    print("after info:", "structlog" in sys.modules, file=sys.stderr)
    with bound(job_id="j1"):
        log.warning("shown", passphrase="secret")
    print("after warning:", "structlog" in sys.modules, file=sys.stderr)
else:
    log.info("library", n=2)
    print("after info:", "structlog" in sys.modules, file=sys.stderr)
"""


def run(mode: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines() + done.stdout.splitlines()


def test_an_event_below_the_level_imports_nothing_and_one_at_it_is_rendered_as_configured() -> None:
    lines = run("configured")
    assert lines[0] == "after info: False"
    event = json.loads(lines[1])
    assert event["event"] == "shown" and event["level"] == "warning" and event["job_id"] == "j1"
    assert event["passphrase"] == "***" and "timestamp" in event
    assert lines[2] == "after warning: True" and "hidden" not in "".join(lines)


def test_without_configure_logging_every_event_goes_to_structlog() -> None:
    """The library used on its own: structlog's defaults (or the caller's set-up) see every event."""
    lines = run("library")
    assert "after info: True" in lines
    assert any("library" in line and "n=2" in line for line in lines)
