"""A policy: which VMs of which provider go into which repository, with which options, on which schedule.

    {"name": "nightly", "provider": "lab", "vms": ["web*"], "exclude": ["web-test"], "repository": "main",
     "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
     "backup": {"keepDaily": 7, "pruneAfterBackup": true}, "retries": 2}

``vms`` holds names or glob patterns (none: every VM the provider lists); ``backup`` any option of a
backup config (``BackupConfig``) except the VM, repository and provider, which the policy names.
``verify`` (a schedule with ``read_data``) verifies the latest backup of each of its VMs at its times;
``prune`` applies the ``keep*`` rules of ``backup`` to its VMs at its times, then garbage collection.
``copy_to`` (a schedule with ``repository``, another of the server's settings) copies its VMs' backups
into that repository at its times (``genievm repo copy``: only what it lacks).
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genievm_core.api import BackupConfig
from genievm_core.jobs.prune import retention_policy
from genievm_core.models.vm import VMRef

__all__ = ["CopySchedule", "Policy", "Schedule", "VerifySchedule", "latest_slot", "next_slot"]

_OWN_FIELDS = {
    "vm_id",
    "vmId",
    "backup_path",
    "backupPath",
    "provider",
    "provider_options",
    "providerOptions",
    "storage_options",
    "storageOptions",
}


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(description="a cron expression of five fields: minute hour day month weekday")
    timezone: str = Field(default="UTC", description="an IANA time zone, e.g. Europe/Berlin")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression of five fields")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone") from None
        return value


class VerifySchedule(Schedule):
    read_data: bool = Field(default=False, description="read and check every chunk (--read-data)")


class CopySchedule(Schedule):
    repository: str = Field(min_length=1, description="a repository of the server's settings to copy into")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    enabled: bool = True
    provider: str = Field(min_length=1, description="a provider of the server's settings")
    vms: tuple[str, ...] = Field(default=(), description="VM names or glob patterns; none: every VM")
    exclude: tuple[str, ...] = Field(default=(), description="names or glob patterns left out")
    repository: str = Field(min_length=1, description="a repository of the server's settings")
    schedule: Schedule
    backup: dict[str, Any] = Field(default_factory=dict, description="backup options (BackupConfig)")
    retries: int = Field(default=0, ge=0, le=10, description="runs of a failed VM again, with back-off")
    max_concurrent: int | None = Field(default=None, ge=1, description="backups of this policy at once")
    queue: str | None = Field(default=None, min_length=1, description="the workers' queue (with a broker)")
    verify: VerifySchedule | None = Field(default=None, description="verify the VMs' latest backups then")
    prune: Schedule | None = Field(default=None, description="apply the backup options' keep rules then")
    copy_to: CopySchedule | None = Field(default=None, description="copy the VMs' backups into another repository")

    @model_validator(mode="after")
    def _backup_options(self) -> Policy:
        own = sorted(_OWN_FIELDS & set(self.backup))
        if own:
            raise ValueError(f"backup.{own[0]}: set by the policy itself, not in its backup options")
        try:
            config = self.backup_config("vm", "repository")
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"backup.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        if self.copy_to is not None and self.copy_to.repository == self.repository:
            raise ValueError(f"copy_to.repository: {self.repository} is the policy's own repository")
        if self.prune is not None and retention_policy(config).empty:
            raise ValueError("prune: needs a keep rule in backup (keepLast, keepDaily, ..., retentionDays)")
        return self

    def backup_config(
        self,
        vm: str,
        url: str,
        plugin: str = "image",
        options: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> BackupConfig:
        return BackupConfig.model_validate(
            {
                **self.backup,
                "vmId": vm,
                "backupPath": url,
                "provider": plugin,
                "providerOptions": options or {},
                "storageOptions": storage_options or {},
            }
        )

    def schedules(self) -> dict[str, Schedule]:
        """Each kind of run and its schedule: backup always, verify, prune and copy when set."""
        found: dict[str, Schedule | None] = {
            "backup": self.schedule, "verify": self.verify, "prune": self.prune, "copy": self.copy_to
        }  # fmt: skip
        return {kind: schedule for kind, schedule in found.items() if schedule is not None}

    def select(self, listed: list[VMRef]) -> list[str]:
        """The names of the listed VMs this policy backs up."""
        names = sorted({vm.name or vm.id for vm in listed})
        chosen = [n for n in names if not self.vms or any(fnmatch.fnmatchcase(n, p) for p in self.vms)]
        return [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in self.exclude)]


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first schedule time after ``after`` (aware), in the schedule's time zone."""
    start = after.astimezone(ZoneInfo(schedule.timezone))
    value: datetime = croniter(schedule.cron, start).get_next(datetime)
    return value


def latest_slot(schedule: Schedule, at: datetime) -> datetime:
    """The last schedule time at or before ``at``."""
    start = at.astimezone(ZoneInfo(schedule.timezone))
    if croniter.match(schedule.cron, start.replace(second=0, microsecond=0)) and start.second == 0:
        return start.replace(microsecond=0)  # within the schedule time's first second: that time itself
    value: datetime = croniter(schedule.cron, start).get_prev(datetime)
    return value
