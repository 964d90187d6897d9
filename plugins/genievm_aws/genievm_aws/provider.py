"""The ``aws`` provider: EC2 instances of one region, their EBS volumes read and written through EBS direct.

Options (``providerOptions``, or ``-o KEY=VALUE``; see ``options.py``)::

    {"region": "eu-west-1", "profile": "backup",   # credentials: boto3's chain, never an option
     "keepSnapshots": 1,                          # keep the last backup's snapshots as the next base
     "blockThreads": 8,
     # restore only:
     "restoreTo": "instance",                     # instance | volumes | snapshots
     "subnetId": "subnet-...", "securityGroupIds": "sg-1,sg-2", "instanceType": "t3.small"}

An instance is found by its id (``i-...``) or its Name tag; backups key it by its id.
There is no hypervisor: the point in time is an EBS snapshot set, the disks are read
from it, and a restore makes new snapshots (and from them volumes or an instance).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from genievm_aws.api import AWS
from genievm_aws.backup import snapshot_backup
from genievm_aws.instances import describe, find_instance, list_instances
from genievm_aws.options import AWSOptions
from genievm_aws.restore import EBSRestore
from genievm_core.engine import DiskSources
from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger
from genievm_core.models.vm import VMDescription, VMRef
from genievm_core.plugin.options import parse_options
from genievm_core.plugin.protocols import BackupRequest, RestoreRequest

__all__ = ["AWSProvider"]

log = get_logger("genievm.aws")


class AWSProvider:
    name = "aws"
    options_model = AWSOptions

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.given = dict(options)
        self.options = parse_options(AWSOptions, options, "providerOptions")
        # connections: up to 4 disks at a time, each with blockThreads calls in flight
        self.aws = AWS(self.options, pool=4 * self.options.block_threads + 4)

    def list_vms(self) -> list[VMRef]:
        return list_instances(self.aws)

    def describe_vm(self, vm_id: str) -> VMDescription:
        return describe(self.aws, find_instance(self.aws, vm_id))

    def open_backup(self, vm: VMDescription, request: BackupRequest) -> AbstractContextManager[DiskSources]:
        return snapshot_backup(self.aws, self.options, vm, request)

    def open_restore(self, vm: VMDescription, request: RestoreRequest) -> AbstractContextManager[EBSRestore]:
        return self._restore(vm, request)

    @contextmanager
    def _restore(self, desc: VMDescription, request: RestoreRequest) -> Iterator[EBSRestore]:
        options = parse_options(AWSOptions, {**self.given, **request.options}, "providerOptions")
        session = EBSRestore(self.aws, desc, request, options)
        try:
            yield session
        except BaseException:
            session.discard()
            raise

    def power_on(self, vm_id: str) -> None:
        if not vm_id.startswith("i-"):
            raise ProviderError(
                f"provider aws: {vm_id} is not an instance (restoreTo was not instance): nothing to start"
            )
        self.aws.ec2("start_instances", vm_id, InstanceIds=[vm_id])
        log.info("aws.instance_started", instance=vm_id)

    def close(self) -> None:
        self.aws.ec2_client.close()
        self.aws.ebs_client.close()
