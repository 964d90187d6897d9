"""The backup rows of ``bench.py`` against restic and borg: same image, same cache state, one invocation.

Steps (each a subprocess timed by ``bench.run``; the repositories' ``init`` is not timed):

    full-default        genievm backup with its defaults (encrypted, zstd level 3) into a new repository
    restic-full         restic backup of the image file (restic's defaults: encrypted, compression auto)
    borg-full           borg create of the image file (``--encryption repokey``, borg's default lz4)
    restic-incremental  after 1 % of the blocks were rewritten: restic backup again (it re-reads and
                        re-chunks the changed file)
    borg-incremental    borg create again (the same)

The GenieVM incremental is ``bench.py``'s own ``incremental`` row (hash compare, ``--no-cbt``).
Targets (issue 13): full-default >= 6x faster than restic-full and >= 8x than borg-full; the
incremental >= 10x faster than restic-incremental.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from floor import FormatWork, verdict

__all__ = ["PEER_TARGETS", "peer_ratios", "peers_full", "peers_incremental", "print_peer_ratios"]

PASSPHRASE = "genievm-bench-passphrase"
# (GenieVM step, peer step, at least this many times faster)
FLOOR_OF = {"full-default": "backup", "incremental": "hash_compare"}  # step: floor.FormatWork's step
PEER_TARGETS = [("full-default", "restic-full", 6.0), ("full-default", "borg-full", 8.0),
                ("incremental", "restic-incremental", 10.0)]  # fmt: skip

Runner = Callable[[str, list[str], Path, dict[str, str]], tuple[Any, str]]


def _peer_env(data: Path, env: Mapping[str, str]) -> dict[str, str]:
    return dict(env) | {
        "RESTIC_PASSWORD": PASSPHRASE,
        "RESTIC_CACHE_DIR": str(data / "restic-cache"),
        "BORG_PASSPHRASE": PASSPHRASE,
        "BORG_BASE_DIR": str(data / "borg-home"),
    }


def available() -> list[str]:
    """The peers installed (restic, borg); the others' rows are left out and said so."""
    return [tool for tool in ("restic", "borg") if shutil.which(tool)]


def peers_full(run: Runner, img: Path, data: Path, logs: Path, env: Mapping[str, str]) -> list[Any]:
    """restic and borg: a repository each, then the full backup of ``img``."""
    penv, steps = _peer_env(data, env), []
    if "restic" in available():
        run("restic-init", ["restic", "-r", str(data / "restic"), "init", "-q"], logs, penv)
        cmd = ["restic", "-r", str(data / "restic"), "backup", "-q", str(img)]
        steps.append(run("restic-full", cmd, logs, penv)[0])
    if "borg" in available():
        os.makedirs(data / "borg-home", exist_ok=True)
        run("borg-init", ["borg", "init", "--encryption", "repokey", str(data / "borg")], logs, penv)
        steps.append(run("borg-full", ["borg", "create", f"{data / 'borg'}::full", str(img)], logs, penv)[0])
    return steps


def peers_incremental(run: Runner, img: Path, data: Path, logs: Path, env: Mapping[str, str]) -> list[Any]:
    """restic and borg again, after the image was modified."""
    penv, steps = _peer_env(data, env), []
    if "restic" in available():
        cmd = ["restic", "-r", str(data / "restic"), "backup", "-q", str(img)]
        steps.append(run("restic-incremental", cmd, logs, penv)[0])
    if "borg" in available():
        steps.append(run("borg-incremental", ["borg", "create", f"{data / 'borg'}::inc", str(img)], logs, penv)[0])
    return steps


def peer_ratios(by_name: Mapping[str, Any], work: FormatWork | None = None) -> list[dict[str, Any]]:
    """Each target with both figures, the speed-up (peer / GenieVM), whether it is met, and (given the
    format's work on the image) the time the target asks for against the format's floor."""
    rows = []
    for ours, peer, target in PEER_TARGETS:
        if ours in by_name and peer in by_name:
            a, b = by_name[ours], by_name[peer]
            speedup = b.seconds / a.seconds
            rows.append({"genievm": ours, "peer": peer, "genievm_seconds": a.seconds, "peer_seconds": b.seconds,
                         "genievm_cpu": a.cpu_seconds, "peer_cpu": b.cpu_seconds, "speedup": speedup,
                         "cpu_speedup": b.cpu_seconds / a.cpu_seconds, "target": target,
                         "ok": speedup >= target, "target_seconds": b.seconds / target,
                         "job_seconds": a.internal_seconds})  # fmt: skip
            if work is not None:
                rows[-1]["floor_seconds"] = work.floor(FLOOR_OF[ours])
    return rows


def print_peer_ratios(by_name: Mapping[str, Any], work: FormatWork | None = None) -> None:
    rows = peer_ratios(by_name, work)
    missing = sorted({"restic", "borg"} - set(available()))
    print("\nagainst restic and borg (peer seconds / GenieVM seconds; CPU likewise)")
    line = "{:<14} {:<19} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5}".format
    print(line("genievm", "peer", "gv s", "peer s", "x wall", "x cpu", "target", ""))
    for r in rows:
        print(line(r["genievm"], r["peer"], f"{r['genievm_seconds']:.2f}", f"{r['peer_seconds']:.2f}",
                   f"{r['speedup']:.2f}x", f"{r['cpu_speedup']:.2f}x", f">={r['target']:.0f}x",
                   "pass" if r["ok"] else "MISS"))  # fmt: skip
    if missing:
        print(f"(not installed, rows left out: {', '.join(missing)}; apt-get install restic borgbackup)")
    if work is None:
        return
    print(
        f"\nthe format's own work on this image (benchmarks/floor.py: {work.data_bytes / 1e9:.2f} GB of data, "
        f"one thread, CPU seconds / {work.cpus} CPUs): backup {work.cpu_seconds('backup'):.2f} CPU-s "
        f"(read {work.read_cpu:.2f}, ids {work.id_cpu:.2f}, zstd and AES-GCM {work.encode_cpu:.2f}, writing "
        f"{work.stored_bytes / 1e9:.2f} GB {work.write_cpu:.2f}; durable in {work.write_seconds:.2f} s) = floor "
        f"{work.floor('backup'):.2f} s; hash compare {work.floor('hash_compare'):.2f} s; "
        f"restore {work.floor('restore'):.2f} s"
    )
    if note := work.fresh_pages_note():
        print(note)
    for r in rows:
        if not r["ok"]:
            name = f"{r['genievm']} vs {r['peer']}"
            print(verdict(name, r["genievm_seconds"], r["target_seconds"], r["floor_seconds"], r["job_seconds"]))
