"""Benchmark GenieVM's backup and restore against ``qemu-img convert`` and restic.

It builds one synthetic raw image (default 4 GiB) of 4 MiB blocks in a seeded
random order: 40 % holes, 30 % compressible bytes (files under /usr/share and
/usr/lib) and 30 % ``os.urandom``. Then, in one round, each step a subprocess:

    baseline        qemu-img convert -O qcow2 IMG OUT.qcow2 (qemu-img's default
                    cache=unsafe for convert: nothing is flushed)
    baseline-flush  the same with -t writeback: flushed once at the end (for reference)
    full            genievm backup into a fresh encrypted repository, default settings
    full-s3         the same backup into a repository in S3: a local moto server
                    (moto_server from the venv, over HTTP on 127.0.0.1), beside
                    ``full`` on the filesystem; both times and their ratio are shown
                    (``--no-s3`` leaves it out)
    incremental     1 % of the blocks rewritten with random data, then
                    genievm backup --no-cbt (chunk ids compared with the parent's)
    convert-raw     qemu-img convert -O raw IMG OUT.raw of the modified image (cache=unsafe):
                    the restore's yardstick
    restic-restore  restic restore latest --target DIR (restic's defaults) from the repository of
                    bench_peers.py's restic-full and restic-incremental: the modified image
    restore         genievm restore --no-verify: a raw file, flushed once at the end
    restore+verify  genievm restore, verify-after-restore on (reads it all back)
    resumed         a full backup of the modified image into a second repository,
                    SIGKILLed once the job registry shows half of it examined, then
                    run again: the time of that second run, which re-uses every chunk
                    the first stored (target <= 0.6x the full backup's time)

Per step: wall seconds, CPU seconds and peak RSS (from ``os.wait4``: the
child's own), the ratio to the baseline and to baseline-flush, and the targets
(full <= 2.0x, incremental <= 1.5x the baseline; peak RSS <= 256 MiB); for the
restore: >= 2.5x faster than restic-restore and <= 2.0x convert-raw. With
``--repeat N`` the rounds start afresh (new image, repository) and each step's
figures are the median round's (peak RSS: the highest). Each restored image
(restic's and convert-raw's too) is compared byte for byte with the modified
source; a difference fails the run. The image is in the page cache for every
step, baseline included (it is read through before each step: a round writes
about 15 GB, which pushed part of it out of the cache before 2026-12-07, so
that the incremental read it from the disk); dirty pages are synced before each
step and nothing is deleted until the round ends, so each step starts the same
way. Missing Debian tools (qemu-utils, restic) are installed with apt-get when
run as root.
Each target missed is told against its floor: the CPU work the repository format
itself needs on the image, on every CPU at once (``floor.py``), so a miss reads
either as out of reach on this machine or as time GenieVM spends over the floor.

    .venv/bin/python benchmarks/bench.py [--size 4G] [--repeat 3] [--workers N] [--no-s3] [--json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from bench_peers import peer_ratios, peers_full, peers_incremental, print_peer_ratios
from floor import FormatWork, data_offsets, format_work, verdict

BLOCK = 4 << 20
MIB = 1 << 20
PASSPHRASE = "genievm-bench-passphrase"
POOL_SIZE, PER_FILE = 64 * MIB, MIB  # compressible bytes are sampled from this much of /usr
SKIP_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".zip", ".png", ".jpg", ".gif", ".ttf", ".otf", ".woff")
TIME_TARGETS = {"full": 2.0, "incremental": 1.5}
RESTORE_VS_RESTIC, RESTORE_VS_CONVERT = 2.5, 2.0  # restic-restore / restore >=; restore / convert-raw <=
PEER_STEPS = ("baseline", "convert-raw", "restic-")  # not GenieVM's: no RSS target
DEBIAN_TOOLS = {"qemu-img": "qemu-utils", "restic": "restic", "borg": "borgbackup"}  # command: package
RESUME_TARGET, KILL_AT = 0.6, 0.5  # resumed backup / full backup, after a kill at half way
RSS_TARGET_MIB = 256.0


@dataclass
class Step:
    name: str
    seconds: float
    cpu_seconds: float
    rss_mib: float
    ratio: float = 1.0  # to baseline
    ratio_flush: float = 1.0  # to baseline-flush
    target: float | None = None
    internal_seconds: float | None = None  # genievm's own elapsed_seconds: no interpreter start-up
    stats: dict[str, Any] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # seconds in each round

    @property
    def time_ok(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    @property
    def rss_ok(self) -> bool | None:
        return None if self.name.startswith(PEER_STEPS) else self.rss_mib <= RSS_TARGET_MIB


def parse_size(text: str) -> int:
    """``4G``, ``256M``, ``1.5G`` or bytes; rounded down to whole 4 MiB blocks."""
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:].upper(), 0)
    size = int(float(text[:-1] if shift else text) * (1 << shift))
    return max(BLOCK, size - size % BLOCK)


def compressible_pool() -> bytes:
    """Up to POOL_SIZE bytes of files under /usr/share and /usr/lib; already-compressed files skipped."""
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
        raise SystemExit("bench: too few files under /usr/share and /usr/lib for compressible data")
    return bytes(buf)


def build_image(path: Path, size: int, seed: int) -> dict[str, int]:
    """A sparse raw image: ftruncate leaves the holes, only data blocks are written."""
    rng = random.Random(seed)
    n = size // BLOCK
    holes, compressible = round(n * 0.4), round(n * 0.3)
    kinds = ["hole"] * holes + ["compressible"] * compressible + ["random"] * (n - holes - compressible)
    rng.shuffle(kinds)
    pool = memoryview(compressible_pool())
    with open(path, "wb", buffering=0) as f:
        f.truncate(size)
        for i, kind in enumerate(kinds):
            if kind == "compressible":
                start = rng.randrange(len(pool) - BLOCK)
                os.pwrite(f.fileno(), pool[start : start + BLOCK], i * BLOCK)
            elif kind == "random":
                os.pwrite(f.fileno(), os.urandom(BLOCK), i * BLOCK)
    return {k: kinds.count(k) for k in ("hole", "compressible", "random")}


def modify_image(path: Path, size: int, seed: int, fraction: float = 0.01) -> list[int]:
    """Rewrite ``fraction`` of the blocks, chosen at random, with new random data."""
    n = size // BLOCK
    blocks = sorted(random.Random(seed + 1).sample(range(n), max(1, round(n * fraction))))
    with open(path, "r+b", buffering=0) as f:
        for i in blocks:
            os.pwrite(f.fileno(), os.urandom(BLOCK), i * BLOCK)
    return blocks


def same_content(a: Path, b: Path) -> None:
    """Exit loudly unless the two files hold the same bytes."""
    if (size := b.stat().st_size) != a.stat().st_size:
        raise SystemExit(f"bench: FAIL: restored image {b} is {size} bytes, {a} is {a.stat().st_size}")
    buf_a, buf_b = bytearray(BLOCK), bytearray(BLOCK)
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        offset = 0
        while n := fa.readinto(buf_a):
            if fb.readinto(buf_b) != n or buf_a[:n] != buf_b[:n]:
                raise SystemExit(f"bench: FAIL: restored image {b} differs from {a} in the block at {offset}")
            offset += n


def forked(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child: a child started by subprocess (vfork + exec) keeps
    this process's peak RSS as the floor of its own ru_maxrss, so this process stays small."""
    rfd, wfd = os.pipe()
    if (pid := os.fork()) == 0:
        os.close(rfd)
        try:
            result, code = fn(*args), 0
        except BaseException as exc:  # handed to the parent, raised there
            result, code = exc, 1
        with os.fdopen(wfd, "wb") as f:
            pickle.dump(result, f)
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        result = pickle.load(f)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        raise result
    return result


