"""The repository key derived ahead (``keys.derive_ahead``): scrypt starts while the plugins load, and the open
takes its result only when it derives the very same key; every other case derives as before."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from genievm_core.api import GenieVM
from genievm_core.errors import WrongPassphraseError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository, keys
from genievm_core.repository.storage import open_storage

PASSPHRASE = "derive me ahead"


@pytest.fixture
def scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of each scrypt run (the real scrypt, counted)."""
    runs: list[str] = []
    real = keys._scrypt

    def counted(inputs: keys._Inputs) -> bytes:
        runs.append(threading.current_thread().name)
        return real(inputs)

    monkeypatch.setattr(keys, "_scrypt", counted)
    monkeypatch.setattr(keys, "_ahead", {})
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
    assert scrypt_runs == ["genievm-scrypt"] and keys._ahead == {}
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
    keys.derive_ahead(PASSPHRASE, elsewhere.config.encryption, normalize=True)
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
    assert scrypt_runs == [] and keys._ahead == {}
