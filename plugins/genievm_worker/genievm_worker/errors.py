"""The workers' errors: subclasses of the core's, so the CLI prints them as one line with their exit code."""

from __future__ import annotations

from genievm_core.errors import GenieVMError

__all__ = ["BrokerUnreachableError"]


class BrokerUnreachableError(GenieVMError):
    """the broker at {url} is unreachable ({reason}): the job was not queued"""

    exit_code = 36
