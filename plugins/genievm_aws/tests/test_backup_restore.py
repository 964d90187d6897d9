"""End to end through ``genievm``: full backup, blocks changed, an incremental from ListChangedBlocks,
restores into new EBS snapshots (compared block by block), into an AMI and instance, and into raw files
(compared byte for byte), against moto taught volume contents (``moto_ebs``)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_support import ACCESS_KEY_ID, SECRET_ACCESS_KEY, CLIResult, Instance, genievm_snapshots, snapshot_content
from moto_ebs import BLOCK, VOLUMES, read_volume

from genievm_core.api import GenieVM

GiB = 1 << 30
MiB = 1 << 20
CLI = Callable[..., CLIResult]


def backup(cli: CLI, instance: Instance, repo: str, aws_options: list[str], *more: str) -> dict[str, Any]:
    return cli("backup", "--vm", instance.name, "--repo", repo, *aws_options, *more, "--json").json()  # type: ignore[no-any-return]


def stored_config(repo: str, backup_id: str, tmp_path: Path) -> dict[str, Any]:
    """The instance configuration a backup's manifest holds (the CLI's JSON leaves it out)."""
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        manifest = genievm.open_repository(repo, no_lock=True).find_backup(None, backup_id)
    assert manifest.vm.config_format == "aws-ec2-instance+json"
    return json.loads(base64.b64decode(manifest.vm.config or ""))  # type: ignore[no-any-return]


def by_disk(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in manifest["disks"]}


def test_vms_lists_instances_with_their_name_and_state(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str]
) -> None:
    instance = make_instance([1])
    listed = {vm["id"]: vm for vm in cli("vms", *aws_options, "--json").json()}
    assert listed[instance.id]["name"] == instance.name
    assert listed[instance.id]["state"] == "running"
    table = cli("vms", *aws_options).out
    assert instance.id in table and instance.name in table


@pytest.mark.slow
def test_full_then_incremental_from_changed_blocks_then_restores(
    cli: CLI,
    make_instance: Callable[..., Instance],
    aws_options: list[str],
    repo: str,
    tmp_path: Path,
    ec2: Any,
    ebs: Any,
) -> None:
    instance = make_instance([1, 1])
    instance.write("sda1", 0, os.urandom(3 * MiB))
    instance.write("sdf", 100 * MiB, os.urandom(MiB + 4096))
    first = backup(cli, instance, repo, aws_options, "-o", "keepSnapshots=1")
    disks = by_disk(first)
    assert set(disks) == {"sda1", "sdf"} and all(d["cbt"]["mode"] == "full" for d in disks.values())
    assert disks["sdf"]["stats"]["bytes_read"] == 3 * BLOCK  # only the blocks the snapshot lists are read
    config = stored_config(repo, first["backup_id"], tmp_path)
    assert config["InstanceType"] == "t3.micro" and config["RootDeviceName"] == "/dev/sda1"
    assert [m["DeviceName"] for m in config["BlockDeviceMappings"]] == ["/dev/sda1", "/dev/sdf"]
    assert config["Tags"]["Name"] == instance.name and "SecurityGroupIds" in config and "SubnetId" in config

    instance.write("sda1", MiB + 10, b"changed over data")
    instance.write("sdf", 700 * MiB, os.urandom(8192))  # into a hole
    second = backup(cli, instance, repo, aws_options, "-o", "keepSnapshots=1")
    disks = by_disk(second)
    assert second["parent_id"] == first["backup_id"]
    for name in ("sda1", "sdf"):
        assert disks[name]["cbt"]["mode"] == "cbt" and disks[name]["cbt"]["source"] == "ebs-changed-blocks", disks[name]
    # a changed chunk's listed blocks are read, nothing else: sda1's chunk holds two, sdf's new block is alone in its
    assert disks["sda1"]["stats"]["bytes_read"] == MiB
    assert disks["sdf"]["stats"]["bytes_read"] == BLOCK
    assert len(genievm_snapshots(ec2, instance=instance.id, kept="yes")) == 2, "one kept set: a snapshot per volume"

    target = tmp_path / "raw"
    cli("restore", "--vm", instance.id, "--repo", repo, "--provider", "image", "--target", str(target))
    for name in ("sda1", "sdf"):
        restored = (target / f"{name}.img").read_bytes()
        assert restored == read_volume(instance.volumes[name], GiB), f"raw file {name} differs from the volume"

    cli(
        "restore", "--vm", instance.id, "--repo", repo, *aws_options, "-o", "restoreTo=snapshots", "--new-name", "snaps"
    )
    for name in ("sda1", "sdf"):
        (snapshot,) = genievm_snapshots(ec2, restored="snaps", disk=name)
        listed = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
        wanted = {i for i, data in VOLUMES[instance.volumes[name]].items() if any(data)}
        assert {b["BlockIndex"] for b in listed} == wanted, "only the non-zero blocks are written"
        assert snapshot_content(ebs, snapshot, GiB) == read_volume(instance.volumes[name], GiB)


def test_snapshots_are_removed_unless_kept(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, ec2: Any
) -> None:
    instance = make_instance([1])
    instance.write("sda1", 0, os.urandom(4096))
    manifest = backup(cli, instance, repo, aws_options)
    assert manifest["disks"][0]["cbt"]["token"] is None
    assert genievm_snapshots(ec2, instance=instance.id) == set(), "keepSnapshots=0: nothing is left"
    tokens = [
        backup(cli, instance, repo, aws_options, "-o", "keepSnapshots=2")["disks"][0]["cbt"]["token"] for _ in range(3)
    ]
    assert genievm_snapshots(ec2, instance=instance.id) == set(tokens[1:]), "the newest two sets stay"
    backup(cli, instance, repo, aws_options, "--no-cbt", "-o", "keepSnapshots=2")
    assert genievm_snapshots(ec2, instance=instance.id) == set(tokens[1:]), "--no-cbt keeps no base, and prunes none"
    backup(cli, instance, repo, aws_options)
    assert genievm_snapshots(ec2, instance=instance.id) == set(), "keepSnapshots back to 0: the older bases go"


def test_a_missing_base_snapshot_falls_back_to_hash_compare(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, ec2: Any, tmp_path: Path
) -> None:
    instance = make_instance([1])
    instance.write("sda1", 0, os.urandom(2 * MiB))
    token = backup(cli, instance, repo, aws_options, "-o", "keepSnapshots=1")["disks"][0]["cbt"]["token"]
    ec2.delete_snapshot(SnapshotId=token)
    instance.write("sda1", 4096, b"after the base went")
    disk = backup(cli, instance, repo, aws_options, "-o", "keepSnapshots=1")["disks"][0]
    assert disk["cbt"]["mode"] == "hash-compare"
    assert f"the parent's snapshot {token} no longer exists" in disk["cbt"]["reason"]
    assert disk["stats"]["chunks_new"] == 1 and disk["stats"]["chunks_deduplicated"] == 1
    cli("restore", "--vm", instance.id, "--repo", repo, "--provider", "image", "--target", str(tmp_path / "raw"))
    assert (tmp_path / "raw" / "sda1.img").read_bytes() == read_volume(instance.volumes["sda1"], GiB)


@pytest.mark.slow
def test_an_instance_restore_registers_an_ami_and_launches_a_new_instance_never_over_one(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, ec2: Any
) -> None:
    instance = make_instance([1, 1])
    instance.write("sda1", 0, os.urandom(MiB))
    backup(cli, instance, repo, aws_options)
    restore = ("restore", "--vm", instance.id, "--repo", repo, *aws_options)
    taken = cli(*restore, "--new-name", instance.name, "--force", check=False)
    assert taken.code == 23
    assert f"instance {instance.name} exists ({instance.id}); GenieVM never restores over an instance" in taken.err
    assert genievm_snapshots(ec2, restored=instance.name) == set(), "a refused restore makes nothing"

    result = cli(*restore, "--new-name", "web-restored", "--json").json()
    (launched,) = ec2.describe_instances(InstanceIds=[result["vm_id"]])["Reservations"][0]["Instances"]
    assert {t["Key"]: t["Value"] for t in launched["Tags"]}["Name"] == "web-restored"
    assert launched["InstanceType"] == "t3.micro" and launched["InstanceId"] != instance.id
    (image,) = ec2.describe_images(ImageIds=[launched["ImageId"]])["Images"]
    assert image["Name"].startswith("genievm-web-restored-")
    assert len(genievm_snapshots(ec2, restored="web-restored")) == 2
    again = cli(*restore, "--new-name", "web-restored", check=False)
    assert again.code == 23 and "give another --new-name" in again.err
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])


def test_credentials_are_never_logged_nor_stored(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, tmp_path: Path
) -> None:
    instance = make_instance([1])
    instance.write("sda1", 0, os.urandom(4096))
    run = cli("--log-level", "debug", "backup", "--vm", instance.id, "--repo", repo, *aws_options, "--json")
    assert "aws.snapshots_created" in run.err, "the debug log was captured"
    stored = b"".join(p.read_bytes() for p in Path(repo).rglob("*") if p.is_file())
    stored += (tmp_path / "jobs.sqlite").read_bytes() if (tmp_path / "jobs.sqlite").exists() else b""
    listed = cli("backups", "show", "latest", "--vm", instance.id, "--repo", repo, "--json").out
    listed += json.dumps(stored_config(repo, run.json()["backup_id"], tmp_path))
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret not in run.out + run.err + listed
        assert secret.encode() not in stored


def test_a_backup_of_another_provider_restores_into_ebs_snapshots(
    cli: CLI, aws_options: list[str], repo: str, tmp_path: Path, ec2: Any, ebs: Any
) -> None:
    """The cloud leg of cross-hypervisor restore: an ``image`` backup (as KVM's raw disks) into new EBS snapshots."""
    image = tmp_path / "web01.img"
    data = bytearray(3 * MiB + 4096)  # not a whole number of blocks: the last one is padded with zeros
    data[0:4096] = os.urandom(4096)
    data[2 * MiB : 3 * MiB + 4096] = os.urandom(MiB + 4096)
    image.write_bytes(bytes(data))
    cli("backup", "--vm", "web01", "--repo", repo, "--disk", f"vda={image}")
    restore = ("restore", "--vm", "web01", "--repo", repo, *aws_options, "--new-name", "web01-ebs")
    as_instance = cli(*restore, check=False)  # no EC2 configuration in an image backup: refused before writing
    assert as_instance.code == 3 and as_instance.err.strip().endswith(
        "invalid providerOptions: restoreTo: instance needs the root disk (unknown) among the restored disks; "
        "use -o restoreTo=volumes or snapshots"
    )
    as_volumes = cli(*restore, "-o", "restoreTo=volumes", check=False)
    assert as_volumes.code == 3 and as_volumes.err.strip().endswith(
        "invalid providerOptions: availabilityZone: the backup names no zone; give one"
    )
    assert genievm_snapshots(ec2, restored="web01-ebs") == set(), "the refused restores made nothing"
    cli(
        "restore", "--vm", "web01", "--repo", repo, *aws_options, "-o", "restoreTo=snapshots", "--new-name", "web01-ebs"
    )
    (snapshot,) = genievm_snapshots(ec2, restored="web01-ebs", disk="vda")
    (described,) = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"]
    assert described["VolumeSize"] == 1, "the size rounded up to whole GiB"
    assert snapshot_content(ebs, snapshot, len(data)) == bytes(data)
    assert {b["BlockIndex"] for b in ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]} == {0, 4, 5, 6}


