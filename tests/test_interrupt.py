"""A backup stopped by SIGTERM (or Ctrl-C) stops between chunks and leaves nothing half-done."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support import genievm_path, random_bytes


def test_sigterm_mid_backup_commits_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    image.write_bytes(random_bytes(48 << 20, 7))
    repo = tmp_path / "repo"
    env = {**os.environ, "GENIEVM_PASSPHRASE": "p"}
    exe = genievm_path()
    subprocess.run([exe, "repo", "init", str(repo), "--chunk-size", "1048576"], env=env, check=True)
    backup = subprocess.Popen(  # level 19 on random data: slow enough to be caught in the middle
        [exe, "backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}", "--compression-level", "19"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any((repo / "chunks").rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backup.poll() is None, "the backup ended before it could be interrupted"
    backup.send_signal(signal.SIGTERM)
    _out, err = backup.communicate(timeout=60)

    assert backup.returncode == 130
    assert err.strip().splitlines() == ["genievm: error: interrupted by SIGTERM"]
    assert not (repo / "manifests").exists() or not any((repo / "manifests").iterdir())
    assert not list(repo.glob("locks/*"))
    assert not list(repo.rglob("*.tmp"))
    chunks = sum(1 for p in (repo / "chunks").rglob("*") if p.is_file())
    assert 0 < chunks < 48, "the backup ran to the end instead of stopping between chunks"
