"""Entry point ``vmware`` in the group ``genievm``: the ``vmware`` provider (vSphere, pyvmomi) and its CBT source."""

from __future__ import annotations

from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl
from genievm_vmware.cbt_source import VSPHERE_CBT

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    from genievm_vmware.provider import VMwareProvider  # pyvmomi is imported only when the provider is used

    registry.add("vmware", VMwareProvider)


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    registry.add(VSPHERE_CBT)
