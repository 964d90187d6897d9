"""Retention keeps exactly what the rules say: property tests over random backup dates.

``expected_keep`` restates the rules of ``repository/retention.py`` another way
(group by period, take the newest of the newest N groups); the real prune then
runs on a real repository whose backups carry the generated dates.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from support import backup_vm, random_bytes, write_image

from genievm_core.jobs import prune_vms
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository, new_backup_id
from genievm_core.repository.retention import RetentionPolicy, plan_retention
from genievm_core.repository.storage import open_storage

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
dates = st.lists(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 28, 11, 59), timezones=st.just(UTC)),
    max_size=40,
    unique=True,
)
counts = st.none() | st.integers(1, 8)
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    retention_days=st.none() | st.integers(1, 400),
    max_backups=st.none() | st.integers(1, 12),
)
PERIODS: dict[str, Callable[[datetime], object]] = {
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
    "keep_monthly": lambda t: (t.year, t.month),
}


def expected_keep(times: list[datetime], policy: RetentionPolicy, now: datetime) -> set[datetime]:
    if not times:
        return set()
    rules = [policy.keep_last, policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.retention_days]
    keep = set(times) if all(r is None for r in rules) else {max(times)}
    if policy.keep_last:
        keep |= set(sorted(times)[-policy.keep_last :])
    for name, period in PERIODS.items():
        count = getattr(policy, name)
        if count:
            groups: dict[object, list[datetime]] = {}
            for t in times:
                groups.setdefault(period(t), []).append(t)
            keep |= {max(groups[key]) for key in sorted(groups)[-count:]}
    if policy.retention_days:
        keep |= {t for t in times if now - t <= timedelta(days=policy.retention_days)}
    if policy.max_backups:
        keep = set(sorted(keep)[-policy.max_backups :])
    return keep


@given(times=dates, policy=policies)
def test_plan_keeps_exactly_what_the_rules_say(times: list[datetime], policy: RetentionPolicy) -> None:
    backups = [(new_backup_id(t), t) for t in times]
    plan = plan_retention(backups, policy, NOW)
    by_id = dict(backups)
    assert {by_id[b] for b in plan.keep} == expected_keep(times, policy, NOW)
    assert set(plan.remove) == set(by_id) - set(plan.keep)
    assert plan.remove == sorted(plan.remove, key=by_id.__getitem__)  # oldest first
    if times:
        assert max(backups, key=lambda b: b[1])[0] in plan.keep  # never every backup
        assert len(plan.keep) <= (policy.max_backups or len(times))


@settings(max_examples=15)
@given(times=dates.filter(bool), policy=policies)
def test_prune_of_a_real_repository_keeps_exactly_what_the_rules_say(
    times: list[datetime], policy: RetentionPolicy
) -> None:
    host = PluginHost()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = write_image(root / "vda.img", 4 * 65536, [(0, random_bytes(3 * 65536, 9))])
        repo = Repository.init(open_storage(host, str(root / "repo")), passphrase=None, chunk_size=65536)
        real = backup_vm(host, repo, "web01", {"vda": image})
        other_vm = backup_vm(host, repo, "db01", {"vda": image})  # another VM: never touched by web01's rules
        index = repo.disk_index(real.disks[0])
        dated = {}
        for t in times:
            backup_id = new_backup_id(t)
            key = repo.put_index(backup_id, "vda", index)
            disk = real.disks[0].model_copy(update={"index": key})
            repo.put_manifest(
                real.model_copy(update={"backup_id": backup_id, "started_at": t, "finished_at": t, "disks": (disk,)})
            )
            dated[backup_id] = t
        repo.storage.delete(f"manifests/{real.backup_id}")  # web01's backups are the dated ones only

        report = prune_vms(repo, policy, ["web01"], grace=timedelta(0), now=NOW)

        left = {m.backup_id: m.finished_at for m in repo.manifests("web01")}
        assert set(left.values()) == expected_keep(times, policy, NOW)
        assert set(report.removed_backups) == set(dated) - set(left)
        assert repo.get_manifest(other_vm.backup_id)
        assert sorted(k.split("/")[1] for k in repo.storage.list("indexes/")) == sorted([*left, other_vm.backup_id])
        for i in range(index.count):  # the chunks every backup shares are all still there
            if index[i] != bytes(32):
                assert repo.get_chunk(index[i])
