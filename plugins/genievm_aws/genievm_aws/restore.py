"""A restore into AWS: a new EBS snapshot per disk, then (``restoreTo``) new volumes, or an AMI and a new instance.

Nothing existing is ever written: every restore makes new snapshots, and a
restore as an instance refuses a ``--new-name`` that a live instance carries
(``--force`` does not change that: GenieVM never restores over an instance).
Restored snapshots are tagged ``genievm:restored=<new name>``, so a second
restore under the same name is refused too. An AMI is registered from the
snapshots (the root one as its root device, the others as further mappings)
and one instance launched from it with the backup's type, subnet and groups
(or the options'). A restore that fails removes what it made.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from genievm_aws.api import AWS
from genievm_aws.instances import CONFIG_FORMAT, disk_name, live
from genievm_aws.options import AWSOptions
from genievm_aws.sink import SnapshotSink
from genievm_aws.snapshots import delete_snapshots, tagged, wait_for
from genievm_core.errors import ConfigError, ProviderError, RestoreTargetExistsError
from genievm_core.logging import get_logger
from genievm_core.models.config import DiskConfig
from genievm_core.models.vm import DiskInfo, VMDescription
from genievm_core.plugin.protocols import RestoreRequest

__all__ = ["EBSRestore"]

log = get_logger("genievm.aws.restore")


class EBSRestore:
    def __init__(self, aws: AWS, desc: VMDescription, request: RestoreRequest, options: AWSOptions) -> None:
        self.aws = aws
        self.desc = desc
        self.options = options
        self.name = request.new_name or f"{desc.name}-restored"
        self.config: dict[str, Any] = json.loads(desc.config) if desc.config_format == CONFIG_FORMAT else {}
        self.sinks: dict[str, SnapshotSink] = {}
        self.made: list[tuple[str, str]] = []  # (kind, id) of what commit created, for discard
        self._check_target(request)
        self._refuse_existing()

    def _check_target(self, request: RestoreRequest) -> None:
        """Refuse, before anything is written, what ``commit`` could not make."""
        if self.options.restore_to == "volumes":
            self._zone()
        if self.options.restore_to != "instance":
            return
        restored = [d.name for d in self.desc.disks if not (c := request.disk_configs.get(d.name)) or not c.skip]
        root_device = self.config.get("RootDeviceName")
        if not any(self._mapping(n).get("DeviceName") == root_device for n in restored):
            raise ConfigError(
                f"invalid providerOptions: restoreTo: instance needs the root disk ({root_device or 'unknown'}) "
                "among the restored disks; use -o restoreTo=volumes or snapshots"
            )

    def _refuse_existing(self) -> None:
        if tagged(self.aws, restored=self.name):
            raise RestoreTargetExistsError(
                f"restored snapshots named {self.name} exist (tag genievm:restored); give another --new-name"
            )
        if self.options.restore_to != "instance":
            return
        page = self.aws.ec2("describe_instances", self.name, Filters=[{"Name": "tag:Name", "Values": [self.name]}])
        same = [i["InstanceId"] for r in page.get("Reservations", []) for i in r.get("Instances", []) if live(i)]
        if same:
            raise RestoreTargetExistsError(
                f"instance {self.name} exists ({', '.join(same)}); GenieVM never restores over an instance: "
                "give another --new-name"
            )

    def open_sink(self, disk: DiskInfo, config: DiskConfig) -> SnapshotSink:
        tags = {"genievm:restored": self.name, "genievm:disk": disk.name, "genievm:source": self.desc.id}
        tags["Name"] = f"{self.name} {disk.name}"
        threads, timeout = self.options.block_threads, self.options.snapshot_timeout_seconds
        sink = SnapshotSink(self.aws, disk.name, disk.size, tags, threads, timeout, self._encryption(disk.name))
        self.sinks[disk.name] = sink
        return sink

    def commit(self) -> str:
        snapshots = {name: sink.seal() for name, sink in self.sinks.items()}
        for sink in self.sinks.values():
            sink.close()
        snapshots = {name: self._encrypted(name, snapshot_id) for name, snapshot_id in snapshots.items()}
        if self.options.restore_to == "snapshots":
            return ",".join(snapshots.values())
        if self.options.restore_to == "volumes":
            return ",".join(self._volume(name, snap) for name, snap in snapshots.items())
        return self._instance(snapshots)

    def _mapping(self, name: str) -> dict[str, Any]:
        for m in self.config.get("BlockDeviceMappings", []):
            if disk_name(m["DeviceName"]) == name:
                return dict(m)
        return {"DeviceName": f"/dev/{name}"}

    def _encryption(self, name: str) -> dict[str, Any]:
        """How disk ``name`` is encrypted once restored: as its volume was (the backup's block device mapping),
        unless ``-o encrypted`` says otherwise; with ``-o kmsKeyId``, else the volume's key, else the account's
        default. ``{}``: not encrypted."""
        m = self._mapping(name)
        wanted = self.options.encrypted if self.options.encrypted is not None else bool(m.get("Encrypted"))
        if not wanted:
            return {}
        key = self.options.kms_key_id or m.get("KmsKeyId")
        return {"Encrypted": True, "KmsKeyId": key} if key else {"Encrypted": True}

    def _encrypted(self, name: str, snapshot_id: str) -> str:
        """``snapshot_id``, or an encrypted copy in its place when disk ``name`` is to be encrypted and the
        snapshot EBS direct made is not (AWS encrypts what ``StartSnapshot`` is asked to; moto does not):
        never a clear copy of an encrypted volume left behind."""
        encryption = self._encryption(name)
        if not encryption:
            return snapshot_id
        (snapshot,) = self.aws.ec2("describe_snapshots", snapshot_id, SnapshotIds=[snapshot_id])["Snapshots"]
        if snapshot.get("Encrypted"):
            return snapshot_id
        sink = self.sinks[name]
        copy = self.aws.ec2(
            "copy_snapshot",
            f"an encrypted copy of {snapshot_id}",
            SourceSnapshotId=snapshot_id,
            SourceRegion=self.aws.region,
            Description=f"GenieVM restore of disk {name}",
            **encryption,
        )["SnapshotId"]
        self.made.append(("snapshot", snapshot_id))  # the clear one: removed below, or by discard
        sink.snapshot_id = copy  # discard removes the copy from now on
        tags = [{"Key": k, "Value": v} for k, v in sink.tags.items()]
        self.aws.ec2("create_tags", copy, Resources=[copy], Tags=tags)
        wait_for(self.aws, [copy], self.options.snapshot_timeout_seconds)
        (copied,) = self.aws.ec2("describe_snapshots", copy, SnapshotIds=[copy])["Snapshots"]
        if not copied.get("Encrypted"):
            raise ProviderError(f"provider aws: disk {name}: snapshot {copy} was to be encrypted and is not")
        delete_snapshots(self.aws, [snapshot_id])
        self.made.remove(("snapshot", snapshot_id))
        log.info("aws.snapshot_encrypted", disk=name, snapshot=copy, replaced=snapshot_id)
        return str(copy)

    def _zone(self) -> str:
        zone = self.options.availability_zone or self.config.get("AvailabilityZone")
        if not zone:
            raise ConfigError("invalid providerOptions: availabilityZone: the backup names no zone; give one")
        return str(zone)

    def _volume(self, name: str, snapshot_id: str) -> str:
        m = self._mapping(name)
        params: dict[str, Any] = {"SnapshotId": snapshot_id, "AvailabilityZone": self._zone()}
        params |= self._encryption(name)
        if m.get("VolumeType"):
            params["VolumeType"] = m["VolumeType"]
        if m.get("VolumeType") in ("io1", "io2", "gp3") and m.get("Iops"):
            params["Iops"] = m["Iops"]
        if m.get("VolumeType") == "gp3" and m.get("Throughput"):
            params["Throughput"] = m["Throughput"]
        params["TagSpecifications"] = [
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": "Name", "Value": f"{self.name} {name}"},
                    {"Key": "genievm:restored", "Value": self.name},
                ],
            }
        ]
        volume = self.aws.ec2("create_volume", f"a volume from {snapshot_id}", **params)["VolumeId"]
        self.made.append(("volume", volume))
        log.info("aws.volume_created", disk=name, volume=volume, snapshot=snapshot_id)
        return str(volume)

    def _instance(self, snapshots: dict[str, str]) -> str:
        root_device = self.config["RootDeviceName"]  # _check_target saw it among the restored disks
        mappings = []
        for name, snapshot_id in snapshots.items():
            m = self._mapping(name)
            ebs: dict[str, Any] = {
                "SnapshotId": snapshot_id,
                "DeleteOnTermination": bool(m.get("DeleteOnTermination", True)),
            }
            if m.get("VolumeType"):
                ebs["VolumeType"] = m["VolumeType"]
            mappings.append({"DeviceName": m["DeviceName"], "Ebs": ebs})
        image = self.aws.ec2(
            "register_image",
            f"an image for {self.name}",
            Name=f"genievm-{self.name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}",
            Description=f"GenieVM restore of {self.desc.id}",
            RootDeviceName=root_device,
            BlockDeviceMappings=mappings,
            Architecture=self.config.get("Architecture") or "x86_64",
            VirtualizationType="hvm",
            **({"EnaSupport": True} if self.config.get("EnaSupport") else {}),
        )["ImageId"]
        self.made.append(("image", image))
        params: dict[str, Any] = {
            "ImageId": image,
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": self.options.instance_type or self.config.get("InstanceType") or "t3.micro",
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "Name", "Value": self.name}, {"Key": "genievm:restored", "Value": self.name}],
                }
            ],
        }
        subnet = self.options.subnet_id or self.config.get("SubnetId")
        groups = self.options.security_group_ids or tuple(self.config.get("SecurityGroupIds") or ())
        if subnet:
            params["SubnetId"] = subnet
        elif self.options.availability_zone or self.config.get("AvailabilityZone"):
            params["Placement"] = {"AvailabilityZone": self._zone()}
        if groups:
            params["SecurityGroupIds"] = list(groups)
        if self.options.key_name or self.config.get("KeyName"):
            params["KeyName"] = self.options.key_name or self.config["KeyName"]
        instance = self.aws.ec2("run_instances", f"an instance from {image}", **params)["Instances"][0]["InstanceId"]
        self.made.append(("instance", instance))
        log.info("aws.instance_launched", name=self.name, instance=instance, image=image)
        return str(instance)

    def discard(self) -> None:
        """Remove what this restore made: the instance, image, volumes and snapshots."""
        for kind, made_id in reversed(self.made):
            try:
                if kind == "instance":
                    self.aws.ec2("terminate_instances", made_id, InstanceIds=[made_id])
                elif kind == "image":
                    self.aws.ec2("deregister_image", made_id, ImageId=made_id)
                elif kind == "snapshot":
                    delete_snapshots(self.aws, [made_id])
                else:
                    self.aws.ec2("delete_volume", made_id, VolumeId=made_id)
            except ProviderError as exc:
                log.warning("aws.restore_leftover", kind=kind, id=made_id, error=str(exc))
        for sink in self.sinks.values():
            sink.close()
        delete_snapshots(self.aws, [s.snapshot_id for s in self.sinks.values()])
