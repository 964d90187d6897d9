"""The server's errors and how every error becomes a JSON answer: an HTTP status and a stable ``code``.

The ``code`` is the error's class name, as ``genievm --json`` prints it (``VMNotFoundError``, ...), and
``exit`` the CLI's exit code of that class, so a client handles both alike::

    {"error": {"code": "BackupNotFoundError", "exit": 20, "message": "no backup ..."}}

The server's own errors below are subclasses of the core's, so they keep its exit codes.
"""

from __future__ import annotations

from typing import Any

from genievm_core.errors import (
    AuthenticationError,
    BackupNotFoundError,
    ConfigError,
    GenieVMError,
    JobNotFoundError,
    JobStateError,
    ObjectLockedError,
    PassphraseRequiredError,
    PluginError,
    ProviderError,
    RepositoryLockedError,
    RepositoryNotFoundError,
    RestoreTargetExistsError,
    StorageError,
    VMNotFoundError,
    WrongPassphraseError,
)

__all__ = [
    "ForbiddenError",
    "InvalidRequestError",
    "NameExistsError",
    "NotAuthenticatedError",
    "NotInstalledError",
    "UnknownNameError",
    "VMBusyError",
    "error_body",
    "status_of",
]


class NotAuthenticatedError(ConfigError):
    """no valid API token (Authorization: Bearer TOKEN)"""


class ForbiddenError(ConfigError):
    """token {id} has role {role}; this needs {needed}"""


class InvalidRequestError(ConfigError):
    """invalid request: {where}: {why}"""


class UnknownNameError(ConfigError):
    """no {kind} {name} (a repository, provider, policy, token or route the server does not know)"""


class NameExistsError(ConfigError):
    """{kind} {name} exists"""


class NotInstalledError(ConfigError):
    """{feature} needs {distribution}, which this server lacks"""


class VMBusyError(JobStateError):
    """VM {vm} has a backup running (job {job}); one backup of a VM at a time"""


_STATUS: list[tuple[type[GenieVMError], int]] = [  # the first class the error is an instance of
    (NotAuthenticatedError, 401),
    (ForbiddenError, 403),
    (InvalidRequestError, 422),
    (UnknownNameError, 404),
    (NotInstalledError, 501),
    (NameExistsError, 409),
    (VMNotFoundError, 404),
    (BackupNotFoundError, 404),
    (JobNotFoundError, 404),
    (RepositoryNotFoundError, 404),
    (JobStateError, 409),
    (RepositoryLockedError, 409),
    (ObjectLockedError, 409),
    (RestoreTargetExistsError, 409),
    (WrongPassphraseError, 500),  # the server's own secret is wrong: its operator's to fix
    (PassphraseRequiredError, 500),
    (AuthenticationError, 502),  # the hypervisor refused the server's credentials
    (ProviderError, 502),
    (StorageError, 502),
    (PluginError, 400),
    (ConfigError, 400),
]


def status_of(exc: GenieVMError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def error_body(exc: GenieVMError) -> dict[str, Any]:
    return {"error": {"code": type(exc).__name__, "exit": exc.exit_code, "message": str(exc)}}
