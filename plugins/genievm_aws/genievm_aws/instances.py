"""EC2 instances as GenieVM sees them: listed, found by id or Name tag, described with their EBS volumes.

A disk is one EBS volume attached to the instance, named by its device without
``/dev/`` (``xvda``, ``sdf``): stable across backups, and what a restore maps
back onto a block device mapping. The stored configuration is the part of the
instance a restore needs to launch a new one (type, zone, subnet, security
groups, tags, block device mapping, root device, architecture) as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from genievm_aws.api import AWS
from genievm_core.errors import ProviderError, VMNotFoundError
from genievm_core.models.vm import DiskInfo, VMDescription, VMRef

__all__ = ["CONFIG_FORMAT", "GiB", "describe", "find_instance", "instance_name", "list_instances", "live"]

GiB = 1 << 30
CONFIG_FORMAT = "aws-ec2-instance+json"
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
GONE = ("shutting-down", "terminated")


def instance_name(instance: dict[str, Any]) -> str:
    return str(next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), instance["InstanceId"]))


def _instances(aws: AWS, what: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = aws.ec2("describe_instances", what, **params)
        found += [i for r in page.get("Reservations", []) for i in r.get("Instances", [])]
        if not page.get("NextToken"):
            return found
        params["NextToken"] = page["NextToken"]


def live(instance: dict[str, Any]) -> bool:
    return instance.get("State", {}).get("Name") not in GONE


def list_instances(aws: AWS) -> list[VMRef]:
    return [
        VMRef(i["InstanceId"], instance_name(i), i.get("State", {}).get("Name", "unknown"))
        for i in _instances(aws, "instances")
        if live(i)
    ]


def find_instance(aws: AWS, vm_id: str) -> dict[str, Any]:
    """The instance by id (``i-...``) or by its Name tag (which one instance only may carry)."""
    if INSTANCE_ID.match(vm_id):
        found = _instances(aws, vm_id, InstanceIds=[vm_id])
    else:
        found = _instances(aws, vm_id, Filters=[{"Name": "tag:Name", "Values": [vm_id]}])
    found = [i for i in found if live(i)]
    if not found:
        raise VMNotFoundError(f"no VM {vm_id} on provider aws (region {aws.region})")
    if len(found) > 1:
        ids = ", ".join(i["InstanceId"] for i in found)
        raise ProviderError(f"provider aws: several instances are named {vm_id} ({ids}): give the instance id")
    return found[0]


def disk_name(device: str) -> str:
    return device.removeprefix("/dev/").replace("/", "-")


def _volumes(aws: AWS, instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
    if not ids:
        return {}
    answer = aws.ec2("describe_volumes", f"the volumes of {instance['InstanceId']}", VolumeIds=ids)
    return {v["VolumeId"]: v for v in answer.get("Volumes", [])}


def describe(aws: AWS, instance: dict[str, Any]) -> VMDescription:
    volumes = _volumes(aws, instance)
    disks = []
    mapping = []
    for m in instance.get("BlockDeviceMappings", []):
        if "Ebs" not in m:
            continue
        volume = volumes[m["Ebs"]["VolumeId"]]
        details = {
            "volume_id": volume["VolumeId"],
            "device": m["DeviceName"],
            "volume_type": str(volume.get("VolumeType", "")),
            "availability_zone": str(volume.get("AvailabilityZone", "")),
        }
        disks.append(
            DiskInfo(
                disk_name(m["DeviceName"]), int(volume["Size"]) * GiB, "network", "raw", volume["VolumeId"], details
            )
        )
        mapping.append(
            {
                "DeviceName": m["DeviceName"],
                "VolumeId": volume["VolumeId"],
                "VolumeSize": volume["Size"],
                "VolumeType": volume.get("VolumeType"),
                "Iops": volume.get("Iops"),
                "Throughput": volume.get("Throughput"),
                "Encrypted": volume.get("Encrypted", False),
                "KmsKeyId": volume.get("KmsKeyId"),  # the key's ARN: an id, not a secret
                "DeleteOnTermination": m["Ebs"].get("DeleteOnTermination", True),
            }
        )
    if not disks:
        raise ProviderError(f"provider aws: instance {instance['InstanceId']} has no EBS volume to back up")
    config = {
        "InstanceId": instance["InstanceId"],
        "InstanceType": instance.get("InstanceType"),
        "ImageId": instance.get("ImageId"),
        "AvailabilityZone": instance.get("Placement", {}).get("AvailabilityZone"),
        "SubnetId": instance.get("SubnetId"),
        "VpcId": instance.get("VpcId"),
        "SecurityGroupIds": [g["GroupId"] for g in instance.get("SecurityGroups", [])],
        "KeyName": instance.get("KeyName"),
        "Architecture": instance.get("Architecture"),
        "RootDeviceName": instance.get("RootDeviceName"),
        "EbsOptimized": instance.get("EbsOptimized", False),
        "EnaSupport": instance.get("EnaSupport"),
        "BootMode": instance.get("BootMode"),
        "Tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])},
        "BlockDeviceMappings": mapping,
    }
    return VMDescription(
        id=instance["InstanceId"],
        name=instance_name(instance),
        disks=tuple(disks),
        config=json.dumps(config, sort_keys=True).encode(),
        config_format=CONFIG_FORMAT,
        summary={
            "instance_type": config["InstanceType"],
            "availability_zone": config["AvailabilityZone"],
            "state": instance.get("State", {}).get("Name"),
            "root_device": config["RootDeviceName"],
            "subnet": config["SubnetId"],
        },
    )
