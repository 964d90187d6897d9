"""Entry point ``kvm`` in the group ``genievm``: the ``kvm`` provider and its CBT sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl
from genievm_core.plugin.protocols import Provider
from genievm_kvm.cbt import CBT_SOURCES
from genievm_kvm.options import KVMOptions

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


class KVMProviderFactory:
    """Makes the ``kvm`` provider; libvirt's binding and the backup code are imported only when one is made
    (a command that loads the plugins, an image backup among them, does not pay for them)."""

    options_model = KVMOptions

    def __call__(self, options: Mapping[str, Any]) -> Provider:
        from genievm_kvm.provider import KVMProvider

        return KVMProvider(options)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("kvm", KVMProviderFactory())


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    for source in CBT_SOURCES:
        registry.add(source)
