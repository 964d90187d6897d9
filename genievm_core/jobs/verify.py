"""Verification of backups by the registered verifiers."""

from __future__ import annotations

from genievm_core.models.manifest import BackupManifest
from genievm_core.plugin import PluginHost
from genievm_core.plugin.protocols import VerifyReport
from genievm_core.repository import Repository

__all__ = ["run_verify"]


def run_verify(
    host: PluginHost, repo: Repository, manifests: list[BackupManifest], *, read_data: bool = False
) -> list[VerifyReport]:
    """Run ``manifest`` and ``chunks`` (or ``data`` with ``read_data``) on each backup."""
    names = ["manifest", "data" if read_data else "chunks"]
    verifiers = [host.verifiers.get(name) for name in names]
    with repo.lock("shared", "verify"):
        return [v.verify(repo, manifest) for manifest in manifests for v in verifiers]
