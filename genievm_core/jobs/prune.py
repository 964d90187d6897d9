"""Pruning: apply retention rules per VM, then collect garbage (see ``repository/gc.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from genievm_core.jobs.job import Job
from genievm_core.logging import get_logger
from genievm_core.models.config import BackupConfig
from genievm_core.repository import Damaged, Repository
from genievm_core.repository.gc import PruneReport, prune_repository
from genievm_core.repository.retention import RetentionPolicy, plan_retention

__all__ = ["DEFAULT_GRACE", "PruneJob", "prune_vms", "retention_policy"]

DEFAULT_GRACE = timedelta(hours=24)
log = get_logger("genievm.prune")


def retention_policy(config: BackupConfig) -> RetentionPolicy:
    return RetentionPolicy(
        keep_last=config.keep_last,
        keep_daily=config.keep_daily,
        keep_weekly=config.keep_weekly,
        keep_monthly=config.keep_monthly,
        retention_days=config.retention_days,
        max_backups=config.max_backups,
    )


def prune_vms(
    repo: Repository,
    policy: RetentionPolicy,
    vms: Sequence[str] | None = None,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    lock_wait: float = 3600.0,
    checkpoint: Callable[[], None] = lambda: None,
    now: datetime | None = None,
    on_phase: Callable[[str], None] = lambda _name: None,
) -> PruneReport:
    """Apply ``policy`` to the backups of each VM in ``vms`` (every VM when None), then collect garbage.

    ``now``, for tests, stands for the current time in both the rules and the grace period.
    """
    damaged: list[Damaged] = []
    manifests = repo.manifests(damaged=damaged)  # damaged ones: garbage collection refuses, with their name
    at = now or datetime.now(UTC)
    by_vm: dict[str, list[tuple[str, datetime]]] = {}
    for m in manifests:
        if vms is None or m.vm.id in vms:
            by_vm.setdefault(m.vm.id, []).append((m.backup_id, m.finished_at))
    remove: list[str] = []
    if not policy.empty:
        for vm, backups in sorted(by_vm.items()):
            plan = plan_retention(backups, policy, at)
            log.info("prune.plan", vm=vm, keep=len(plan.keep), remove=len(plan.remove))
            remove += plan.remove
    return prune_repository(
        repo,
        remove,
        grace=grace,
        dry_run=dry_run,
        lock_wait=lock_wait,
        checkpoint=checkpoint,
        now=(lambda: at) if now is not None else (lambda: datetime.now(UTC)),
        on_phase=on_phase,
    )


class PruneJob(Job):
    """Retention rules, then garbage collection; an empty policy only collects garbage."""

    kind = "prune"

    def __init__(
        self,
        repo: Repository,
        policy: RetentionPolicy,
        vms: Sequence[str] | None = None,
        *,
        grace: timedelta = DEFAULT_GRACE,
        dry_run: bool = False,
        lock_wait: float = 3600.0,
    ) -> None:
        what = "garbage collection" if policy.empty else "prune"
        scope = f" of {', '.join(vms)}" if vms else ""
        super().__init__(
            description=f"{what}{scope}{' (dry run)' if dry_run else ''}",
            vm=",".join(vms) if vms else None,
            repository=repo.url,
        )
        self.repo = repo
        self.policy = policy
        self.vms = vms
        self.grace = grace
        self.dry_run = dry_run
        self.lock_wait = lock_wait
        self.report: PruneReport | None = None

    def execute(self) -> dict[str, Any]:
        self.report = prune_vms(
            self.repo,
            self.policy,
            self.vms,
            grace=self.grace,
            dry_run=self.dry_run,
            lock_wait=self.lock_wait,
            checkpoint=self.control.checkpoint,
            on_phase=self.enter_phase,
        )
        return self.report.to_json()
