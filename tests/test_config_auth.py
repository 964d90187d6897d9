"""The repository's config is authenticated (format 2): nobody without the key turns encryption off.

Issue 22's repro (rewrite ``config`` with ``encryption: null``, then back up) is refused with one
line and exit 21, with or without a passphrase, by this client or a fresh one, and nothing is
written; every flipped byte of a config is refused; format-1 repositories still open, warn, and
``genievm repo upgrade`` authenticates them; passphrases are NFC-normalised from format 2.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CHUNK, PASSPHRASE, CLIResult, random_bytes, write_image

from genievm_core.errors import (
    CorruptionError,
    GenieVMError,
    UnsupportedFormatError,
    WrongPassphraseError,
)
from genievm_core.models.manifest import RepositoryConfig
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.config import _canonical, seal_config
from genievm_core.repository.known import KnownRepositories
from genievm_core.repository.storage import open_storage

Cli = Callable[..., CLIResult]
ENV = {"GENIEVM_PASSPHRASE": PASSPHRASE}


def tree(path: Path) -> dict[str, bytes]:
    """Every file of a repository but locks (taken and released by a refused command, at most)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def downgrade(path: Path, **changes: object) -> None:
    """The issue's repro: rewrite ``config`` as plaintext JSON, as anyone who can write the storage can."""
    data = json.loads((path / "config").read_text())
    data.update({"encryption": None, "chunk_id": "blake3"}, **changes)
    (path / "config").write_text(json.dumps(data))


@pytest.fixture
def encrypted_repo(cli: Cli, tmp_path: Path) -> tuple[Path, Path]:
    """An encrypted repository made with the CLI, holding one backup; and the image backed up."""
    repo = tmp_path / "repo"
    image = write_image(tmp_path / "a.img", 8 * CHUNK, [(0, random_bytes(3 * CHUNK, 7))])
    assert cli("repo", "init", str(repo), "--chunk-size", str(CHUNK), env=ENV).code == 0
    assert cli("backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}", env=ENV).code == 0
    return repo, image


def backup(cli: Cli, repo: Path, image: Path, env: dict[str, str] | None = None) -> CLIResult:
    return cli("backup", "--vm", "v", "--repo", str(repo), "--disk", f"vda={image}", env=env or {})


def one_error(result: CLIResult, code: int, fragment: str) -> str:
    assert result.code == code, f"exit {result.code}: {result.stderr!r}"
    errors = [line for line in result.err_lines if line not in result.warnings]  # warnings: tested below
    assert len(errors) == 1 and errors[0].startswith("genievm: error: "), result.stderr
    assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("passphrase", [True, False], ids=["with-passphrase", "without-passphrase"])
def test_the_downgrade_repro_is_refused_and_writes_nothing(
    cli: Cli, encrypted_repo: tuple[Path, Path], passphrase: bool
) -> None:
    repo, image = encrypted_repo
    downgrade(repo)
    before = tree(repo)
    one_error(backup(cli, repo, image, ENV if passphrase else {}), 21, "altered: it does not match its checksum")
    assert tree(repo) == before


@pytest.mark.parametrize(
    "changes",
    [{"authentication": None}, {"authentication": None, "format_version": 1}],
    ids=["format-2-unauthenticated", "format-1"],
)
def test_a_forged_plaintext_config_is_refused_by_every_client(
    cli: Cli, encrypted_repo: tuple[Path, Path], tmp_path: Path, changes: dict[str, object]
) -> None:
    """A config forged whole (valid checksum, no tag) has nothing to fail; three other checks catch it."""
    repo, image = encrypted_repo
    data = json.loads((repo / "config").read_text())
    data.update({"encryption": None, "chunk_id": "blake3", **changes})
    data = {k: v for k, v in data.items() if v is not None or k == "encryption"}
    if data["format_version"] == 2:  # the attacker computes the unkeyed checksum too
        _, blob = _seal_plain(data)
        (repo / "config").write_bytes(blob)
    else:
        (repo / "config").write_text(json.dumps(data))
    before = tree(repo)
    # this client remembers the repository as encrypted
    one_error(backup(cli, repo, image), 21, "was encrypted when this client last opened it")
    # a passphrase says the user expects encryption
    fresh = {"GENIEVM_JOB_DB": str(tmp_path / "fresh1" / "jobs.sqlite")}
    one_error(backup(cli, repo, image, ENV | fresh), 21, "but a passphrase was given")
    # a fresh client without a passphrase finds the encrypted manifests
    fresh = {"GENIEVM_JOB_DB": str(tmp_path / "fresh2" / "jobs.sqlite")}
    one_error(backup(cli, repo, image, fresh), 21, "its config was replaced to turn encryption off")
    assert tree(repo) == before


