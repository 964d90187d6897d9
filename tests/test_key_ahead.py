"""The repository key derived ahead (``genievm_core.key_ahead``): scrypt starts while the command imports and
its plugins load, and the open takes its result only when it derives the very same key; every other case derives
as before."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from genievm_core import key_ahead
from genievm_core.api import GenieVM
from genievm_core.errors import WrongPassphraseError
from genievm_core.models.manifest import KDFRecord
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.config import MAX_CONFIG
from genievm_core.repository.storage import open_storage

PASSPHRASE = "derive me ahead"


@pytest.fixture
def scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of each scrypt run (the real scrypt, counted)."""
    runs: list[str] = []
    real = key_ahead.derive

    def counted(inputs: key_ahead.Inputs) -> bytes:
        runs.append(threading.current_thread().name)
        return real(inputs)

    monkeypatch.setattr(key_ahead, "derive", counted)
    monkeypatch.setattr(key_ahead, "_ahead", {})
    return runs


def _repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(open_storage(PluginHost(), str(path)), passphrase=PASSPHRASE)
    return path


def _api(tmp_path: Path) -> GenieVM:
    return GenieVM(job_db=tmp_path / "jobs.sqlite")


def test_a_local_repository_opened_with_the_environments_passphrase_derives_its_key_once_ahead(
    tmp_path: Path, scrypt_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _repo(tmp_path)
    scrypt_runs.clear()
    monkeypatch.setenv("GENIEVM_PASSPHRASE", PASSPHRASE)
    repo = _api(tmp_path).open_repository(f"file://{path}")
    assert scrypt_runs == ["genievm-scrypt"] and key_ahead._ahead == {}
    assert repo.codec.keys is not None and repo.key_slot == 0


def test_a_wrong_passphrase_derived_ahead_is_still_wrong(
    tmp_path: Path, scrypt_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _repo(tmp_path)
    monkeypatch.setenv("GENIEVM_PASSPHRASE", "not it")
    with pytest.raises(WrongPassphraseError, match="wrong passphrase for repository"):
        _api(tmp_path).open_repository(str(path))


def test_a_key_derived_ahead_for_other_inputs_is_not_taken(tmp_path: Path, scrypt_runs: list[str]) -> None:
    path = _repo(tmp_path)
    other = _repo(tmp_path / "other")  # another salt
    storage = open_storage(PluginHost(), str(other))
    elsewhere = Repository.open(open_storage(PluginHost(), str(path)), passphrase=lambda: PASSPHRASE)
    assert elsewhere.config.encryption is not None
    scrypt_runs.clear()
    kdf = elsewhere.config.encryption.kdf
    key_ahead.start(key_ahead.inputs(PASSPHRASE, kdf.salt, kdf.n, kdf.r, kdf.p, normalize=True))
    repo = Repository.open(storage, passphrase=lambda: PASSPHRASE)
    assert sorted(scrypt_runs) == sorted(["genievm-scrypt", threading.current_thread().name])  # again, here
    assert repo.codec.keys is not None and repo.codec.keys != elsewhere.codec.keys


def test_a_passphrase_file_is_read_ahead_when_regular_and_once_when_a_pipe(
    tmp_path: Path, scrypt_runs: list[str]
) -> None:
    path = _repo(tmp_path)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    scrypt_runs.clear()
    _api(tmp_path).open_repository(str(path), passphrase_file=secret)
    assert scrypt_runs == ["genievm-scrypt"]
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = threading.Thread(target=pipe.write_text, args=(PASSPHRASE,))
    writer.start()
    scrypt_runs.clear()
    _api(tmp_path).open_repository(str(path), passphrase_file=pipe)  # read once: by the open
    writer.join(5)
    assert scrypt_runs == [threading.current_thread().name]


def test_no_key_is_derived_ahead_from_a_passphrase_command_or_for_remote_storage(
    tmp_path: Path, scrypt_runs: list[str]
) -> None:
    path = _repo(tmp_path)
    scrypt_runs.clear()
    GenieVM(job_db=tmp_path / "jobs.sqlite", passphrase_command=f"echo {PASSPHRASE}").open_repository(str(path))
    assert scrypt_runs == [threading.current_thread().name]
    scrypt_runs.clear()
    api = _api(tmp_path)
    api._derive_key_ahead("s3://bucket/repo", PASSPHRASE, None)
    api._derive_key_ahead(str(tmp_path / "nothing-here"), PASSPHRASE, None)
    assert scrypt_runs == [] and key_ahead._ahead == {}


def test_the_bounds_read_ahead_are_the_formats() -> None:
    """key_ahead checks a config's scrypt costs itself (it imports no model): the same bounds as KDFRecord's."""
    for name, (low, high) in key_ahead.BOUNDS.items():
        metadata = KDFRecord.model_fields[name].metadata
        assert (low, high) == (
            next(m.ge for m in metadata if hasattr(m, "ge")),
            next(m.le for m in metadata if hasattr(m, "le")),
        )
    assert key_ahead.MAX_CONFIG == MAX_CONFIG


@pytest.mark.parametrize(
    ("words", "root", "ahead"),
    [
        (["--vm", "a", "--repo", "{repo}", "--json"], {}, True),
        (["--vm", "a", "--repo={repo}"], {}, True),
        (["--vm", "a"], {}, True),  # GENIEVM_BACKUP_PATH
        (["--repo", "{repo}", "--passphrase-file", "f"], {}, False),  # the file's passphrase wins
        (["--repo", "{repo}", "--help"], {}, False),
        (["--repo", "{repo}"], {"passphrase_command": "pass show x"}, False),
        (["--repo", "{repo}"], {"key_file": "k"}, False),
        (["--", "--repo", "{repo}"], {"key_file": None}, True),  # after --: GENIEVM_BACKUP_PATH again
        (["--repo", "s3://bucket/{repo}"], {}, False),
    ],
)
def test_the_command_line_starts_the_key_before_the_command_imports(
    tmp_path: Path, scrypt_runs: list[str], monkeypatch: pytest.MonkeyPatch, words: list[str], root: dict, ahead: bool
) -> None:
    """``genievm backup --repo R`` with GENIEVM_PASSPHRASE starts scrypt from the raw words, before typer parses
    them (the command's module is not imported yet); anything that names another passphrase starts nothing."""
    from genievm_core.cli import _derive_key_ahead

    path = _repo(tmp_path)
    scrypt_runs.clear()
    monkeypatch.setenv("GENIEVM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("GENIEVM_BACKUP_PATH", str(path))
    _derive_key_ahead(root, [w.replace("{repo}", str(path)) for w in words])
    assert len(key_ahead._ahead) == (1 if ahead else 0)
    if ahead:
        repo = Repository.open(open_storage(PluginHost(), str(path)), passphrase=lambda: PASSPHRASE)
        assert repo.codec.keys is not None and key_ahead._ahead == {} and scrypt_runs == ["genievm-scrypt"]
