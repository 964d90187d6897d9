"""The layers of a job config (``load_config``), through pydantic-settings' sources: the options, then
``GENIEVM_<FIELD>`` variables, then the config file, highest first."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = ["layered"]


def layered(
    model: type[BaseModel], from_file: dict[str, Any], from_options: dict[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    """The fields of ``model`` the three layers give, to validate as ``model``; ValidationError if they do not fit."""

    class Layered(BaseSettings, model):  # type: ignore[misc,valid-type]  # model's fields, pydantic-settings' sources
        model_config = SettingsConfigDict(env_prefix="GENIEVM_", case_sensitive=True)  # vmID is not vmId

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,  # the options: Layered(**from_options)
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:  # highest first
            return init_settings, _Environment(settings_cls, env), _File(settings_cls, from_file)

    return dict(Layered(**from_options))


class _Environment(EnvSettingsSource):
    """``GENIEVM_<FIELD>`` from ``environ``; a list or mapping field takes JSON, or, for a list, comma-separated
    words."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls, case_sensitive=False)  # field vm_id, variable GENIEVM_VM_ID
        self.env_vars = {name.lower(): value for name, value in environ.items() if name.isupper()}

    def __call__(self) -> dict[str, Any]:
        # keyed by alias, as the other sources are: a field given under both its names is an error
        fields = self.settings_cls.model_fields
        found = {(fields[key].alias or key) if key in fields else key: v for key, v in super().__call__().items()}
        return _below(self, found)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, (list, dict)):
            return parsed
        return tuple(v.strip() for v in str(value).split(",") if v.strip())


class _File(InitSettingsSource):
    """The config file's fields, those no higher layer gives."""

    def __call__(self) -> dict[str, Any]:
        return _below(self, super().__call__())


def _below(source: PydanticBaseSettingsSource, found: dict[str, Any]) -> dict[str, Any]:
    """``found`` less the fields a higher layer gave: a layer replaces a field whole, a mapping
    (``storageOptions``) included, where pydantic-settings would merge the mappings."""
    return {key: value for key, value in found.items() if key not in source.current_state}
