"""The table of bad inputs in docs/errors.md, case by case: the exact first line of stderr and the exit code.

The table is parsed from the doc, so the doc and the product cannot drift
apart: each row names a case built here, its exit code and its first line of
stderr, with ``$T`` standing for the test's temporary folder. Every case must
also leave nothing written (no new backup, no lock, no temporary file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, CLIResult, backup_vm, random_bytes, write_image

from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.config import _canonical
from genievm_core.repository.lock import PREFIX as LOCKS
from genievm_core.repository.storage import open_storage
from genievm_core.testing import mounted_tmpfs

_PASS = {"GENIEVM_PASSPHRASE": PASSPHRASE}
DOC = Path(__file__).parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (.+?) \| (\d+) \| ``(.*)`` \|$")
Cli = Callable[..., CLIResult]


def table() -> dict[str, tuple[int, str]]:
    text = DOC.read_text()
    section = text.split("## Bad inputs", 1)[1]
    rows = {m.group(1): (int(m.group(3)), m.group(4)) for m in map(ROW.match, section.splitlines()) if m}
    assert len(rows) >= 30, "docs/errors.md has fewer than 30 bad inputs"
    return rows


def make_template(t: Path, host: PluginHost) -> None:
    """What every case starts from: a plain repository with one backup of vm1, and an encrypted one."""
    image = write_image(t / "vda.img", 4 * CHUNK, [(0, random_bytes(3 * CHUNK, 1))])
    repo = Repository.init(open_storage(host, str(t / "repo")), passphrase=None, chunk_size=CHUNK)
    Repository.init(open_storage(host, str(t / "enc")), passphrase=PASSPHRASE, chunk_size=CHUNK)
    backup_vm(host, repo, "vm1", {"vda": image})


class Bed:
    """A temporary folder ``t`` holding a copy of the template, and the in-process CLI."""

    def __init__(self, t: Path, cli: Cli, template: Path) -> None:
        self.t, self.cli = t, cli
        shutil.copytree(template, t, dirs_exist_ok=True)
        self.repo, self.enc, self.image = t / "repo", t / "enc", t / "vda.img"

    def backup(self, *extra: str, env: dict[str, str] | None = None) -> CLIResult:
        return self.cli(
            "backup", "--vm", "vm1", "--repo", str(self.repo), "--disk", f"vda={self.image}", *extra, env=env
        )

    def write(self, name: str, text: str) -> Path:
        path = self.t / name
        path.write_text(text)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.t / name
        path.write_bytes(data)
        return path

    def config(self, **fields: object) -> Path:
        base = {
            "vmId": "vm1",
            "backupPath": str(self.repo),
            "providerOptions": {"vms": {"vm1": {"vda": str(self.image)}}},
        }
        return self.write("job.json", json.dumps(base | fields))

    def repo_config(self, **changes: object) -> Path:
        repo = self.t / "odd"
        if not repo.exists():
            assert self.cli("repo", "init", str(repo), "--encryption", "none").code == 0
        config = json.loads((self.repo / "config").read_text()) | changes
        (repo / "config").write_text(json.dumps(config))
        return repo

    def enc_config(self, *, reseal: bool = False, **changes: object) -> Path:
        """The encrypted repository with its config rewritten by someone without the key."""
        config = json.loads((self.enc / "config").read_text()) | changes
        if reseal:  # the checksum is not a secret: anyone can recompute it, only the tag needs the key
            config["authentication"]["checksum"] = hashlib.sha256(_canonical(config)).hexdigest()
        (self.enc / "config").write_text(json.dumps(config))
        return self.enc


def _closing_server() -> tuple[int, Callable[[], None]]:
    """A TCP port that accepts connections and drops each at once (an interrupted connection)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(1)  # the client's request has begun
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        server.close()

    return int(server.getsockname()[1]), close


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need_plugin(name: str) -> None:
    if name not in {p.name for p in PluginHost().plugins()}:
        pytest.skip(f"the {name} plugin is not installed")


def _locked(bed: Bed) -> CLIResult:
    holder = {"kind": "shared", "operation": "backup of web01", "host": socket.gethostname(), "pid": os.getpid()}
    (bed.repo / LOCKS).mkdir(exist_ok=True)
    (bed.repo / LOCKS / "held").write_text(json.dumps(holder | {"created_at": "2026-11-28T12:00:00+00:00"}))
    try:
        return bed.cli("gc", "--repo", str(bed.repo), "--lock-wait", "0")
    finally:
        (bed.repo / LOCKS / "held").unlink()


