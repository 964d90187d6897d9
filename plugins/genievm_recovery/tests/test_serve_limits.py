"""``genievm serve --limit-read``: the chunks an export reads from the repository, measured, and changed live."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbd

sys.path.insert(0, str(Path(__file__).parent))

from serve_support import genievm, random_bytes, serving, write_image  # noqa: E402

MB = 1_000_000
SIZE = 24 * MB  # 4 s at 6 MB/s
RATE = 6.0


def test_an_export_reads_at_its_limit_and_follows_genievm_jobs_limit(tmp_path: Path) -> None:
    image = write_image(tmp_path / "vda-source.img", SIZE, [(0, random_bytes(SIZE, 5))])
    init = genievm("repo", "init", "repo", "--chunk-size", "65536", "--encryption", "none", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    done = genievm("backup", "--vm", "web01", "--repo", "repo", "--disk", f"vda={image}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with serving("--repo", "repo", "--vm", "web01", "--limit-read", "0.5", cwd=tmp_path) as s:  # 48 s as it is
        changed = genievm("jobs", "limit", s.job, "--read", str(RATE), cwd=tmp_path)
        assert (changed.returncode, changed.stdout.strip()) == (0, f"job {s.job}: read {RATE:g} MB/s, write no limit")
        time.sleep(1)  # the export follows the job's limits within a few tenths of a second
        h = nbd.NBD()
        h.connect_uri(s.uris["vda"])
        started = time.monotonic()
        data = b"".join(h.pread(min(1 << 20, SIZE - offset), offset) for offset in range(0, SIZE, 1 << 20))
        took = time.monotonic() - started
        h.shutdown()
    assert data == image.read_bytes()
    expected = SIZE / (RATE * MB)
    assert abs(took - expected) <= 0.1 * expected, f"{SIZE} bytes took {took:.2f} s, expected {expected:.2f} s ± 10 %"
