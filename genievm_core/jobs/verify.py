"""Verification of backups by the registered verifiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genievm_core.engine import JobControl
from genievm_core.jobs.job import Job
from genievm_core.jobs.repository_checks import check_backup_log, check_objects
from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import VerifierWithOptions, VerifyReport
from genievm_core.repository import Repository

__all__ = ["VerifyJob", "run_verify"]


class VerifyJob(Job):
    """The verifiers over some backups; the reports are in ``reports`` (a problem does not fail the job)."""

    kind = "verify"

    def __init__(
        self,
        host: PluginHost,
        repo: Repository,
        manifests: list[BackupManifest],
        *,
        read_data: bool = False,
        whole_repository: bool = False,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        vms = sorted({m.vm.id for m in manifests})
        flags = (" --read-data" if read_data else "") + "".join(f" --{name}" for name in extra or {})
        super().__init__(
            description=f"verify{flags} of {len(manifests)} backups",
            vm=",".join(vms) or None,
            repository=repo.url,
        )
        self.host = host
        self.repo = repo
        self.manifests = manifests
        self.read_data = read_data
        self.whole_repository = whole_repository
        self.extra = dict(extra or {})
        self.reports: list[VerifyReport] = []

    def execute(self) -> dict[str, Any]:
        self.reports = run_verify(
            self.host,
            self.repo,
            self.manifests,
            read_data=self.read_data,
            control=self.control,
            whole_repository=self.whole_repository,
            extra=self.extra,
        )
        return {
            "backups": len(self.manifests),
            "checked": sum(r.checked for r in self.reports),
            "problems": sum(len(r.problems) for r in self.reports),
        }


def run_verify(
    host: PluginHost,
    repo: Repository,
    manifests: list[BackupManifest],
    *,
    read_data: bool = False,
    control: JobControl | None = None,
    whole_repository: bool = False,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[VerifyReport]:
    """Run ``manifest`` and ``chunks`` (or ``data`` with ``read_data``) on each backup, then the verifiers
    named in ``extra`` with their options (``boot``: ``verify --boot``); with ``whole_repository``, then the
    checks of the repository itself (``repository_checks``).

    Pause and cancel take effect between one verifier's run and the next.
    """
    names = ["manifest", "data" if read_data else "chunks", *(extra or {})]
    verifiers = [host.verifiers.get(name) for name in names]
    control = control or JobControl()
    reports: list[VerifyReport] = []
    with repo.read_lock("verify"):
        for manifest in manifests:
            for v in verifiers:
                control.checkpoint()
                options = (extra or {}).get(v.name)
                if options and isinstance(v, VerifierWithOptions):
                    reports.append(v.verify_with(repo, manifest, options))
                else:
                    reports.append(v.verify(repo, manifest))
        if whole_repository:
            control.checkpoint()
            reports += [check_objects(repo), check_backup_log(repo)]
    return reports
