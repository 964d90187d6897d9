"""Jobs: list and show (with per-disk progress), start a backup, restore or verify, pause, resume, cancel,
and follow one's progress as server-sent events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from genievm_core.jobs import JobState
from genievm_server.api.deps import ServiceDep, needs

router = APIRouter(prefix="/jobs")
EVENT_INTERVAL = 0.5  # seconds between two looks at a followed job


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackupRequest(_Request):
    provider: str = Field(description="a provider of the server's settings")
    vm: str
    repository: str = Field(description="a repository of the server's settings")
    options: dict[str, Any] = Field(default_factory=dict, description="backup options (BackupConfig), e.g. incremental")


class RestoreRequest(_Request):
    repository: str
    vm: str
    backup: str = "latest"
    provider: str | None = Field(
        default=None, description="restore into this provider; none: raw images in restorePath"
    )
    restore_path: str | None = Field(default=None, description="a folder under the server's restore_root")
    new_vm_name: str | None = None
    force: bool = False
    verify: bool = True


class VerifyRequest(_Request):
    repository: str
    vm: str | None = None
    backup: str = "latest"
    read_data: bool = False


@router.get("", summary="jobs, newest first", **needs("read-only"))
def jobs(
    service: ServiceDep,
    state: list[JobState] = Query(default=[]),  # noqa: B008
    limit: int = Query(default=50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return [record.to_json() for record in service.jobs(tuple(state), limit)]


@router.get("/{job_id}", summary="one job, with each disk's progress", **needs("read-only"))
def job(job_id: str, service: ServiceDep) -> dict[str, Any]:
    return service.job(job_id).to_json()


@router.get(
    "/{job_id}/events",
    summary="the job's progress as server-sent events, until it ends",
    response_class=StreamingResponse,
    **needs("read-only"),
)
def events(job_id: str, service: ServiceDep) -> StreamingResponse:
    first = service.job(job_id)  # an unknown job is a 404 before the stream starts

    def stream() -> Iterator[str]:
        record, last = first, ""
        while True:
            data = json.dumps(record.to_json())
            if data != last:
                yield f"event: {'end' if record.finished else 'progress'}\ndata: {data}\n\n"
                last = data
            if record.finished:
                return
            time.sleep(EVENT_INTERVAL)
            record = service.job(record.id)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/backup", status_code=202, summary="start a backup of one VM", **needs("operator"))
def backup(request: BackupRequest, service: ServiceDep) -> dict[str, Any]:
    job = service.start_backup(request.provider, request.vm, request.repository, request.options)
    return service.job(job.id).to_json()


@router.post("/restore", status_code=202, summary="start a restore of a backup", **needs("operator"))
def restore(request: RestoreRequest, service: ServiceDep) -> dict[str, Any]:
    job = service.start_restore(
        request.repository,
        request.vm,
        request.backup,
        provider=request.provider,
        restore_path=request.restore_path,
        new_vm_name=request.new_vm_name,
        force=request.force,
        verify=request.verify,
    )
    return service.job(job.id).to_json()


@router.post(
    "/verify", status_code=202, summary="start a verify of a backup (every backup: no vm)", **needs("operator")
)
def verify(request: VerifyRequest, service: ServiceDep) -> dict[str, Any]:
    job = service.start_verify(request.repository, request.vm, request.backup, read_data=request.read_data)
    return service.job(job.id).to_json()


@router.post("/{job_id}/{action}", summary="pause, resume or cancel a job", **needs("operator"))
def act(job_id: str, action: Literal["pause", "resume", "cancel"], service: ServiceDep) -> dict[str, Any]:
    return service.request(job_id, action).to_json()
