"""``genievm worker``: run a worker (a Celery worker over the job queues); ``genievm jobs submit``: queue a
backup, restore, verify or prune for the workers. Celery is imported only when a worker starts or a job is
sent, so ``genievm jobs --help`` stays quick."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genievm_core.api import BackupConfig, RestoreConfig, RetentionPolicy
from genievm_core.cli.common import ConfigFileOption, PassphraseFileOption, ProviderOptionOption, err_console, state
from genievm_core.cli.common import provider_options as with_provider_options
from genievm_core.errors import ConfigError
from genievm_core.models.config import load_config
from genievm_worker.settings import DEFAULT_LEASE, DEFAULT_VISIBILITY, WorkerSettings, broker_url, db_url

__all__ = ["submit_app", "worker_app"]

worker_app = typer.Typer(help="Run a GenieVM worker: jobs from the Celery queues (Redis), on this host.")
submit_app = typer.Typer(help="Queue a job for the workers (genievm worker) and print its id.", no_args_is_help=True)

BrokerOption = Annotated[
    str | None, typer.Option("--broker", help="Redis URL (default $GENIEVM_BROKER_URL or redis://127.0.0.1:6379/0)")
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="the shared job state, a SQLAlchemy URL (default $GENIEVM_WORKER_DB or the server's)"),
]
QueueOption = Annotated[str | None, typer.Option("--queue", help="the queue (default: the provider's name)")]
CapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cap", metavar="NAME=N",
        help="at most N such jobs at once across workers: repository=N, host:NAME=N, datastore:NAME=N (repeatable)",
    ),
]  # fmt: skip


@worker_app.callback(invoke_without_command=True)
def worker(
    ctx: typer.Context,
    queues: Annotated[str | None, typer.Option(help="queues to take jobs from, comma-separated (default: the "
                                                    "installed providers' names)")] = None,  # fmt: skip
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="jobs at once", metavar="N")] = 2,
    broker: BrokerOption = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(help="this worker's name (default genievm@HOST)")] = None,
    passphrase_file: PassphraseFileOption = None,
    lease: Annotated[float, typer.Option(min=1, max=3600, help="seconds a dead worker's job and VM stay taken",
                                         metavar="SECONDS")] = DEFAULT_LEASE,  # fmt: skip
    visibility_timeout: Annotated[
        float, typer.Option(min=1, max=7 * 86400, help="seconds before an unacknowledged job is handed out again",
                            metavar="SECONDS")  # fmt: skip
    ] = DEFAULT_VISIBILITY,
) -> None:
    """Take jobs from the queues and run them, as the CLI would, until stopped (SIGTERM: after the running ones)."""
    from genievm_worker.runner import WorkerRuntime
    from genievm_worker.tasks import make_app, runtime

    st = state(ctx)
    settings = WorkerSettings(
        broker=broker_url(broker), database=db_url(db, st.job_db), name=name or f"genievm@{socket.gethostname()}",
        concurrency=concurrency, lease=lease, visibility_timeout=visibility_timeout, passphrase_file=passphrase_file,
        job_db=st.job_db,
    )  # fmt: skip
    work = runtime(WorkerRuntime(settings))
    chosen = [q.strip() for q in queues.split(",") if q.strip()] if queues else sorted(work.providers)
    if not chosen:
        raise ConfigError("invalid configuration: --queues: none given and no provider installed")
    app = make_app(settings.broker, visibility_timeout=settings.visibility_timeout)
    err_console.print(f"genievm: worker {settings.name} on queues {', '.join(chosen)}", highlight=False)
    try:
        app.worker_main(
            ["worker", "-Q", ",".join(chosen), "-c", str(concurrency), "-P", "threads", "-n", settings.name,
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
        )  # fmt: skip
    finally:
        work.close()


def _shared(ctx: typer.Context, db: str | None) -> Any:
    from genievm_worker.state import SharedJobs

    return SharedJobs(db_url(db, state(ctx).job_db))


def _caps(values: list[str] | None) -> dict[str, int]:
    caps = {}
    for value in values or []:
        name, sep, number = value.rpartition("=")
        if not sep or not name or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"invalid configuration: --cap: {value!r} is not NAME=N (N at least 1)")
        caps[name] = int(number)
    return caps


def _repo(value: str | None) -> str | None:
    """A repository path made absolute: a worker elsewhere (or in another folder) reads the same one."""
    if value is None or "://" in value:
        return value
    return str(Path(value).resolve())


def _queue(ctx: typer.Context, db: str | None, broker: str | None, spec: dict[str, Any], queue: str | None) -> None:
    from genievm_worker.submit import submit

    shared = _shared(ctx, db)
    try:
        job_id, used = submit(shared, broker_url(broker), spec, queue)
    finally:
        shared.close()
    err_console.print(f"genievm: job {job_id} ({spec['description']}) queued on {used}", highlight=False)
    sys.stdout.write(job_id + "\n")


@submit_app.command("backup")
def submit_backup(
    ctx: typer.Context,
    config_file: ConfigFileOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM id or name (vmId)", metavar="VM")] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="repository path or URL", metavar="URL")] = None,
    provider: Annotated[str | None, typer.Option(help="provider plugin (default image)", metavar="NAME")] = None,
    disk: Annotated[list[str] | None, typer.Option("--disk", help="image provider: NAME=PATH (repeatable)",
                                                   metavar="NAME=PATH")] = None,  # fmt: skip
    provider_option: ProviderOptionOption = None,
    queue: QueueOption = None,
    cap: CapOption = None,
    broker: BrokerOption = None,
    db: DbOption = None,
) -> None:
    """Queue a backup (the options of genievm backup); a worker on its queue runs it."""
    config = load_config(BackupConfig, path=config_file, overrides={"vm_id": vm, "backup_path": _repo(repo),
                                                                    "provider": provider})  # fmt: skip
    options = with_provider_options(config.provider_options, provider_option)
    if disk:
        pairs = dict(d.partition("=")[::2] for d in disk)
        if any(not k or not v for k, v in pairs.items()):
            raise ConfigError("invalid configuration: --disk: give NAME=PATH")
        vms = {**options.get("vms", {}), config.vm_id: {k: str(Path(v).resolve()) for k, v in pairs.items()}}
        options = {**options, "vms": vms}
    config = config.model_copy(update={"provider_options": options, "backup_path": _repo(config.backup_path)})
    from genievm_worker.submit import backup_spec

    _queue(ctx, db, broker, backup_spec(config, _caps(cap)), queue)


@submit_app.command("restore")
def submit_restore(
    ctx: typer.Context,
    config_file: ConfigFileOption = None,
    vm: Annotated[str | None, typer.Option("--vm", help="VM whose backup is restored", metavar="VM")] = None,
    backup_id: Annotated[str | None, typer.Option("--backup", help="backup id or 'latest'", metavar="ID")] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="repository path or URL", metavar="URL")] = None,
    target: Annotated[Path | None, typer.Option("--target", help="folder to restore into (restorePath)",
                                                metavar="DIR")] = None,  # fmt: skip
    provider: Annotated[str | None, typer.Option(help="provider plugin (default image)", metavar="NAME")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing target")] = False,
    queue: QueueOption = None,
    cap: CapOption = None,
    broker: BrokerOption = None,
    db: DbOption = None,
) -> None:
    """Queue a restore (the options of genievm restore); a worker on its queue runs it."""
    overrides = {"vm_id": vm, "backup_id": backup_id, "backup_path": _repo(repo), "provider": provider,
                 "restore_path": target.resolve() if target else None, "force": True if force else None}  # fmt: skip
    config = load_config(RestoreConfig, path=config_file, overrides=overrides)
    from genievm_worker.submit import restore_spec

    _queue(ctx, db, broker, restore_spec(config, _caps(cap)), queue)


@submit_app.command("verify")
def submit_verify(
    ctx: typer.Context,
    repo: Annotated[str, typer.Option("--repo", help="repository path or URL", metavar="URL")],
    vm: Annotated[str | None, typer.Option("--vm", help="only this VM's backup", metavar="VM")] = None,
    backup_id: Annotated[str, typer.Option("--backup", help="backup id or 'latest'", metavar="ID")] = "latest",
    read_data: Annotated[bool, typer.Option("--read-data", help="read and check every chunk")] = False,
    queue: Annotated[str, typer.Option("--queue", help="the queue")] = "genievm",
    broker: BrokerOption = None,
    db: DbOption = None,
) -> None:
    """Queue a verify of a repository's backups (all, or one VM's)."""
    from genievm_worker.submit import verify_spec

    _queue(ctx, db, broker, verify_spec(_repo(repo) or repo, vm, backup_id, read_data=read_data), queue)


@submit_app.command("prune")
def submit_prune(
    ctx: typer.Context,
    repo: Annotated[str, typer.Option("--repo", help="repository path or URL", metavar="URL")],
    keep_last: Annotated[int | None, typer.Option(min=1, max=1_000_000, metavar="N", help="keep the N newest")] = None,
    vm: Annotated[list[str] | None, typer.Option("--vm", help="only these VMs (repeatable)", metavar="VM")] = None,
    queue: Annotated[str, typer.Option("--queue", help="the queue")] = "genievm",
    broker: BrokerOption = None,
    db: DbOption = None,
) -> None:
    """Queue a prune (keep rules, then garbage collection; no rule: garbage collection alone)."""
    from genievm_worker.submit import prune_spec

    _queue(ctx, db, broker, prune_spec(_repo(repo) or repo, RetentionPolicy(keep_last=keep_last), vm), queue)




