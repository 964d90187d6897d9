"""``genievm jobs``: the job registry: list, show, watch, and pause, resume, cancel or limit a job another process
runs."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Column, Table

from genievm_core.choices import MAX_COUNT, MAX_SECONDS
from genievm_core.cli.common import JsonOption, emit_json, err_console, human_size, out_console, state
from genievm_core.cli.extra import JOBS_COMMANDS_GROUP, load_plugin_command, plugin_commands
from genievm_core.engine.limits import describe_rate
from genievm_core.errors import ConfigError
from genievm_core.jobs import JobRecord, JobRegistry, JobState
from genievm_core.models.config import MAX_MBPS

app = typer.Typer(help="List, show, watch, pause, resume, cancel and limit jobs.", no_args_is_help=True)

JobIdArgument = Annotated[str, typer.Argument(help="job id (or a prefix that names one job)")]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        max=MAX_SECONDS,
        help="seconds to wait for the job's process to act on the request",
        metavar="SECONDS",
    ),
]
_TARGET = {"pause": {JobState.PAUSED}, "resume": {JobState.RUNNING}, "cancel": {JobState.CANCELLED}}


def _registry(ctx: typer.Context) -> JobRegistry:
    registry = state(ctx).registry
    registry.sweep_stale()  # a job whose process died is shown failed, not running
    return registry


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state_filter: Annotated[
        list[JobState] | None, typer.Option("--state", help="only jobs in this state (repeatable)", metavar="STATE")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="at most this many, newest first", metavar="N")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Jobs of this host, and of the workers (genievm-worker), running and past, newest first."""
    records = state(ctx).jobs(state_filter or (), limit=limit)
    if json_output:
        emit_json([r.to_json() for r in records])
        return
    table = Table(Column("job", no_wrap=True), "kind", "state", "what", "started", "progress", "error")
    for r in records:
        started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-"
        table.add_row(r.id, r.kind, r.state.value, r.description, started, _percent(r), r.error or "")
    out_console.print(table)


@app.command("show")
def show(ctx: typer.Context, job_id: JobIdArgument, json_output: JsonOption = False) -> None:
    """One job: state, times, error, result and the progress of each disk."""
    record = state(ctx).job(job_id)
    if json_output:
        emit_json(record.to_json())
        return
    phase = f" ({record.phase})" if record.phase and not record.finished else ""
    out_console.print(
        f"job {record.id}: {record.kind}, {record.description}, {record.state.value}{phase}", highlight=False
    )
    out_console.print(f"  process {record.pid} on {record.host}", highlight=False)
    for label, when in (("created", record.created_at), ("started", record.started_at), ("ended", record.finished_at)):
        if when is not None:
            out_console.print(f"  {label} {when.astimezone():%Y-%m-%d %H:%M:%S %Z}", highlight=False)
    if record.limits and not record.finished:
        out_console.print(f"  limits: {_limits(record)}", highlight=False)
    if record.requested:
        out_console.print(f"  requested: {record.requested}", highlight=False)
    if record.error:
        out_console.print(f"  error (exit {record.exit_code}): {record.error}", highlight=False)
    if record.disks:
        table = Table("disk", "total", "scanned", "read", "stored", "deduplicated", "zero", "done")
        for d in record.disks:
            sizes = [human_size(v) for v in (d.total, d.scanned, d.read, d.stored, d.deduplicated, d.zero)]
            table.add_row(d.disk, *sizes, "yes" if d.done else "no")
        out_console.print(table)
    if record.result:
        out_console.print(f"  result: {json.dumps(record.result, default=str)}", highlight=False, soft_wrap=True)


def _request(
    ctx: typer.Context, job_id: str, action: Literal["pause", "resume", "cancel"], wait: float, json_output: bool
) -> None:
    st = state(ctx)
    record = st.job(job_id)  # a job whose process died is shown failed, not asked to stop
    record = st.request(record.id, action)
    deadline = time.monotonic() + wait
    while record.state not in _TARGET[action] and not record.finished and time.monotonic() < deadline:
        time.sleep(0.1)
        record = st.job(record.id)
    if json_output:
        emit_json(record.to_json())
    elif record.state in _TARGET[action] or record.finished:
        out_console.print(f"job {record.id} is {record.state.value}", highlight=False)
    else:
        out_console.print(
            f"job {record.id} is {record.state.value}; its process has not acted on the request yet", highlight=False
        )


@app.command("pause")
def pause(ctx: typer.Context, job_id: JobIdArgument, wait: WaitOption = 10.0, json_output: JsonOption = False) -> None:
    """Pause a running job between chunks (its process keeps its locks and point in time)."""
    _request(ctx, job_id, "pause", wait, json_output)


@app.command("resume")
def resume(ctx: typer.Context, job_id: JobIdArgument, wait: WaitOption = 10.0, json_output: JsonOption = False) -> None:
    """Resume a paused job."""
    _request(ctx, job_id, "resume", wait, json_output)


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobIdArgument, wait: WaitOption = 10.0, json_output: JsonOption = False) -> None:
    """Cancel a job: it stops at the next chunk and commits nothing."""
    _request(ctx, job_id, "cancel", wait, json_output)


