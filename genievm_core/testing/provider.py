"""The provider contract: tests every ``Provider`` must pass, run by each provider plugin.

A plugin's test module subclasses ``ProviderContract``, names its provider and
supplies the fixtures below; pytest then runs every ``test_*`` method against
it. The backups and restores go through the core's real jobs
(``run_backup``, ``run_restore``) into a repository in memory.

Required:

- class attribute ``provider_name``: the name the plugin registers;
- fixture ``provider_options``: the ``providerOptions`` that reach the VMs;
- fixture ``vm_id``: a VM with at least one disk (its id or name).

Optional (each has a default that skips, or checks less):

- ``mutate_disk``: ``f(disk, offset, length, pattern)`` writes ``length``
  bytes of the byte ``pattern`` at ``offset`` of the VM's disk, as the guest
  would. Without it the point-in-time and changed-extents tests are skipped.
- ``restore_config``: the settings of a restore of the VM (``RestoreConfig``
  fields in snake case: ``restore_path``, ``new_vm_name``, ``provider_options``
  ...; by default the backup's provider options and a new folder under
  ``tmp_path``). A fixture that yields can remove what the restore made (a
  defined VM) after the test, as the KVM plugin's does.
- ``read_restored``: ``f(result, disk) -> bytes``, the content of a restored
  disk. Without it the round trip relies on the restore's own verification.
- ``backup_artifacts``: ``f() -> set[str]``, what a backup leaves on the
  hypervisor while open (snapshots, checkpoints' jobs, exports, temporary
  files); it must be the same before a backup and after it, whether the
  backup ended well or with an error.

What the core relies on, and these tests check: the VM is listed and
described (disk names unique and safe, sizes positive), an unknown VM raises
``VMNotFoundError``, a backup session yields one source per requested disk
reading exactly what is asked, allocated extents are normalized and inside the
disk, the point in time holds (data read equals the data at open, or the
backup fails with ``ProviderError`` on exit), the session is removed on exit
and on error (and an error inside it propagates unchanged), changed extents
since a token cover what was written, a restore never overwrites without
``force``, and a restored VM's disks equal its backed-up disks.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from genievm_core.errors import ProviderError, RestoreTargetExistsError, VMNotFoundError
from genievm_core.jobs import RestoreResult, run_backup, run_restore
from genievm_core.models.config import BackupConfig, RestoreConfig
from genievm_core.models.extents import Extent, intersect, normalize
from genievm_core.models.manifest import BackupManifest, is_safe_name
from genievm_core.models.vm import VMDescription
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BackupRequest, DiskSource, Provider
from genievm_core.repository import Repository
from genievm_core.testing.memory import MemoryStorage

__all__ = ["MutateDisk", "ProviderContract", "ReadRestored"]

MutateDisk = Callable[[str, int, int, int], None]
ReadRestored = Callable[[RestoreResult, str], bytes]
PIECE = 1 << 20


class _ContractFailure(Exception):
    """Raised inside a backup session to check that the provider lets it through unchanged."""


def digest(read: Callable[[int, int], bytes], size: int) -> str:
    """SHA-256 of a disk read in 1 MiB pieces (each read must return exactly what was asked)."""
    h = hashlib.sha256()
    for offset in range(0, size, PIECE):
        length = min(PIECE, size - offset)
        data = read(offset, length)
        assert len(data) == length, f"read({offset}, {length}) returned {len(data)} bytes"
        h.update(data)
    return h.hexdigest()


class ProviderContract:
    """Subclass as ``Test...``, set ``provider_name`` and supply ``provider_options`` and ``vm_id``."""

    #: the name the plugin registers its provider under
    provider_name: ClassVar[str] = ""
    #: an id no VM has
    unknown_vm_id: ClassVar[str] = "genievm-contract-no-such-vm"
    #: chunk size of the test repositories (a power of two, 4 KiB to 64 MiB)
    chunk_size: ClassVar[int] = 65536
    #: bytes the mutating tests write
    mutation_length: ClassVar[int] = 65536

    # ------------------------------------------------------------ fixtures the plugin supplies

    @pytest.fixture
    def provider_options(self) -> dict[str, Any]:
        pytest.fail(f"{type(self).__name__} must override the `provider_options` fixture")

    @pytest.fixture
    def vm_id(self) -> str:
        pytest.fail(f"{type(self).__name__} must override the `vm_id` fixture with the id of a VM to back up")

    @pytest.fixture
    def mutate_disk(self) -> MutateDisk | None:
        return None

    @pytest.fixture
    def restore_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"restore_path": tmp_path / "restored"}

    @pytest.fixture
    def read_restored(self) -> ReadRestored | None:
        return None

    @pytest.fixture
    def backup_artifacts(self) -> Callable[[], set[str]]:
        return set

    # ------------------------------------------------------------ fixtures of the contract

    @pytest.fixture
    def genievm_repository(self, memory_storage: MemoryStorage) -> Repository:
        """A new unencrypted repository in memory, with chunks of ``chunk_size``."""
        return Repository.init(memory_storage, passphrase=None, chunk_size=self.chunk_size)

    @pytest.fixture
    def provider(self, genievm_host: PluginHost, provider_options: dict[str, Any]) -> Iterator[Provider]:
        assert self.provider_name, f"{type(self).__name__} must set provider_name"
        provider = genievm_host.providers.get(self.provider_name)(provider_options)
        try:
            yield provider
        finally:
            provider.close()

    @pytest.fixture
    def vm(self, provider: Provider, vm_id: str) -> VMDescription:
        return provider.describe_vm(vm_id)

    def backup(
        self, host: PluginHost, repo: Repository, vm_id: str, options: dict[str, Any], **config: Any
    ) -> BackupManifest:
        cfg = BackupConfig(
            vm_id=vm_id, backup_path=repo.url, provider=self.provider_name, provider_options=options, **config
        )
        return run_backup(host, cfg, repo, workers=2)

    def restore(
        self,
        host: PluginHost,
        repo: Repository,
        manifest: BackupManifest,
        options: dict[str, Any],
        settings: dict[str, Any],
        **config: Any,
    ) -> RestoreResult:
        """Restore ``manifest`` with the backup's provider options, unless ``settings`` (restore_config) has its own."""
        cfg = RestoreConfig.model_validate(
            {
                "vm_id": manifest.vm.id,
                "backup_id": manifest.backup_id,
                "backup_path": repo.url,
                "provider": self.provider_name,
                "provider_options": options,
                **settings,
                **config,
            }
        )
        return run_restore(host, cfg, repo, workers=2)

    def mutation(self, vm: VMDescription) -> tuple[str, Extent]:
        """Where the mutating tests write: the middle of the first disk, aligned to 64 KiB."""
        disk = vm.disks[0]
        offset = (disk.size // 2) // 65536 * 65536
        return disk.name, Extent(offset, min(self.mutation_length, disk.size - offset))

    # ------------------------------------------------------------ listing and describing

    def test_the_vm_is_listed(self, provider: Provider, vm: VMDescription, vm_id: str) -> None:
        refs = provider.list_vms()
        assert all(isinstance(r.id, str) and r.id for r in refs)
        assert len({r.id for r in refs}) == len(refs), "VM ids are unique"
        assert vm.id in {r.id for r in refs}, f"VM {vm_id} ({vm.id}) is not in list_vms()"

    def test_describe_vm(self, provider: Provider, vm: VMDescription) -> None:
        assert vm.disks, "a VM has at least one disk"
        names = [d.name for d in vm.disks]
        assert len(set(names)) == len(names), "disk names are unique"
        for disk in vm.disks:
            assert is_safe_name(disk.name), f"disk name {disk.name!r} must be letters, digits and . _ @ + -"
            assert disk.size > 0
        assert is_safe_name(vm.id), f"VM id {vm.id!r} must be letters, digits and . _ @ + -"
        assert isinstance(vm.config, bytes)
        again = provider.describe_vm(vm.id)
        assert again.id == vm.id and [d.name for d in again.disks] == names, "describe by the id gives the same VM"

    def test_an_unknown_vm_is_vm_not_found(self, provider: Provider) -> None:
        with pytest.raises(VMNotFoundError):
            provider.describe_vm(self.unknown_vm_id)

    # ------------------------------------------------------------ the backup session

    def test_one_source_per_requested_disk(self, provider: Provider, vm: VMDescription) -> None:
        wanted = (vm.disks[-1].name,)
        with provider.open_backup(vm, BackupRequest(disks=wanted)) as session:
            sources = session.sources()
            assert set(sources) == set(wanted)
            source = sources[wanted[0]]
            assert isinstance(source, DiskSource)
            assert source.info.name == wanted[0] and source.info.size == vm.disks[-1].size
            size = source.info.size
            for offset, length in ((0, min(4096, size)), (size - min(512, size), min(512, size))):
                assert len(source.read(offset, length)) == length
            token = source.next_token()
            assert token is None or isinstance(token, str)

    def test_allocated_extents_are_normalized_and_inside_the_disk(self, provider: Provider, vm: VMDescription) -> None:
        with provider.open_backup(vm, BackupRequest(disks=tuple(d.name for d in vm.disks))) as session:
            for name, source in session.sources().items():
                extents = source.allocated_extents()
                if extents is None:
                    continue
                extents = list(extents)
                assert all(isinstance(e, Extent) for e in extents), name
                assert extents == normalize(extents), f"disk {name}: extents are sorted, merged, non-empty"
                assert all(e.end <= source.info.size for e in extents), f"disk {name}: an extent ends past the disk"

    def test_the_point_in_time_holds(
        self, provider: Provider, vm: VMDescription, mutate_disk: MutateDisk | None
    ) -> None:
        """Data read in a session is the data at open; or, where the provider cannot hold it, leaving fails."""
        if mutate_disk is None:
            pytest.skip("no mutate_disk fixture: the point in time cannot be tested")
        name, where = self.mutation(vm)
        session_cm = provider.open_backup(vm, BackupRequest(disks=(name,)))
        session = session_cm.__enter__()
        try:
            source = session.sources()[name]
            before = source.read(where.offset, where.length)
            pattern = (before[0] + 0x5A) % 256 or 1
            mutate_disk(name, where.offset, where.length, pattern)
            after = source.read(where.offset, where.length)
        except BaseException:
            if not session_cm.__exit__(*sys.exc_info()):
                raise
            raise AssertionError("the session swallowed an exception") from None
        if after == before:
            session_cm.__exit__(None, None, None)
            return
        assert after == bytes([pattern]) * where.length, "the session served a mix of old and new data"
        with pytest.raises(ProviderError):  # it served the new data: the backup must not succeed
            session_cm.__exit__(None, None, None)

    def test_the_session_is_removed_on_exit_and_on_error(
        self, provider: Provider, vm: VMDescription, backup_artifacts: Callable[[], set[str]]
    ) -> None:
        before = backup_artifacts()
        request = BackupRequest(disks=tuple(d.name for d in vm.disks))
        with provider.open_backup(vm, request) as session:
            for source in session.sources().values():
                source.read(0, min(4096, source.info.size))
        assert backup_artifacts() == before, "the session left something behind"
        with pytest.raises(_ContractFailure), provider.open_backup(vm, request) as session:
            session.sources()
            raise _ContractFailure("an error inside the session must propagate unchanged")
        assert backup_artifacts() == before, "the session left something behind after an error"
        with provider.open_backup(vm, request) as session:  # nothing held blocks the next backup
            assert set(session.sources()) == set(request.disks)
        assert [d.name for d in provider.describe_vm(vm.id).disks] == [d.name for d in vm.disks]

    # ------------------------------------------------------------ through the core's jobs

    def test_changed_extents_since_a_token_cover_what_was_written(
        self,
        genievm_host: PluginHost,
        genievm_repository: Repository,
        provider: Provider,
        vm: VMDescription,
        provider_options: dict[str, Any],
        mutate_disk: MutateDisk | None,
    ) -> None:
        if mutate_disk is None:
            pytest.skip("no mutate_disk fixture: changes cannot be made")
        first = self.backup(genievm_host, genievm_repository, vm.id, provider_options)
        tokens = {d.name: d.cbt.token for d in first.disks}
        name, where = self.mutation(vm)
        mutate_disk(name, where.offset, where.length, 0xC3)
        request = BackupRequest(disks=(name,), tokens=tokens, chain_id=genievm_repository.config.repository_id)
        with provider.open_backup(vm, request) as session:
            source = session.sources()[name]
            changed = source.changed_extents(tokens[name])
            if changed.extents is None:
                assert changed.reason, "a source without changes says why"
                assert tokens[name] is None or isinstance(tokens[name], str)
            else:
                extents = list(changed.extents)
                assert extents == normalize(extents)
                assert all(e.end <= source.info.size for e in extents)
                assert intersect(extents, [where]) == [where], f"changed extents {extents} miss the write at {where}"
                assert changed.source, "changed extents name their CBT source"
            assert source.read(where.offset, where.length) == bytes([0xC3]) * where.length
        second = self.backup(genievm_host, genievm_repository, vm.id, provider_options)
        assert second.parent_id == first.backup_id

    def test_backup_and_restore_round_trip(
        self,
        genievm_host: PluginHost,
        genievm_repository: Repository,
        provider: Provider,
        vm: VMDescription,
        provider_options: dict[str, Any],
        restore_config: dict[str, Any],
        read_restored: ReadRestored | None,
    ) -> None:
        with provider.open_backup(vm, BackupRequest(disks=tuple(d.name for d in vm.disks))) as session:
            expected = {n: digest(s.read, s.info.size) for n, s in session.sources().items()}
        manifest = self.backup(genievm_host, genievm_repository, vm.id, provider_options)
        assert [d.name for d in manifest.disks] == [d.name for d in vm.disks]
        assert [d.size for d in manifest.disks] == [d.size for d in vm.disks]
        result = self.restore(genievm_host, genievm_repository, manifest, provider_options, restore_config)
        assert result.verified and result.disks == [d.name for d in vm.disks]
        if read_restored is not None:
            for disk in vm.disks:
                data = read_restored(result, disk.name)
                assert len(data) == disk.size, f"restored disk {disk.name} has {len(data)} bytes, not {disk.size}"
                got = digest(lambda o, n, d=data: d[o : o + n], len(data))  # type: ignore[misc]
                assert got == expected[disk.name], f"restored disk {disk.name} differs from the backed-up one"

    def test_a_restore_never_overwrites_without_force(
        self,
        genievm_host: PluginHost,
        genievm_repository: Repository,
        vm: VMDescription,
        provider_options: dict[str, Any],
        restore_config: dict[str, Any],
    ) -> None:
        manifest = self.backup(genievm_host, genievm_repository, vm.id, provider_options)
        self.restore(genievm_host, genievm_repository, manifest, provider_options, restore_config)
        with pytest.raises(RestoreTargetExistsError):
            self.restore(genievm_host, genievm_repository, manifest, provider_options, restore_config)
