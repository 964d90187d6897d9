"""Entry point ``vmware`` in the group ``genievm``: the ``vmware`` provider (vSphere through pyvmomi)."""

from __future__ import annotations

from genievm_core.plugin import ProviderRegistry, hookimpl


@hookimpl
def genievm_register_providers(registry: ProviderRegistry) -> None:
    from genievm_vmware.provider import VMwareProvider  # pyvmomi is imported only when the provider is used

    registry.add("vmware", VMwareProvider)