@app.command("limit")
def limit(
    ctx: typer.Context,
    job_id: JobIdArgument,
    read: Annotated[
        float | None,
        typer.Option("--read", min=0, max=MAX_MBPS, metavar="MBPS", help="read at most this many MB/s; 0: no limit"),
    ] = None,
    write: Annotated[
        float | None,
        typer.Option(
            "--write", min=0, max=MAX_MBPS, metavar="MBPS", help="write at most this many MB/s; 0: no limit"
        ),
    ] = None,
    wait: WaitOption = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Change the bandwidth limits of a job while it runs (what it reads from its source, writes to its target)."""
    if read is None and write is None:
        raise ConfigError("invalid configuration: jobs limit: give --read MBPS, --write MBPS or both")
    st = state(ctx)
    record = st.limit(st.job(job_id).id, read=read, write=write)
    wanted = {k: (v or None) for k, v in (("read", read), ("write", write)) if v is not None}
    deadline = time.monotonic() + wait
    while not _applied(record, wanted) and not record.finished and time.monotonic() < deadline:
        time.sleep(0.1)
        record = st.job(record.id)
    if json_output:
        emit_json(record.to_json())
    elif _applied(record, wanted):
        out_console.print(f"job {record.id}: {_limits(record)}", highlight=False)
    else:
        out_console.print(
            f"job {record.id} is {record.state.value}; its process has not applied the limits yet", highlight=False
        )


def _applied(record: JobRecord, wanted: dict[str, float | None]) -> bool:
    return record.limits is not None and all(record.limits.get(k) == v for k, v in wanted.items())


def _limits(record: JobRecord) -> str:
    limits = record.limits or {}
    return f"read {describe_rate(limits.get('read'))}, write {describe_rate(limits.get('write'))}"


@app.command("watch")
def watch(
    ctx: typer.Context,
    job_id: JobIdArgument,
    interval: Annotated[
        float, typer.Option(min=0.05, max=3600, help="seconds between looks at the registry", metavar="SECONDS")
    ] = 0.5,
    json_output: JsonOption = False,
) -> None:
    """Follow a job until it ends: progress bars on a terminal, else a line per change (JSON lines with --json)."""
    registry = _registry(ctx)
    record = registry.get(job_id)
    if json_output or not err_console.is_terminal:
        _watch_lines(registry, record, interval, json_output)
    else:
        _watch_bars(registry, record, interval)
    record = registry.get(record.id)
    if not json_output:
        error = f": {record.error}" if record.error else ""
        out_console.print(f"job {record.id} {record.state.value}{error}", highlight=False)


def _watch_lines(registry: JobRegistry, record: JobRecord, interval: float, json_output: bool) -> None:
    last = None
    while True:
        line = json.dumps(record.to_json(), default=str) if json_output else _line(record)
        if line != last:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last = line
        if record.finished:
            return
        time.sleep(interval)
        record = _refresh(registry, record.id)


def _watch_bars(registry: JobRegistry, record: JobRecord, interval: float) -> None:
    bars = Progress(
        TextColumn("[bold]{task.fields[disk]}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[state]}"),
        console=err_console.get(),
    )
    tasks: dict[str, TaskID] = {}
    with bars:
        while True:
            for d in record.disks:
                if d.disk not in tasks:
                    tasks[d.disk] = bars.add_task(d.disk, total=d.total, disk=d.disk, state="")
                bars.update(tasks[d.disk], completed=d.scanned, total=d.total, state=record.state.value)
            if record.finished:
                return
            time.sleep(interval)
            record = _refresh(registry, record.id)


def _refresh(registry: JobRegistry, job_id: str) -> JobRecord:
    """The job now; one whose process died meanwhile is marked failed, so watching it ends."""
    registry.sweep_stale()
    return registry.get(job_id)


def _line(record: JobRecord) -> str:
    disks = ", ".join(
        f"{d.disk} {human_size(d.scanned)} of {human_size(d.total)}{' done' if d.done else ''}" for d in record.disks
    )
    return f"job {record.id} {record.state.value} {_percent(record)}" + (f": {disks}" if disks else "")


def _percent(record: JobRecord) -> str:
    total = sum(d.total for d in record.disks)
    if not total:
        return "-"
    return f"{100 * sum(d.scanned for d in record.disks) / total:.0f}%"


_BUILTIN = frozenset({"list", "show", "watch", "pause", "resume", "cancel", "limit"})


def _add_plugin_commands() -> None:
    """The subcommands other distributions add (``genievm jobs submit`` from genievm-worker), through the
    ``genievm.jobs.commands`` entry points; the built-in ones are never replaced."""
    for name in plugin_commands(_BUILTIN, JOBS_COMMANDS_GROUP):
        target = load_plugin_command(name, JOBS_COMMANDS_GROUP)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)


_add_plugin_commands()
