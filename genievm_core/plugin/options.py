"""A plugin's options as a pydantic model: checked once, in one line; listed by ``genievm plugins --json`` and the docs.

A provider factory (or storage factory) may carry ``options_model``, a
pydantic model of every option it reads, and validate its options with
:func:`parse_options` when it is called::

    class KVMOptions(BaseModel):
        model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
        uri: str = Field(default="qemu:///system", description="the libvirt connection")

    class KVMProvider:
        options_model = KVMOptions

        def __init__(self, options: Mapping[str, Any]) -> None:
            self.options = parse_options(KVMOptions, options, "providerOptions")

A bad value then stops with one line (``ConfigError``, exit 3) naming the
option, never its value. :func:`option_fields` describes the fields (for
``genievm plugins --json``) and :func:`options_table` renders them as the
Markdown table the docs hold, so a test can keep the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from genievm_core.errors import ConfigError

__all__ = ["option_fields", "options_table", "parse_options"]

M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], options: Mapping[str, Any], what: str) -> M:
    """``options`` validated as ``model``; else ConfigError ``invalid <what>: <option>: <problem>; ...``."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"invalid {what}: " + "; ".join(problems)) from None


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")


def option_fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One entry per option: its name as written in a config, type, default (None: none) and description."""
    fields = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        fields.append(
            {
                "name": info.alias or name,
                "type": _type_name(info.annotation),
                "default": default if isinstance(default, (str, int, float, bool, type(None))) else str(default),
                "description": info.description or "",
            }
        )
    return fields


def options_table(model: type[BaseModel]) -> str:
    """The options as a Markdown table: option, meaning, default."""
    rows = ["| option | meaning | default |", "|---|---|---|"]
    for field in option_fields(model):
        default = field["default"]
        shown = "-" if default is None else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{field['name']}` | {field['description']} | {shown} |")
    return "\n".join(rows) + "\n"
