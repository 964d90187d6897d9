"""Writing a GenieVM plugin, in five lines.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names are hooks from ``genievm_core.plugin.spec``; each receives a registry
and registers what the plugin provides::

    # my_plugin/plugin.py
    from genievm_core.plugin import hookimpl

    @hookimpl
    def genievm_register_providers(registry):
        registry.add("proxmox", ProxmoxProvider)

and is found through an entry point in the group ``genievm``, whose name is
the plugin's name::

    [project.entry-points.genievm]
    proxmox = "my_plugin.plugin"

``genievm plugins`` then lists it. The module may say which plugin API it is built for,
``GENIEVM_PLUGIN_API = 1`` (``PLUGIN_API``); a core of another refuses it with one line.
See docs/plugin-guide.md for each contract.
"""

from __future__ import annotations

from genievm_core.plugin.host import ENTRY_POINT_GROUP, PLUGIN_API, PluginHost, PluginInfo
from genievm_core.plugin.marker import hookimpl
from genievm_core.plugin.registry import (
    CBTSourceRegistry,
    ProviderRegistry,
    SelfCheckRegistry,
    StorageRegistry,
    VerifierRegistry,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGIN_API",
    "CBTSourceRegistry",
    "PluginHost",
    "PluginInfo",
    "ProviderRegistry",
    "SelfCheckRegistry",
    "StorageRegistry",
    "VerifierRegistry",
    "hookimpl",
]
