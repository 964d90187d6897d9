"""benchmarks/floor.py: the format's own work on an image counts only its data blocks, and what it stores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from floor import BLOCK, FormatWork, format_work, verdict  # noqa: E402


def test_holes_and_zero_blocks_are_not_data(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(5 * BLOCK)  # blocks 0 and 4 stay holes
        f.seek(BLOCK)
        f.write(os.urandom(BLOCK))  # 1: random, stored as is
        f.write(b"genievm " * (BLOCK // 8))  # 2: compresses to almost nothing
        f.write(bytes(BLOCK))  # 3: written zeros
    work = format_work(image, scratch=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]  # the durable write's file is gone
    assert work.write_cpu > 0 and work.write_seconds > 0 and work.write_fresh_cpu >= work.write_cpu
    assert work.data_bytes == 2 * BLOCK
    assert BLOCK < work.stored_bytes < 1.01 * BLOCK  # the random block, plus a little for the other
    assert work.cpu_seconds("backup") > work.cpu_seconds("hash_compare") > 0
    assert work.floor("backup") == max(work.cpu_seconds("backup") / work.cpus, work.write_seconds)
    assert work.floor("hash_compare") == pytest.approx(work.cpu_seconds("hash_compare") / work.cpus)


def test_a_target_below_the_floor_is_out_of_reach() -> None:
    assert "below the format's floor" in verdict("full", 5.0, 2.0, 2.5, 4.4)
    line = verdict("incremental", 1.9, 1.1, 0.7, 1.3)
    assert "above the format's floor" in line and "0.80 s of GenieVM's 1.90 s" in line


def test_writing_into_fresh_pages_is_told_when_it_costs_clearly_more() -> None:
    """The floor keeps the cheaper write; the first try's cost is told beside it, on every CPU."""
    work = FormatWork(2 * BLOCK, BLOCK, 0.1, 0.1, 0.5, 0.3, 2, write_cpu=0.5, write_seconds=0.4, write_fresh_cpu=2.5)
    assert work.floor("backup") == pytest.approx(0.6)  # (0.1 + 0.1 + 0.5 + 0.5) / 2: the cheaper write
    assert "took 2.50 CPU-s, not 0.50" in work.fresh_pages_note() and "up to 1.00 s more" in work.fresh_pages_note()
    work.write_fresh_cpu = 0.6
    assert work.fresh_pages_note() == ""
