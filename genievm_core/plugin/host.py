"""PluginHost: finds plugins through entry points and gives typed access to what they register.

Loading order (pytest's): add the hookspecs, register the built-in plugins,
load the ``genievm`` entry points through stevedore, ``check_pending()``, then
call each registration hook: each plugin's implementation (its pluggy
``HookImpl``) once, in the order the plugins were registered, with the
registry told whose call it is, so it records which plugin registered what.
One host per run; there is no module-level plugin manager.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import pluggy
from pydantic import BaseModel
from stevedore import NamedExtensionManager

from genievm_core import __version__
from genievm_core.choices import DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP
from genievm_core.errors import JobInterruptedError, PluginError
from genievm_core.plugin import spec
from genievm_core.plugin.options import option_fields
from genievm_core.plugin.registry import (
    CBTSourceRegistry,
    ProviderRegistry,
    Registry,
    SelfCheckRegistry,
    StorageRegistry,
    VerifierRegistry,
)

__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_API", "PLUGIN_API_ATTRIBUTE", "PluginHost", "PluginInfo"]

# The hook API's generation (docs/plugin-guide.md, "Versions of the hook API"): it grows within one and
# changes only when the API breaks. A plugin's entry-point module may say which one it was built for
# (``GENIEVM_PLUGIN_API = 1``); one built for another is refused before its hooks are registered.
PLUGIN_API = 1
PLUGIN_API_ATTRIBUTE = "GENIEVM_PLUGIN_API"


@dataclass
class PluginInfo:
    """One plugin as ``genievm plugins`` shows it.

    ``options``: for each provider or storage target it registers whose factory
    carries an ``options_model``, that model's fields (``option_fields``).
    """

    name: str
    distribution: str
    version: str
    origin: Literal["builtin", "entry-point", "manual"]
    registers: dict[str, list[str]] = field(default_factory=dict)
    options: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class PluginHost:
    """The plugin manager of one run, with a typed facade over its hooks."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        disabled: Iterable[str] = (),
        extra_plugins: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.pm = pluggy.PluginManager("genievm")
        self.pm.add_hookspecs(spec)
        self._info: dict[str, PluginInfo] = {}
        self._disabled = set(disabled)
        for name, module in _builtin_plugins():
            self._register(name, module, PluginInfo(name, "genievm-core", __version__, "builtin"))
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for name, plugin in extra_plugins:
            self._register(name, plugin, PluginInfo(name, "-", "-", "manual"))
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {self._name_of(exc.plugin)}: {exc}") from exc
        self.storage = StorageRegistry()
        self.providers = ProviderRegistry()
        self.cbt_sources = CBTSourceRegistry()
        self.verifiers = VerifierRegistry()
        self.self_checks = SelfCheckRegistry()
        self._collect("genievm_register_storage", self.storage)
        self._collect("genievm_register_providers", self.providers)
        self._collect("genievm_register_cbt_sources", self.cbt_sources)
        self._collect("genievm_register_verifiers", self.verifiers)
        self._collect("genievm_register_self_checks", self.self_checks)

    def _name_of(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    def plugins(self) -> list[PluginInfo]:
        return list(self._info.values())

    def _register(self, name: str, plugin: Any, info: PluginInfo) -> None:
        if name in self._disabled:
            return
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name}: {exc}") from exc
        self._info[name] = info

    def _load_entry_points(self) -> None:
        def failed(_manager: Any, entry_point: Any, exc: BaseException) -> None:
            if isinstance(exc, JobInterruptedError):  # a Ctrl-C or SIGTERM while it imported: not the plugin's
                raise exc
            raise PluginError(
                f"plugin {entry_point.name} ({entry_point.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc

        # stevedore's on-disk entry-point cache is keyed on file times packed as 32-bit
        # floats (a resolution of about two minutes), so a plugin reinstalled within that
        # time could load from stale entry points. ENTRY_POINT_CACHE, stevedore's in-process
        # cache by namespace, is consulted first: fill it with this run's entry points, read
        # afresh from importlib.metadata (which also gives each its distribution).
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        NamedExtensionManager.ENTRY_POINT_CACHE[ENTRY_POINT_GROUP] = entry_points
        manager: NamedExtensionManager[Any] = NamedExtensionManager(
            namespace=ENTRY_POINT_GROUP,
            names=sorted({ep.name for ep in entry_points} - self._disabled),
            invoke_on_load=False,
            on_load_failure_callback=failed,
            name_order=True,
        )
        for ext in manager:  # in name order
            dist = ext.entry_point.dist
            name, version = (dist.metadata["Name"], dist.version) if dist else ("?", "?")
            built_for = getattr(ext.plugin, PLUGIN_API_ATTRIBUTE, PLUGIN_API)  # undeclared: written for API 1
            if built_for != PLUGIN_API:
                raise PluginError(
                    f"plugin {ext.name} ({name} {version}) is built for plugin API {built_for!r}; "
                    f"genievm-core {__version__} has plugin API {PLUGIN_API} "
                    f"(install a {name} for it, or --disable-plugin {ext.name})"
                )
            self._register(ext.name, ext.plugin, PluginInfo(ext.name, name, version, "entry-point"))

    def _collect(self, hook_name: str, registry: Registry[Any]) -> None:
        """Call each plugin's implementation of ``hook_name`` once, telling ``registry`` whose it is."""
        impls = {impl.plugin_name: impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}
        for plugin_name in self._info:  # registration order: a clash names the later plugin first
            impl = impls.get(plugin_name)
            if impl is None:
                continue
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {plugin_name}: {hook_name} cannot be a hook wrapper")
            registry.current_plugin = plugin_name
            impl.function(*(registry for _ in impl.argnames))  # the hookspec's only argument is `registry`
        for registered in sorted(registry, key=lambda r: r.name):
            info = self._info[registered.plugin]
            info.registers.setdefault(registry.kind, []).append(registered.name)
            model = getattr(registered.value, "options_model", None)
            if isinstance(model, type) and issubclass(model, BaseModel):
                info.options[registered.name] = option_fields(model)


def _builtin_plugins() -> list[tuple[str, ModuleType]]:
    from genievm_core.builtin import image, verifiers

    return [("image", image), ("verifiers", verifiers)]
