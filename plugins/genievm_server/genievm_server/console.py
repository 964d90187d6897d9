"""The web console under ``/console``: a dashboard, jobs with live progress per disk, a VM's backups with a
restore form (to a folder, as a new VM, or single files of its guest filesystem), policies. Server-rendered
pages (Jinja2) that work without JavaScript; a few lines of it refresh the jobs table while jobs run.

A browser logs in with an API token: ``POST /console/login`` (the one route, besides health, that needs no
token: it takes one) keeps it in an HttpOnly, SameSite=Strict cookie for ``/console`` only, so the API
routes never accept it. Each page states its role as the API's routes do.
"""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from genievm_core.errors import GenieVMError
from genievm_core.jobs import JobRecord
from genievm_core.repository.stats import repository_stats
from genievm_server import files
from genievm_server.api.deps import COOKIE, ROLE_KEY, ServiceDep, needs
from genievm_server.errors import InvalidRequestError, NotAuthenticatedError, UnknownNameError
from genievm_server.policy import Policy
from genievm_server.service import Service

__all__ = ["CONSOLE", "router", "templates"]

CONSOLE = "/console"
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(prefix=CONSOLE, tags=["console"])
_HTML: dict[str, Any] = {"response_class": HTMLResponse}


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode(errors="replace")
    return {key: values[-1] for key, values in parse_qs(body).items()}


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _age(then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


templates.env.filters["size"] = _size
templates.env.filters["age"] = _age


@router.post(
    "/login",
    summary="log the browser in with an API token (kept in a cookie)",
    **_HTML,
    openapi_extra={ROLE_KEY: "none"},
)
async def login(request: Request, service: ServiceDep) -> Response:
    token = (await _form(request)).get("token", "").strip()
    if not token or service.store.authenticate(token) is None:
        raise NotAuthenticatedError("the API token is not known to this server (revoked, or mistyped)")
    response = RedirectResponse(f"{CONSOLE}/", status_code=303)
    response.set_cookie(
        COOKIE, token, path=CONSOLE, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.get("/logout", summary="forget the browser's token", **_HTML, **needs("read-only"))
def logout() -> Response:
    response = RedirectResponse(f"{CONSOLE}/", status_code=303)
    response.delete_cookie(COOKIE, path=CONSOLE)
    return response


@router.get(
    "/", summary="dashboard: each VM's last backup, failures first; repository usage", **_HTML, **needs("read-only")
)
def dashboard(request: Request, service: ServiceDep) -> HTMLResponse:
    repositories, vms = [], {}
    for name in sorted(service.settings.repositories):
        try:
            repo = service.repository(name)
            stats = repository_stats(repo)
            repositories.append({"name": name, "stats": stats, "last_gc": service.last_gc(name), "error": None})
            for manifest in repo.manifests():
                vms[manifest.vm.id] = {
                    "vm": manifest.vm.id,
                    "repository": name,
                    "last": manifest.finished_at,
                    "backup_id": manifest.backup_id,
                    "state": "succeeded",
                    "error": None,
                }
        except GenieVMError as exc:
            repositories.append({"name": name, "stats": None, "error": str(exc)})
    for record in reversed(service.jobs(limit=500)):  # oldest first: the newest backup job of a VM wins
        if record.kind == "backup" and record.vm:
            row = vms.setdefault(record.vm, {"vm": record.vm, "repository": None, "last": None, "backup_id": None})
            row.update(state=record.state.value, error=record.error)
    rows = sorted(vms.values(), key=lambda r: (r["state"] != "failed", r["last"] or datetime.min.replace(tzinfo=UTC)))
    return _page(request, "dashboard.html", vms=rows, repositories=repositories)


def _job_rows(service: Service) -> list[JobRecord]:
    return list(service.jobs(limit=30))


@router.get("/jobs", summary="jobs with each disk's progress; a form to start a backup", **_HTML, **needs("read-only"))
def jobs(request: Request, service: ServiceDep) -> HTMLResponse:
    choices = []
    for provider in sorted(service.settings.providers):
        try:
            choices += [(provider, vm.name or vm.id) for vm in service.list_vms(provider)]
        except GenieVMError:
            continue
    return _page(
        request,
        "jobs.html",
        jobs=_job_rows(service),
        choices=choices,
        repositories=sorted(service.settings.repositories),
    )


@router.get("/jobs/rows", summary="the jobs table alone (what the jobs page refreshes)", **_HTML, **needs("read-only"))
def job_rows(request: Request, service: ServiceDep) -> HTMLResponse:
    return _page(request, "job_rows.html", jobs=_job_rows(service))


@router.post("/jobs/backup", summary="start a backup from the jobs page's form", **_HTML, **needs("operator"))
async def start_backup(request: Request, service: ServiceDep) -> Response:
    form = await _form(request)
    provider, _, vm = form.get("vm", "").partition("/")
    service.start_backup(provider, vm, form.get("repository", ""))
    return RedirectResponse(f"{CONSOLE}/jobs", status_code=303)


@router.post("/jobs/{job_id}/cancel", summary="cancel a job from the jobs page", **_HTML, **needs("operator"))
def cancel(job_id: str, service: ServiceDep) -> Response:
    service.request(job_id, "cancel")
    return RedirectResponse(f"{CONSOLE}/jobs", status_code=303)


@router.get("/backups", summary="a VM's backups, with a restore form", **_HTML, **needs("read-only"))
def backups(request: Request, service: ServiceDep, repository: str, vm: str) -> HTMLResponse:
    repo = service.repository(repository)
    found = service.genievm.backups(repo, vm) or [m for m in repo.manifests() if m.vm.name == vm]  # an id or a name
    return _page(
        request,
        "backups.html",
        repository=repository,
        vm=vm,
        backups=list(reversed(found)),
        restore_root=service.settings.restore_root,
        providers=sorted(name for name, p in service.settings.providers.items() if p.plugin != "image"),
        file_restore=files.available(),
    )


@router.post("/restore", summary="start a restore from a VM's backups page", **_HTML, **needs("operator"))
async def restore(request: Request, service: ServiceDep) -> Response:
    """To a folder under the restore_root; or, given a provider, as a new VM there (its disks in that folder)."""
    form = await _form(request)
    service.start_restore(
        form.get("repository", ""),
        form.get("vm", ""),
        form.get("backup", "latest"),
        provider=form.get("provider") or None,
        restore_path=form.get("restore_path", ""),
        new_vm_name=form.get("new_vm_name") or None,
        force=False,
        verify=True,
    )
    return RedirectResponse(f"{CONSOLE}/jobs", status_code=303)


@router.get(
    "/files", summary="a folder of a backup's guest filesystem, to restore files from", **_HTML, **needs("read-only")
)
def guest_files(
    request: Request, service: ServiceDep, repository: str, vm: str, backup: str, path: str = "/"
) -> HTMLResponse:
    folder = files.list_folder(service, repository, vm, backup, path)
    return _page(
        request,
        "files.html",
        repository=repository,
        vm=vm,
        backup=backup,
        folder=folder,
        parent=posixpath.dirname(folder["path"].rstrip("/")) or "/",
        restore_root=service.settings.restore_root,
    )


@router.post(
    "/files/restore", summary="start restoring the files chosen on a folder's page", **_HTML, **needs("operator")
)
async def restore_files(request: Request, service: ServiceDep) -> Response:
    form = await _form(request)
    chosen = parse_qs((await request.body()).decode(errors="replace")).get("path", [])
    if not chosen:
        raise InvalidRequestError("invalid request: path: choose at least one file or folder")
    files.start_extract(
        service,
        form.get("repository", ""),
        form.get("vm", ""),
        form.get("backup", ""),
        chosen,
        form.get("restore_path", ""),
    )
    return RedirectResponse(f"{CONSOLE}/jobs", status_code=303)


@router.get("/policies", summary="policies: enable, disable, run now", **_HTML, **needs("read-only"))
def policies(request: Request, service: ServiceDep) -> HTMLResponse:
    rows = [(row, Policy.model_validate(row.spec)) for row in service.store.policies()]
    return _page(request, "policies.html", policies=rows)


@router.post("/policies/{name}/{action}", summary="enable, disable or run a policy now", **_HTML, **needs("operator"))
def policy_action(request: Request, name: str, action: str, service: ServiceDep) -> Response:
    if action == "run-now":
        request.app.state.scheduler.run_now(name)
    elif action in ("enable", "disable"):
        service.store.set_enabled(name, action == "enable")
        request.app.state.scheduler.wake()
    else:
        raise UnknownNameError(f"no policy action {action} (enable, disable, run-now)")
    return RedirectResponse(f"{CONSOLE}/policies", status_code=303)


def error_page(request: Request, exc: GenieVMError, status: int) -> HTMLResponse:
    """A console page's error: the login form when there is no valid token, else the error's one line."""
    name = "login.html" if status == 401 else "error.html"
    return _page(request, name, status, message=str(exc), code=type(exc).__name__)
