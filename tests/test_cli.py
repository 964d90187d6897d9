"""The ``genievm`` command: JSON output of each command, exit codes, one-line errors.

Most tests call ``genievm_core.cli.main`` in this process (``cli``); the first
tests run the installed console script in a subprocess (``genievm_exe``) for a
whole session as a user types it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, CLIResult, open_repo, random_bytes, text_bytes, write_image

from genievm_core.cli.common import human_size
from genievm_core.plugin import PluginHost

Run = Callable[..., CLIResult]


def ok_json(result: CLIResult) -> object:
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: CLIResult, code: int) -> str:
    assert result.code == code, f"exit {result.code}: {result.stderr!r}"
    assert len(result.err_lines) == 1, f"expected one line on stderr: {result.stderr!r}"
    assert result.err_lines[0].startswith("genievm: error: ")
    assert "Traceback" not in result.stderr
    return result.err_lines[0]


# ---------------------------------------------------------------- the console script, end to end


def test_console_script_session(genievm_exe: Run, tmp_path: Path) -> None:
    """init (encrypted, passphrase file), backup, restore; a wrong passphrase; a truncated manifest.

    Each step is its own process, as a user types it: the console script, and once ``python -m genievm_core``.
    """
    repo = tmp_path / "repo"
    secret = tmp_path / "secret"
    secret.write_text(PASSPHRASE + "\n")
    image = write_image(tmp_path / "vda.img", 5 * CHUNK + 3, [(CHUNK, random_bytes(CHUNK, 1)), (0, text_bytes(500))])

    init = ok_json(
        genievm_exe("repo", "init", str(repo), "--chunk-size", str(CHUNK), "--passphrase-file", str(secret), "--json")
    )
    assert isinstance(init, dict) and init["chunk_size"] == CHUNK and init["chunk_id"] == "blake3-keyed"
    assert PASSPHRASE not in (repo / "config").read_text()

    env = {"GENIEVM_PASSPHRASE": PASSPHRASE}
    backup = ok_json(
        genievm_exe("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}", "--json", env=env)
    )
    assert isinstance(backup, dict) and backup["vm"]["id"] == "web01" and "config" not in backup["vm"]
    assert backup["disks"][0]["size"] == 5 * CHUNK + 3 and backup["stats"]["chunks_new"] == 2

    restore = genievm_exe(
        "restore",
        "--vm",
        "web01",
        "--repo",
        str(repo),
        "--target",
        str(tmp_path / "out"),
        "--passphrase-file",
        str(secret),
    )
    assert restore.code == 0, restore.stderr
    assert "verified" in restore.stdout and backup["backup_id"] in restore.stdout
    assert (tmp_path / "out" / "vda.img").read_bytes() == image.read_bytes()

    # `python -m genievm_core` is the same command
    proc = subprocess.run(
        [sys.executable, "-m", "genievm_core", "backups", "list", "--repo", str(repo)],
        capture_output=True,
        text=True,
        env=os.environ | {"GENIEVM_PASSPHRASE": "guess"},
    )
    wrong = CLIResult(proc.returncode, proc.stdout, proc.stderr)
    assert one_error_line(wrong, 17) == f"genievm: error: wrong passphrase for repository file://{repo}"
    assert "guess" not in wrong.stderr

    manifest = repo / "manifests" / backup["backup_id"]
    manifest.write_bytes(manifest.read_bytes()[:40])
    broken = genievm_exe("backups", "show", backup["backup_id"], "--repo", str(repo), env=env)
    assert f"manifest {backup['backup_id']} is corrupt" in one_error_line(broken, 21)


# ---------------------------------------------------------------- commands and their JSON


@pytest.fixture
def populated(cli: Run, tmp_path: Path) -> tuple[Path, dict[str, Path], list[str]]:
    """An unencrypted repository holding two backups of web01 and one of db01."""
    repo = tmp_path / "repo"
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    images = {
        "web01": write_image(tmp_path / "web01.img", 4 * CHUNK, [(0, random_bytes(2 * CHUNK, 1))]),
        "db01": write_image(tmp_path / "db01.img", 2 * CHUNK + 10, [(CHUNK, text_bytes(CHUNK + 10))]),
    }
    ids = []
    for vm in ("web01", "db01", "web01"):
        manifest = ok_json(cli("backup", "--vm", vm, "--repo", str(repo), "--disk", f"vda={images[vm]}", "--json"))
        assert isinstance(manifest, dict)
        ids.append(manifest["backup_id"])
    return repo, images, ids


def test_repo_info(cli: Run, populated: tuple[Path, dict[str, Path], list[str]]) -> None:
    repo, _, _ = populated
    info = ok_json(cli("repo", "info", str(repo), "--json"))
    assert isinstance(info, dict)
    assert (info["encryption"], info["backups"], info["chunk_size"], info["format_version"]) == ("none", 3, CHUNK, 2)
    assert info["url"] == f"file://{repo}"
    chunk_files = [p for p in (repo / "chunks").rglob("*") if p.is_file()]
    host = PluginHost()
    manifests = open_repo(host, repo).manifests()
    size = sum(d.size for m in manifests for d in m.disks)
    stored = sum(m.stats.bytes_stored for m in manifests)
    assert (info["chunk_objects"], info["backups_size"], info["stored_size"]) == (len(chunk_files), size, stored)
    assert info["space_saved"] == round(1 - stored / size, 4) and 0 < info["space_saved"] < 1
    human = cli("repo", "info", env={"GENIEVM_BACKUP_PATH": str(repo)})
    assert human.code == 0
    lines = [line.strip() for line in human.stdout.splitlines()]
    assert lines[-3:] == [
        f"backups: 3 of {len({m.vm.id for m in manifests})} VMs",
        f"chunks: {len(chunk_files)} stored",
        f"size: {human_size(size)} of backups, {human_size(stored)} stored ({1 - stored / size:.1%} saved)",
    ]

    deep = ok_json(cli("repo", "stats", "--repo", str(repo), "--json"))
    assert isinstance(deep, dict)
    unique = {cid for m in manifests for d in m.disks for cid in open_repo(host, repo).disk_index(d).stored_ids()}
    assert deep["unique_chunks"] == len(unique) and deep["backups_size"] == size
    assert 0 < deep["unique_size"] <= size
    stats = cli("repo", "stats", str(repo))
    assert stats.code == 0
    assert stats.stdout.splitlines()[-1].strip() == (
        f"unique chunks: {len(unique)} ({human_size(deep['unique_size'])}); dedup {size / deep['unique_size']:.2f}x, "
        f"compression {deep['unique_size'] / stored:.2f}x"
    )


def test_repo_info_of_a_repository_with_an_unreadable_manifest(
    cli: Run, populated: tuple[Path, dict[str, Path], list[str]]
) -> None:
    repo, _, ids = populated
    manifest = repo / "manifests" / ids[0]
    manifest.write_bytes(manifest.read_bytes()[:20])
    info = ok_json(cli("repo", "info", str(repo), "--json"))
    assert isinstance(info, dict) and (info["backups"], info["damaged_manifests"]) == (3, 1)
    human = cli("repo", "info", str(repo))
    assert human.code == 0, human.stderr
    assert any(line.strip().startswith("backups: 3 of ") and line.endswith(", 1 unreadable (see genievm verify)")
               for line in human.stdout.splitlines()), human.stdout  # fmt: skip


def test_backups_list(cli: Run, populated: tuple[Path, dict[str, Path], list[str]]) -> None:
    repo, _, ids = populated
    listed = ok_json(cli("backups", "list", "--repo", str(repo), "--json"))
    assert isinstance(listed, list)
    assert sorted(b["backup_id"] for b in listed) == sorted(ids)
    by_id = {b["backup_id"]: b for b in listed}
    assert by_id[ids[0]]["vm"] == "web01" and by_id[ids[0]]["kind"] == "full" and by_id[ids[0]]["parent_id"] is None
    assert by_id[ids[2]]["kind"] == "incremental" and by_id[ids[2]]["parent_id"] == ids[0]
    assert by_id[ids[2]]["bytes_new"] == 0 and by_id[ids[0]]["bytes_new"] == 2 * CHUNK
    assert by_id[ids[1]]["disks"] == ["vda"] and by_id[ids[1]]["size"] == 2 * CHUNK + 10

    only_db = ok_json(cli("backups", "list", "--repo", str(repo), "--vm", "db01", "--json"))
    assert isinstance(only_db, list) and [b["backup_id"] for b in only_db] == [ids[1]]
    table = cli("backups", "list", "--repo", str(repo), env={"COLUMNS": "200"})
    assert table.code == 0 and "web01" in table.stdout and "db01" in table.stdout and "incremental" in table.stdout


def test_backups_show(cli: Run, populated: tuple[Path, dict[str, Path], list[str]]) -> None:
    repo, _, ids = populated
    shown = ok_json(cli("backups", "show", ids[1], "--repo", str(repo), "--json"))
    assert isinstance(shown, dict)
    assert shown["backup_id"] == ids[1] and shown["vm"]["id"] == "db01" and "config" not in shown["vm"]
    (disk,) = shown["disks"]
    assert (disk["name"], disk["size"], disk["chunk_count"], disk["cbt"]["mode"]) == ("vda", 2 * CHUNK + 10, 3, "full")
    assert len(disk["checksum"]) == 64 and disk["stats"]["chunks_zero"] == 1

    latest = ok_json(cli("backups", "show", "latest", "--vm", "db01", "--repo", str(repo), "--json"))
    assert isinstance(latest, dict) and latest["backup_id"] == ids[1]
    human = cli("backups", "show", ids[2], "--repo", str(repo))
    assert human.code == 0 and f"parent {ids[0]}" in human.stdout and "hash-compare" in human.stdout

    wrong_vm = cli("backups", "show", ids[1], "--vm", "web01", "--repo", str(repo))
    assert "is of VM db01" in one_error_line(wrong_vm, 20)


def test_verify(cli: Run, populated: tuple[Path, dict[str, Path], list[str]]) -> None:
    repo, _, ids = populated
    reports = ok_json(cli("verify", "--repo", str(repo), "--json"))
    assert isinstance(reports, list)
    assert [(r["backup_id"], r["verifier"]) for r in reports] == [
        *((b, v) for b in sorted(ids) for v in ("manifest", "chunks")), ("repository", "objects"),
        ("repository", "backup-log"),
    ]
    assert all(r["problems"] == [] for r in reports)
    checked = {(r["backup_id"], r["verifier"]): r["checked"] for r in reports}
    assert checked[("repository", "backup-log")] == 3
    assert checked[(ids[0], "chunks")] == 2 and checked[(ids[1], "chunks")] == 2 and checked[(ids[0], "manifest")] == 1

    data = ok_json(cli("verify", "--repo", str(repo), "--read-data", "--vm", "web01", "--json"))
    assert isinstance(data, list) and {r["verifier"] for r in data} == {"manifest", "data"}
    assert {r["backup_id"] for r in data} == {ids[0], ids[2]}

    one = ok_json(cli("verify", "--repo", str(repo), "--backup", ids[1], "--json"))
    assert isinstance(one, list) and {r["backup_id"] for r in one} == {ids[1]}
    human = cli("verify", "--repo", str(repo))
    assert human.code == 0 and human.stdout.count(", ok") == 8  # 3 backups' two verifiers, the repository's two checks


def test_restore_json(cli: Run, populated: tuple[Path, dict[str, Path], list[str]], tmp_path: Path) -> None:
    repo, images, ids = populated
    result = ok_json(
        cli(
            "restore",
            "--vm",
            "db01",
            "--repo",
            str(repo),
            "--target",
            str(tmp_path / "out"),
            "--json",
            "--new-name",
            "db01-copy",
        )
    )
    assert isinstance(result, dict)
    assert (result["backup_id"], result["vm_id"], result["disks"], result["verified"]) == (
        ids[1],
        "db01-copy",
        ["vda"],
        True,
    )
    assert (tmp_path / "out" / "vda.img").read_bytes() == images["db01"].read_bytes()

    again = cli("restore", "--vm", "db01", "--repo", str(repo), "--target", str(tmp_path / "out"))
    assert "--force" in one_error_line(again, 23)
    forced = cli(
        "restore",
        "--vm",
        "web01",
        "--backup",
        ids[0],
        "--repo",
        str(repo),
        "--target",
        str(tmp_path),
        "--disk-target",
        f"vda={tmp_path / 'out' / 'vda.img'}",
        "--force",
        "--no-verify",
        "--json",
    )
    forced_result = ok_json(forced)
    assert isinstance(forced_result, dict) and forced_result["verified"] is False
    assert (tmp_path / "out" / "vda.img").read_bytes() == images["web01"].read_bytes()


def test_plugins_json(cli: Run) -> None:
    plugins = ok_json(cli("plugins", "--json"))
    assert isinstance(plugins, list)
    by_name = {p["name"]: p for p in plugins}
    assert by_name["image"] == {
        "name": "image",
        "distribution": "genievm-core",
        "version": by_name["image"]["version"],
        "origin": "builtin",
        "registers": {"provider": ["image"], "self-check": ["image-contract"]},
    }
    assert by_name["file"]["registers"] == {"storage target": ["file"], "self-check": ["file-contract"]}
    assert by_name["file"]["origin"] == "entry-point"
    table = cli("plugins")
    assert table.code == 0 and "genievm-storage-fs" in table.stdout
    disabled = ok_json(cli("--disable-plugin", "file", "plugins", "--json"))
    assert isinstance(disabled, list) and "file" not in {p["name"] for p in disabled}


# ---------------------------------------------------------------- errors: exit code and one line


def test_error_exit_codes(cli: Run, tmp_path: Path, host: PluginHost) -> None:
    repo = tmp_path / "repo"
    image = write_image(tmp_path / "vda.img", CHUNK, [(0, b"data")])

    assert "backupPath" in one_error_line(cli("backups", "list"), 3)
    assert "encryption" in one_error_line(cli("repo", "init", str(repo), "--encryption", "rot13"), 3)
    assert "chunk_size" in one_error_line(
        cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", "5000"), 3
    )
    assert not (repo / "config").exists()
    assert "no GenieVM repository" in one_error_line(cli("backups", "list", "--repo", str(repo)), 14)

    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    assert "already exists" in one_error_line(cli("repo", "init", str(repo), "--encryption", "none"), 15)
    assert "is encrypted" not in (repo / "config").read_text()

    line = one_error_line(cli("backup", "--vm", "web01", "--repo", str(repo), "--provider", "hyperv"), 4)
    installed = ", ".join(PluginHost().providers.names())  # image, kvm, vmware and the example plugin dirvm
    assert f"no provider named 'hyperv' is installed (installed: {installed})" in line
    assert "image, kvm" in line and "vmware" in line
    assert "no VM web01" in one_error_line(cli("backup", "--vm", "web01", "--repo", str(repo)), 7)
    missing = tmp_path / "absent.img"
    line = one_error_line(cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={missing}"), 5)
    assert str(missing) in line and "No such file or directory" in line
    line = one_error_line(
        cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}", "--exclude-disk", "vdq"), 3
    )
    assert "excludedDisks" in line and "vdq" in line
    assert open_repo(host, repo).backup_ids() == [], "no failed backup left a manifest"
    assert list(open_repo(host, repo).storage.list("locks/")) == [], "every failed backup released its lock"

    assert "no backup of VM web01" in one_error_line(
        cli("restore", "--vm", "web01", "--repo", str(repo), "--target", str(tmp_path / "out")), 20
    )
    assert "--disk-target" in one_error_line(
        cli("restore", "--vm", "web01", "--repo", str(repo), "--target", str(tmp_path / "o"), "--disk-target", "=x"), 3
    )


def test_usage_errors_exit_2(cli: Run) -> None:
    assert cli("backup", "--no-such-option").code == 2
    assert cli("no-such-command").code == 2


def test_a_repository_path_that_is_a_file(cli: Run, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    line = one_error_line(cli("backups", "list", "--repo", str(not_a_dir)), 9)
    assert f"storage file://{not_a_dir}" in line


class SealedError(Exception):
    """An SDK error that refuses attributes it does not declare, as pyVmomi's faults do."""

    def __setattr__(self, name: str, value: object) -> None:
        if name != "__traceback__":  # set by contextlib, which pyVmomi's faults allow
            raise AttributeError(name)
        super().__setattr__(name, value)


