"""Start-up: ``genievm --help`` imports no command module, plugin or heavy library (issue 21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genievm_core.cli import COMMANDS, load_command
from genievm_core.testing.cli import run_cli

# what the root's --help must not pay for: each costs tens of milliseconds or more
HEAVY = [
    "genievm_core.api",
    "genievm_core.engine",
    "genievm_core.cli.common",
    "pydantic",
    "structlog",
    "pluggy",
    "stevedore",
    "importlib.metadata",
    "genievm_kvm",
    "genievm_vmware",
    "genievm_storage_s3",
    "boto3",
]

PROBE = """
import json, sys
sys.argv = ["genievm", *sys.argv[1:]]
from genievm_core.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported_by(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_root_help_imports_nothing_heavy() -> None:
    """Only what lists the commands other distributions add (``genievm serve``): their entry points, read with
    importlib.metadata (about 50 ms) by genievm_core.cli.extra; none of them is imported."""
    modules = imported_by("--help")
    assert "typer" in modules  # the probe ran the command
    listing = {"importlib.metadata", "genievm_core.cli.extra"}
    assert sorted(m for m in HEAVY if m in modules and m not in listing) == []
    assert sorted(m for m in modules if m.startswith("genievm_core.cli.") and m not in listing) == []
    assert "genievm_recovery" not in modules and "genievm_recovery.cli" not in modules


def test_a_command_imports_only_what_it_needs() -> None:
    modules = imported_by("jobs", "--help")
    assert "genievm_core.cli.jobs" in modules
    assert {"genievm_core.cli.transfer", "genievm_core.cli.prune", "genievm_core.cli.verify"}.isdisjoint(modules)


def test_loading_the_plugins_imports_no_hypervisor_sdk() -> None:
    """Every plugin is loaded to list them (and for every backup, an image's included), but the SDKs load only
    when a provider or a boot check is made: libvirt about 20 ms, boto3 0.2 s, pyVmomi more."""
    modules = imported_by("plugins", "--json")
    assert {"genievm_kvm.plugin", "genievm_recovery.plugin", "genievm_aws.plugin", "genievm_vmware"} <= modules
    assert sorted(m for m in modules if m.split(".")[0] in {"libvirt", "libvirt_qemu", "boto3", "pyVmomi"}) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_summary_is_the_commands_own(name: str) -> None:
    """The root's --help lists COMMANDS' summaries: each must be the command's own first help line."""
    command = load_command(name)
    assert command.name == name
    assert command.get_short_help_str(limit=300) == COMMANDS[name][2]


def test_root_help_lists_every_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_cli(monkeypatch, capsys, "--help")
    assert code == 0
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and line.split()[1] in COMMANDS]
    assert listed == list(COMMANDS)


