"""``repo init`` never mixes a repository into a folder that holds other things."""

from __future__ import annotations

from pathlib import Path

import pytest

from genievm_core.errors import RepositoryExistsError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path, host: PluginHost) -> None:
    (tmp_path / "notes.txt").write_text("an operator's file")
    with pytest.raises(RepositoryExistsError, match="is not empty"):
        Repository.init(open_storage(host, str(tmp_path)), passphrase=None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_init_refuses_an_existing_repository(tmp_path: Path, host: PluginHost) -> None:
    Repository.init(open_storage(host, str(tmp_path / "r")), passphrase=None)
    with pytest.raises(RepositoryExistsError, match="already exists"):
        Repository.init(open_storage(host, str(tmp_path / "r")), passphrase=None)


def test_unsafe_vm_or_disk_names_fail_before_any_data_moves(tmp_path: Path, host: PluginHost) -> None:
    from support import backup_vm, write_image

    from genievm_core.errors import ProviderError

    repo = Repository.init(open_storage(host, str(tmp_path / "r")), passphrase=None)
    image = write_image(tmp_path / "a.img", 4096, [(0, b"data")])
    for vm, disk in (("my vm", "vda"), ("vm1", "../vda")):
        with pytest.raises(ProviderError, match="letters, digits and"):
            backup_vm(host, repo, vm, {disk: image})
    assert not list((tmp_path / "r").rglob("chunks/*/*"))