CACHED: list[Path] = []  # read through before each step: the image, in the page cache for every step


def read_through(path: Path) -> None:
    """Read ``path``'s data (holes skipped) so that its pages are in the page cache: the steps before may
    have pushed some out (a round writes about 15 GB), and the next one would read them from the disk."""
    buf = bytearray(BLOCK)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in data_offsets(fd):
            os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)


def run(name: str, cmd: list[str], logs: Path, env: dict[str, str]) -> tuple[Step, str]:
    """Run one step as a child; wait4 gives this child's own rusage (time, peak RSS)."""
    os.sync()  # the previous step's dirty pages are not written back on this step's time
    for path in CACHED:
        read_through(path)
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


@contextlib.contextmanager
def s3_server(venv_bin: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the ``full-s3`` step; stopped when the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [str(venv_bin / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench: moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def examined(db: Path) -> tuple[int, int] | None:
    """(bytes examined, bytes to examine) of the running backup job in the job registry, if any yet."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT SUM(d.scanned), SUM(d.total) FROM jobs j JOIN job_disks d ON d.job_id = j.id "
                "WHERE j.kind = 'backup' AND j.state = 'running'"
            ).fetchone()
    except sqlite3.Error:  # not created yet
        return None
    return (row[0], row[1]) if row and row[1] else None


def kill_half_way(cmd: list[str], env: dict[str, str], db: Path, logs: Path) -> float:
    """Start ``cmd`` (a backup), SIGKILL it once the registry shows KILL_AT of it examined; the fraction reached."""
    with open(logs / "killed.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while (progress := examined(db)) is None or progress[0] < KILL_AT * progress[1]:
            if proc.poll() is not None:
                raise SystemExit("bench: the backup to kill ended before it was half way")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return progress[0] / progress[1]


def install_debian_tools(tools: dict[str, str] = DEBIAN_TOOLS) -> None:
    """The peers' Debian packages (``tools``: command to package), installed with apt-get when missing, as root."""
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not missing:
        return
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise SystemExit(f"bench: {', '.join(missing)} missing: {' '.join(apt)} (as root)")
    print(f"bench: installing {', '.join(missing)} from Debian", file=sys.stderr, flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"], env=env, check=True)
        subprocess.run(apt, env=env, stdout=subprocess.DEVNULL, check=True)


def restore_verdicts(by_name: dict[str, Step]) -> dict[str, Any]:
    """The restore against restic's (>= RESTORE_VS_RESTIC x faster) and convert-raw's (<= RESTORE_VS_CONVERT x)."""
    restore, restic, convert = (by_name[n].seconds for n in ("restore", "restic-restore", "convert-raw"))
    faster, slower = restic / restore, restore / convert
    return {
        "restore_seconds": restore,
        "restic_restore_seconds": restic,
        "convert_raw_seconds": convert,
        "faster_than_restic": faster,
        "faster_than_restic_target": RESTORE_VS_RESTIC,
        "faster_than_restic_ok": faster >= RESTORE_VS_RESTIC,
        "times_convert_raw": slower,
        "times_convert_raw_target": RESTORE_VS_CONVERT,
        "times_convert_raw_ok": slower <= RESTORE_VS_CONVERT,
        "backup_faster_than_restic": by_name["restic-full"].seconds / by_name["full-default"].seconds,
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    qemu = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MIB
    restic = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    info = {"cpu": cpu, "cpus": os.cpu_count(), "memory_mib": memory, "kernel": platform.release(), "qemu_img": qemu}
    info["restic"] = restic
    return info | {"python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def print_table(steps: list[Step]) -> None:
    row = "{:<15} {:>8} {:>6} {:>7} {:>7} {:>7} {:>5} {:>8} {:>5}".format
    mark = {None: "-", True: "pass", False: "MISS"}
    print(row("step", "seconds", "cpu s", "x base", "x flush", "target", "time", "RSS MiB", "RSS"))
    for s in steps:
        target = f"<={s.target:.1f}x" if s.target is not None else "-"
        cells = [s.name, f"{s.seconds:.2f}", f"{s.cpu_seconds:.1f}", f"{s.ratio:.2f}x", f"{s.ratio_flush:.2f}x"]
        print(row(*cells, target, mark[s.time_ok], f"{s.rss_mib:.1f}", mark[s.rss_ok]))


def bench_round(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[list[Step], dict[str, int], int, FormatWork]:
    """One round of every step, on a new image and repository under WORKDIR/data."""
    work, data = args.workdir.resolve(), args.workdir.resolve() / "data"
    img, repo, logs = data / "disk.img", data / "repo", work / "logs"
    outputs = [data / "base.qcow2", data / "flush.qcow2", data / "restore", data / "restore-verify"]
    converted, restic_out = data / "convert.raw", data / "restic-restore"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    data.mkdir(parents=True)
    logs.mkdir()
    # .pyc files cached as an installed package has them (this sandbox sets PYTHONDONTWRITEBYTECODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"GENIEVM_PASSPHRASE": PASSPHRASE, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env |= {"GENIEVM_JOB_DB": str(data / "jobs.sqlite")}  # the resume step follows its backup there
    env |= {"RESTIC_PASSWORD": PASSPHRASE, "RESTIC_CACHE_DIR": str(data / "restic-cache")}
    gv, workers = [str(args.genievm)], ["--workers", str(args.workers)] if args.workers else []

    started = time.perf_counter()
    layout = forked(build_image, img, args.size, args.seed)
    CACHED[:] = [img]
    say(f"image of {args.size / (1 << 30):.2f} GiB, 4 MiB blocks {layout}: {time.perf_counter() - started:.1f} s")
    run("repo-init", gv + ["repo", "init", str(repo), "--json"], logs, env)  # also warms the .pyc cache
    convert = ["qemu-img", "convert", "-O", "qcow2", str(img)]
    flushed = convert[:2] + ["-t", "writeback"] + convert[2:]
    steps = [run("baseline", convert + [str(outputs[0])], logs, env)[0]]
    steps.append(run("baseline-flush", flushed + [str(outputs[1])], logs, env)[0])

    def genievm(name: str, cmd: list[str]) -> None:
        step, text = run(name, gv + cmd + ["--json", *workers], logs, env)
        result = json.loads(text)
        step.internal_seconds, step.stats = result.get("elapsed_seconds"), result.get("stats") or {}
        steps.append(step)

    backup = ["backup", "--vm", "bench", "--repo", str(repo), "--disk", f"vda={img}"]
    genievm("full", backup)
    if args.s3_endpoint:  # the same backup of the same image into S3
        import boto3

        bucket = f"genievm-bench-{uuid.uuid4().hex[:8]}"
        s3_env = env | {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3_env["GENIEVM_STORAGE_OPTIONS"] = json.dumps({"endpoint_url": args.s3_endpoint, "addressing_style": "path"})
        boto3.client(
            "s3",
            endpoint_url=args.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=bucket)
        s3_repo = f"s3://{bucket}/repo"
        run("repo-init-s3", gv + ["repo", "init", s3_repo, "--json"], logs, s3_env)
        step, text = run("full-s3", gv + backup[:4] + [s3_repo] + backup[5:] + ["--json", *workers], logs, s3_env)
        result = json.loads(text)
        step.internal_seconds, step.stats = result.get("elapsed_seconds"), result.get("stats") or {}
        steps.append(step)
    repo_default = data / "repo-default"  # full-default and the peers (bench_peers.py)
    run("repo-init-default", gv + ["repo", "init", str(repo_default), "--json"], logs, env)
    genievm("full-default", ["backup", "--vm", "bench", "--repo", str(repo_default), "--disk", f"vda={img}"])
    steps.extend(peers_full(run, img, data, logs, env))
    changed = forked(modify_image, img, args.size, args.seed)
    steps.extend(peers_incremental(run, img, data, logs, env))
    genievm("incremental", backup + ["--no-cbt"])
    if steps[-1].stats.get("chunks_new") != len(changed):
        say(f"warning: the incremental stored {steps[-1].stats.get('chunks_new')} chunks; {len(changed)} changed")
    steps.append(run("convert-raw", convert[:3] + ["raw", str(img), str(converted)], logs, env)[0])
    restic = ["restic", "--repo", str(data / "restic")]  # bench_peers' repository: latest is the modified image
    steps.append(run("restic-restore", restic + ["restore", "latest", "--target", str(restic_out)], logs, env)[0])
    restore = ["restore", "--vm", "bench", "--repo", str(repo), "--target"]
    genievm("restore", restore + [str(outputs[2]), "--no-verify"])
    genievm("restore+verify", restore + [str(outputs[3])])
    for out in [converted, restic_out / img.relative_to("/"), *(o / "vda.img" for o in outputs[2:])]:
        forked(same_content, img, out)
    repo2 = data / "repo-resume"
    run("repo-init-2", gv + ["repo", "init", str(repo2), "--json"], logs, env)
    resume = ["backup", "--vm", "bench", "--repo", str(repo2), "--disk", f"vda={img}"]
    reached = kill_half_way(gv + resume + workers, env, data / "jobs.sqlite", logs)
    genievm("resumed", resume)
    steps[-1].stats["killed_at"] = reached
    say("  ".join(f"{s.name} {s.seconds:.2f} s" for s in steps) + "; restored images identical to the source")
    work = forked(partial(format_work, scratch=data), img)  # each step's floor (floor.py), on the image as it ends
    if not args.keep:
        shutil.rmtree(data)
    return steps, layout, len(changed), work


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"), help="default ./bench-work (~15 GB)")
    parser.add_argument("--size", type=parse_size, default=4 << 30, help="image size: 4G (default), 256M, ...")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median round's figures are shown")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, help="genievm --workers (default: genievm's, the CPU count)")
    parser.add_argument("--genievm", type=Path, default=Path(sys.executable).with_name("genievm"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep WORKDIR/data: image, outputs, repository")
    parser.add_argument("--no-s3", action="store_true", help="leave out the backup into S3 (a local moto server)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    install_debian_tools()
    if not args.genievm.exists():
        raise SystemExit(f"bench: no genievm at {args.genievm} (run `uv sync`, or give --genievm)")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    rounds = []
    with contextlib.ExitStack() as stack:
        args.s3_endpoint = None if args.no_s3 else stack.enter_context(s3_server(args.genievm.parent))
        for i in range(args.repeat):
            say(f"round {i + 1} of {args.repeat}")
            steps, layout, changed, work = bench_round(args, say)
            rounds.append(steps)
    steps = []
    for group in zip(*rounds, strict=True):
        by_time = sorted(group, key=lambda s: s.seconds)
        median = by_time[(len(by_time) - 1) // 2]  # the lower median: a real round's figures
        steps.append(replace(median, rss_mib=max(s.rss_mib for s in group), rounds=[s.seconds for s in group]))
    base, flush = steps[0].seconds, steps[1].seconds
    for s in steps:
        s.ratio, s.ratio_flush, s.target = s.seconds / base, s.seconds / flush, TIME_TARGETS.get(s.name)

    by_name = {s.name: s for s in steps}
    s3_vs_fs = None
    if "full-s3" in by_name:
        fs, s3 = by_name["full"].seconds, by_name["full-s3"].seconds
        s3_vs_fs = {"filesystem_seconds": fs, "s3_seconds": s3, "ratio": s3 / fs}
    full, resumed = (next(s for s in steps if s.name == name) for name in ("full", "resumed"))
    resume_ratio = resumed.seconds / full.seconds
    verdicts = restore_verdicts(by_name)
    if args.json:
        figures = {"machine": machine(), "image_bytes": args.size, "blocks": layout, "changed_blocks": changed}
        ok = resume_ratio <= RESUME_TARGET
        figures["resume"] = {"ratio_to_full": resume_ratio, "target": RESUME_TARGET, "ok": ok}
        figures |= {"workers": args.workers, "rounds": args.repeat, "restores_identical": True}
        figures["steps"] = [asdict(s) | {"time_ok": s.time_ok, "rss_ok": s.rss_ok} for s in steps]
        figures["s3_vs_filesystem"] = s3_vs_fs
        figures["restore"] = verdicts
        figures["peers"] = peer_ratios(by_name, work)
        figures["format_work"] = asdict(work) | {s: work.floor(s) for s in ("backup", "hash_compare", "restore")}
        print(json.dumps(figures, indent=2))
    else:
        print()
        print_table(steps)
        if s3_vs_fs:
            print(
                f"\nfull backup into S3 (local moto server) {s3_vs_fs['s3_seconds']:.2f} s, into the filesystem "
                f"{s3_vs_fs['filesystem_seconds']:.2f} s: {s3_vs_fs['ratio']:.2f}x"
            )
        mark = {True: "pass", False: "MISS"}
        v = verdicts
        print(
            f"restore {v['restore_seconds']:.2f} s (a raw file, flushed once): restic's restore "
            f"{v['restic_restore_seconds']:.2f} s, {v['faster_than_restic']:.2f}x faster "
            f"(target >={RESTORE_VS_RESTIC}x: {mark[v['faster_than_restic_ok']]}); qemu-img convert -O raw "
            f"{v['convert_raw_seconds']:.2f} s, {v['times_convert_raw']:.2f}x its time "
            f"(target <={RESTORE_VS_CONVERT}x: {mark[v['times_convert_raw_ok']]})"
        )
        if not v["faster_than_restic_ok"]:
            restore = by_name["restore"]
            target = v["restic_restore_seconds"] / RESTORE_VS_RESTIC
            print(verdict("restore vs restic-restore", restore.seconds, target, work.floor("restore"),
                          restore.internal_seconds))  # fmt: skip
        print_peer_ratios(by_name, work)
        resumed_mark = "pass" if resume_ratio <= RESUME_TARGET else "MISS"
        print(
            f"resumed backup after a kill at {resumed.stats.get('killed_at', 0):.0%}: {resumed.seconds:.2f} s = "
            f"{resume_ratio:.2f}x the full backup ({full.seconds:.2f} s), target <={RESUME_TARGET}x: {resumed_mark}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