def _seal_plain(data: dict[str, object]) -> tuple[RepositoryConfig, bytes]:
    return seal_config(RepositoryConfig.model_validate(data), None)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_every_flipped_byte_of_the_config_is_refused(
    host: PluginHost, new_repo: Callable[..., tuple[Repository, Path]], encrypted: bool
) -> None:
    _, path = new_repo(encrypted=encrypted)
    good = (path / "config").read_bytes()
    storage = open_storage(host, str(path))
    passphrase = (lambda: PASSPHRASE) if encrypted else None
    Repository.open(storage, passphrase=passphrase)  # the config as written opens
    refused: dict[type[GenieVMError], int] = {}
    for offset in range(len(good)):
        damaged = bytearray(good)
        damaged[offset] ^= 0x40
        (path / "config").write_bytes(bytes(damaged))
        with pytest.raises((CorruptionError, UnsupportedFormatError, WrongPassphraseError)) as info:
            Repository.open(storage, passphrase=passphrase)
        refused[type(info.value)] = refused.get(type(info.value), 0) + 1
    assert refused.get(CorruptionError, 0) > 0.9 * len(good), refused  # damage is named as damage


def test_a_tag_not_made_with_the_key_is_refused(
    host: PluginHost, new_repo: Callable[..., tuple[Repository, Path]]
) -> None:
    """Changing a field and recomputing the checksum (anyone can) still fails: the tag needs the key."""
    _, path = new_repo(encrypted=True)
    data = json.loads((path / "config").read_text())
    data["chunk_size"] = 2 * data["chunk_size"]
    data["authentication"]["checksum"] = hashlib.sha256(_canonical(data)).hexdigest()
    (path / "config").write_text(json.dumps(data))
    with pytest.raises(CorruptionError, match="fails authentication: it was changed by someone without the key"):
        Repository.open(open_storage(host, str(path)), passphrase=lambda: PASSPHRASE)


