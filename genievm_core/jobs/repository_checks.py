"""Checks of a whole repository that no one backup's verifiers make: unknown objects, the backup log.

``verify`` without ``--vm`` or ``--backup`` runs them. Their reports name the
repository (backup id ``repository``), with the verifiers ``objects`` and
``backup-log``.
"""

from __future__ import annotations

from genievm_core.plugin.protocols import Problem, VerifyReport
from genievm_core.repository import Repository
from genievm_core.repository.layout import unknown_keys

__all__ = ["REPOSITORY", "check_backup_log", "check_objects"]

REPOSITORY = "repository"  # the backup id of their reports


def check_objects(repo: Repository) -> VerifyReport:
    """Every object under the repository's root that GenieVM did not write (it is skipped everywhere else)."""
    keys = list(repo.storage.list(""))
    problems = [
        Problem(
            None, f"{key} is not a GenieVM object (GenieVM skips it and never deletes it; remove it if it is not yours)"
        )  # fmt: skip
        for key in unknown_keys(keys)
    ]
    return VerifyReport("objects", REPOSITORY, len(keys), problems)


def check_backup_log(repo: Repository) -> VerifyReport:
    """Each backup the log lists and no entry forgets has its manifest; the log is whole; the entries this
    client saw last are still there. Without problems, this client remembers the log's newest entries."""
    state = repo.backup_log.read()
    report = VerifyReport("backup-log", REPOSITORY, len(state.entries))
    report.problems += [Problem(None, text) for text in state.problems]
    if not state.entries and not state.problems:
        repo.warn(f"repository {repo.url} has no backup log yet: run `genievm repo upgrade` (or the next backup "
                  "starts it), so that a deleted backup is found out")  # fmt: skip
        return report
    present = set(repo.backup_ids())
    for backup_id in sorted(state.listed - present):
        report.problems.append(Problem(None, _gone(backup_id, "the backup log lists it")))
    forgotten = {e.backup_id for e in state.entries if e.event == "forget"}
    entry_ids = {e.entry_id for e in state.entries}
    seen = repo.known.log_seen(repo.config) if repo.known is not None else {}
    for entry_id, backup_id in sorted(seen.items()):
        if entry_id not in entry_ids and backup_id not in forgotten:
            report.problems.append(
                Problem(None, _gone(backup_id, f"its log entry {entry_id}, which this client saw, is gone too"))
            )
    if not report.problems and repo.known is not None:
        by_id = {e.entry_id: e.backup_id for e in state.entries}
        repo.known.remember_log(repo.url, repo.config, {head: by_id[head] for head in state.heads})
    return report


def _gone(backup_id: str, evidence: str) -> str:
    return (
        f"backup {backup_id} is missing: {evidence}, but its manifest is gone (deleted outside GenieVM, or the "
        f"storage was rolled back); if it was deleted on purpose: genievm backups forget {backup_id}"
    )
