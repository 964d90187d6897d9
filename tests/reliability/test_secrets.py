"""Secrets never appear in output, logs (at debug level), error messages, repository files, the job registry or argv.

Every command runs as a real ``genievm`` process at ``--log-level debug``
(console and JSON logs), with a repository passphrase, S3 credentials, a
password inside a libvirt URI and a vSphere password (against a vcsim), all
given the ways GenieVM documents (environment, a passphrase file, storage
options in ``GENIEVM_STORAGE_OPTIONS``, ``-o uri=...``, ``GENIEVM_VMWARE_PASSWORD``,
``-o passwordFile=...``, a job config). Afterwards every byte of stdout and stderr, every file under
the test's folder (the repository, restored disks, the job registry's SQLite
file) and the command line of each running process is searched for them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import CHUNK, genievm_path, random_bytes, write_image

PASSPHRASE = "pass-Sekr1t-4f9e2c"
WRONG = "wrong-Sekr1t-77aa10"
S3_KEY_ID = "AKIASEKR1TKEYID0001"
S3_SECRET = "s3-Sekr1t-b7d1e0a9c3"
KVM_PASSWORD = "kvm-Sekr1t-19c0d2"
SECRETS = [PASSPHRASE, WRONG, S3_KEY_ID, S3_SECRET, KVM_PASSWORD]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runner:
    """Runs ``genievm --log-level debug ...`` and keeps everything it printed and every argv it had."""

    def __init__(self, tmp_path: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIEVM_", "AWS_"))}
        self.env |= {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite"), "AWS_EC2_METADATA_DISABLED": "true"}
        self.env |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        self.seen: list[str] = []  # stdout, stderr and /proc/<pid>/cmdline of every run

    def __call__(self, *args: str, env: dict[str, str] | None = None, fmt: str = "console") -> int:
        cmd = [genievm_path(), "--log-level", "debug", "--log-format", fmt, *args]
        proc = subprocess.Popen(
            cmd,
            env=self.env | (env or {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        try:  # what `ps` shows of the running process (the exec has happened once the file is non-empty)
            for _ in range(200):
                text = cmdline.read_bytes().decode(errors="replace")
                if "genievm" in text:
                    self.seen.append(text)
                    break
                time.sleep(0.005)
        except OSError:
            pass  # already gone
        out, err = proc.communicate(timeout=120)
        self.seen += [out, err]
        return proc.returncode


def test_no_secret_is_shown_or_stored(tmp_path: Path) -> None:
    run = Runner(tmp_path)
    repo, image = tmp_path / "repo", write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(3 * CHUNK, 5))])
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(PASSPHRASE + "\n")
    by_env = {"GENIEVM_PASSPHRASE": PASSPHRASE}
    disk = ["--disk", f"vda={image}"]

    # a repository and its backups: the passphrase from the environment, then from a file
    assert run("repo", "init", str(repo), "--chunk-size", str(CHUNK), env=by_env) == 0
    assert run("backup", "--vm", "vm1", "--repo", str(repo), *disk, "--json", env=by_env) == 0
    assert run("backup", "--vm", "vm1", "--repo", str(repo), *disk, "--passphrase-file", str(pass_file)) == 0
    assert run("backups", "list", "--repo", str(repo), "--json", env=by_env, fmt="json") == 0
    assert run("verify", "--repo", str(repo), "--read-data", env=by_env, fmt="json") == 0
    assert run("restore", "--vm", "vm1", "--repo", str(repo), "--target", str(tmp_path / "out"), env=by_env) == 0
    assert run("prune", "--repo", str(repo), "--keep-last", "1", "--grace", "0", env=by_env) == 0
    assert run("repo", "info", str(repo), "--json", env=by_env) == 0
    # failures: a wrong passphrase, by environment and by file
    assert run("repo", "info", str(repo), env={"GENIEVM_PASSPHRASE": WRONG}) == 17
    pass_file.write_text(WRONG)
    assert run("backup", "--vm", "vm1", "--repo", str(repo), *disk, "--passphrase-file", str(pass_file)) == 17
    pass_file.unlink()

    # S3 credentials in the storage options, to an endpoint that is not there; and options that do not validate
    s3 = {"endpoint_url": f"http://127.0.0.1:{closed_port()}", "max_attempts": 1}
    keys = {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}
    for options, code in ((s3 | keys, 9), (s3 | {"secret_access_key": S3_SECRET}, 3), (s3 | keys | {"region": 5}, 3)):
        env = by_env | {"GENIEVM_STORAGE_OPTIONS": json.dumps(options)}
        assert run("backup", "--vm", "vm1", "--repo", "s3://bucket/repo", *disk, env=env) == code
    aws = {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    assert run("repo", "info", "s3://bucket/repo", env=aws | {"GENIEVM_STORAGE_OPTIONS": json.dumps(s3)}) == 9

    # a password inside a libvirt URI (qemu+tcp with SASL takes one) in a job config, to a host that does not answer
    uri = f"qemu+tcp://admin:{KVM_PASSWORD}@127.0.0.1:{closed_port()}/system"
    config = tmp_path / "kvm-job.json"
    config.write_text(json.dumps({"vmId": "web01", "backupPath": str(repo), "provider": "kvm",
                                  "providerOptions": {"uri": uri}}))  # fmt: skip
    assert run("vms", "--provider", "kvm", "--config", str(config)) == 5
    assert run("backup", "--config", str(config), env=by_env) == 5
    config.unlink()
    assert run("jobs", "list", "--json") == 0

    leaks = [(secret, text[:300]) for text in run.seen for secret in SECRETS if secret in text]
    assert leaks == [], "a secret was printed, logged or on a command line"
    assert any("debug" in text for text in run.seen), "debug logging did not run"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found = [s for s in SECRETS if s.encode() in data]
            assert found == [], f"{path.relative_to(tmp_path)} holds {found}"


def test_the_passphrase_is_never_an_argument() -> None:
    """There is no option that takes a passphrase or a secret key on the command line (argv is public)."""
    out = subprocess.run(
        [genievm_path(), "backup", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    ).stdout
    assert "--passphrase-file" in out
    assert "--passphrase " not in out and "--password" not in out and "--secret" not in out


@pytest.mark.parametrize("level", ["debug", "info"])
def test_redaction_of_secret_keys_in_log_events(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Log events whose key names a secret are redacted whatever the level (a second line of defence)."""
    import structlog

    from genievm_core.logging import configure_logging

    configure_logging(level, "json")
    log = structlog.get_logger("t")
    log.info("connect", passphrase=PASSPHRASE, secret_access_key=S3_SECRET, password=KVM_PASSWORD, user="admin")
    err = capsys.readouterr().err
    assert "admin" in err and not any(s in err for s in SECRETS)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("qemu+tcp://admin:pw@host/system", "qemu+tcp://admin:***@host/system"),
        ("qemu+tcp://admin:p:w@host:16509/system?x=1", "qemu+tcp://admin:***@host:16509/system?x=1"),
        ("qemu+ssh://root@host/system", "qemu+ssh://root@host/system"),
        ("qemu:///system", "qemu:///system"),
        ("https://key:secret@s3.example", "https://key:***@s3.example"),
    ],
)
def test_urls_in_messages_lose_their_password(url: str, shown: str) -> None:
    """Regression: a libvirt URI's password was printed in errors, kept in the job registry and in manifests."""
    from genievm_core.logging import redact_url

    assert redact_url(url) == shown