def _read_only(bed: Bed) -> CLIResult:
    with mounted_tmpfs(bed.t / "ro", "size=4m") as folder:
        assert bed.cli("repo", "init", str(folder / "repo"), "--encryption", "none").code == 0
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return bed.cli("backup", "--vm", "vm1", "--repo", str(folder / "repo"), "--disk", f"vda={bed.image}")


def _full(bed: Bed) -> CLIResult:
    big = write_image(bed.t / "big.img", 32 * CHUNK, [(0, random_bytes(32 * CHUNK, 2))])
    with mounted_tmpfs(bed.t / "tiny", "size=1m") as folder:
        repo = folder / "repo"
        assert bed.cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
        result = bed.cli("backup", "--vm", "vm2", "--repo", str(repo), "--disk", f"vda={big}")
        assert not list(repo.rglob("*.tmp")) and not list(repo.glob("locks/*"))
        return result


def _corrupt_chunk_restore(bed: Bed) -> CLIResult:
    chunk = sorted(p for p in (bed.repo / "chunks").rglob("*") if p.is_file())[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 1
    chunk.write_bytes(bytes(data))
    return bed.cli("restore", "--vm", "vm1", "--repo", str(bed.repo), "--target", str(bed.t / "out"))


def _s3(bed: Bed, endpoint: str) -> CLIResult:
    _need_plugin("s3")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
    options = ["--storage-option", f"endpoint_url={endpoint}", "--storage-option", "max_attempts=1"]
    return bed.cli(*options, "backups", "list", "--repo", "s3://backups/site1", env=env)


def _s3_dropped(bed: Bed) -> CLIResult:
    port, close = _closing_server()
    try:
        return _s3(bed, f"http://127.0.0.1:{port}")
    finally:
        close()


def _kvm(bed: Bed, uri: str) -> CLIResult:
    _need_plugin("kvm")
    pytest.importorskip("libvirt")
    return bed.cli("vms", "--provider", "kvm", "-o", f"uri={uri}")


def _kvm_dropped(bed: Bed) -> CLIResult:
    port, close = _closing_server()
    try:
        return _kvm(bed, f"qemu+tcp://127.0.0.1:{port}/system")
    finally:
        close()


CASES: dict[str, Callable[[Bed], CLIResult]] = {
    # configuration
    "config-not-json": lambda b: b.cli("backup", "--config", str(b.write("job.json", "{"))),
    "config-missing": lambda b: b.cli("backup", "--config", str(b.t / "absent.json")),
    "config-not-object": lambda b: b.cli("backup", "--config", str(b.write("job.json", "[1]"))),
    "config-nested-deeply": lambda b: b.cli("backup", "--config", str(b.write("job.json", "[" * 100_000))),
    "config-not-utf8": lambda b: b.cli("backup", "--config", str(b.write_bytes("job.json", b"\xff\xfe{"))),
    "config-device": lambda b: b.cli("backup", "--config", "/dev/zero"),
    "config-too-large": lambda b: b.cli("backup", "--config", str(b.write("job.json", " " * (4 << 20) + "{}"))),
    "config-unknown-field": lambda b: b.cli("backup", "--config", str(b.config(vmID="x"))),
    "config-compression": lambda b: b.cli("backup", "--config", str(b.config(compressionLevel=99))),
    "config-concurrency": lambda b: b.cli("backup", "--config", str(b.config(maxConcurrentDisks=0))),
    "config-retention": lambda b: b.cli("backup", "--config", str(b.config(retentionDays=-1))),
    "config-bandwidth-limit": lambda b: b.cli("backup", "--config", str(b.config(bandwidthLimitRead=-5))),
    "workers-out-of-range": lambda b: b.backup("--workers", "-3"),
    "limit-out-of-range": lambda b: b.backup("--limit-read", "-1"),
    "limit-not-finite": lambda b: b.cli("restore", "--vm", "vm1", "--repo", str(b.repo), "--limit-write", "nan"),
    "option-out-of-range-env": lambda b: b.backup(env={"GENIEVM_STORAGE_ATTEMPTS": "0"}),
    "jobs-limit-nothing": lambda b: b.cli("jobs", "limit", "feedfacecafe"),
    "env-compression": lambda b: b.backup(env={"GENIEVM_COMPRESSION_LEVEL": "fast"}),
    "vm-id-traversal": lambda b: b.cli("backup", "--vm", "../etc", "--repo", str(b.repo), "--disk", f"vda={b.image}"),
    "disk-name-traversal": lambda b: b.cli("backup", "--vm", "vm1", "--repo", str(b.repo), "--disk", f"../x={b.image}"),
    "excluded-disk-unknown": lambda b: b.backup("--exclude-disk", "vdq"),
    "no-repository-given": lambda b: b.cli("backups", "list"),
    "chunk-size": lambda b: b.cli("repo", "init", str(b.t / "new"), "--encryption", "none", "--chunk-size", "5000"),
    "encryption-name": lambda b: b.cli("repo", "init", str(b.t / "new"), "--encryption", "rot13"),
    "prune-no-rule": lambda b: b.cli("prune", "--repo", str(b.repo)),
    "prune-grace": lambda b: b.cli("prune", "--repo", str(b.repo), "--keep-last", "1", "--grace", "5x"),
    "storage-option-form": lambda b: b.cli("--storage-option", "novalue", "backups", "list", "--repo", str(b.repo)),
    "storage-options-env": lambda b: b.cli(
        "backups", "list", "--repo", str(b.repo), env={"GENIEVM_STORAGE_OPTIONS": "endpoint_url=x"}
    ),
    "disk-given-twice": lambda b: b.backup("--disk", f"vda={b.image}"),
    "provider-option-form": lambda b: b.backup("-o", "uri"),
    "disk-target-form": lambda b: b.cli(
        "restore", "--vm", "vm1", "--repo", str(b.repo), "--target", str(b.t / "o"), "--disk-target", "=x"
    ),
    # plugins, providers and VMs
    "unknown-provider": lambda b: b.backup("--provider", "hyperv"),
    "unknown-storage-scheme": lambda b: b.cli("backups", "list", "--repo", "ftp://host/backups"),
    "unknown-vm": lambda b: b.cli("backup", "--vm", "web01", "--repo", str(b.repo)),
    "missing-disk-image": lambda b: b.cli(
        "backup", "--vm", "vm1", "--repo", str(b.repo), "--disk", f"vda={b.t / 'absent.img'}"
    ),
    "kvm-unreachable-host": lambda b: _kvm(b, f"qemu+tcp://127.0.0.1:{_closed_port()}/system"),
    "kvm-connection-dropped": _kvm_dropped,
    # passphrases
    "wrong-passphrase-env": lambda b: b.cli("repo", "info", str(b.enc), env={"GENIEVM_PASSPHRASE": "wrong"}),
    "wrong-passphrase-file": lambda b: b.cli(
        "backups", "list", "--repo", str(b.enc), "--passphrase-file", str(b.write("pass", "wrong\n"))
    ),
    "passphrase-file-missing": lambda b: b.cli(
        "backups", "list", "--repo", str(b.enc), "--passphrase-file", str(b.t / "absent-pass")
    ),
    "passphrase-missing": lambda b: b.cli("repo", "info", str(b.enc)),
    "passphrase-command-fails": lambda b: b.cli(
        "--passphrase-command", "sh -c 'echo vault is sealed >&2; exit 3'", "repo", "info", str(b.enc)
    ),
    "passphrase-command-missing": lambda b: b.cli(
        "--passphrase-command", "/absent/vault get", "repo", "info", str(b.enc)
    ),
    "passphrase-command-and-file": lambda b: b.cli(
        "--passphrase-command", "cat x", "repo", "info", str(b.enc), "--passphrase-file", str(b.write("pass", "x\n"))
    ),
    "passphrase-env-empty": lambda b: b.cli("repo", "info", str(b.enc), env={"GENIEVM_PASSPHRASE": ""}),
    "passphrase-file-empty": lambda b: b.cli("repo", "info", str(b.enc), "--passphrase-file", str(b.write("pass", ""))),
    "passphrase-file-device": lambda b: b.cli("repo", "info", str(b.enc), "--passphrase-file", "/dev/zero"),
    "passphrase-file-too-large": lambda b: b.cli(
        "repo", "info", str(b.enc), "--passphrase-file", str(b.write("pass", "x" * (4 << 10) + "\n"))
    ),
    # repositories
    "repository-given-twice": lambda b: b.cli("repo", "info", str(b.repo), "--repo", str(b.enc)),
    "log-level-unknown": lambda b: b.cli("--log-level", "loud", "backups", "list", "--repo", str(b.repo)),
    "repository-missing": lambda b: b.cli("backups", "list", "--repo", str(b.t / "nothing")),
    "repository-is-a-file": lambda b: b.cli("backups", "list", "--repo", str(b.image)),
    "repository-newer-format": lambda b: b.cli("repo", "info", str(b.repo_config(format_version=3))),
    "repository-unknown-feature": lambda b: b.cli("repo", "info", str(b.repo_config(features=["dedup-v9"]))),
    "repository-config-corrupt": lambda b: b.cli("repo", "info", str(b.repo_config(chunk_size="big"))),
    "repository-config-downgraded": lambda b: b.cli("repo", "info", str(b.enc_config(encryption=None)), env=_PASS),
    "repository-config-forged": lambda b: b.cli(
        "repo", "info", str(b.enc_config(chunk_size=2 * CHUNK, reseal=True)), env=_PASS
    ),
    "passphrase-for-unencrypted": lambda b: b.cli("repo", "info", str(b.repo), env=_PASS),
    "repository-exists": lambda b: b.cli("repo", "init", str(b.repo), "--encryption", "none"),
    "repository-locked": _locked,
    "repository-read-only": _read_only,
    "repository-full": _full,
    "s3-unreachable-endpoint": lambda b: _s3(b, f"http://127.0.0.1:{_closed_port()}"),
    "s3-connection-dropped": _s3_dropped,
    # backups and restores
    "unknown-backup": lambda b: b.cli("backups", "show", "20200101T000000.000000Z-00000000", "--repo", str(b.repo)),
    "backup-id-malformed": lambda b: b.cli("backups", "show", "../../config", "--repo", str(b.repo)),
    "no-backup-of-vm": lambda b: b.cli("restore", "--vm", "web01", "--repo", str(b.repo), "--target", str(b.t / "o")),
    "restore-target-exists": lambda b: (
        b.write("vda.img.keep", ""),
        b.cli("restore", "--vm", "vm1", "--repo", str(b.repo), "--target", str(b.t)),
    )[1],
    "restore-target-is-a-file": lambda b: b.cli(
        "restore", "--vm", "vm1", "--repo", str(b.repo), "--target", str(b.image), "--force"
    ),
    "restore-corrupt-chunk": _corrupt_chunk_restore,
    "unknown-job": lambda b: b.cli("jobs", "show", "feedfacecafe"),
    "restore-qcow2-without-qemu-img": lambda b: b.cli(
        "restore", "--vm", "vm1", "--repo", str(b.repo), "--target", str(b.t / "out"), "--disk-format", "vda=qcow2",
        env={"PATH": str(b.t)},  # a PATH where no qemu-img is
    ),
    "boot-pattern-not-regex": lambda b: b.cli(
        "verify", "--repo", str(b.repo), "--vm", "vm1", "--boot", "--boot-pattern", "("
    ),
    "forget-unknown-backup": lambda b: b.cli(
        "backups", "forget", "20200101T000000.000000Z-00000000", "--repo", str(b.repo)
    ),
    # keys and copies
    "key-list-unencrypted": lambda b: b.cli("repo", "key", "list", str(b.repo)),
    "key-add-no-new-passphrase": lambda b: b.cli("repo", "key", "add", str(b.enc), env=_PASS),
    "key-file-not-a-key-file": lambda b: b.cli(
        "--key-file", str(b.write("k.json", '{"format": "x"}')), "repo", "info", str(b.enc)
    ),
    "copy-into-itself": lambda b: b.cli("repo", "copy", str(b.repo), str(b.repo)),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, host: PluginHost) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs")
    make_template(folder, host)
    return folder


@pytest.fixture
def bed(tmp_path: Path, cli: Cli, template: Path) -> Bed:
    return Bed(tmp_path, cli, template)  # the job registry is $T/jobs.sqlite (conftest)


def normalized(line: str, t: Path) -> str:
    """``line`` with what changes from run to run written as the doc writes it: $T, $PORT, $PID, $HOST, $ID."""
    line = line.replace(str(t), "$T")
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", line)
    line = re.sub(r"pid \d+ on \S+ ", "pid $PID on $HOST ", line)
    line = re.sub(r"chunks/[0-9a-f]{2}/", "chunks/$XX/", line)
    return re.sub(r"[0-9a-f]{64}", "$ID", line)


def test_the_table_and_the_cases_match() -> None:
    assert sorted(table()) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, bed: Bed) -> None:
    code, line = table()[case]
    before = sorted(p.relative_to(bed.repo) for p in bed.repo.rglob("*") if p.is_file())
    result = CASES[case](bed)
    first = normalized(result.err_lines[0], bed.t) if result.err_lines else ""  # not the plaintext warning
    assert (result.code, first) == (code, line), result.stderr
    assert "Traceback" not in result.stderr
    if case != "restore-corrupt-chunk":  # the one case that damages the repository on purpose
        after = sorted(p.relative_to(bed.repo) for p in bed.repo.rglob("*") if p.is_file())
        assert after == before, "a refused command wrote into the repository"
