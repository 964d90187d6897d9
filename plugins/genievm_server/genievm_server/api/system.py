"""Health (no token), the installed plugins, and the providers the server's settings name."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from genievm_server.api.deps import ServiceDep, needs

router = APIRouter()


@router.get("/health", summary="whether the server answers (no token needed)")
def health(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ok", "database": service.store.engine.dialect.name}


@router.get("/plugins", summary="the installed plugins and what each registers", **needs("read-only"))
def plugins(service: ServiceDep) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(info).items() if k != "options"} for info in service.genievm.host.plugins()]


@router.get(
    "/providers", summary="the providers of the server's settings (their options are never shown)", **needs("read-only")
)
def providers(service: ServiceDep) -> list[dict[str, Any]]:
    return [{"name": name, "plugin": p.plugin} for name, p in sorted(service.settings.providers.items())]


@router.get("/providers/{provider}/vms", summary="the VMs a provider lists", **needs("read-only"))
def vms(provider: str, service: ServiceDep) -> list[dict[str, Any]]:
    return [{"id": vm.id, "name": vm.name, "state": vm.state} for vm in service.list_vms(provider)]
