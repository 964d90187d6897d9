"""GenieVM's provider and CBT source contracts over the ``aws`` provider, against moto (``moto_ebs``).

One instance for the module: a 1 GiB root volume and a 1 GiB data volume,
each with data at its start, in its middle (where the contract's writes land)
and near its end, holes between. A guest's write is a write of the volume's
content in ``moto_ebs``, which the next EC2 snapshot copies. Each restore makes
new snapshots, an AMI and an instance named after the test; ``read_restored``
reads the restored snapshots block by block through EBS direct.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_support import REGION, Instance, genievm_snapshots, launch, snapshot_content
from genievm_aws.provider import AWSProvider

from genievm_core.jobs import RestoreResult, run_backup
from genievm_core.models.config import BackupConfig
from genievm_core.models.extents import Extent
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import BackupRequest, CBTSource
from genievm_core.repository import Repository
from genievm_core.testing import CBTCase, CBTSourceContract, MemoryStorage, ProviderContract

GiB = 1 << 30
MiB = 1 << 20


def seed(instance: Instance) -> None:
    for disk in instance.volumes:
        instance.write(disk, 0, os.urandom(MiB))
        instance.write(disk, GiB // 2 - 256 * 1024, os.urandom(MiB))
        instance.write(disk, GiB - 3 * 512 * 1024, os.urandom(300 * 1024))


@pytest.fixture(scope="module")
def contract_instance(ec2: Any) -> Iterator[Instance]:
    instance = launch(ec2, [1, 1])
    seed(instance)
    yield instance
    ec2.terminate_instances(InstanceIds=[instance.id])


class TestAWSProvider(ProviderContract):
    provider_name = "aws"
    unknown_vm_id = "i-0123456789abcdef0"

    @pytest.fixture
    def provider_options(self, aws_endpoint: str) -> dict[str, Any]:
        return {"region": REGION, "endpointUrl": aws_endpoint}

    @pytest.fixture
    def vm_id(self, contract_instance: Instance) -> str:
        return contract_instance.id

    @pytest.fixture
    def mutate_disk(self, contract_instance: Instance) -> Callable[[str, int, int, int], None]:
        def mutate(disk: str, offset: int, length: int, pattern: int) -> None:
            contract_instance.write(disk, offset, bytes([pattern]) * length)

        return mutate

    @pytest.fixture
    def restore_config(self, provider_options: dict[str, Any]) -> dict[str, Any]:
        return {"new_vm_name": f"restored-{secrets.token_hex(4)}", "provider_options": provider_options}

    @pytest.fixture
    def read_restored(self, ec2: Any, ebs: Any) -> Callable[[RestoreResult, str], bytes]:
        def read(result: RestoreResult, disk: str) -> bytes:
            (instance,) = ec2.describe_instances(InstanceIds=[result.vm_id])["Reservations"][0]["Instances"]
            name = next(t["Value"] for t in instance["Tags"] if t["Key"] == "Name")
            (snapshot,) = genievm_snapshots(ec2, restored=name, disk=disk)
            return snapshot_content(ebs, snapshot, GiB)

        return read

    @pytest.fixture
    def backup_artifacts(self, ec2: Any, contract_instance: Instance) -> Callable[[], set[str]]:
        return lambda: genievm_snapshots(ec2, instance=contract_instance.id)


def test_an_unknown_instance_name_is_vm_not_found(provider_options: dict[str, Any]) -> None:
    from genievm_core.errors import VMNotFoundError

    provider = AWSProvider(provider_options)
    try:
        with pytest.raises(VMNotFoundError, match=f"no VM no-such-instance on provider aws \\(region {REGION}\\)"):
            provider.describe_vm("no-such-instance")
    finally:
        provider.close()


def test_ebs_changed_blocks_is_registered_by_the_aws_plugin() -> None:
    from genievm_core.models.vm import DiskInfo

    host = PluginHost()
    assert {r.name: r.plugin for r in host.cbt_sources}["ebs-changed-blocks"] == "aws"
    registered = host.cbt_sources.get("ebs-changed-blocks")
    disk = DiskInfo("sdf", GiB, "network", details={"volume_id": "vol-0123456789abcdef0"})
    assert registered.supports(disk) and not registered.supports(DiskInfo("vda", GiB, "network"))
    alone = registered.changed_extents(disk, "snap-0123456789abcdef0")  # no new snapshot here: never a guess
    assert alone.extents is None and "only within a backup" in (alone.reason or "")


@pytest.fixture(scope="module")
def open_disk(ec2: Any, aws_endpoint: str) -> Iterator[tuple[Any, str]]:
    """One backup for the class: its session stays open while the tests ask the bound source."""
    instance = launch(ec2, [1])
    instance.write("sda1", 0, os.urandom(2 * MiB))
    options = {"region": REGION, "endpointUrl": aws_endpoint, "keepSnapshots": 1}
    repository = Repository.init(MemoryStorage(), passphrase=None, chunk_size=65536)
    cfg = BackupConfig(vm_id=instance.id, backup_path=repository.url, provider="aws", provider_options=options)
    token = run_backup(PluginHost(), cfg, repository, workers=2).disks[0].cbt.token
    assert token is not None and token.startswith("snap-")
    instance.write("sda1", 5 * MiB, os.urandom(4096))  # into a hole: a block the base does not have
    instance.write("sda1", MiB, os.urandom(4096))  # over data
    provider = AWSProvider(options)
    try:
        desc = provider.describe_vm(instance.id)
        with provider.open_backup(desc, BackupRequest(disks=("sda1",), tokens={"sda1": token})) as session:
            yield session.sources()["sda1"], token
    finally:
        provider.close()
        ec2.terminate_instances(InstanceIds=[instance.id])


class TestBoundEBSChangedBlocks(CBTSourceContract):
    """The source as the core gets it during a backup: offered by the disk source, bound to its new snapshot."""

    @pytest.fixture
    def cbt_source(self, open_disk: tuple[Any, str]) -> CBTSource:
        (bound,) = open_disk[0].cbt_sources()
        return bound  # type: ignore[no-any-return]

    @pytest.fixture
    def cbt_case(self, open_disk: tuple[Any, str]) -> CBTCase:
        source, token = open_disk
        return CBTCase(source.info, token, [Extent(5 * MiB, 4096), Extent(MiB, 4096)])
