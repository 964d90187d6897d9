"""The public surface of the hook API, one line per name, for the recorded list in tests/api/hook_api.txt.

``python -m genievm_core.plugin.api`` prints it. A test compares it with the
recorded list, so a hookspec, protocol method, registry method or contract
class that changes (or appears, or goes) fails the tests until the list is
re-recorded on purpose: ``python -m genievm_core.plugin.api > tests/api/hook_api.txt``
(and docs/plugin-guide.md's "Versions of the hook API" says what changed).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from genievm_core import errors
from genievm_core.models import extents, vm
from genievm_core.plugin import protocols, registry, spec

__all__ = ["api_lines", "hookspecs", "protocol_members"]

_PROTOCOL_BASES = {"Protocol", "Generic", "object"}
_SINCE = re.compile(r"\(since (\d+\.\d+)\)")


def _sig(obj: Any) -> str:
    return str(inspect.signature(obj)).replace("'", "")


def hookspecs() -> dict[str, str]:
    """Hook name -> signature."""
    return {name: _sig(getattr(spec, name)) for name in spec.__all__ if name.startswith("genievm_")}


def _members(cls: type) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, annotation in inspect.get_annotations(cls).items():
        out[name] = f": {annotation}"
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) and value.fget is not None:
            out[name] = f": property -> {inspect.signature(value.fget).return_annotation}"
        elif isinstance(value, classmethod):
            out[name] = f"{_sig(value.__func__)} (classmethod)"
        elif inspect.isfunction(value):
            out[name] = _sig(value)
    if "__call__" in vars(cls):
        out["__call__"] = _sig(vars(cls)["__call__"])
    return out


def protocol_members() -> dict[str, dict[str, str]]:
    """Every class of ``protocols.__all__`` -> its public members and their signatures.

    A class whose docstring says ``(since X.Y)`` has that noted on each of its lines.
    """
    members = {}
    for name in protocols.__all__:
        cls: type = getattr(protocols, name)
        if dataclasses.is_dataclass(cls):
            fields = {f.name: f": {f.type}" for f in dataclasses.fields(cls)}
            members[name] = fields | {k: v for k, v in _members(cls).items() if k not in fields}
        else:
            members[name] = _members(cls)
        since = _SINCE.search(cls.__doc__ or "")
        if since:
            members[name] = {k: f"{v}  (since {since[1]})" for k, v in members[name].items()}
    return members


def _registry_members() -> dict[str, dict[str, str]]:
    out = {}
    for name in registry.__all__:
        cls: Any = getattr(registry, name)
        if isinstance(cls, type) and issubclass(cls, registry.Registry) and cls is not registry.Registry:
            out[name] = {k: v for k, v in _members(cls).items() if k != "kind"} | {"kind": f" = {cls.kind!r}"}
    out["Registry"] = {k: v for k, v in _members(registry.Registry).items() if k != "kind"}
    return out


def _model_members() -> dict[str, dict[str, str]]:
    out = {name: {f.name: f": {f.type}" for f in dataclasses.fields(getattr(vm, name))} for name in vm.__all__}
    out["Extent"] = {n: f": {getattr(t, '__forward_arg__', t)}" for n, t in extents.Extent.__annotations__.items()}
    out["StorageKind"] = {"values": " = " + " | ".join(typing.get_args(vm.StorageKind))}
    return out


def _errors() -> list[str]:
    lines = []
    for name in errors.__all__:
        cls = getattr(errors, name)
        lines.append(f"error {name}({cls.__bases__[0].__name__}) exit {cls.exit_code}")
    return lines


def api_lines() -> list[str]:
    lines = [f"hook {name}{sig}" for name, sig in sorted(hookspecs().items())]
    tables = (("protocol", protocol_members()), ("registry", _registry_members()), ("model", _model_members()))
    for kind, table in tables:
        for cls, members in sorted(table.items()):
            lines += [f"{kind} {cls}.{member}{sig}" for member, sig in sorted(members.items())]
    return lines + sorted(_errors())


if __name__ == "__main__":
    print("\n".join(api_lines()))
