"""The backup log finds out a deleted backup (issue 15, defect 3): a manifest deleted by someone with write
access to the storage (a rollback), acknowledged deletions, prune's own entries, old repositories, forged
entries and concurrent writers. A real filesystem repository, the real CLI."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, CLIResult, backup_vm, open_repo, random_bytes, write_image

from genievm_core.errors import CorruptionError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository, new_backup_id
from genievm_core.repository.backup_log import PREFIX, BackupLog
from genievm_core.repository.known import KnownRepositories

Cli = Callable[..., CLIResult]
RepoFactory = Callable[..., tuple[Repository, Path]]


def three_backups(cli: Cli, tmp_path: Path, *, encrypted: bool) -> tuple[Path, list[str], dict[str, str]]:
    repo = tmp_path / "repo"
    env = {"GENIEVM_PASSPHRASE": PASSPHRASE} if encrypted else {}
    init = ["repo", "init", str(repo), "--chunk-size", str(CHUNK), *([] if encrypted else ["--encryption", "none"])]
    assert cli(*init, env=env).code == 0
    ids = []
    for n in range(3):
        image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(CHUNK, n))])
        made = cli("backup", "--vm", "web01", "--repo", str(repo), "--disk", f"vda={image}", "--json", env=env)
        assert made.code == 0, made.stderr
        ids.append(json.loads(made.stdout)["backup_id"])
    return repo, ids, env


def log_entries(repo: Path) -> dict[str, dict[str, object]]:
    """entry file name → its JSON, of a filesystem repository."""
    return {p.name: json.loads(p.read_bytes()) for p in sorted((repo / "log").iterdir())}


def entry_of(repo: Path, backup_id: str) -> Path:
    (name,) = [n for n, e in log_entries(repo).items() if e["backup_id"] == backup_id and e["event"] == "backup"]
    return repo / "log" / name


def problems(result: CLIResult) -> list[str]:
    return [p["detail"] for r in json.loads(result.stdout) for p in r["problems"]]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_deleted_newest_manifest_is_found_and_forget_acknowledges_it(
    cli: Cli, tmp_path: Path, encrypted: bool
) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=encrypted)
    assert cli("verify", "--repo", str(repo), env=env).code == 0
    (repo / "manifests" / ids[-1]).unlink()  # the rollback

    listed = cli("backups", "list", "--repo", str(repo), "--json", env=env)
    assert [b["backup_id"] for b in json.loads(listed.stdout)] == ids[:2]
    verified = cli("verify", "--repo", str(repo), "--json", env=env)
    assert verified.code == 22, verified.stderr
    (found,) = problems(verified)
    assert f"backup {ids[-1]} is missing: the backup log lists it" in found and "backups forget" in found

    forgot = cli("backups", "forget", ids[-1], "--repo", str(repo), env=env)
    assert forgot.code == 0, forgot.stderr
    assert cli("verify", "--repo", str(repo), env=env).code == 0
    unknown = cli("backups", "forget", "20200101T000000.000000Z-00000000", "--repo", str(repo), env=env)
    assert unknown.code == 20 and "neither a manifest nor in the backup log" in unknown.stderr


def test_a_rollback_of_manifest_and_log_entry_is_found_by_the_client_that_saw_them(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=True)
    (repo / "manifests" / ids[-1]).unlink()
    entry_of(repo, ids[-1]).unlink()  # nothing in the storage names the newest entry
    verified = cli("verify", "--repo", str(repo), "--json", env=env)
    assert verified.code == 22, verified.stderr
    (found,) = problems(verified)
    assert f"backup {ids[-1]} is missing: its log entry" in found and "which this client saw, is gone too" in found

    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "other-client" / "jobs.sqlite"))
    assert cli("verify", "--repo", str(repo), env=env).code == 0, "a client that never saw it cannot know"


def test_an_entry_cut_from_the_middle_of_the_log_is_found_by_any_client(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=False)
    (repo / "manifests" / ids[1]).unlink()
    cut = entry_of(repo, ids[1])
    cut.unlink()
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "other-client" / "jobs.sqlite"))
    verified = cli("verify", "--repo", str(repo), "--json", env=env)
    assert verified.code == 22, verified.stderr
    assert problems(verified) == [
        f"log entry {cut.name}, named by a later one, is gone: the backup log was cut (objects were deleted or "
        "the storage was rolled back)"
    ]


def test_a_forged_forget_entry_fails_authentication_in_an_encrypted_repository(cli: Cli, tmp_path: Path) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=True)
    (repo / "manifests" / ids[-1]).unlink()
    forged = dict(log_entries(repo)[entry_of(repo, ids[-1]).name])
    forged.update(event="forget", previous=[])
    body = {k: v for k, v in forged.items() if k != "authentication"}
    name = new_backup_id()
    canonical = b"genievm backup-log v1\n" + f"log/{name}".encode() + b"\n"
    canonical += json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    forged["authentication"] = {"checksum": hashlib.sha256(canonical).hexdigest(), "tag": "00" * 32}
    (repo / "log" / name).write_text(json.dumps(forged))
    verified = cli("verify", "--repo", str(repo), "--json", env=env)
    assert verified.code == 22, verified.stderr
    missing, auth = sorted(problems(verified))  # the forged entry is refused, so the backup is still missing
    assert auth == f"log entry {name} fails authentication: it was written by someone without the key"
    assert missing.startswith(f"backup {ids[-1]} is missing: the backup log lists it")


def test_prune_writes_its_own_entries(cli: Cli, tmp_path: Path) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=False)
    pruned = cli("prune", "--repo", str(repo), "--keep-last", "1", "--grace", "0", "--json", env=env)
    assert pruned.code == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed_backups"] == ids[:2]
    forgets = sorted(str(e["backup_id"]) for e in log_entries(repo).values() if e["event"] == "forget")
    assert forgets == ids[:2]
    assert cli("verify", "--repo", str(repo), env=env).code == 0


def test_an_old_repository_starts_its_log_with_repo_upgrade(
    host: PluginHost, new_repo: RepoFactory, cli: Cli, tmp_path: Path
) -> None:
    repo, path = new_repo()
    image = write_image(tmp_path / "vda.img", 4 * CHUNK, [(0, random_bytes(CHUNK, 1))])
    ids = [backup_vm(host, repo, "vm1", {"vda": image}).backup_id for _ in range(2)]
    for entry in (path / "log").iterdir():  # as a repository made before the log existed
        entry.unlink()
    old = cli("verify", "--repo", str(path))
    assert old.code == 0 and any("has no backup log yet" in w for w in old.warnings), old.stderr

    upgraded = cli("repo", "upgrade", str(path))
    assert upgraded.code == 0 and "entered 2 backups in the backup log" in upgraded.stdout, upgraded.stderr
    assert sorted(str(e["backup_id"]) for e in log_entries(path).values()) == ids
    (path / "manifests" / ids[0]).unlink()
    assert cli("verify", "--repo", str(path)).code == 22


def test_concurrent_backups_of_two_vms_keep_every_entry(
    host: PluginHost, new_repo: RepoFactory, tmp_path: Path
) -> None:
    _, path = new_repo(encrypted=True)
    made: list[str] = []
    errors: list[BaseException] = []

    def back_up(vm: str) -> None:
        repo = open_repo(host, path, PASSPHRASE)  # each its own client of the repository
        image = write_image(tmp_path / f"{vm}.img", 2 * CHUNK, [(0, random_bytes(CHUNK, len(vm)))])
        try:
            for _ in range(4):
                made.append(backup_vm(host, repo, vm, {"vda": image}).backup_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=back_up, args=(vm,)) for vm in ("vm-a", "vm-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(made) == 8
    repo = open_repo(host, path, PASSPHRASE)
    state = repo.backup_log.read()
    assert state.problems == [] and state.listed == set(made)


def test_many_writers_append_at_once_and_none_is_lost(new_repo: RepoFactory) -> None:
    repo, _ = new_repo(encrypted=True)
    log = BackupLog(repo.storage, repo.codec.keys)
    backup_ids = [new_backup_id() for _ in range(40)]
    threads = [
        threading.Thread(target=lambda ids=backup_ids[n::4]: [log.append("backup", b, new_backup_id()) for b in ids])
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = log.read()
    assert state.problems == [] and state.listed == set(backup_ids)
    assert len(list(repo.storage.list(PREFIX))) == 40


def test_the_memory_of_the_log_survives_a_config_remembered_again(tmp_path: Path, new_repo: RepoFactory) -> None:
    repo, _ = new_repo()
    known = KnownRepositories(tmp_path / "known.json")
    known.remember(repo.url, repo.config)
    known.remember_log(repo.url, repo.config, {"e1": "b1"})
    known.remember(repo.url, repo.config.model_copy(update={"format_version": 2}))
    assert known.log_seen(repo.config) == {"e1": "b1"}


def test_a_plaintext_manifest_changed_after_its_commit_is_found_and_never_restored(
    cli: Cli, tmp_path: Path, host: PluginHost
) -> None:
    """Nothing authenticates an unencrypted manifest; its backup-log entry holds its digest. A change that
    still parses and validates (the VM's name, one flipped bit from web01 to web09) is found by verify and
    refused by restore."""
    repo, ids, env = three_backups(cli, tmp_path, encrypted=False)
    entry = json.loads(entry_of(repo, ids[1]).read_bytes())
    manifest = repo / "manifests" / ids[1]
    assert entry["manifest"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    codec, key = open_repo(host, repo, None).codec, f"manifests/{ids[1]}"
    text = codec.decode(key, manifest.read_bytes())
    assert b'"web01"' in text  # the VM's name and id
    manifest.write_bytes(codec.encode(key, text.replace(b'"web01"', b'"web09"')))  # "1" -> "9": one bit

    verified = cli("verify", "--repo", str(repo), "--json", env=env)
    assert verified.code == 22, verified.stderr
    (found,) = problems(verified)
    assert f"manifest {ids[1]} is corrupt or altered: it does not match the digest in its backup-log entry" in found
    out = tmp_path / "out"
    refused = cli("restore", "--repo", str(repo), "--vm", "web09", "--backup", ids[1], "--target", str(out), env=env)
    assert refused.code == CorruptionError.exit_code and "does not match the digest" in refused.stderr, refused.stderr
    assert not out.exists() or not any(out.iterdir())
    restored = cli("restore", "--repo", str(repo), "--vm", "web01", "--backup", ids[2], "--target", str(out), env=env)
    assert restored.code == 0, restored.stderr  # the others are untouched


def test_entries_written_before_the_digest_existed_are_still_read_and_check_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    repo, ids, env = three_backups(cli, tmp_path, encrypted=False)
    old = entry_of(repo, ids[0])
    body = json.loads(old.read_bytes())
    del body["manifest"], body["authentication"]
    canonical = b"genievm backup-log v1\n" + f"log/{old.name}".encode() + b"\n"
    canonical += json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["authentication"] = {"checksum": hashlib.sha256(canonical).hexdigest(), "tag": None}
    old.write_text(json.dumps(body))  # as a GenieVM before the digest wrote it
    assert cli("verify", "--repo", str(repo), env=env).code == 0
    assert cli("restore", "--repo", str(repo), "--vm", "web01", "--backup", ids[0],
               "--target", str(tmp_path / "out"), env=env).code == 0  # fmt: skip
