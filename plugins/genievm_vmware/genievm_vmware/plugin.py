"""Entry point ``vmware`` in the group ``genievm``: the ``vmware`` provider (vSphere, pyvmomi) and its CBT source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genievm_core.plugin import CBTSourceRegistry, ProviderRegistry, hookimpl
from genievm_core.plugin.protocols import Provider
from genievm_vmware.cbt_source import VSPHERE_CBT
from genievm_vmware.options import VMwareOptions

GENIEVM_PLUGIN_API = 1  # the core's plugin API this plugin is built for (genievm_core.plugin.PLUGIN_API)


class VMwareProviderFactory:
    """Makes the ``vmware`` provider; pyvmomi (about 0.2 s to import) is imported only when one is made."""

    options_model = VMwareOptions

    def __call__(self, options: Mapping[str, Any]) -> Provider:
        from genievm_vmware.provider import VMwareProvider

        return VMwareProvider(options)


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    registry.add("vmware", VMwareProviderFactory())


@hookimpl
def genievm_register_cbt_sources(registry: CBTSourceRegistry) -> None:
    registry.add(VSPHERE_CBT)
