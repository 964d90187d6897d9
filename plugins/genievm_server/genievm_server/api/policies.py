"""Policies: create, list, show, replace, enable, disable, run now, delete; and the runs they made."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from genievm_server.api.deps import SchedulerDep, ServiceDep, needs
from genievm_server.errors import InvalidRequestError, UnknownNameError
from genievm_server.policy import Policy
from genievm_server.service import Service
from genievm_server.store import PolicyRow

router = APIRouter(prefix="/policies")


def _check_names(policy: Policy, service: Service) -> None:
    """A policy names a provider and a repository of the settings, and a provider plugin that is installed."""
    if policy.repository not in service.settings.repositories:
        raise UnknownNameError(f"policy {policy.name}: no repository {policy.repository} in the server's settings")
    plugin = service.provider(policy.provider).plugin
    service.genievm.host.providers.get(plugin)  # PluginError when it is not installed


def _json(row: PolicyRow) -> dict[str, Any]:
    return asdict(row) | {"spec": row.spec | {"enabled": row.enabled}}


@router.get("", summary="every policy", **needs("read-only"))
def policies(service: ServiceDep) -> list[dict[str, Any]]:
    return [_json(row) for row in service.store.policies()]


@router.post("", status_code=201, summary="create a policy", **needs("admin"))
def create(policy: Policy, service: ServiceDep, scheduler: SchedulerDep) -> dict[str, Any]:
    _check_names(policy, service)
    row = service.store.add_policy(policy.name, policy.model_dump(mode="json", exclude={"enabled"}), policy.enabled)
    scheduler.wake()
    return _json(row)


@router.get("/{name}", summary="one policy", **needs("read-only"))
def show(name: str, service: ServiceDep) -> dict[str, Any]:
    return _json(service.store.policy(name))


@router.put("/{name}", summary="replace a policy", **needs("admin"))
def replace(name: str, policy: Policy, service: ServiceDep, scheduler: SchedulerDep) -> dict[str, Any]:
    if policy.name != name:
        raise InvalidRequestError(f"invalid request: name: {policy.name!r} is not the policy's name {name!r}")
    _check_names(policy, service)
    row = service.store.replace_policy(name, policy.model_dump(mode="json", exclude={"enabled"}), policy.enabled)
    scheduler.wake()
    return _json(row)


@router.delete("/{name}", status_code=204, summary="delete a policy (its backups stay)", **needs("admin"))
def delete(name: str, service: ServiceDep) -> None:
    service.store.delete_policy(name)


@router.post("/{name}/enable", summary="run the policy on its schedule", **needs("operator"))
def enable(name: str, service: ServiceDep, scheduler: SchedulerDep) -> dict[str, Any]:
    row = service.store.set_enabled(name, True)
    scheduler.wake()
    return _json(row)


@router.post("/{name}/disable", summary="stop running the policy on its schedule", **needs("operator"))
def disable(name: str, service: ServiceDep) -> dict[str, Any]:
    return _json(service.store.set_enabled(name, False))


@router.post("/{name}/run-now", status_code=202, summary="queue a backup of each of its VMs now", **needs("operator"))
def run_now(name: str, scheduler: SchedulerDep) -> list[dict[str, Any]]:
    return [asdict(run) for run in scheduler.run_now(name)]


@router.get("/{name}/runs", summary="the runs the policy made, newest first", **needs("read-only"))
def runs(name: str, service: ServiceDep, limit: int = 100) -> list[dict[str, Any]]:
    service.store.policy(name)
    return [asdict(run) for run in service.store.runs(policy=name, limit=limit)]