def test_a_mistyped_command_is_still_suggested(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(monkeypatch, capsys, "bakup")
    assert code == 2
    assert "Did you mean 'backup', 'backups'?" in err


def test_loading_the_plugins_imports_no_hypervisor_sdk_until_a_provider_is_made() -> None:
    """A backup of an image file loads every plugin; pyVmomi (about 0.2 s) is imported only by a vmware provider."""
    probe = (
        "import json, sys\n"
        "from genievm_core.plugin import PluginHost\n"
        "host = PluginHost()\n"
        "before = 'pyVmomi' in sys.modules\n"
        "factory = host.providers.get('vmware')\n"
        "try:\n"
        "    factory({})\n"
        "except Exception:\n"
        "    pass\n"
        "print(json.dumps([before, 'pyVmomi' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, True], done.stderr



def test_a_kvm_backup_imports_no_restore_path() -> None:
    """The kvm provider's module leaves its restore (the translators and the image sink, about 13 ms) to a restore."""
    probe = (
        "import json, sys\n"
        "import genievm_kvm.provider\n"
        "print(json.dumps([m in sys.modules for m in ('genievm_kvm.restore', 'genievm_core.translate')]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, False], done.stderr

COLLECTOR_PROBE = """
import gc, sys
from genievm_core import cli
from genievm_core.cli import common

main, close = cli.main, common.State.close
def reporting_main():
    print(f"start_up_collects={gc.isenabled()}", file=sys.stderr)
    main()
def reporting_close(self):
    print(f"command_collects={gc.isenabled()} frozen={gc.get_freeze_count()}", file=sys.stderr)
    close(self)
cli.main, common.State.close = reporting_main, reporting_close
sys.argv = ["genievm", "plugins", "--json"]
try:
    cli.run()
except SystemExit as exc:
    print(f"exit={exc.code} unfrozen={len(gc.get_objects())}", file=sys.stderr)
"""


def test_the_command_collects_only_after_start_up() -> None:
    """``run`` (the ``genievm`` script) keeps the cyclic collector off while start-up builds what lives
    as long as the process, then freezes that and collects again while the command runs; what is left at
    exit is frozen too, so the interpreter's last collection walks nothing."""
    done = subprocess.run([sys.executable, "-c", COLLECTOR_PROBE], capture_output=True, text=True, timeout=60)
    report = dict(word.split("=") for line in done.stderr.splitlines() for word in line.split() if "=" in word)
    assert report["exit"] == "0", done.stderr
    assert report["start_up_collects"] == "False" and report["command_collects"] == "True", done.stderr
    assert int(report["frozen"]) > 10_000  # typer, pydantic, the library API: set aside before the command
    assert int(report["unfrozen"]) < 100  # what the exit's collection would still walk


def test_a_backup_with_json_output_imports_no_structlog_nor_rich(tmp_path: Path) -> None:
    """Logging and the consoles are imported when used (about 50 ms): a backup that logs nothing at its level and
    prints only JSON imports neither; the same backup at --log-level info does, and logs its events."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    env = os.environ | {"GENIEVM_PASSPHRASE": "pw"}
    repo = str(tmp_path / "repo")
    subprocess.run([sys.executable, "-c", PROBE, "repo", "init", repo], env=env, capture_output=True, timeout=60)
    backup = ["backup", "--vm", "a", "--repo", repo, "--disk", f"vda={image}", "--json"]
    quiet = subprocess.run([sys.executable, "-c", PROBE, *backup], capture_output=True, text=True, env=env, timeout=60)
    modules = set(json.loads(quiet.stderr.strip().splitlines()[-1]))
    assert "genievm_core.jobs.backup" in modules and json.loads(quiet.stdout)["kind"] == "full"
    assert sorted(m for m in modules if m.split(".")[0] in {"structlog", "rich"}) == []
    assert "pydantic_settings" not in modules  # no config file nor GENIEVM_<FIELD> variable: nothing to layer

    loud = subprocess.run(
        [sys.executable, "-c", PROBE, "--log-level", "info", *backup],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "structlog" in json.loads(loud.stderr.strip().splitlines()[-1])
    assert "backup.done" in loud.stderr and json.loads(loud.stdout)["kind"] == "incremental"


def test_a_backup_printed_as_text_off_a_terminal_imports_no_rich(tmp_path: Path) -> None:
    """The summary of a backup run by cron or a service (no terminal) is written as plain lines, without rich
    (about 50 ms); a variable that makes rich see a terminal (FORCE_TERMINAL) still gets rich's output."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    env = {k: v for k, v in os.environ.items() if k not in {"FORCE_TERMINAL", "TTY_COMPATIBLE", "FORCE_COLOR"}}
    env["GENIEVM_PASSPHRASE"] = "pw"
    repo = str(tmp_path / "repo")
    subprocess.run([sys.executable, "-c", PROBE, "repo", "init", repo], env=env, capture_output=True, timeout=60)
    backup = ["backup", "--vm", "a", "--repo", repo, "--disk", f"vda={image}"]
    for forced, kind, mode in ((False, "full", "full"), (True, "incremental", "hash-compare")):
        run_env = env | {"FORCE_TERMINAL": "1"} if forced else env
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *backup], capture_output=True, text=True, env=run_env, timeout=60
        )
        modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
        first, added, disk = done.stdout.splitlines()[:3]
        assert first.startswith("backup ") and f" of a: {kind}, 1 disk, 1.0 MiB examined in " in first, done.stdout
        assert added.startswith("  added to the repository: ") and disk.startswith(f"  vda: 1.0 MiB, {mode} (")
        assert ("rich.console" in modules) is forced