def test_an_excluded_volume_keeps_no_snapshot(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, ec2: Any
) -> None:
    instance = make_instance([1, 1])
    instance.write("sdf", 0, os.urandom(4096))
    manifest = backup(cli, instance, repo, aws_options, "--exclude-disk", "sdf", "-o", "keepSnapshots=1")
    assert [d["name"] for d in manifest["disks"]] == ["sda1"]
    token = manifest["disks"][0]["cbt"]["token"]
    assert genievm_snapshots(ec2, instance=instance.id) == {token}, "only the backed-up volume's snapshot stays"
    (kept,) = ec2.describe_snapshots(SnapshotIds=[token])["Snapshots"]
    assert kept["VolumeId"] == instance.volumes["sda1"]


def test_an_encrypted_volume_is_restored_encrypted_with_its_key(
    cli: CLI, make_instance: Callable[..., Instance], aws_options: list[str], repo: str, ec2: Any, ebs: Any
) -> None:
    """The backup keeps each volume's encryption and KMS key; snapshots and volumes restored from it are encrypted
    with that key (or ``-o kmsKeyId``), and no clear copy of the data is left behind."""
    key = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-genievm-test"
    instance = make_instance([1], kms_key=key)
    data = os.urandom(MiB)
    instance.write("sda1", 0, data)
    backup(cli, instance, repo, aws_options)
    restore = ("restore", "--vm", instance.id, "--repo", repo, *aws_options)

    cli(*restore, "-o", "restoreTo=snapshots", "--new-name", "enc-snaps")
    (snapshot,) = genievm_snapshots(ec2, restored="enc-snaps")
    (described,) = ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"]
    assert described["Encrypted"] and described["KmsKeyId"] == key
    assert snapshot_content(ebs, snapshot, MiB) == data

    other = "arn:aws:kms:eu-west-1:123456789012:key/9f8e7d6c-genievm-other"
    result = cli(*restore, "-o", "restoreTo=volumes", "-o", f"kmsKeyId={other}", "--new-name", "enc-vols", "--json")
    (volume_id,) = result.json()["vm_id"].split(",")
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert volume["Encrypted"] and volume["KmsKeyId"] == other
    assert read_volume(volume_id, MiB) == data
    (behind,) = genievm_snapshots(ec2, restored="enc-vols")
    assert ec2.describe_snapshots(SnapshotIds=[behind])["Snapshots"][0]["KmsKeyId"] == other

    cli(*restore, "-o", "restoreTo=snapshots", "-o", "encrypted=false", "--new-name", "clear-snaps")
    (clear,) = genievm_snapshots(ec2, restored="clear-snaps")
    assert not ec2.describe_snapshots(SnapshotIds=[clear])["Snapshots"][0].get("Encrypted")
