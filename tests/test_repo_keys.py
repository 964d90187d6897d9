"""``genievm repo key``: several passphrases of one master key, changed and removed without rewriting data.

Each passphrase is a key slot in the authenticated config; removing one means it opens the repository no
more; a key file opens it without any; the refusals are one line and exit 37.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, CLIResult, random_bytes, write_image

from genievm_core.repository.config import _canonical

Cli = Callable[..., CLIResult]
ENV = {"GENIEVM_PASSPHRASE": PASSPHRASE}
SECOND = "a second passphrase, for the offsite admin"


def data_files(repo: Path) -> dict[str, bytes]:
    """Every object but the config and locks: what a key change must leave alone."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.name != "config" and "locks" not in p.parts
    }


def keys_of(cli: Cli, repo: Path, passphrase: str) -> list[dict[str, object]]:
    result = cli("repo", "key", "list", str(repo), "--json", env={"GENIEVM_PASSPHRASE": passphrase})
    assert result.code == 0, result.stderr
    keys = json.loads(result.stdout)
    assert isinstance(keys, list)
    return keys


@pytest.fixture
def repo(cli: Cli, tmp_path: Path) -> Path:
    """An encrypted repository holding one backup of ``v``."""
    path = tmp_path / "repo"
    image = write_image(tmp_path / "a.img", 4 * CHUNK, [(0, random_bytes(2 * CHUNK, 3))])
    assert cli("repo", "init", str(path), "--chunk-size", str(CHUNK), env=ENV).code == 0
    assert cli("backup", "--vm", "v", "--repo", str(path), "--disk", f"vda={image}", env=ENV).code == 0
    return path


def test_a_second_passphrase_opens_and_removing_the_first_locks_it_out(cli: Cli, repo: Path) -> None:
    before = data_files(repo)
    added = cli("repo", "key", "add", str(repo), "--label", "offsite", env=ENV | {"GENIEVM_NEW_PASSPHRASE": SECOND})
    assert added.code == 0, added.stderr
    keys = keys_of(cli, repo, SECOND)
    assert [(k["label"], k["current"]) for k in keys] == [(None, False), ("offsite", True)]
    assert sorted(json.loads((repo / "config").read_text())["features"]) == ["key-slots", "patched-chunks"]
    assert cli("backups", "list", "--repo", str(repo), env=ENV).code == 0  # the first still opens

    removed = cli("repo", "key", "remove", str(keys[0]["id"]), "--repo", str(repo), env={"GENIEVM_PASSPHRASE": SECOND})
    assert removed.code == 0, removed.stderr
    refused = cli("backups", "list", "--repo", str(repo), env=ENV)
    assert (refused.code, refused.err_lines) == (
        17,
        [f"genievm: error: wrong passphrase for repository {repo.as_uri()}"],
    )
    assert cli("verify", "--repo", str(repo), "--read-data", env={"GENIEVM_PASSPHRASE": SECOND}).code == 0
    assert data_files(repo) == before  # nothing but the config was rewritten


def test_passwd_replaces_the_passphrase_given_and_keeps_its_label(cli: Cli, repo: Path) -> None:
    assert (
        cli("repo", "key", "add", str(repo), "--label", "ops", env=ENV | {"GENIEVM_NEW_PASSPHRASE": SECOND}).code == 0
    )
    old_id = keys_of(cli, repo, SECOND)[1]["id"]
    changed = cli(
        "repo", "key", "passwd", str(repo), env={"GENIEVM_PASSPHRASE": SECOND, "GENIEVM_NEW_PASSPHRASE": "new one"}
    )
    assert changed.code == 0, changed.stderr
    keys = keys_of(cli, repo, "new one")
    assert [k["label"] for k in keys] == [None, "ops"] and keys[1]["id"] != old_id and keys[1]["current"]
    assert cli("repo", "info", str(repo), env={"GENIEVM_PASSPHRASE": SECOND}).code == 17
    assert cli("repo", "info", str(repo), env=ENV).code == 0  # the other slot is untouched