VMWARE_PASSWORD = "vmw-Sekr1t-3e8b51"
VMWARE_WRONG = "vmw-wrong-Sekr1t-c04f7d"


@pytest.fixture(scope="module")
def vcsim_with_known_password() -> Iterator[Any]:
    """A private vcsim whose password is ``VMWARE_PASSWORD`` (scripts/setup.sh installs what builds it)."""
    pytest.importorskip("pyVmomi")
    if shutil.which("go") is None or not Path("/usr/share/gocode/src/github.com/vmware/govmomi").is_dir():
        pytest.skip("vcsim needs golang-go and golang-github-vmware-govmomi-dev (scripts/setup.sh installs them)")
    from genievm_vmware.testing import start_vcsim

    with start_vcsim(password=VMWARE_PASSWORD) as sim:
        yield sim


def test_no_vmware_password_is_shown_or_stored(vcsim_with_known_password: Any, tmp_path: Path) -> None:
    """The vSphere password, from GENIEVM_VMWARE_PASSWORD, -o passwordFile or a job config, is nowhere afterwards.

    The repository is unencrypted here, so that its files could show the password if a manifest kept it.
    """
    from genievm_vmware.testing import put_file, remove_vm, scratch_vm

    sim = vcsim_with_known_password
    run = Runner(tmp_path)
    repo = tmp_path / "repo"
    name = "genievm-secrets-vm"
    by_env = {"GENIEVM_VMWARE_PASSWORD": VMWARE_PASSWORD}
    vmware = ["--provider", "vmware", *sim.options()]
    with sim.connect() as si:
        vm = scratch_vm(si, name, [4 * CHUNK])
        try:
            disk = vm.config.hardware.device
            path = next(d.backing.fileName for d in disk if hasattr(d, "capacityInKB"))
            flat = path.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
            put_file(sim, flat, random_bytes(3 * CHUNK, 7) + bytes(CHUNK))

            assert run("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)) == 0
            assert run("vms", *vmware, env=by_env) == 0
            assert run("backup", "--vm", name, "--repo", str(repo), *vmware, "--json", env=by_env) == 0
            assert run("backup", "--vm", name, "--repo", str(repo), *vmware, env=by_env, fmt="json") == 0
            restore = ["restore", "--vm", name, "--repo", str(repo), *vmware, "--new-name", f"{name}-r"]
            assert run(*restore, "--target", str(tmp_path / "staging"), env=by_env) == 0
            # the password in a job config file (providerOptions.password), kept only while the job runs
            config = tmp_path / "vmware-job.json"
            options = {"host": sim.host, "port": sim.port, "user": sim.user, "caFile": str(sim.ca_file),
                       "password": VMWARE_PASSWORD}  # fmt: skip
            config.write_text(json.dumps({"vmId": name, "backupPath": str(repo), "provider": "vmware",
                                          "providerOptions": options}))  # fmt: skip
            assert run("backup", "--config", str(config)) == 0
            config.unlink()

            # a wrong password, from the environment and from a file: one error line, exit 6, the password not in it
            assert run("backup", "--vm", name, "--repo", str(repo), *vmware,
                       env={"GENIEVM_VMWARE_PASSWORD": VMWARE_WRONG}) == 6  # fmt: skip
            error = run.seen[-1].strip().splitlines()[-1]
            assert error == f"genievm: error: authentication failed for {sim.user} at {sim.host}:{sim.port}", error
            wrong_file = tmp_path / "vmware-password"
            wrong_file.write_text(VMWARE_WRONG + "\n")
            assert run("vms", *vmware, "-o", f"passwordFile={wrong_file}") == 6
            wrong_file.unlink()
            assert run("jobs", "list", "--json") == 0
            assert run("jobs", "list", "--json", fmt="json") == 0
        finally:
            restored = [v for v in si.content.viewManager.CreateContainerView(
                si.content.rootFolder, [type(vm)], True).view if v.name == f"{name}-r"]  # fmt: skip
            for v in [vm, *restored]:
                remove_vm(v)

    secrets = [VMWARE_PASSWORD, VMWARE_WRONG]
    leaks = [(secret, text[:300]) for text in run.seen for secret in secrets if secret in text]
    assert leaks == [], "the vSphere password was printed, logged or on a command line"
    assert any("debug" in text for text in run.seen), "debug logging did not run"
    assert (tmp_path / "jobs.sqlite").is_file() and any((repo / "manifests").iterdir())
    for file in tmp_path.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            found = [s for s in secrets if s.encode() in data]
            assert found == [], f"{file.relative_to(tmp_path)} holds {found}"
