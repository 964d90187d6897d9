"""``genievm vms``: the VMs a provider can back up."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from genievm_core.cli.common import (
    ConfigFileOption,
    JsonOption,
    ProviderOptionOption,
    emit_json,
    out_console,
    provider_options,
    state,
)
from genievm_core.errors import ConfigError
from genievm_core.models.config import read_config_file


def vms(
    ctx: typer.Context,
    provider: Annotated[str, typer.Option(help="provider plugin", metavar="NAME")] = "image",
    config_file: ConfigFileOption = None,
    provider_option: ProviderOptionOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the VMs of a provider: id, name and state."""
    options: dict[str, Any] = {}
    if config_file is not None:
        try:  # a job config, JSON or TOML, read as load_config reads it
            options = dict(read_config_file(config_file).get("providerOptions", {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid configuration: cannot read providerOptions from {config_file}: {exc}") from exc
    options = provider_options(options, provider_option)
    found = state(ctx).list_vms(provider, options)
    if json_output:
        emit_json([vm.__dict__ for vm in found])
        return
    table = Table("id", "name", "state")
    for vm in found:
        table.add_row(vm.id, vm.name, vm.state)
    out_console.print(table)