def test_a_key_file_opens_the_repository_without_a_passphrase(cli: Cli, repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "repo.key"
    assert cli("repo", "key", "export", str(key), "--repo", str(repo), env=ENV).code == 0
    assert key.stat().st_mode & 0o777 == 0o600
    again = cli("repo", "key", "export", str(key), "--repo", str(repo), env=ENV)
    assert (again.code, again.err_lines) == (3, [f"genievm: error: invalid configuration: key file {key}: File exists"])
    # the passphrase forgotten: the key file opens the repository and sets a new one
    added = cli("--key-file", str(key), "repo", "key", "add", str(repo), env={"GENIEVM_NEW_PASSPHRASE": SECOND})
    assert added.code == 0, added.stderr
    assert cli("--key-file", str(key), "verify", "--repo", str(repo), "--read-data").code == 0
    assert cli("repo", "info", str(repo), env={"GENIEVM_PASSPHRASE": SECOND}).code == 0


def test_a_key_file_of_another_repository_is_refused(cli: Cli, repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert cli("repo", "init", str(other), env=ENV).code == 0
    key = tmp_path / "other.key"
    assert cli("repo", "key", "export", str(key), "--repo", str(other), env=ENV).code == 0
    result = cli("--key-file", str(key), "repo", "info", str(repo))
    assert result.code == 17
    assert result.err_lines[0].startswith("genievm: error: the key file is of repository ")
    garbage = tmp_path / "garbage.key"
    garbage.write_text('{"format": "something else"}')
    result = cli("--key-file", str(garbage), "repo", "info", str(repo))
    assert result.code == 3 and "is not a key file" in result.err_lines[0]


def test_refusals_are_one_line_and_exit_37(cli: Cli, repo: Path, tmp_path: Path) -> None:
    only = str(keys_of(cli, repo, PASSPHRASE)[0]["id"])
    last = cli("repo", "key", "remove", only, "--repo", str(repo), env=ENV)
    assert (last.code, last.err_lines) == (
        37,
        [f"genievm: error: repository {repo.as_uri()}: key {only} is its only key; add another first"],
    )
    assert cli("repo", "key", "add", str(repo), env=ENV | {"GENIEVM_NEW_PASSPHRASE": SECOND}).code == 0
    current = cli("repo", "key", "remove", only, "--repo", str(repo), env=ENV)
    assert current.code == 37 and "is the passphrase given" in current.err_lines[0]
    unknown = cli("repo", "key", "remove", "00000000", "--repo", str(repo), env=ENV)
    assert unknown.code == 37 and "has no key 00000000" in unknown.err_lines[0]
    plain = tmp_path / "plain"
    assert cli("repo", "init", str(plain), "--encryption", "none").code == 0
    result = cli("repo", "key", "list", str(plain))
    assert result.err_lines == [f"genievm: error: repository {plain.as_uri()} is not encrypted: it has no keys"]
    no_new = cli("repo", "key", "add", str(repo), env=ENV)
    assert no_new.code == 18 and "a new passphrase is needed" in no_new.err_lines[0]


def test_a_forged_key_slot_is_refused(cli: Cli, repo: Path) -> None:
    """A slot added by someone who can write the storage but has no key breaks the config's tag."""
    assert cli("repo", "key", "add", str(repo), env=ENV | {"GENIEVM_NEW_PASSPHRASE": SECOND}).code == 0
    config = json.loads((repo / "config").read_text())
    config["encryption"]["more_keys"].append(dict(config["encryption"]["more_keys"][0], label="intruder"))
    config["authentication"]["checksum"] = hashlib.sha256(_canonical(config)).hexdigest()  # not a secret
    (repo / "config").write_text(json.dumps(config))
    result = cli("repo", "info", str(repo), env=ENV)
    assert result.code == 21 and "it was changed by someone without the key" in result.err_lines[0]
