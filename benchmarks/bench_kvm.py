"""Benchmark GenieVM's backup of a running KVM VM through libvirt's backup API (NBD) against ``nbdcopy``.

It builds one VM as the KVM plugin's tests do (q35, 64 MiB, no OS, started paused) with
one qcow2 disk (default 4 GiB) that is fully allocated: 4 MiB blocks in a seeded random
order, a third each of ``os.urandom``, compressible bytes (files under /usr/share and
/usr/lib) and repeated 512-byte records (no holes: holes are not sent over NBD). Then,
in one invocation, each step a subprocess:

    startup         genievm plugins (interpreter, imports, plugin discovery; no job)
    nbdcopy         a pull-mode backup job (backupBegin), then
                    nbdcopy nbd+unix:///vda?socket=S null: (every byte read, nothing
                    written: the read-side limit, and the base of the ratios)
    nbdcopy-file    the same export to a raw file next to the repository, --flush
                    (reference: what writing it all durably costs), then abortJob()
    full            genievm backup --provider kvm into a fresh repository (encrypted,
                    zstd level 3: the defaults)
    incremental     1 % of the disk rewritten by the guest (random data, 64 KiB-1 MiB
                    writes spread over the disk through HMP qemu-io), then genievm backup
                    (CBT: the libvirt checkpoint's dirty bitmap)

Per step: wall seconds, CPU seconds and peak RSS of the child (``os.wait4``), and the
CPU seconds QEMU spent meanwhile (it serves the export). Targets: full <= 2.0x nbdcopy,
incremental <= 0.1x full. Times are never asserted on; the machine is noisy, so the
baseline is measured in the same round. With ``--repeat N`` each round uses a new
repository on the same VM; each step's figures are the median round's (peak RSS: the
highest) and each ratio is taken within a round, then the median of the rounds' ratios
(the lower median: a real round's). The VM, its images, the backup job and the
repositories are removed at the end, on error, Ctrl-C and SIGTERM too (``--keep`` keeps
the files).

    .venv/bin/python benchmarks/bench_kvm.py [--size 4G] [--repeat 2] [--json] [--keep]
        [--encryption none] [--compression-level 1] [--chunk-size N] [--workers N]
        [--genievm PATH] [--py-spy PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BLOCK, MIB, PASSPHRASE, compressible_pool, forked, machine, parse_size, run  # noqa: E402
from genievm_kvm.testing import qemu_io, remove_vm, scratch_domain_xml  # noqa: E402

URI = "qemu:///system"
TARGETS = {"full": 2.0, "incremental": 0.1}  # full: x nbdcopy; incremental: x full
BASE_OF = {"full": "nbdcopy", "incremental": "full", "nbdcopy-file": "nbdcopy"}
CHANGE_FRACTION = 0.01
WRITE_SIZES = (64 << 10, 1 << 20)  # the guest's writes: 64 KiB to 1 MiB, in 64 KiB steps
SOURCES = 8  # random 1 MiB pattern files the guest's writes are filled from


@dataclass
class Step:
    name: str
    seconds: float
    cpu_seconds: float
    rss_mib: float
    qemu_cpu_seconds: float = 0.0
    internal_seconds: float | None = None  # genievm's own elapsed_seconds: no interpreter start-up
    ratio: float | None = None  # to BASE_OF[name] in the same round; the median of the rounds' ratios
    target: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # seconds in each round
    ratios: list[float] = field(default_factory=list)  # ratio in each round

    @property
    def ok(self) -> bool | None:
        return None if self.target is None or self.ratio is None else self.ratio <= self.target

    @property
    def mb_per_s(self) -> float | None:
        moved = self.stats.get("bytes_read")
        return moved / self.seconds / 1e6 if moved else None


@dataclass
class Bench:
    """Where everything lives, and what has to be undone."""

    work: Path
    env: dict[str, str]
    genievm: list[str]
    conn: libvirt.virConnect
    dom: libvirt.virDomain | None = None
    name: str = ""
    py_spy: str | None = None  # profile the backups with this py-spy (the times are then not comparable)


# --- the disk and the VM ---------------------------------------------------------------------------------


def build_raw(path: Path, size: int, seed: int) -> dict[str, int]:
    """A raw image with every block written: random, compressible and repeated-record blocks."""
    rng = random.Random(seed)
    n = size // BLOCK
    kinds = ["random", "compressible", "pattern"] * (n // 3 + 1)
    kinds = kinds[:n]
    rng.shuffle(kinds)
    pool = memoryview(compressible_pool())
    with open(path, "wb", buffering=0) as f:
        for i, kind in enumerate(kinds):
            if kind == "random":
                data: bytes | memoryview = os.urandom(BLOCK)
            elif kind == "compressible":
                start = rng.randrange(len(pool) - BLOCK)
                data = pool[start : start + BLOCK]
            else:  # a 512-byte record repeated, a different one per block (no deduplication across blocks)
                data = rng.randbytes(512) * (BLOCK // 512)
            os.pwrite(f.fileno(), data, i * BLOCK)
    return {k: kinds.count(k) for k in ("random", "compressible", "pattern")}


def make_disk(data: Path, size: int, seed: int) -> tuple[Path, dict[str, int]]:
    raw, image = data / "disk.raw", data / "disk.qcow2"
    layout = forked(build_raw, raw, size, seed)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()
    return image, layout


def abort_job(dom: libvirt.virDomain) -> None:
    with suppress(libvirt.libvirtError):  # no job: nothing to abort
        dom.abortJob()


def qemu_cpu(name: str) -> float:
    """CPU seconds (user + system) the VM's QEMU process has used so far."""
    pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the guest's writes ----------------------------------------------------------------------------------


