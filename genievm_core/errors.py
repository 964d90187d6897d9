"""Every error GenieVM raises on purpose, and the exit code the CLI gives it.

Hierarchy (exit code in brackets)::

    GenieVMError [1]
    ├── ConfigError [3] ............ a config, option or environment value does not validate
    ├── PluginError [4] ............ a plugin failed to load, or a name is not registered
    │   └── PluginCheckError [28] .. ``genievm plugins --check``: a plugin's self-check failed
    ├── ProviderError [5] .......... the hypervisor said no (connection, API, permission)
    │   ├── AuthenticationError [6]  wrong user or password
    │   ├── VMNotFoundError [7] .... no VM by that id or name
    │   └── TranslationError [35] .. another provider's VM configuration cannot be made on this one
    ├── CBTError [8] ............... changed-block tracking failed (the engine falls back)
    ├── StorageError [9] ........... the storage target failed (I/O, network)
    │   ├── StorageFullError [10] .. no space left on the storage target
    │   ├── StoragePermissionError [11]
    │   ├── ObjectNotFoundError [12] an object the repository needs is not there
    │   └── ObjectLockedError [25] . the store's retention (S3 Object Lock) forbids deleting it yet
    ├── RepositoryError [13] ....... the repository cannot be used as asked
    │   ├── RepositoryNotFoundError [14]
    │   ├── RepositoryExistsError [15]
    │   ├── UnsupportedFormatError [16]  newer format version or unknown feature
    │   ├── WrongPassphraseError [17]
    │   ├── PassphraseRequiredError [18]
    │   ├── RepositoryLockedError [19]
    │   │   └── LockLostError [29]  this process's lock could not be refreshed, or was removed
    │   ├── BackupNotFoundError [20]
    │   ├── KeyManagementError [37]  ``genievm repo key`` refused: the last key, an unknown key id, ...
    │   └── CorruptionError [21] ... an object fails its checks (bad tag, bad id, truncated)
    ├── VerifyError [22] ........... verification found damage (the report names it)
    ├── RestoreTargetExistsError [23]  restore would overwrite something without --force
    ├── JobCancelledError [24] ..... the job was cancelled
    ├── JobNotFoundError [26] ...... no job by that id in the job registry
    ├── JobStateError [27] ......... the job's state does not allow what was asked (pause a finished job)
    └── JobInterruptedError [130] .. Ctrl-C or SIGTERM stopped the command

Plugins wrap SDK exceptions in one of these with ``raise ... from exc``. Only the
CLI turns an error into one line on stderr and its exit code (docs/errors.md).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackupNotFoundError",
    "CBTError",
    "ConfigError",
    "CorruptionError",
    "GenieVMError",
    "JobCancelledError",
    "JobInterruptedError",
    "JobNotFoundError",
    "JobStateError",
    "KeyManagementError",
    "LockLostError",
    "ObjectLockedError",
    "ObjectNotFoundError",
    "PassphraseRequiredError",
    "PluginCheckError",
    "PluginError",
    "ProviderError",
    "RepositoryError",
    "RepositoryExistsError",
    "RepositoryLockedError",
    "RepositoryNotFoundError",
    "RestoreTargetExistsError",
    "StorageError",
    "StorageFullError",
    "StoragePermissionError",
    "TranslationError",
    "UnsupportedFormatError",
    "VMNotFoundError",
    "VerifyError",
    "WrongPassphraseError",
]


class GenieVMError(Exception):
    """{message}"""

    exit_code = 1


class ConfigError(GenieVMError):
    """invalid configuration: {field}: {problem}"""

    exit_code = 3


class PluginError(GenieVMError):
    """plugin {name}: {problem}"""

    exit_code = 4


class PluginCheckError(PluginError):
    """self-checks failed: {count} of {total} ({plugin}: {check}, ...)"""

    exit_code = 28


class ProviderError(GenieVMError):
    """provider {name}: {problem}"""

    exit_code = 5


class AuthenticationError(ProviderError):
    """authentication failed for {user} at {host}"""

    exit_code = 6


class TranslationError(ProviderError):
    """cannot restore {vm} on {provider}: {reason} (genievm_core.translate)"""

    exit_code = 35


class VMNotFoundError(ProviderError):
    """no VM {vm} on provider {name}"""

    exit_code = 7


class CBTError(GenieVMError):
    """changed-block tracking failed for disk {disk}: {problem}"""

    exit_code = 8


class StorageError(GenieVMError):
    """storage {url}: {problem}"""

    exit_code = 9


class StorageFullError(StorageError):
    """storage {url}: no space left while writing {key}"""

    exit_code = 10


class StoragePermissionError(StorageError):
    """storage {url}: permission denied on {path}"""

    exit_code = 11


class ObjectNotFoundError(StorageError):
    """storage {url}: object {key} not found"""

    exit_code = 12


class ObjectLockedError(StorageError):
    """storage {url}: object {key} is under retention until {until}"""

    exit_code = 25


class RepositoryError(GenieVMError):
    """repository {url}: {problem}"""

    exit_code = 13


class RepositoryNotFoundError(RepositoryError):
    """no GenieVM repository at {url} (create one with `genievm repo init`)"""

    exit_code = 14


class RepositoryExistsError(RepositoryError):
    """a repository already exists at {url}"""

    exit_code = 15


class UnsupportedFormatError(RepositoryError):
    """repository {url} has format {version} or feature {feature} this GenieVM does not know"""

    exit_code = 16


class WrongPassphraseError(RepositoryError):
    """wrong passphrase for repository {url}"""

    exit_code = 17


class PassphraseRequiredError(RepositoryError):
    """repository {url} is encrypted: set GENIEVM_PASSPHRASE, --passphrase-file or use a terminal"""

    exit_code = 18


class RepositoryLockedError(RepositoryError):
    """repository {url} is locked by {holder}"""

    exit_code = 19


class LockLostError(RepositoryLockedError):
    """repository {url}: lost this process's lock: {reason}; stopped before writing anything more"""

    exit_code = 29


class BackupNotFoundError(RepositoryError):
    """no backup {backup_id} in repository {url}"""

    exit_code = 20


class KeyManagementError(RepositoryError):
    """repository {url}: {what cannot be done with its keys}"""

    exit_code = 37


class CorruptionError(RepositoryError):
    """{object} is corrupt: {problem}"""

    exit_code = 21


class VerifyError(GenieVMError):
    """verification of {backup_id} found {count} problems"""

    exit_code = 22


class RestoreTargetExistsError(GenieVMError):
    """{target} exists; pass --force to overwrite it"""

    exit_code = 23


class JobCancelledError(GenieVMError):
    """job {job_id} was cancelled"""

    exit_code = 24


class JobNotFoundError(GenieVMError):
    """no job {job_id} in the job registry {path}"""

    exit_code = 26


class JobStateError(GenieVMError):
    """job {job_id} is {state}; it cannot be {action}"""

    exit_code = 27


class JobInterruptedError(GenieVMError):
    """interrupted by {signal}"""

    exit_code = 130
