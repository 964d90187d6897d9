"""The library API (genievm_core.api): the user guide's example runs as written; jobs started in the
background are seen, paused and cancelled through the registry as the CLI's are; errors are raised,
warnings told once."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, random_bytes, write_image

from genievm_core.api import BackupConfig, GenieVM
from genievm_core.errors import ConfigError, JobCancelledError, WrongPassphraseError
from genievm_core.jobs import JobState

GUIDE = (Path(__file__).parents[1] / "docs" / "user-guide.md").read_text()


def test_the_user_guide_example_runs(tmp_path: Path) -> None:
    section = GUIDE.split("## Using GenieVM from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no Python example in the section"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, *_, last = done.stdout.splitlines()
    assert re.match(r"^succeeded \d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8} 67108864 bytes scanned$", first), first
    assert last == "[('restore', 'succeeded'), ('backup', 'succeeded')]"


def test_open_repository_takes_a_passphrase_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        url = genievm.init_repository(str(tmp_path / "repo"), passphrase=PASSPHRASE, chunk_size=CHUNK).url
        assert genievm.open_repository(url, passphrase=PASSPHRASE).config.encryption is not None
        with pytest.raises(WrongPassphraseError):
            genievm.open_repository(url, passphrase="not it")
        with pytest.raises(ConfigError, match="give --repo or set GENIEVM_BACKUP_PATH"):
            genievm.open_repository(None)


def test_warnings_are_told_once(tmp_path: Path) -> None:
    told: list[str] = []
    with GenieVM(job_db=tmp_path / "jobs.sqlite", on_warning=told.append) as genievm:
        url = genievm.init_repository(str(tmp_path / "plain"), passphrase=None).url
        genievm.open_repository(url)
        genievm.open_repository(url)
    assert told == [f"repository {url} is not encrypted"]


def test_a_background_job_is_cancelled_through_the_registry(tmp_path: Path) -> None:
    """A second client (another process would do the same) cancels the job; it ends cancelled."""
    image = write_image(tmp_path / "vda.img", 256 * CHUNK, [(0, random_bytes(256 * CHUNK, 5))])
    db = tmp_path / "jobs.sqlite"
    with GenieVM(job_db=db) as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase=None, chunk_size=CHUNK)
        config = BackupConfig(
            vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}}
        )
        job = genievm.backup_job(config, repo, workers=1)
        started = threading.Event()
        gate = threading.Event()

        def slow(_progress: object) -> None:  # holds the job between chunks until it is asked to cancel
            started.set()
            gate.wait(30)

        running = genievm.start(job, progress=slow)
        assert started.wait(60)
        with GenieVM(job_db=db) as other:
            assert other.job(job.id).state is JobState.RUNNING
            other.request(job.id[:8], "cancel")
        threading.Timer(1.0, gate.set).start()  # the manager applies the request within its poll interval
        assert running.wait(120).state is JobState.CANCELLED
        assert isinstance(job.exception, JobCancelledError)
        assert genievm.backups(repo) == []
        assert [r.state for r in genievm.jobs()] == [JobState.CANCELLED]
