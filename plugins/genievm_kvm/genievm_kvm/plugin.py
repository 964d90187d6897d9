"""Entry point ``kvm`` in the group ``genievm``: the ``kvm`` provider and its CBT sources."""

from __future__ import annotations

from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl
from genievm_kvm.cbt import CBT_SOURCES
from genievm_kvm.provider import KVMProvider

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("kvm", KVMProvider)


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    for source in CBT_SOURCES:
        registry.add(source)