def test_an_sdk_error_that_refuses_attributes_is_reported_as_itself(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: PluginHost) -> None:
        raise SealedError("the SDK's own words")

    monkeypatch.setattr(PluginHost, "plugins", fail)
    result = cli("plugins")
    assert result.code == 1
    assert result.stderr.startswith("genievm: internal error: SealedError: the SDK's own words"), result.stderr


# ---------------------------------------------------------------- the CLI's surface (issue 21)


def test_an_error_under_json_is_json_on_stdout_with_the_same_exit(cli: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert cli("repo", "init", "--repo", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    missing = "20200101T000000.000000Z-00000000"
    result = cli("backups", "show", missing, "--repo", str(repo), "--json")
    line = one_error_line(result, 20)
    message = f"no backup {missing} in repository file://{repo}"
    assert line == f"genievm: error: {message}"
    assert json.loads(result.stdout) == {"error": {"code": "BackupNotFoundError", "exit": 20, "message": message}}
    without = cli("backups", "show", missing, "--repo", str(repo))
    assert without.code == 20 and without.stdout == "", "without --json, stdout stays empty"


def test_version_names_the_core_and_each_plugin_distribution(genievm_exe: Run) -> None:
    from genievm_core import __version__

    result = genievm_exe("--version")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"genievm-core {__version__}"
    assert "genievm-storage-fs 0.1.0 (file)" in lines and "genievm-kvm 0.1.0 (kvm)" in lines


def test_log_options_take_only_their_values(genievm_exe: Run) -> None:
    for option, value, choices in (
        ("--log-level", "loud", "'debug', 'info', 'warning', 'error'"),
        ("--log-format", "xml", "'console', 'json'"),
    ):
        result = genievm_exe(option, value, "plugins")
        assert result.code == 2, result.stderr
        assert f"'{value}' is not one of {choices}" in " ".join(result.stderr.split()).replace("│ ", "")
    assert genievm_exe("--log-level", "DEBUG", "plugins").code == 0  # any case


def test_job_log_lines_carry_the_job_id_and_the_last_one_its_result(genievm_exe: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, b"data")])
    env = {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    assert genievm_exe("repo", "init", str(repo), "--encryption", "none", env=env).code == 0
    result = genievm_exe("--log-level", "info", "--log-format", "json", "backup", "--vm", "web01", "--repo",
                         str(repo), "--disk", f"vda={image}", "--json", env=env)  # fmt: skip
    assert result.code == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    done = next(e for e in events if e["event"] == "backup.done")
    assert done["job_id"] == job_id
    last = events[-1]
    assert last["event"] == "job.ended" and last["job_id"] == job_id and last["result"] == "succeeded"
    assert isinstance(last["duration_seconds"], float) and last["duration_seconds"] >= 0


def test_repo_commands_take_repo_like_every_other(cli: Run, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init = ok_json(cli("repo", "init", "--repo", str(repo), "--encryption", "none", "--json"))
    assert isinstance(init, dict) and init["url"] == f"file://{repo}"
    info = ok_json(cli("repo", "info", "--repo", str(repo), "--json"))
    assert isinstance(info, dict) and info["repository_id"] == init["repository_id"]
    line = one_error_line(cli("repo", "info", str(repo), "--repo", str(tmp_path / "other")), 3)
    assert line == (
        f"genievm: error: invalid configuration: --repo: '{tmp_path / 'other'}' and the argument '{repo}' "
        "name two repositories"
    )


def test_a_passphrase_command_gives_the_passphrase_never_in_argv_or_logs(genievm_exe: Run, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    vault.write_text(f"{PASSPHRASE}\nuser: backup\n")  # as `pass show` prints: the passphrase is its first line
    command = f"cat {vault}"
    repo = tmp_path / "repo"
    env = {"GENIEVM_JOB_DB": str(tmp_path / "jobs.sqlite")}
    init = genievm_exe("--passphrase-command", command, "repo", "init", str(repo), "--json", env=env)
    assert init.code == 0, init.stderr
    info = genievm_exe("--log-level", "debug", "repo", "info", "--repo", str(repo), "--json",
                       env=env | {"GENIEVM_PASSPHRASE_COMMAND": command})  # fmt: skip
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout)["encryption"] == "aes-256-gcm"
    assert PASSPHRASE not in info.stderr and PASSPHRASE not in info.stdout
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    line = one_error_line(genievm_exe("--passphrase-command", f"cat {wrong}", "repo", "info", str(repo), env=env), 17)
    assert line == f"genievm: error: wrong passphrase for repository file://{repo}"
    flood = genievm_exe("--passphrase-command", "yes", "repo", "info", str(repo), env=env)  # bounded: 4 KiB read
    assert (
        one_error_line(flood, 3)
        == "genievm: error: invalid configuration: --passphrase-command: yes printed more than 4 KiB"
    )


def test_the_backup_summary_says_what_was_added_stored_and_saved(cli: Run, tmp_path: Path) -> None:
    import re

    repo = tmp_path / "repo"
    text = text_bytes(CHUNK, 3)  # compresses well
    image = write_image(
        tmp_path / "vda.img", 4 * CHUNK, [(0, text), (CHUNK, text), (3 * CHUNK, random_bytes(CHUNK, 4))]
    )
    assert cli("repo", "init", str(repo), "--encryption", "none", "--chunk-size", str(CHUNK)).code == 0
    result = cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"backup \S+ of web01: full, 1 disk, 256\.0 KiB examined in \d+\.\d s \(\d+\.\d (KiB|MiB|GiB)/s\)", lines[0]
    ), lines[0]
    added = re.fullmatch(
        r"  added to the repository: 128\.0 KiB \((\d+\.\d) KiB stored, compression (\d+\.\d\d)x\); "
        r"unchanged or deduplicated: 64\.0 KiB \(dedup 1\.50x\); zero: 64\.0 KiB",
        lines[1],
    )
    assert added, lines[1]
    assert float(added.group(1)) < 128 and float(added.group(2)) > 1, "the text chunk compressed"
    assert lines[2] == "  vda: 256.0 KiB, full (no parent backup of this disk)", lines[2]
