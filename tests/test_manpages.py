"""The man pages (packaging/manpages.py, issue 15): one per command, from the command's own help, valid for
man(1); and the shell completion the packages ship completes the installed commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genievm_core.cli import COMMANDS

ROOT = Path(__file__).parents[1]
GENIEVM = ROOT / ".venv/bin/genievm"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    subprocess.run(
        [sys.executable, "packaging/manpages.py", str(out), "--version", "0.2.0", "--date", "2026-12-06"],
        cwd=ROOT, check=True, capture_output=True,
    )
    return out


def test_one_page_per_command(pages: Path) -> None:
    core = {p.name for p in (pages / "genievm-core").iterdir()}
    assert {"genievm.1", *(f"genievm-{c}.1" for c in COMMANDS)} <= core
    # a group's subcommands have their own pages, named like git's
    assert {"genievm-repo-init.1", "genievm-jobs-cancel.1", "genievm-backups-list.1"} <= core
    # a plugin's command is in its distribution's folder, for its package
    assert (pages / "genievm-recovery/genievm-serve.1").is_file()
    assert not (pages / "genievm-core/genievm-serve.1").exists()


def test_a_page_says_what_the_help_says(pages: Path) -> None:
    page = (pages / "genievm-core/genievm-backup.1").read_text()
    assert page.startswith('.TH "GENIEVM-BACKUP" "1" "2026-12-06" "genievm 0.2.0"')
    assert "genievm\\-backup \\- Back up a VM into a repository" in page
    help_text = subprocess.run([str(GENIEVM), "backup", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--config", "--vm", "--repo", "--provider-option", "--workers", "--lock-wait"):
        assert option in help_text and option.replace("-", "\\-") in page
    repo = (pages / "genievm-core/genievm-repo.1").read_text()
    assert "\\fBgenievm\\-repo\\-init\\fR(1)" in repo  # a group's page names its commands' pages


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_reads_every_page_without_a_warning(pages: Path) -> None:
    for page in sorted(pages.glob("*/*.1")):
        result = subprocess.run(
            ["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80"}
        )
        assert (result.returncode, result.stderr) == (0, ""), page.name
        assert "OPTIONS" in result.stdout


def test_the_bash_completion_completes_the_commands() -> None:
    """The packaged script asks genievm itself (_GENIEVM_COMPLETE), so a plugin's command completes too."""
    script = subprocess.run([str(GENIEVM)], env={**os.environ, "_GENIEVM_COMPLETE": "source_bash"},
                            capture_output=True, text=True).stdout
    assert "complete -o default -F _genievm_completion genievm" in script
    env = {**os.environ, "_GENIEVM_COMPLETE": "complete_bash", "COMP_WORDS": "genievm se", "COMP_CWORD": "1"}
    assert subprocess.run([str(GENIEVM)], env=env, capture_output=True, text=True).stdout.split() == ["serve", "server"]
    env |= {"COMP_WORDS": "genievm backup --lo"}
    env["COMP_CWORD"] = "2"
    assert "--lock-wait" in subprocess.run([str(GENIEVM)], env=env, capture_output=True, text=True).stdout.split()
