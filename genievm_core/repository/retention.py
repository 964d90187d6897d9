"""Retention rules: which backups of one VM to keep.

Backups are ordered by the time they finished (the order ``latest`` uses).
A backup is kept when any rule keeps it:

- ``keep_last`` N: the N newest;
- ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` N: the newest backup of
  each of the N newest UTC calendar days / ISO weeks / months that have a backup;
- ``retention_days`` D: every backup that finished at most D days ago;
- the newest backup is always kept (it is the next incremental's parent and
  holds the CBT tokens), so no rule can delete every backup of a VM.

With none of these rules every backup is kept. Then ``max_backups`` M caps the
result: of the backups kept, only the M newest stay. Every backup is a complete
index of its disks, so deleting any backup never breaks another: the only thing
backups share is chunks, which garbage collection keeps while any manifest
names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["RetentionPolicy", "RetentionPlan", "plan_retention"]

Backup = tuple[str, datetime]  # (backup id, finished at, aware UTC)


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    retention_days: int | None = None
    max_backups: int | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def has_keep_rule(self) -> bool:
        rules = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly, self.retention_days)
        return any(r is not None for r in rules)

    @property
    def empty(self) -> bool:
        return not self.has_keep_rule and self.max_backups is None


@dataclass
class RetentionPlan:
    keep: dict[str, list[str]]  # backup id -> the rules that keep it
    remove: list[str]  # backup ids, oldest first


_PERIODS: dict[str, Callable[[datetime], object]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
}


def plan_retention(backups: Sequence[Backup], policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """Apply ``policy`` to the backups of one VM."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    reasons: dict[str, list[str]] = {}

    def keep(backup_id: str, why: str) -> None:
        reasons.setdefault(backup_id, []).append(why)

    if not policy.has_keep_rule:
        for backup_id, _ in newest_first:
            keep(backup_id, "no keep rule")
    if policy.keep_last:
        for backup_id, _ in newest_first[: policy.keep_last]:
            keep(backup_id, "last")
    for name, period in _PERIODS.items():
        count = getattr(policy, f"keep_{name}")
        if not count:
            continue
        seen: list[object] = []
        for backup_id, finished in newest_first:
            bucket = period(finished)
            if bucket in seen:
                continue
            if len(seen) == count:
                break
            seen.append(bucket)
            keep(backup_id, name)
    if policy.retention_days:
        cutoff = now - timedelta(days=policy.retention_days)
        for backup_id, finished in newest_first:
            if finished >= cutoff:
                keep(backup_id, "within")
    if newest_first:
        keep(newest_first[0][0], "newest")
    kept = [b for b in newest_first if b[0] in reasons]
    if policy.max_backups is not None:
        for backup_id, _ in kept[policy.max_backups :]:
            del reasons[backup_id]
    remove = [backup_id for backup_id, _ in reversed(newest_first) if backup_id not in reasons]
    return RetentionPlan(reasons, remove)
