"""docs/repository-format.md is precise enough to restore a disk by hand: run its program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import restore_by_hand_program

from genievm_core.jobs import run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.key_slots import add_key
from genievm_core.repository.storage import open_storage


@pytest.mark.parametrize(("passphrase", "second_key"), [(None, False), ("doc passphrase", False), ("döc 2", True)])
def test_restore_by_hand_matches_the_source(tmp_path: Path, passphrase: str | None, second_key: bool) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(3 * 65536 + 1000)
        f.seek(70000)
        f.write(os.urandom(50000) + b"text " * 4000)
    host = PluginHost()
    first = "the first passphrase" if second_key else passphrase
    repo = Repository.init(open_storage(host, str(tmp_path / "repo")), passphrase=first, chunk_size=65536)
    if second_key:  # a key slot of `more_keys`, labelled: the feature key-slots
        assert passphrase is not None
        add_key(repo, passphrase, "second")
        assert set(repo.config.features) == {"key-slots", "patched-chunks"}
    config = BackupConfig(
        vm_id="vm1", backup_path=str(tmp_path / "repo"), provider_options={"vms": {"vm1": {"vda": str(image)}}}
    )
    manifest = run_backup(host, config, repo)
    script = tmp_path / "restore_by_hand.py"
    script.write_text(restore_by_hand_program())
    out = tmp_path / "out.img"
    args = [sys.executable, str(script), str(tmp_path / "repo"), manifest.backup_id, "vda", str(out)]
    subprocess.run(args + ([passphrase] if passphrase else []), check=True, capture_output=True)
    assert out.read_bytes() == image.read_bytes()
