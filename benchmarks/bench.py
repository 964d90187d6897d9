"""Benchmark GenieVM's backup and restore against ``qemu-img convert``.

It builds one synthetic raw image (default 4 GiB) of 4 MiB blocks in a seeded
random order: 40 % holes, 30 % compressible bytes (files under /usr/share and
/usr/lib) and 30 % ``os.urandom``. Then, in one run, each step a subprocess:

    baseline      qemu-img convert -O qcow2 IMG OUT.qcow2
    full          genievm backup into a fresh encrypted repository, zstd level 1
    incremental   1 % of the blocks rewritten with random data, then
                  genievm backup --no-cbt (chunk ids compared with the parent's)
    restore       genievm restore --no-verify
    restore+verify  genievm restore with verify-after-restore (reads it all back)

Per step: wall seconds, CPU seconds and peak RSS (from ``os.wait4``), the ratio
to the baseline and the targets (full <= 2.0x, incremental <= 1.5x, restore
<= 1.5x, peak RSS <= 256 MiB). Every restored image is compared byte for byte
with the modified source; a difference fails the run (exit 1). The image is in
the page cache for every step, baseline included, and dirty pages are synced
before each step, so each starts the same way.

    .venv/bin/python benchmarks/bench.py [--size 4G] [--workdir ./bench-work] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 4 << 20
MIB = 1 << 20
PASSPHRASE = "genievm-bench-passphrase"
POOL_SIZE = 64 * MIB  # compressible bytes sampled from
PER_FILE = 1 * MIB
SKIP_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".zip", ".png", ".jpg", ".jpeg", ".gif", ".ttf", ".otf")
TIME_TARGETS = {"full": 2.0, "incremental": 1.5, "restore": 1.5}
RSS_TARGET_MIB = 256.0


@dataclass
class Step:
    name: str
    seconds: float
    cpu_seconds: float
    rss_mib: float
    ratio: float = 1.0
    target: float | None = None
    internal_seconds: float | None = None  # genievm's own elapsed_seconds (no interpreter start-up)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def time_ok(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    @property
    def rss_ok(self) -> bool | None:
        return None if self.name == "baseline" else self.rss_mib <= RSS_TARGET_MIB


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    size = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    if size < BLOCK:
        raise argparse.ArgumentTypeError(f"size {text} is below one 4 MiB block")
    return size - size % BLOCK


def compressible_pool() -> bytes:
    """Up to POOL_SIZE bytes of files under /usr/share and /usr/lib, already-compressed files skipped."""
    buf = bytearray()
    for root in ("/usr/share", "/usr/lib"):
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if name.endswith(SKIP_SUFFIXES) or os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as f:
                        buf += f.read(min(PER_FILE, POOL_SIZE - len(buf)))
                except OSError:
                    continue
                if len(buf) >= POOL_SIZE:
                    return bytes(buf)
    if len(buf) < 2 * BLOCK:
        raise SystemExit("bench: found too few files under /usr/share and /usr/lib for compressible data")
    return bytes(buf)


def build_image(path: Path, size: int, seed: int) -> dict[str, int]:
    """A sparse raw image: only the data blocks are written, holes are left by ftruncate."""
    rng = random.Random(seed)
    n = size // BLOCK
    holes, compressible = round(n * 0.4), round(n * 0.3)
    kinds = ["hole"] * holes + ["compressible"] * compressible + ["random"] * (n - holes - compressible)
    rng.shuffle(kinds)
    pool = memoryview(compressible_pool())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for i, kind in enumerate(kinds):
            if kind == "compressible":
                start = rng.randrange(len(pool) - BLOCK)
                os.pwrite(fd, pool[start : start + BLOCK], i * BLOCK)
            elif kind == "random":
                os.pwrite(fd, os.urandom(BLOCK), i * BLOCK)
    finally:
        os.close(fd)
    return {k: kinds.count(k) for k in ("hole", "compressible", "random")}


def modify_image(path: Path, size: int, seed: int, fraction: float = 0.01) -> list[int]:
    """Rewrite ``fraction`` of the blocks, chosen at random, with new random data."""
    n = size // BLOCK
    blocks = sorted(random.Random(seed + 1).sample(range(n), max(1, round(n * fraction))))
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in blocks:
            os.pwrite(fd, os.urandom(BLOCK), i * BLOCK)
    finally:
        os.close(fd)
    return blocks


def same_content(a: Path, b: Path) -> None:
    """Exit loudly unless the two files hold the same bytes."""
    if a.stat().st_size != b.stat().st_size:
        raise SystemExit(f"bench: FAIL: {b} is {b.stat().st_size} bytes, {a} is {a.stat().st_size}")
    buf_a, buf_b = bytearray(BLOCK), bytearray(BLOCK)
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        offset = 0
        while n := fa.readinto(buf_a):
            if fb.readinto(buf_b) != n or buf_a[:n] != buf_b[:n]:
                raise SystemExit(f"bench: FAIL: restored image {b} differs from {a} in the block at {offset}")
            offset += n


def forked(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child, so its memory never raises this process's peak RSS.

    A child started by subprocess (vfork + exec) inherits its parent's peak RSS
    as a floor of its own ru_maxrss; keeping this process small keeps that floor low.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 0
        try:
            result: Any = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            result, code = exc, 1
        with os.fdopen(wfd, "wb") as f:
            pickle.dump(result, f)
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        result = pickle.load(f)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise result
    return result


def run(name: str, cmd: list[str], logs: Path, env: dict[str, str]) -> tuple[Step, str]:
    """Run one step as a child process; its rusage comes from wait4, so it is this child's alone."""
    os.sync()  # the previous step's dirty pages are not flushed on this step's time
    with open(logs / f"{name}.out", "w+b") as out, open(logs / f"{name}.err", "w+b") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"bench: {name}: {' '.join(cmd)} exited {proc.returncode}:\n{err.read().decode()}")
        text = out.read().decode()
    return Step(name, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024), text


