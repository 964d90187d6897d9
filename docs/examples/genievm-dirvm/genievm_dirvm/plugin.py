"""Entry point ``dirvm`` in the group ``genievm``: the hook implementations."""

from __future__ import annotations

# [guide:hooks]
from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, SelfCheckRegistry, hookimpl

from genievm_dirvm.cbt import BlockHashCBT
from genievm_dirvm.provider import DirVMProvider

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("dirvm", DirVMProvider)  # a factory: DirVMProvider(options)


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    registry.add(BlockHashCBT())


@hookimpl
def genievm_register_self_checks(registry: SelfCheckRegistry) -> None:
    # a module of contract tests that need nothing but a temporary folder
    registry.add("dirvm-contracts", "genievm_dirvm.checks")


# [/guide:hooks]