def test_a_passphrase_given_to_an_unencrypted_repository_is_refused(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    assert cli("repo", "init", str(repo), "--encryption", "none").code == 0
    fresh = {"GENIEVM_JOB_DB": str(tmp_path / "fresh" / "jobs.sqlite")}
    one_error(cli("repo", "info", str(repo), env=ENV | fresh), 21, "says it is not encrypted, but a passphrase")


def test_an_unencrypted_repository_says_so_once_per_command(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    image = write_image(tmp_path / "a.img", 4 * CHUNK, [(0, random_bytes(CHUNK, 3))])
    assert cli("repo", "init", str(repo), "--encryption", "none").code == 0
    for args in (("backup", "--vm", "v", "--disk", f"vda={image}"), ("backups", "list"), ("verify",)):
        result = cli(*args, "--repo", str(repo))
        assert result.code == 0, result.stderr
        assert result.warnings == [f"genievm: warning: repository file://{repo} is not encrypted"], result.stderr
    encrypted = tmp_path / "enc"
    assert cli("repo", "init", str(encrypted), env=ENV).code == 0
    assert cli("backups", "list", "--repo", str(encrypted), env=ENV).warnings == []


def _as_format_1(path: Path) -> None:
    """Rewrite a repository's config as GenieVM 0.1 wrote it (same key, passphrase taken as given)."""
    data = json.loads((path / "config").read_text())
    data["format_version"], data["features"] = 1, []  # 0.1 knew no features
    del data["authentication"]
    (path / "config").write_text(json.dumps(data, indent=2))


def test_format_1_opens_with_a_warning_and_upgrade_authenticates_it(
    cli: Cli, encrypted_repo: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, image = encrypted_repo
    fresh = {"GENIEVM_JOB_DB": str(tmp_path / "old-client" / "jobs.sqlite")}  # never saw format 2
    _as_format_1(repo)
    result = cli("backups", "list", "--repo", str(repo), env=ENV | fresh)
    assert result.code == 0, result.stderr
    assert result.warnings == [
        f"genievm: warning: repository file://{repo} has a config of format 1, which is not authenticated: "
        "run `genievm repo upgrade`"
    ]
    upgraded = cli("repo", "upgrade", str(repo), "--json", env=ENV | fresh)
    assert json.loads(upgraded.stdout) == {
        "url": f"file://{repo}", "format_version_before": 1, "format_version": 2, "upgraded": True,
        "features_added": ["patched-chunks"], "backups_logged": 0,
    }, upgraded.stderr
    assert json.loads((repo / "config").read_text())["authentication"]["tag"]
    again = cli("repo", "upgrade", str(repo), "--json", env=ENV | fresh)
    assert json.loads(again.stdout)["upgraded"] is False
    out = tmp_path / "out"
    restored = cli("restore", "--vm", "v", "--repo", str(repo), "--target", str(out), env=ENV | fresh)
    assert restored.code == 0 and restored.warnings == [], restored.stderr
    assert (out / "vda.img").read_bytes() == image.read_bytes()
    # a client that saw format 2 refuses the old config put back (a rollback of the storage)
    _as_format_1(repo)
    one_error(backup(cli, repo, image, ENV | fresh), 21, "had an authenticated config (format 2)")


NFC = unicodedata.normalize("NFC", "Grüße, Crème brûlée")
NFD = unicodedata.normalize("NFD", NFC)


def test_nfc_and_nfd_spellings_of_a_passphrase_are_one_passphrase(
    host: PluginHost, tmp_path: Path
) -> None:
    assert NFC != NFD
    storage = open_storage(host, str(tmp_path / "repo"))
    Repository.init(storage, passphrase=NFD)
    assert Repository.open(storage, passphrase=lambda: NFC).config.format_version == 2


def test_a_format_1_repository_keeps_its_passphrase_as_given_until_upgraded(
    host: PluginHost, tmp_path: Path
) -> None:
    """0.1 passed the NFD bytes to scrypt: they still open it; after the upgrade, so does NFC."""
    from genievm_core.repository import keys as keys_module

    path = tmp_path / "repo"
    storage = open_storage(host, str(path))
    original = keys_module._kek
    try:  # what 0.1 did: the passphrase to scrypt as given
        keys_module._kek = lambda p, kdf, normalize: original(p, kdf, normalize=False)  # type: ignore[assignment]
        Repository.init(storage, passphrase=NFD)
    finally:
        keys_module._kek = original
    _as_format_1(path)
    with pytest.raises(WrongPassphraseError):
        Repository.open(storage, passphrase=lambda: NFC)
    repo = Repository.open(storage, passphrase=lambda: NFD)
    assert repo.upgrade(lambda: NFD)
    assert Repository.open(storage, passphrase=lambda: NFC).config.format_version == 2


def test_the_client_memory_survives_damage_to_its_own_file(tmp_path: Path, cli: Cli) -> None:
    """An unreadable known-repositories file loses only the memory: commands still run."""
    repo = tmp_path / "repo"
    assert cli("repo", "init", str(repo), env=ENV).code == 0
    known = tmp_path / "known-repositories.json"
    assert json.loads(known.read_text())["repositories"]
    known.write_bytes(b"\xff{not json")
    assert cli("backups", "list", "--repo", str(repo), env=ENV).code == 0
    config = Repository.open(
        open_storage(PluginHost(), str(repo)), passphrase=lambda: PASSPHRASE, known=KnownRepositories(known)
    ).config
    assert json.loads(known.read_text())["repositories"][config.repository_id]["encrypted"] is True