def genievm_step(name: str, cmd: list[str], logs: Path, env: dict[str, str], baseline: float) -> Step:
    step, text = run(name, cmd, logs, env)
    result = json.loads(text)
    step.ratio = step.seconds / baseline
    step.target = TIME_TARGETS.get(name)
    step.internal_seconds = result.get("elapsed_seconds")
    step.stats = result.get("stats") or {}
    return step


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_mib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "qemu_img": qemu, "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def mark(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "MISS")


def print_table(steps: list[Step]) -> None:
    print(f"{'step':<15} {'seconds':>8} {'cpu s':>7} {'x base':>7} {'target':>7} {'time':>5} "
          f"{'RSS MiB':>8} {'RSS':>5}")
    for s in steps:
        target = f"<={s.target:.1f}x" if s.target is not None else "-"
        print(f"{s.name:<15} {s.seconds:>8.2f} {s.cpu_seconds:>7.2f} {s.ratio:>6.2f}x {target:>7} "
              f"{mark(s.time_ok):>5} {s.rss_mib:>8.1f} {mark(s.rss_ok):>5}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"), help="default ./bench-work")
    parser.add_argument("--size", type=parse_size, default=4 << 30, help="image size, e.g. 4G (default), 256M")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, help="genievm --workers (default: genievm's, the CPU count)")
    parser.add_argument("--genievm", type=Path, default=Path(sys.executable).with_name("genievm"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the image, repository and restores")
    args = parser.parse_args()
    if shutil.which("qemu-img") is None:
        raise SystemExit("bench: qemu-img is missing: apt-get install -y --no-install-recommends qemu-utils")
    if not args.genievm.exists():
        raise SystemExit(f"bench: no genievm at {args.genievm} (run `uv sync`, or give --genievm)")
    say = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    work = args.workdir.resolve()
    img, qcow, repo, logs = work / "disk.img", work / "disk.qcow2", work / "repo", work / "logs"
    for path in (repo, logs, work / "restore", work / "restore-verify"):
        shutil.rmtree(path, ignore_errors=True)
    logs.mkdir(parents=True)
    env = os.environ | {"GENIEVM_PASSPHRASE": PASSPHRASE}
    gv = [str(args.genievm)]
    workers = ["--workers", str(args.workers)] if args.workers else []

    started = time.perf_counter()
    layout = forked(build_image, img, args.size, args.seed)
    say(f"image {img}: {args.size / (1 << 30):.2f} GiB, {layout} blocks of 4 MiB, "
        f"built in {time.perf_counter() - started:.1f} s")
    run("repo-init", gv + ["repo", "init", str(repo), "--json"], logs, env)

    base, _ = run("baseline", ["qemu-img", "convert", "-O", "qcow2", str(img), str(qcow)], logs, env)
    say(f"baseline   {base.seconds:.2f} s")
    qcow.unlink()
    backup = gv + ["backup", "--vm", "bench", "--repo", str(repo), "--disk", f"vda={img}",
                   "--compression-level", "1", "--json", *workers]
    steps = [base, genievm_step("full", backup, logs, env, base.seconds)]
    say(f"full       {steps[-1].seconds:.2f} s")
    changed = forked(modify_image, img, args.size, args.seed)
    steps.append(genievm_step("incremental", backup + ["--no-cbt"], logs, env, base.seconds))
    say(f"incremental {steps[-1].seconds:.2f} s ({len(changed)} blocks rewritten)")
    if steps[-1].stats.get("chunks_new") != len(changed):
        say(f"warning: the incremental stored {steps[-1].stats.get('chunks_new')} chunks, {len(changed)} changed")
    for name, target, extra in (("restore", work / "restore", ["--no-verify"]),
                                ("restore+verify", work / "restore-verify", [])):
        cmd = gv + ["restore", "--vm", "bench", "--repo", str(repo), "--target", str(target),
                    "--json", *workers, *extra]
        steps.append(genievm_step(name, cmd, logs, env, base.seconds))
        forked(same_content, img, target / "vda.img")
        say(f"{name:<10} {steps[-1].seconds:.2f} s, restored image identical to the source")
        shutil.rmtree(target)
    if not args.keep:
        shutil.rmtree(repo)
        img.unlink()

    if args.json:
        figures = {"machine": machine(), "image_bytes": args.size, "blocks": layout,
                   "changed_blocks": len(changed), "workers": args.workers, "restore_identical": True,
                   "steps": [asdict(s) | {"time_ok": s.time_ok, "rss_ok": s.rss_ok} for s in steps]}
        print(json.dumps(figures, indent=2))
    else:
        print()
        print_table(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
