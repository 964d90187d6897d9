"""Benchmark GenieVM's backup of a running KVM VM (libvirt's backup API, NBD) against nbdcopy and virtnbdbackup.

It builds one VM per content as the KVM plugin's tests do (q35, 64 MiB, no OS, started
paused) with one qcow2 disk (default 4 GiB):

    allocated   every 4 MiB block written, in a seeded random order: a third each of
                os.urandom, compressible bytes (files under /usr/share and /usr/lib) and
                repeated 512-byte records
    mix         bench.py's image: 40 % holes, 30 % compressible, 30 % random

Then, in one invocation, per content and round, each step a subprocess:

    startup         genievm plugins (interpreter, imports, plugin discovery; no job)
    nbdcopy         a pull-mode backup job (backupBegin), then nbdcopy nbd+unix:///vda?socket=S
                    null: (every allocated byte read, nothing written: the read-side limit)
    nbdcopy-file    the same export to a raw file, --flush (what copying it out durably
                    costs: the base of the full backup's target), then abortJob()
    full            genievm backup --provider kvm into a fresh repository (encrypted,
                    zstd level 3: the defaults)
    incremental     1 % of the disk rewritten by the guest (random data, 64 KiB-1 MiB
                    writes spread over the disk through HMP qemu-io), then genievm backup
                    (CBT: the libvirt checkpoint's dirty bitmap)
    restore         genievm restore of the incremental to a raw file (verified, durable)
    vnb-*, vnbz-*   virtnbdbackup (Debian's package, installed by this script when missing)
                    -l full, the same 1 % change, -l inc, then virtnbdrestore; vnbz with
                    --compress. Each runs its own checkpoint chain (it refuses a VM with
                    checkpoints it did not make); every restored image is compared with the disk.

Per step: wall seconds, CPU seconds and peak RSS of the child (``os.wait4``), and the
CPU seconds QEMU spent meanwhile (it serves the export). Targets (issue 13): full <= 2.0x
nbdcopy-file; full and incremental >= 1.5x faster than virtnbdbackup's, with and without
--compress; incremental <= 1.0 s. Times are never asserted on; the machine is noisy, so
every ratio is taken within a round. With ``--repeat N`` each round uses a new repository
on the same VM; each step's figures are the median round's (peak RSS: the highest) and
each ratio the median of the rounds' ratios (the lower median: a real round's). The VMs,
images, backup jobs and repositories are removed at the end, on error, Ctrl-C and SIGTERM
too (``--keep`` keeps the files).

    .venv/bin/python benchmarks/bench_kvm.py [--size 4G] [--repeat 2] [--content allocated,mix]
        [--no-peers] [--json] [--keep] [--encryption none] [--compression-level 1]
        [--chunk-size N] [--workers N] [--genievm PATH] [--py-spy PATH] [--workdir DIR]
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
from functools import partial
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    BLOCK,
    MIB,
    PASSPHRASE,
    build_image,
    compressible_pool,
    forked,
    machine,
    parse_size,
    run,
)
from floor import FormatWork, format_work, verdict  # noqa: E402
from genievm_kvm.testing import qemu_io, remove_vm, scratch_domain_xml  # noqa: E402
from kvm_peers import VARIANTS, ensure_installed, peer_round, version  # noqa: E402

URI = "qemu:///system"
BASE_OF = {"full": "nbdcopy-file", "nbdcopy-file": "nbdcopy", "incremental": "full"}  # ratio: step / base
BASE_OF |= {f"{v}-{step}": step for v in VARIANTS for step in ("full", "incremental", "restore")}
TARGETS = {"full": 2.0, "vnb-full": 1.5, "vnbz-full": 1.5, "vnb-incremental": 1.5, "vnbz-incremental": 1.5}
FASTER = {n for n in TARGETS if n.startswith("vnb")}  # target: the peer's time / GenieVM's, at least
SECONDS_TARGETS = {"incremental": 1.0}  # wall seconds, at most
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
    ratio: float | None = None  # this / BASE_OF[name] in the same round (a peer's: x GenieVM's); the rounds' median
    target: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)  # seconds in each round
    ratios: list[float] = field(default_factory=list)  # ratio in each round

    @property
    def ok(self) -> bool | None:
        if self.name in SECONDS_TARGETS:
            return self.seconds <= SECONDS_TARGETS[self.name]
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.name in FASTER else self.ratio <= self.target

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


def make_disk(args: argparse.Namespace, data: Path, content: str) -> tuple[Path, dict[str, int], FormatWork]:
    """The disk's qcow2 image, its layout and the format's own work on its data (floor.py)."""
    raw, image = data / "disk.raw", data / f"disk-{content}.qcow2"
    layout = forked(build_raw if content == "allocated" else build_image, raw, args.size, args.seed)
    level, encrypted = args.compression_level or 3, args.encryption != "none"
    work = forked(partial(format_work, compression_level=level, encrypted=encrypted, scratch=data), raw)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()
    return image, layout, work


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
    size = copy.stat().st_blocks * 512  # what nbdcopy wrote: holes stay holes
    copy.unlink()
    for step in steps:
        step.stats["bytes_read"] = size  # nbdcopy reads the allocated extents
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


def restored_matches(bench: Bench, image: Path, restored: Path) -> None:
    """Exit loudly unless ``restored`` holds the bytes of the VM's disk (paused, so they stay put)."""
    out = subprocess.run(["qemu-img", "compare", "-U", str(restored), str(image)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: FAIL: {restored} is not the VM's disk: {(out.stdout + out.stderr).strip()}")


def genievm_restore(bench: Bench, repo: Path, image: Path) -> Step:
    target = bench.work / "data" / "restore"
    shutil.rmtree(target, ignore_errors=True)
    cmd = bench.genievm + ["restore", "--vm", bench.name, "--repo", str(repo), "--target", str(target)]
    step = measured(bench, "restore", cmd)[0]
    restored = [p for p in target.rglob("*") if p.is_file() and p.stat().st_size == image_size(image)]
    if not restored:
        raise SystemExit(f"bench: genievm restore wrote no disk of the VM's size into {target}")
    restored_matches(bench, image, restored[0])
    shutil.rmtree(target)
    return step


def image_size(image: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, check=True)
    return int(json.loads(out.stdout)["virtual-size"])


def bench_round(
    bench: Bench, args: argparse.Namespace, image: Path, number: int, say: Callable[[str], None]
) -> list[Step]:
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
    seed = args.seed + number
    change = guest_change(bench, args.size, seed, args.chunk_size)
    wrote = f"{change['bytes'] / MIB:.1f} MiB in {change['writes']} writes"
    say(f"  guest wrote {wrote}, {change['chunks_touched']} chunks touched")
    inc = genievm_backup(bench, "incremental", repo, extra)
    inc.stats["change"] = change
    cbt = inc.stats.get("cbt") or {}
    if cbt.get("mode") != "cbt" or cbt.get("source") != "libvirt-checkpoint":
        say(f"  warning: the incremental did not use the libvirt checkpoint: {cbt}")
    steps.append(inc)
    steps.append(genievm_restore(bench, repo, image))
    if not args.keep:
        shutil.rmtree(repo)

    def peer_step(name: str, cmd: list[str]) -> Step:
        return measured(bench, name, cmd)[0]

    def peer_change() -> None:  # the same writes as GenieVM's incremental had
        guest_change(bench, args.size, seed, args.chunk_size)

    for variant in VARIANTS if args.peers else ():
        drop_checkpoints(bench.dom)  # virtnbdbackup refuses a VM with checkpoints not its own
        work = bench.work / "data"
        steps += peer_round(variant, bench.name, work, peer_step, peer_change, partial(restored_matches, bench, image))
    say("  " + "  ".join(f"{s.name} {s.seconds:.2f} s" for s in steps))
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
    row = "{:<17} {:>8} {:>7} {:>7} {:>7} {:>7} {:<13} {:>7} {:>5} {:>6} {:>8}".format
    mark = {None: "-", True: "pass", False: "MISS"}
    print(row("step", "seconds", "cpu s", "qemu s", "job s", "ratio", "of", "target", "", "MB/s", "RSS MiB"))
    for s in steps:
        ratio, of = (f"{s.ratio:.3f}", BASE_OF[s.name]) if s.ratio is not None else ("-", "")
        target = f"<={s.target}x" if s.target is not None else "-"
        target = f">={s.target}x" if s.name in FASTER else target
        target = f"<={SECONDS_TARGETS[s.name]}s" if s.name in SECONDS_TARGETS else target
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


def print_floors(steps: list[Step], work: FormatWork) -> None:
    """Each target missed, against its floor: a full backup cannot beat the export's read (nbdcopy to null),
    nor the format's work on the data (floor.py) plus what reading costs nbdcopy and QEMU, on every CPU."""
    by = {s.name: s for s in steps}
    if "nbdcopy" not in by or "full" not in by:
        return
    read = by["nbdcopy"]
    cpu = work.id_cpu + work.encode_cpu + work.write_cpu + read.cpu_seconds + read.qemu_cpu_seconds
    full_floor = max(read.seconds, cpu / work.cpus, work.write_seconds)
    print(
        f"floor of the full backup: max(nbdcopy's read {read.seconds:.2f} s, (ids {work.id_cpu:.2f} + zstd and "
        f"AES-GCM {work.encode_cpu:.2f} + writing {work.write_cpu:.2f} + nbdcopy {read.cpu_seconds:.2f} + QEMU "
        f"{read.qemu_cpu_seconds:.2f} CPU-s) / {work.cpus} CPUs, {work.stored_bytes / 1e9:.2f} GB made durable "
        f"in {work.write_seconds:.2f} s) = {full_floor:.2f} s"
    )
    if note := work.fresh_pages_note():
        print(note)
    floors = {"full": full_floor, "incremental": incremental_floor(by.get("incremental"), work)}
    wanted = {}  # a step with a target: (GenieVM's step, the seconds the target allows it, the yardstick)
    if "nbdcopy-file" in by:
        wanted["full"] = ("full", TARGETS["full"] * by["nbdcopy-file"].seconds, "nbdcopy-file")
    wanted["incremental"] = ("incremental", SECONDS_TARGETS["incremental"], f"{SECONDS_TARGETS['incremental']} s")
    for name in FASTER & by.keys():
        wanted[name] = ("full" if name.endswith("full") else "incremental", by[name].seconds / TARGETS[name], name)
    for s in steps:
        if s.ok is False and s.name in wanted:
            ours, target, versus = wanted[s.name]
            mine = by[ours]
            print(verdict(f"{ours} vs {versus}", mine.seconds, target, floors[ours], mine.internal_seconds))


def incremental_floor(step: Step | None, work: FormatWork) -> float:
    """The format's work in a CBT incremental: each chunk the guest's writes touched gets its new id, from its
    parent's chunk decoded with the changed bytes written over it; only the changed bytes are encoded and made
    durable, as a patch (docs/repository-format.md, "Patched chunks")."""
    stats = step.stats if step is not None else {}
    touched, changed = stats.get("bytes_new", 0), stats.get("bytes_read", 0)
    share = touched / work.data_bytes if work.data_bytes else 0.0
    changed_share = changed / work.data_bytes if work.data_bytes else 0.0
    cpu = share * (work.decode_cpu + work.id_cpu) + changed_share * (work.encode_cpu + work.write_cpu)
    floor = max(cpu / work.cpus, changed_share * work.write_seconds)
    print(
        f"floor of the incremental: the {touched / 1e6:.0f} MB of chunks the writes touched ({share:.1%} of the data) "
        f"decoded and through ids, the {changed / 1e6:.0f} MB they changed through zstd, AES-GCM and writing "
        f"({cpu:.2f} CPU-s / {work.cpus} CPUs), or made durable ({changed_share * work.write_seconds:.2f} s) "
        f"= {floor:.2f} s"
    )
    return floor


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


def stop_vm(bench: Bench) -> None:
    if bench.dom is not None:
        abort_job(bench.dom)
        with suppress(libvirt.libvirtError):
            remove_vm(bench.dom)
        bench.dom = None


def cleanup(bench: Bench, keep: bool) -> None:
    stop_vm(bench)
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
    parser.add_argument("--content", default="allocated,mix", help="allocated, mix or allocated,mix (default)")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the virtnbdbackup rows")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep WORKDIR/data: disk image and repositories")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.content = args.content.split(",")
    if not args.content or set(args.content) - {"allocated", "mix"}:
        parser.error("--content: allocated, mix or allocated,mix")
    if args.peers:
        ensure_installed()
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
    results: dict[str, tuple[dict[str, int], list[Step], FormatWork]] = {}
    try:
        for content in args.content:
            started = time.perf_counter()
            image, layout, floor_work = make_disk(args, work / "data", content)
            took = time.perf_counter() - started
            say(f"{content}: disk of {args.size / (1 << 30):.2f} GiB, 4 MiB blocks {layout}: {took:.1f} s")
            start_vm(bench, image)
            run("warm-up", bench.genievm + ["plugins"], work / "logs", env)  # compiles the .pyc files once
            rounds = []
            for number in range(args.repeat):
                say(f"round {number + 1} of {args.repeat}")
                rounds.append(bench_round(bench, args, image, number, say))
            stop_vm(bench)
            image.unlink()
            results[content] = layout, combine(rounds), floor_work
    finally:
        cleanup(bench, args.keep)
    if args.json:
        figures: dict[str, Any] = {"machine": machine(), "disk_bytes": args.size, "rounds": args.repeat}
        figures |= {k: getattr(args, k) for k in ("encryption", "compression_level", "chunk_size", "workers")}
        figures["virtnbdbackup"] = version() if args.peers else None
        figures["contents"] = {
            content: {
                "blocks": layout,
                "steps": [asdict(s) | {"ok": s.ok, "mb_per_s": s.mb_per_s} for s in steps],
                "format_work": asdict(floor_work),
            }
            for content, (layout, steps, floor_work) in results.items()
        }
        print(json.dumps(figures, indent=2))
    else:
        for content, (layout, steps, floor_work) in results.items():
            print(f"\n{content} ({layout}), virtnbdbackup {version() if args.peers else '-'}:")
            print_table(steps)
            print_floors(steps, floor_work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
