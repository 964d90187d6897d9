"""Every numeric option of every command, and every numeric field of the job configs, has its range checked.

The command tree is walked as ``genievm`` builds it (built-in and plugin
commands, the root's own options), so a numeric option added later without a
range fails here, and one with a range is tried just outside it at both ends:
each try must end in one line naming the option and the bad-input exit code
(3), not typer's usage message or an internal error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer
from annotated_types import Ge, Gt, Le, Lt
from support import CLIResult

from genievm_core.cli import app, numeric_params
from genievm_core.errors import ConfigError
from genievm_core.models.config import BackupConfig, DiskConfig, RestoreConfig, load_config

Cli = Callable[..., CLIResult]
BAD_INPUT = ConfigError.exit_code


def _commands() -> Iterator[tuple[list[str], Any]]:
    root = typer.main.get_command(app)
    ctx = typer.Context(root)  # type: ignore[arg-type]

    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, name), [*path, name])

    yield from walk(root, [])


NUMERIC = [(path, param) for path, command in _commands() for param in numeric_params(command)]
IDS = [" ".join(path + [param.opts[0]]) for path, param in NUMERIC]


def _outside(param: Any) -> list[str]:
    kind = param.type_descriptor.annotation
    step = 1 if kind is int else 0.5
    values = [str(kind(param.min - step)), str(kind(param.max + step))]
    return values + (["nan", "inf"] if kind is float else [])


def test_the_walk_finds_the_options_of_every_kind_of_command() -> None:
    found = set(IDS)
    for expected in ("--storage-attempts", "backup --workers", "restore --limit-write", "jobs limit --read"):
        assert expected in found, f"{expected} is not among {sorted(found)}"
    assert "serve --cache-mib" in found  # a plugin's command (genievm-recovery) is walked too


@pytest.mark.parametrize(("path", "param"), NUMERIC, ids=IDS)
def test_every_numeric_option_declares_its_range(path: list[str], param: Any) -> None:
    assert param.min is not None and param.max is not None, (
        f"genievm {' '.join(path)} {param.opts[0]}: give it min= and max= (typer.Option), so that a value out "
        "of range is one line and exit 3 (genievm_core/cli/ranges.py)"
    )


@pytest.mark.parametrize(("path", "param"), NUMERIC, ids=IDS)
def test_a_value_out_of_range_is_one_line_and_the_bad_input_code(
    cli: Cli, path: list[str], param: Any
) -> None:
    name = param.opts[0] if param.opts[0].startswith("-") else param.name.upper()
    for value in _outside(param):
        given = [f"{param.opts[0]}={value}"] if param.opts[0].startswith("-") else [value]
        result = cli(*path, *given)  # the bad option first: it is checked before anything else is missing
        assert result.code == BAD_INPUT, (value, result.stderr)
        assert len(result.err_lines) == 1, result.stderr
        expected = "is not a finite number" if value in ("nan", "inf") else "is out of range ("
        assert result.err_lines[0].startswith(f"genievm: error: invalid configuration: {name}: {value} {expected}")


def test_the_bad_value_from_an_environment_variable_names_the_variable(cli: Cli) -> None:
    result = cli("jobs", "list", env={"GENIEVM_STORAGE_ATTEMPTS": "0"})
    assert (result.code, result.err_lines) == (
        3,
        ["genievm: error: invalid configuration: GENIEVM_STORAGE_ATTEMPTS: 0 is out of range (1 to 100)"],
    )


def test_a_value_inside_the_range_is_taken(cli: Cli) -> None:
    assert cli("--storage-attempts", "100", "jobs", "list", "--limit", "1000000").code == 0


def test_a_value_that_is_not_a_number_stays_a_usage_error(cli: Cli) -> None:
    assert cli("backup", "--workers", "many").code == 2


# the job configs


def _bounds(field: Any) -> tuple[float | None, float | None]:
    low = high = None
    for rule in field.metadata:
        if isinstance(rule, (Ge, Gt)):
            low = rule.ge if isinstance(rule, Ge) else rule.gt
        if isinstance(rule, (Le, Lt)):
            high = rule.le if isinstance(rule, Le) else rule.lt
    return low, high  # type: ignore[return-value]


def _numeric_fields() -> list[tuple[type[Any], str, Any]]:
    found = []
    for model in (BackupConfig, RestoreConfig, DiskConfig):
        for name, field in model.model_fields.items():
            kinds = {field.annotation} | set(getattr(field.annotation, "__args__", ()))
            if kinds & {int, float}:
                found.append((model, name, field))
    return found


FIELDS = _numeric_fields()


def test_the_configs_have_numeric_fields() -> None:
    assert {name for _, name, _ in FIELDS} >= {"compression_level", "bandwidth_limit_read", "retention_days"}


@pytest.mark.parametrize(("model", "name", "field"), FIELDS, ids=[f"{m.__name__}.{n}" for m, n, _ in FIELDS])
def test_every_numeric_config_field_is_bounded_and_checked(model: type[Any], name: str, field: Any) -> None:
    low, high = _bounds(field)
    assert low is not None and high is not None, f"{model.__name__}.{name}: give it ge= and le="
    required = {"vm_id": "vm1", "backup_path": "/srv/backups"}
    float_field = float in {field.annotation} | set(getattr(field.annotation, "__args__", ()))
    step = 0.5 if float_field else 1
    for value in [low - step, high + step] + ([math.nan, math.inf] if float_field else []):
        with pytest.raises(ConfigError) as caught:
            load_config(model, overrides=required | {name: value}, environ={})
        assert str(caught.value).startswith(f"invalid {model.__name__}: {field.alias}: "), str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_duration_too_long_for_the_clock_is_one_line(cli: Cli) -> None:
    result = cli("gc", "--repo", "/nonexistent", "--grace", "99999999999d")
    assert (result.code, result.err_lines) == (
        3,
        ["genievm: error: invalid configuration: --grace: '99999999999d' is longer than 36500d"],
    )
