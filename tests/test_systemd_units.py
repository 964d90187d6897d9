"""The systemd units of packaging/systemd (issue 15): each passes ``systemd-analyze verify``, runs a real
``genievm`` command, logs to the journal as JSON and names man pages that the packages ship.

systemd need not run here: ``verify --root`` reads the units from a folder laid out like a machine
(this machine's own system units, the units under test and an executable /usr/bin/genievm).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
UNITS = ROOT / "packaging/systemd"
# an instance of each template, as a site would name it
INSTANCES = {
    "genievm-backup@.service": "genievm-backup@nightly.service",
    "genievm-backup@.timer": "genievm-backup@nightly.timer",
    "genievm-server.service": "genievm-server.service",
    "genievm-worker@.service": "genievm-worker@kvm-site1.service",
}
SYSTEM_UNITS = Path("/lib/systemd/system")


def machine(tmp_path: Path, units: Path) -> Path:
    """A root for ``verify --root``: the host's system units, ``units`` in /etc/systemd/system, a genievm."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    shutil.copytree(units, root / "etc/systemd/system")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/genievm").write_text("#!/bin/sh\n")
    (root / "usr/bin/genievm").chmod(0o755)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    # man pages are checked below against what the generator writes (verify would look for them on this host)
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units], capture_output=True, text=True
    )


def settings(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections: each a list of its settings in order (a key may repeat, as Environment= does)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def unit(name: str) -> dict[str, dict[str, str]]:
    """A unit file's sections as dictionaries (the last value of a repeated key)."""
    return {section: dict(pairs) for section, pairs in settings(name).items()}


@pytest.fixture(scope="module")
def systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir():
        pytest.fail("systemd-analyze is missing: scripts/setup.sh installs the systemd package")


def test_the_units_are_the_ones_listed() -> None:
    assert sorted(p.name for p in UNITS.iterdir()) == sorted(INSTANCES)


def test_every_unit_verifies(tmp_path: Path, systemd_analyze: None) -> None:
    result = verify(machine(tmp_path, UNITS), *INSTANCES.values())
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_finds_a_broken_unit(tmp_path: Path, systemd_analyze: None) -> None:
    """The check has teeth: a timer with a bad calendar, and a service whose command is missing, fail."""
    units = tmp_path / "units"
    shutil.copytree(UNITS, units)
    timer = units / "genievm-backup@.timer"
    timer.write_text(timer.read_text().replace("OnCalendar=daily", "OnCalendar=every night"))
    root = machine(tmp_path, units)
    result = verify(root, "genievm-backup@nightly.timer")
    assert result.returncode != 0 and "calendar" in result.stderr
    (root / "usr/bin/genievm").unlink()
    result = verify(root, "genievm-backup@nightly.service")
    assert result.returncode != 0 and "/usr/bin/genievm" in result.stderr


def test_the_backup_service_runs_the_job_config_of_its_instance() -> None:
    service = unit("genievm-backup@.service")["Service"]
    assert service["ExecStart"] == "/usr/bin/genievm backup --config /etc/genievm/jobs/%i.json"
    assert service["Type"] == "oneshot"
    assert unit("genievm-backup@.service")["Unit"]["ConditionPathExists"] == "/etc/genievm/jobs/%i.json"
    assert unit("genievm-backup@.timer")["Install"]["WantedBy"] == "timers.target"


def test_the_backup_command_of_the_unit_reads_that_config(tmp_path: Path) -> None:
    """``genievm backup --config FILE``, as the unit runs it, takes a job config (a missing one: one line)."""
    result = subprocess.run(
        [str(ROOT / ".venv/bin/genievm"), "backup", "--config", str(tmp_path / "nightly.json")],
        capture_output=True, text=True, env={"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0 and "nightly.json" in result.stderr
    assert "No such option" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", [n for n in INSTANCES if n.endswith(".service")])
def test_a_service_logs_json_to_the_journal(name: str) -> None:
    """stdout and stderr go to the journal (systemd's default, not overridden); the events as JSON lines."""
    service = unit(name)["Service"]
    assert "StandardOutput" not in service and "StandardError" not in service
    environment = " ".join(v for k, v in settings(name)["Service"] if k == "Environment")
    assert "GENIEVM_LOG_FORMAT=json" in environment
    assert "GENIEVM_JOB_DB=/var/lib/genievm/jobs.sqlite" in environment
    assert service["StateDirectory"] == "genievm"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_the_documentation_of_a_unit_is_a_generated_man_page(name: str) -> None:
    """Each ``man:genievm-X(1)`` is the page of ``genievm X`` (packaging/manpages.py), the command the unit runs."""
    documentation = unit(name)["Unit"]["Documentation"]
    assert documentation.startswith("man:genievm-") and documentation.endswith("(1)")
    command = documentation.removeprefix("man:genievm-").removesuffix("(1)")
    exec_start = unit(INSTANCES_SERVICE.get(name, name))["Service"]["ExecStart"]
    assert exec_start.split()[:2] == ["/usr/bin/genievm", command]


INSTANCES_SERVICE = {"genievm-backup@.timer": "genievm-backup@.service"}
