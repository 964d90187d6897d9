"""``genievm serve``: real nbdkit, real qemu-img, nbdcopy, nbdinfo and libnbd clients, real repositories."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from importlib.metadata import distribution
from pathlib import Path

import nbd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from genievm_recovery import ExportError  # noqa: E402
from serve_support import GENIEVM, PASSPHRASE, genievm, random_bytes, serving, write_image  # noqa: E402

from genievm_core import errors  # noqa: E402
from genievm_core.cli import COMMANDS  # noqa: E402
from genievm_core.cli.extra import COMMANDS_GROUP, plugin_commands  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB
LAYOUT = [(0, random_bytes(MiB, 1)), (5 * MiB + 4096, b"genievm " * 30000), (SIZE - 65536, random_bytes(65536, 2))]


def backed_up(tmp_path: Path, *, encrypted: bool, disks: dict[str, Path] | None = None, chunk: int = 65536) -> None:
    """``repo`` in tmp_path with one backup of VM web01 (disk vda = vda-source.img unless ``disks``)."""
    disks = disks or {"vda": write_image(tmp_path / "vda-source.img", SIZE, LAYOUT)}
    init = ["repo", "init", "repo", "--chunk-size", str(chunk)] + ([] if encrypted else ["--encryption", "none"])
    passphrase = PASSPHRASE if encrypted else None
    assert genievm(*init, cwd=tmp_path, passphrase=passphrase).returncode == 0
    args = [arg for name, path in disks.items() for arg in ("--disk", f"{name}={path}")]
    done = genievm("backup", "--vm", "web01", "--repo", "repo", *args, cwd=tmp_path, passphrase=passphrase)
    assert done.returncode == 0, done.stderr


def export_folders(tmp_path: Path) -> list[Path]:
    root = tmp_path / "state" / "exports"
    return sorted(root.iterdir()) if root.exists() else []


def holes(map_output: str) -> list[tuple[int, int]]:
    """The (offset, length) of the hole runs in ``nbdinfo --map`` output."""
    runs = [line.split() for line in map_output.splitlines()]
    return [(int(r[0]), int(r[1])) for r in runs if r and r[2] == "3"]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_export_reads_back_the_image_byte_for_byte_and_shows_its_holes(tmp_path: Path, encrypted: bool) -> None:
    backed_up(tmp_path, encrypted=encrypted)
    source = (tmp_path / "vda-source.img").read_bytes()
    passphrase = PASSPHRASE if encrypted else None
    with serving("--repo", "repo", "--vm", "web01", "--socket", "web01.sock", cwd=tmp_path, passphrase=passphrase) as s:
        assert s.uris["vda"] == f"nbd+unix:///vda?socket={tmp_path / 'web01.sock'}"
        uri = "nbd+unix:///vda?socket=web01.sock"  # as docs/user-guide.md shows it, relative to the folder
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, "vda.img"], cwd=tmp_path, check=True)
        assert (tmp_path / "vda.img").read_bytes() == source
        subprocess.run(["nbdcopy", uri, "vda-copy.img"], cwd=tmp_path, check=True)
        assert (tmp_path / "vda-copy.img").read_bytes() == source
        mapped = subprocess.run(["nbdinfo", "--map", uri], cwd=tmp_path, capture_output=True, text=True,
                                check=True).stdout  # fmt: skip
        text_end = 5 * MiB + 4 * 65536  # the text's four chunks of 64 KiB
        assert holes(mapped) == [(MiB, 4 * MiB), (text_end, SIZE - 65536 - text_end)]
        nbdkit = int((export_folders(tmp_path)[0] / "nbdkit.pid").read_text())
        argv = Path(f"/proc/{nbdkit}/cmdline").read_bytes()
        environ = Path(f"/proc/{nbdkit}/environ").read_bytes()
        assert PASSPHRASE.encode() not in argv and PASSPHRASE.encode() not in environ
        listed = json.loads(genievm("jobs", "list", "--json", cwd=tmp_path).stdout)
        assert [(j["id"], j["state"]) for j in listed if j["kind"] == "serve"] == [(s.job, "running")]
        cancelled = genievm("jobs", "cancel", s.job, cwd=tmp_path)
        assert cancelled.returncode == 0, cancelled.stderr
        code, err = s.stop(None)
    assert code == 0 and f"genievm: export {s.job} stopped" in err
    assert export_folders(tmp_path) == [] and not (tmp_path / "web01.sock").exists()
    assert genievm("jobs", "show", s.job, "--json", cwd=tmp_path).stdout.count('"cancelled"') == 1


def test_two_clients_at_once_read_the_same_disk_over_tcp(tmp_path: Path) -> None:
    backed_up(tmp_path, encrypted=False)
    source = (tmp_path / "vda-source.img").read_bytes()
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with serving("--repo", "repo", "--vm", "web01", "--port", str(port), cwd=tmp_path) as s:
        assert s.uris["vda"] == f"nbd://127.0.0.1:{port}/vda"
        gc = genievm("gc", "--repo", "repo", "--lock-wait", "0", cwd=tmp_path)  # the export holds the shared lock
        assert gc.returncode == 19 and "is locked by serve" in gc.stderr, gc.stderr
        results: dict[int, bytes] = {}

        def read_all(client: int) -> None:
            h = nbd.NBD()
            h.connect_uri(s.uris["vda"])
            assert h.can_multi_conn() and h.is_read_only()
            out = bytearray()
            order = range(0, SIZE, MiB) if client == 0 else reversed(range(0, SIZE, MiB))
            parts = {offset: h.pread(MiB, offset) for offset in order}
            for offset in sorted(parts):
                out += parts[offset]
            h.shutdown()
            results[client] = bytes(out)

        threads = [threading.Thread(target=read_all, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert results[0] == source and results[1] == source


def test_writable_export_writes_into_an_overlay_never_the_repository(tmp_path: Path) -> None:
    backed_up(tmp_path, encrypted=True)
    source = (tmp_path / "vda-source.img").read_bytes()
    before = sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*") if "locks" not in p.parts)
    args = ["--repo", "repo", "--vm", "web01", "--writable", "--keep-overlay", "kept.qcow2"]
    with serving(*args, cwd=tmp_path, passphrase=PASSPHRASE) as s:
        h = nbd.NBD()
        h.connect_uri(s.uris["vda"])
        assert not h.is_read_only()
        h.pwrite(b"\xab" * 65536, 2 * MiB)  # into a hole
        h.pwrite(b"\xcd" * 4096, 0)  # over data
        h.flush()
        assert h.pread(65536, 2 * MiB) == b"\xab" * 65536
        assert h.pread(8192, 0) == b"\xcd" * 4096 + source[4096:8192]
        h.shutdown()
        folder = export_folders(tmp_path)[0]
    code, err = s.stop()  # SIGTERM, as Ctrl-C
    assert code == 130 and not folder.exists(), err  # the cow filter's overlay (in the export's folder) went with it
    kept = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "kept.qcow2"], cwd=tmp_path,
                                     capture_output=True, check=True).stdout)  # fmt: skip
    assert kept["format"] == "qcow2" and "backing-filename" not in kept and kept["virtual-size"] == SIZE
    mapped = json.loads(subprocess.run(["qemu-img", "map", "--output=json", "kept.qcow2"], cwd=tmp_path,
                                       capture_output=True, check=True).stdout)  # fmt: skip
    written = [(m["start"], m["length"]) for m in mapped if m["data"]]
    assert written == [(0, 65536), (2 * MiB, 65536)]  # the two clusters written, nothing else
    raw = subprocess.run(["qemu-img", "convert", "-O", "raw", "kept.qcow2", "kept.raw"], cwd=tmp_path, check=True)
    assert raw.returncode == 0
    with open(tmp_path / "kept.raw", "rb") as f:
        assert f.read(8192) == b"\xcd" * 4096 + source[4096:8192]
        f.seek(2 * MiB)
        assert f.read(65536) == b"\xab" * 65536
    after = sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*") if "locks" not in p.parts)
    assert after == before
    verified = genievm("verify", "--repo", "repo", "--vm", "web01", "--read-data", cwd=tmp_path, passphrase=PASSPHRASE)
    assert verified.returncode == 0, verified.stderr
    restored = genievm("restore", "--repo", "repo", "--vm", "web01", "--target", "out", cwd=tmp_path,
                       passphrase=PASSPHRASE)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert [p.read_bytes() == source for p in (tmp_path / "out").rglob("vda*") if p.is_file()] == [True]


def test_peak_memory_of_nbdkit_stays_bounded_on_a_disk_larger_than_its_cache(tmp_path: Path) -> None:
    size = 1 << 30
    layout = [(i * 3 * MiB, random_bytes(MiB, i)) for i in range(300)]  # 300 MiB of data, 1 GiB disk
    image = write_image(tmp_path / "big.img", size, layout)
    backed_up(tmp_path, encrypted=True, disks={"vda": image}, chunk=4 * MiB)
    with serving("--repo", "repo", "--vm", "web01", "--cache-mib", "64", cwd=tmp_path, passphrase=PASSPHRASE) as s:
        nbdkit = int((export_folders(tmp_path)[0] / "nbdkit.pid").read_text())
        subprocess.run(["nbdcopy", s.uris["vda"], "big-copy.img"], cwd=tmp_path, check=True)
        status = Path(f"/proc/{nbdkit}/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    assert peak < 256 * MiB, f"nbdkit peaked at {peak >> 20} MiB"
    assert _digest(tmp_path / "big-copy.img") == _digest(image)
    assert os.stat(tmp_path / "big-copy.img").st_blocks * 512 < 400 * MiB  # nbdcopy skipped the holes


def _digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def test_a_killed_serve_leaves_nothing_after_cleanup(tmp_path: Path) -> None:
    backed_up(tmp_path, encrypted=False)
    with serving("--repo", "repo", "--vm", "web01", "--socket", "kept.sock", "--writable", cwd=tmp_path) as s:
        nbdkit = int((export_folders(tmp_path)[0] / "nbdkit.pid").read_text())
        s.process.send_signal(signal.SIGKILL)
        s.process.wait(10)
    cleaned = genievm("serve", "--cleanup", cwd=tmp_path)
    assert cleaned.returncode == 0 and cleaned.stdout.strip() == "removed 1 stale exports"
    assert export_folders(tmp_path) == [] and not (tmp_path / "kept.sock").exists()
    assert not _running(nbdkit)
    gc = genievm("gc", "--repo", "repo", "--lock-wait", "0", cwd=tmp_path)  # the dead export's lock is no obstacle
    assert gc.returncode == 0, gc.stderr
    job = json.loads(genievm("jobs", "show", s.job, "--json", cwd=tmp_path).stdout)
    assert job["state"] == "failed" and "interrupted" in job["error"]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--vm", "web01"], 17, "genievm: error: wrong passphrase for repository file://"),
        (["--vm", "db02"], 20, "genievm: error: no backup of VM db02 in repository file://"),
        (["--backup", "20261206T000000.000000Z-00000000"], 20, "genievm: error: no backup 20261206T000000.000000Z"),
        (["--vm", "web01", "--disk", "vdz"], 20, "genievm: error: backup "),
        (["--vm", "web01", "--writable"], 3, "genievm: error: invalid configuration: --writable: serves one disk"),
    ],
    ids=["wrong-passphrase", "unknown-vm", "unknown-backup", "unknown-disk", "writable-several-disks"],
)
def test_bad_input_is_one_line_and_its_exit_code(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    disks = {name: write_image(tmp_path / f"{name}.img", MiB, []) for name in ("vda", "vdb")}
    backed_up(tmp_path, encrypted=True, disks=disks)
    wrong = "not the passphrase" if code == 17 else PASSPHRASE
    done = genievm("serve", "--repo", "repo", *args, cwd=tmp_path, passphrase=wrong)
    lines = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert export_folders(tmp_path) == []


def test_serve_comes_through_the_commands_entry_point_group_only() -> None:
    points = [ep for ep in distribution("genievm-recovery").entry_points if ep.group == COMMANDS_GROUP]
    assert sorted((ep.name, ep.value) for ep in points) == [
        ("files", "genievm_recovery.files_cli:files"),
        ("instant", "genievm_recovery.instant_cli:app"),
        ("serve", "genievm_recovery.cli:serve"),
    ]
    assert {"files", "instant", "serve"} <= set(plugin_commands(frozenset(COMMANDS)))
    core = Path(__import__("genievm_core").__file__).parent
    assert not [p for p in core.rglob("*.py") if "genievm_recovery" in p.read_text()]
    helped = subprocess.run([sys.executable, "-m", "genievm_core", "--help"], capture_output=True, text=True)
    assert " serve " in helped.stdout and " instant " in helped.stdout


def test_without_nbdkit_serve_exits_30_in_one_line(tmp_path: Path) -> None:
    backed_up(tmp_path, encrypted=False)
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    done = subprocess.run([GENIEVM, "serve", "--repo", "repo", "--vm", "web01"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if not line.startswith("genievm: warning: ")]
    assert done.returncode == ExportError.exit_code == 30
    assert (
        len(lines) == 1 and lines[0].startswith("genievm: error: export of ") and "nbdkit is not installed" in lines[0]
    )
    assert export_folders(tmp_path) == []


def test_export_error_is_documented_with_its_own_exit_code() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "errors.md").read_text()
    assert re.search(r"^\| 30 \| `ExportError` \|", doc, re.M)
    core = [c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.GenieVMError)]
    assert ExportError.exit_code not in core
