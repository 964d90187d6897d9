"""Policies: their schedule (cron and time zone), which VMs they select, which backup options they take."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from genievm_server.policy import Policy, Schedule, latest_slot, next_slot
from pydantic import ValidationError

from genievm_core.models.vm import VMRef

BASE = {"name": "nightly", "provider": "lab", "repository": "main", "schedule": {"cron": "0 2 * * *"}}


def test_schedule_times_are_in_the_schedules_time_zone() -> None:
    berlin = Schedule(cron="0 2 * * *", timezone="Europe/Berlin")
    after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert next_slot(berlin, after).astimezone(UTC) == datetime(2026, 7, 2, 0, 0, tzinfo=UTC)  # CEST: UTC+2
    assert latest_slot(berlin, after).astimezone(UTC) == datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    exact = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    assert latest_slot(berlin, exact).astimezone(UTC) == exact  # a schedule time is its own latest
    just_after = exact.replace(microsecond=912014)  # a tick in the schedule time's first second
    assert latest_slot(berlin, just_after).astimezone(UTC) == exact


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"cron": "* * * *"}, "is not a cron expression of five fields"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "is not a known time zone"),
    ],
)
def test_a_bad_schedule_is_refused(schedule: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Policy.model_validate(BASE | {"schedule": schedule})


def test_backup_options_are_a_backup_configs() -> None:
    policy = Policy.model_validate(BASE | {"backup": {"keepDaily": 7, "pruneAfterBackup": True}})
    config = policy.backup_config("web01", "/srv/repo", "image", {"vms": {}})
    assert (config.keep_daily, config.prune_after_backup, config.vm_id) == (7, True, "web01")
    with pytest.raises(ValidationError, match="backup.keepDialy"):
        Policy.model_validate(BASE | {"backup": {"keepDialy": 7}})
    with pytest.raises(ValidationError, match="backup.backupPath: set by the policy itself"):
        Policy.model_validate(BASE | {"backup": {"backupPath": "/elsewhere"}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Policy.model_validate(BASE | {"shedule": {}})


def test_vms_by_name_glob_and_exclusion() -> None:
    listed = [VMRef(n, n) for n in ("web01", "web02", "web-test", "db01")]
    assert Policy.model_validate(BASE).select(listed) == ["db01", "web-test", "web01", "web02"]
    assert Policy.model_validate(BASE | {"vms": ["web*"], "exclude": ["*-test"]}).select(listed) == ["web01", "web02"]
    assert Policy.model_validate(BASE | {"vms": ["db01", "nope"]}).select(listed) == ["db01"]


def test_verify_and_prune_schedules() -> None:
    policy = Policy.model_validate(
        BASE
        | {
            "verify": {"cron": "0 4 * * 0", "read_data": True},
            "prune": {"cron": "0 5 * * *"},
            "backup": {"keepLast": 3},
        }
    )
    assert list(policy.schedules()) == ["backup", "verify", "prune"]
    assert policy.verify is not None and policy.verify.read_data
    assert list(Policy.model_validate(BASE).schedules()) == ["backup"]
    with pytest.raises(ValidationError, match="prune: needs a keep rule in backup"):
        Policy.model_validate(BASE | {"prune": {"cron": "0 5 * * *"}})
