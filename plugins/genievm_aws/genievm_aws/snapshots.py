"""GenieVM's EBS snapshots of an instance: one crash-consistent set per backup, kept or removed, leftovers swept.

``CreateSnapshots`` with the instance specification snapshots every volume of
the instance at one point in time (crash-consistent across volumes). Each
snapshot carries tags saying GenieVM made it, for which instance and which
repository (``chain``), and whether it is kept as a base (``genievm:kept``):
``no`` while its backup runs. A set is removed when its backup fails, or when
it succeeds and ``keepSnapshots`` is 0; otherwise the newest ``keepSnapshots``
kept sets of the instance and repository stay, and older ones go. A set left
``no`` by a killed run is swept at the next backup of the instance into the
same repository.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from genievm_aws.api import AWS, error_code
from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger

__all__ = ["TAG", "SnapshotSet", "delete_snapshots", "prune_kept", "sweep_leftovers", "wait_for"]

log = get_logger("genievm.aws.snapshots")
TAG = "genievm"  # tag key prefix


def _tags(**values: str) -> list[dict[str, str]]:
    return [{"Key": f"{TAG}:{k}", "Value": v} for k, v in values.items()]


def _filters(**values: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG}:{k}", "Values": [v]} for k, v in values.items()]


def tagged(aws: AWS, **values: str) -> list[dict[str, Any]]:
    """Snapshots of this account carrying every ``genievm:<key>=<value>`` tag given."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"OwnerIds": ["self"], "Filters": _filters(**values)}
    while True:
        page = aws.ec2("describe_snapshots", "GenieVM's snapshots", **params)
        found += page.get("Snapshots", [])
        if not page.get("NextToken"):
            return found
        params["NextToken"] = page["NextToken"]


def wait_for(aws: AWS, snapshot_ids: list[str], timeout: float) -> None:
    """Until every snapshot is ``completed``; an ``error`` state or the timeout is a ProviderError."""
    deadline = time.monotonic() + timeout
    pause = 1.0
    while True:
        page = aws.ec2("describe_snapshots", ", ".join(snapshot_ids), SnapshotIds=snapshot_ids)
        states = {s["SnapshotId"]: s.get("State") for s in page.get("Snapshots", [])}
        failed = [i for i, s in states.items() if s == "error"]
        if failed:
            raise ProviderError(f"provider aws: snapshot {failed[0]} failed (state error)")
        if all(states.get(i) == "completed" for i in snapshot_ids):
            return
        if time.monotonic() > deadline:
            raise ProviderError(f"provider aws: snapshots {', '.join(snapshot_ids)} not completed after {timeout:g} s")
        time.sleep(pause)
        pause = min(2 * pause, 15)


def delete_snapshots(aws: AWS, snapshot_ids: Iterable[str]) -> None:
    """Remove each snapshot; one already gone is not an error, others are logged and left to the next sweep."""
    for snapshot_id in snapshot_ids:
        try:
            aws.ec2("delete_snapshot", snapshot_id, SnapshotId=snapshot_id)
        except ProviderError as exc:
            if error_code(exc.__cause__ or exc) == "InvalidSnapshot.NotFound":
                continue
            log.warning("aws.snapshot_not_removed", snapshot=snapshot_id, error=str(exc))


class SnapshotSet:
    """The snapshots of one backup of one instance: volume id → snapshot id."""

    def __init__(
        self, aws: AWS, instance_id: str, chain: str, volumes: Iterable[str], attached: Iterable[str], root: str | None
    ) -> None:
        """Snapshot ``volumes`` of the instance, whose ``attached`` volumes ``root`` boots from, at one moment."""
        self.aws = aws
        self.instance_id = instance_id
        # sortable, to the microsecond: StartTime may have only seconds (moto's does), so it cannot order sets
        self.set_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ-") + uuid.uuid4().hex[:6]
        self.chain = chain or "none"
        wanted = set(volumes)
        spec: dict[str, Any] = {"InstanceId": instance_id, "ExcludeBootVolume": root not in wanted}
        excluded = sorted(set(attached) - wanted - {root})
        if excluded:
            spec["ExcludeDataVolumeIds"] = excluded
        answer = aws.ec2(
            "create_snapshots",
            instance_id,
            InstanceSpecification=spec,
            Description=f"GenieVM backup of {instance_id}",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": _tags(instance=instance_id, chain=self.chain, set=self.set_id, kept="no")
                    + [{"Key": "Name", "Value": f"genievm {instance_id}"}],
                }
            ],
        )
        made = {s["VolumeId"]: s["SnapshotId"] for s in answer.get("Snapshots", [])}
        self.by_volume = {v: s for v, s in made.items() if v in wanted}
        self.extra = [s for v, s in made.items() if v not in wanted]  # where the exclusion was not honoured
        missing = wanted - set(self.by_volume)
        if missing:
            self.discard()
            raise ProviderError(f"provider aws: CreateSnapshots made no snapshot of volume {sorted(missing)[0]}")
        delete_snapshots(aws, self.extra)
        log.info("aws.snapshots_created", instance=instance_id, snapshots=sorted(self.by_volume.values()))

    def discard(self) -> None:
        delete_snapshots(self.aws, [*self.by_volume.values(), *self.extra])
        log.info("aws.snapshots_removed", instance=self.instance_id, set=self.set_id)

    def keep(self) -> None:
        ids = list(self.by_volume.values())
        self.aws.ec2("create_tags", ", ".join(ids), Resources=ids, Tags=_tags(kept="yes"))
        log.info("aws.snapshots_kept", instance=self.instance_id, snapshots=sorted(ids))


def prune_kept(aws: AWS, instance_id: str, chain: str, keep: int) -> None:
    """Remove the kept sets of the instance and repository but the newest ``keep``."""
    sets: dict[str, list[str]] = {}  # set id (its creation time first) → its snapshots
    for snapshot in tagged(aws, instance=instance_id, chain=chain or "none", kept="yes"):
        tags = {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}
        sets.setdefault(tags.get(f"{TAG}:set", ""), []).append(snapshot["SnapshotId"])
    for old in sorted(sets, reverse=True)[keep:]:
        delete_snapshots(aws, sets[old])


def sweep_leftovers(aws: AWS, instance_id: str, chain: str) -> None:
    """Remove the snapshots a killed backup of the instance into this repository left (``genievm:kept=no``)."""
    stale = [s["SnapshotId"] for s in tagged(aws, instance=instance_id, chain=chain or "none", kept="no")]
    if stale:
        log.warning("aws.stale_snapshots_removed", instance=instance_id, snapshots=sorted(stale))
        delete_snapshots(aws, stale)
