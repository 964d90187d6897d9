"""SIGKILLed backups, prunes and garbage collections of a repository in S3 (moto over HTTP) leave it sound.

The same seeded kills and checks as the core's (``genievm_core.testing.faults``):
after each kill every committed backup passes ``verify --read-data``, the next
run completes, and no lock or unfinished job is left. S3 puts are atomic, so a
kill leaves no partial object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genievm_core.testing.faults import ImageFaultBed


def test_random_kills_with_the_repository_in_s3(s3_bucket: str, s3_options: dict[str, Any], tmp_path: Path) -> None:
    """One backup kill (moto is slow; the campaign script kills prune and GC by the hundred on a filesystem)."""
    env = {"GENIEVM_STORAGE_OPTIONS": json.dumps(s3_options)}
    bed = ImageFaultBed(
        tmp_path,
        seed=31,
        disk_mib=4,
        chunk_size=1 << 20,
        passphrase=None,
        url=f"s3://{s3_bucket}/repo",
        storage_env=env,
    )
    bed.setup()
    bed.measure("backup")
    results = [bed.kill_once(0, "backup")]
    assert [r.line() for r in results if r.problems] == []
