"""The ``kvm`` provider's error beyond the core's (docs/errors.md)."""

from __future__ import annotations

from genievm_core.errors import ProviderError

__all__ = ["TransportSecurityError"]


class TransportSecurityError(ProviderError):
    """provider kvm: NBD over TLS to {host}: {problem} (certificates missing, unreadable or not trusted)"""

    exit_code = 38
