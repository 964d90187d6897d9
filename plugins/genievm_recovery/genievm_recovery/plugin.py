"""Entry point ``recovery`` in the group ``genievm``: the verifier ``boot`` (``genievm verify --boot``)."""

from __future__ import annotations

from genievm_core.plugin import VerifierRegistry, hookimpl
from genievm_recovery.boot_check import BootVerifier

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_verifiers(registry: VerifierRegistry) -> None:
    registry.add(BootVerifier())