def change_plan(size: int, seed: int, fraction: float = CHANGE_FRACTION) -> list[tuple[int, int]]:
    """Non-overlapping (offset, length) writes of 64 KiB-1 MiB, 64 KiB aligned, spread over the disk."""
    rng = random.Random(seed + 1)
    step = WRITE_SIZES[0]
    slots = size // step
    taken: set[int] = set()
    writes: list[tuple[int, int]] = []
    total, goal = 0, int(size * fraction)
    while total < goal:
        length = rng.randrange(WRITE_SIZES[0], WRITE_SIZES[1] + 1, step)
        first = rng.randrange(slots - length // step)
        span = set(range(first, first + length // step))
        if span & taken:
            continue
        taken |= span
        writes.append((first * step, length))
        total += length
    return sorted(writes)


def guest_change(bench: Bench, size: int, seed: int, chunk: int) -> dict[str, int]:
    """The guest rewrites 1 % of its disk with random data (HMP qemu-io), then flushes."""
    assert bench.dom is not None
    sources = []
    for k in range(SOURCES):
        path = bench.work / "data" / f"pattern-{k}.bin"
        path.write_bytes(os.urandom(WRITE_SIZES[1]))
        sources.append(path)
    writes = change_plan(size, seed)
    for k, (offset, length) in enumerate(writes):
        out = qemu_io(bench.dom, 0, f"write -q -s {sources[k % SOURCES]} {offset} {length}")
        if out.strip():
            raise SystemExit(f"bench: guest write at {offset} failed: {out.strip()}")
    qemu_io(bench.dom, 0, "flush")
    chunks = {i for off, n in writes for i in range(off // chunk, (off + n - 1) // chunk + 1)}
    return {"writes": len(writes), "bytes": sum(n for _, n in writes), "chunks_touched": len(chunks)}


# --- steps -----------------------------------------------------------------------------------------------


def measured(bench: Bench, name: str, cmd: list[str]) -> tuple[Step, str]:
    """``cmd`` as a child (bench.run: wait4 rusage), with QEMU's CPU time over the same span."""
    before = qemu_cpu(bench.name)
    base, text = run(name, cmd, bench.work / "logs", bench.env)
    step = Step(name, base.seconds, base.cpu_seconds, base.rss_mib, qemu_cpu(bench.name) - before)
    return step, text


@contextmanager
def pull_job(bench: Bench) -> Iterator[Path]:
    """A full pull-mode backup job of vda, as GenieVM's live path starts it; always aborted."""
    assert bench.dom is not None
    run_dir = bench.work / "run"
    run_dir.mkdir(exist_ok=True)
    socket, scratch = run_dir / "nbd.sock", run_dir / "vda.scratch"
    root = ET.Element("domainbackup", mode="pull")
    ET.SubElement(root, "server", transport="unix", socket=str(socket))
    disk = ET.SubElement(ET.SubElement(root, "disks"), "disk", name="vda", backup="yes", type="file")
    ET.SubElement(disk, "scratch", file=str(scratch))
    bench.dom.backupBegin(ET.tostring(root, encoding="unicode"), None)
    try:
        yield socket
    finally:
        abort_job(bench.dom)
        socket.unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)


def baselines(bench: Bench) -> list[Step]:
    copy = bench.work / "data" / "nbdcopy.raw"
    with pull_job(bench) as socket:
        uri = f"nbd+unix:///vda?socket={socket}"
        steps = [measured(bench, "nbdcopy", ["nbdcopy", uri, "null:"])[0]]
        steps.append(measured(bench, "nbdcopy-file", ["nbdcopy", "--flush", uri, str(copy)])[0])
    size = copy.stat().st_size
    copy.unlink()
    for step in steps:
        step.stats["bytes_read"] = size  # a fully allocated disk: nbdcopy reads all of it
    return steps


def genievm_backup(bench: Bench, name: str, repo: Path, extra: list[str]) -> Step:
    cmd = bench.genievm + ["backup", "--vm", bench.name, "--repo", str(repo), "--provider", "kvm"]
    if bench.py_spy:  # 100 Hz, every thread, idle included, one line per stack: logs/NAME.pyspy
        out = bench.work / "logs" / f"{name}.pyspy"
        record = ["record", "-r", "100", "--idle", "--threads", "--format", "raw", "-o", str(out), "--"]
        cmd = [bench.py_spy, *record, *cmd]
    step, text = measured(bench, name, cmd + ["-o", f"uri={URI}", "--json", *extra])
    result, _ = json.JSONDecoder().raw_decode(text[text.index("{") :])  # py-spy may print before and after
    disk = result["disks"][0]
    step.internal_seconds = result.get("elapsed_seconds")
    step.stats = dict(result.get("stats") or {}) | {"cbt": disk.get("cbt"), "kind": result.get("kind")}
    return step


def drop_checkpoints(dom: libvirt.virDomain) -> None:
    """An earlier round's checkpoints: their bitmaps would be kept up to date by QEMU for nothing."""
    for cp in dom.listAllCheckpoints():
        with suppress(libvirt.libvirtError):
            cp.delete()


def bench_round(bench: Bench, args: argparse.Namespace, number: int, say: Callable[[str], None]) -> list[Step]:
    assert bench.dom is not None
    repo = bench.work / "data" / f"repo-{number}"
    drop_checkpoints(bench.dom)
    init = ["repo", "init", str(repo), "--encryption", args.encryption, "--chunk-size", str(args.chunk_size)]
    run("repo-init", bench.genievm + init, bench.work / "logs", bench.env)
    steps = [measured(bench, "startup", bench.genievm + ["plugins"])[0]]
    steps += baselines(bench)
    extra = ["--workers", str(args.workers)] if args.workers else []
    extra += ["--compression-level", str(args.compression_level)] if args.compression_level else []
    steps.append(genievm_backup(bench, "full", repo, extra))
    change = guest_change(bench, args.size, args.seed + number, args.chunk_size)
    wrote = f"{change['bytes'] / MIB:.1f} MiB in {change['writes']} writes"
    say(f"  guest wrote {wrote}, {change['chunks_touched']} chunks touched")
    inc = genievm_backup(bench, "incremental", repo, extra)
    inc.stats["change"] = change
    cbt = inc.stats.get("cbt") or {}
    if cbt.get("mode") != "cbt" or cbt.get("source") != "libvirt-checkpoint":
        say(f"  warning: the incremental did not use the libvirt checkpoint: {cbt}")
    steps.append(inc)
    say("  " + "  ".join(f"{s.name} {s.seconds:.2f} s" for s in steps))
    if not args.keep:
        shutil.rmtree(repo)
    return steps


# --- figures ---------------------------------------------------------------------------------------------


def lower_median(values: list[float]) -> float:
    return sorted(values)[(len(values) - 1) // 2]  # a real round's figure


def combine(rounds: list[list[Step]]) -> list[Step]:
    """Per step the median round's figures, peak RSS the highest; ratios taken within each round, then the median."""
    ratios: dict[str, list[float]] = {}
    for steps in rounds:
        by_name = {s.name: s for s in steps}
        for s in steps:
            if s.name in BASE_OF:
                ratios.setdefault(s.name, []).append(s.seconds / by_name[BASE_OF[s.name]].seconds)
    combined = []
    for group in zip(*rounds, strict=True):
        median = next(s for s in group if s.seconds == lower_median([g.seconds for g in group]))
        name = median.name
        combined.append(
            replace(
                median,
                rss_mib=max(s.rss_mib for s in group),
                rounds=[s.seconds for s in group],
                ratios=ratios.get(name, []),
                ratio=lower_median(ratios[name]) if name in ratios else None,
                target=TARGETS.get(name),
            )
        )
    return combined


def print_table(steps: list[Step]) -> None:
    row = "{:<13} {:>8} {:>7} {:>7} {:>7} {:>7} {:<8} {:>7} {:>5} {:>6} {:>8}".format
    mark = {None: "-", True: "pass", False: "MISS"}
    print(row("step", "seconds", "cpu s", "qemu s", "job s", "ratio", "of", "target", "", "MB/s", "RSS MiB"))
    for s in steps:
        ratio, of = (f"{s.ratio:.3f}", BASE_OF[s.name]) if s.ratio is not None else ("-", "")
        target = f"<={s.target}x" if s.target is not None else "-"
        job = f"{s.internal_seconds:.2f}" if s.internal_seconds is not None else "-"
        rate = f"{s.mb_per_s:.0f}" if s.mb_per_s else "-"
        cells = [s.name, f"{s.seconds:.2f}", f"{s.cpu_seconds:.1f}", f"{s.qemu_cpu_seconds:.1f}", job, ratio, of]
        print(row(*cells, target, mark[s.ok], rate, f"{s.rss_mib:.1f}"))
    for s in steps:
        if len(s.rounds) > 1:
            print(f"{s.name} by round: {by_round(s)}")
    for s in steps:
        if "cbt" in s.stats:
            keys = ("bytes_scanned", "bytes_read", "bytes_new", "bytes_stored", "chunks_new", "cbt", "change")
            print(f"{s.name}: " + ", ".join(f"{k} {s.stats[k]}" for k in keys if k in s.stats))


def by_round(s: Step) -> str:
    cells = [f"{t:.2f} s" for t in s.rounds]
    if s.ratios:
        cells = [f"{c} ({r:.3f}x {BASE_OF[s.name]})" for c, r in zip(cells, s.ratios, strict=True)]
    return ", ".join(cells)


# --- main ------------------------------------------------------------------------------------------------


def start_vm(bench: Bench, image: Path) -> None:
    bench.name = f"genievm-bench-{secrets.token_hex(3)}"
    bench.dom = bench.conn.defineXML(scratch_domain_xml(bench.name, {"vda": (image, "qcow2")}))
    bench.dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)


def cleanup(bench: Bench, keep: bool) -> None:
    if bench.dom is not None:
        abort_job(bench.dom)
        with suppress(libvirt.libvirtError):
            remove_vm(bench.dom)
    with suppress(libvirt.libvirtError):
        bench.conn.close()
    shutil.rmtree(bench.work / "run", ignore_errors=True)
    if not keep:
        shutil.rmtree(bench.work / "data", ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/kvm"), help="default ./bench-work/kvm")
    parser.add_argument("--size", type=parse_size, default=4 << 30, help="disk size: 4G (default), 256M, ...")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median round's figures are shown")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--encryption", default="aes-256-gcm", choices=("aes-256-gcm", "none"))
    parser.add_argument("--compression-level", type=int, help="genievm backup --compression-level (default 3)")
    parser.add_argument("--chunk-size", type=int, default=4 << 20, help="repository chunk size (default 4 MiB)")
    parser.add_argument("--workers", type=int, help="genievm --workers (default: genievm's)")
    parser.add_argument("--genievm", type=Path, default=Path(sys.executable).with_name("genievm"))
    parser.add_argument("--py-spy", help="profile full and incremental with this py-spy (logs/NAME.pyspy)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep WORKDIR/data: disk image and repositories")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for tool in ("qemu-img", "nbdcopy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is missing (apt-get install qemu-utils libnbd-bin)")
    if not args.genievm.exists():
        raise SystemExit(f"bench: no genievm at {args.genievm} (run `uv sync`, or give --genievm)")
    return args


def main() -> int:
    args = parse_args()

    def say(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; do not print them too
    work = args.workdir.resolve()
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "logs", ignore_errors=True)
    for sub in ("data", "logs"):
        (work / sub).mkdir(parents=True)
    # .pyc files cached as an installed package has them (this sandbox sets PYTHONDONTWRITEBYTECODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"GENIEVM_PASSPHRASE": PASSPHRASE, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    bench = Bench(work, env, [str(args.genievm)], libvirt.open(URI), py_spy=args.py_spy)
    try:
        started = time.perf_counter()
        image, layout = make_disk(work / "data", args.size, args.seed)
        say(f"disk of {args.size / (1 << 30):.2f} GiB, 4 MiB blocks {layout}: {time.perf_counter() - started:.1f} s")
        start_vm(bench, image)
        run("warm-up", bench.genievm + ["plugins"], work / "logs", env)  # compiles the .pyc files once
        rounds = []
        for number in range(args.repeat):
            say(f"round {number + 1} of {args.repeat}")
            rounds.append(bench_round(bench, args, number, say))
    finally:
        cleanup(bench, args.keep)
    steps = combine(rounds)
    if args.json:
        figures = {"machine": machine(), "disk_bytes": args.size, "blocks": layout, "rounds": args.repeat}
        figures |= {k: getattr(args, k) for k in ("encryption", "compression_level", "chunk_size", "workers")}
        figures["steps"] = [asdict(s) | {"ok": s.ok, "mb_per_s": s.mb_per_s} for s in steps]
        print(json.dumps(figures, indent=2))
    else:
        print()
        print_table(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
