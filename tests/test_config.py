"""Job configuration: load_config layering and one-line validation errors naming camelCase fields."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from support import CLIResult, backup_vm, write_image

from genievm_core.errors import ConfigError
from genievm_core.models.config import BackupConfig, DiskConfig, RestoreConfig, load_config, names_a_field
from genievm_core.plugin import PluginHost

BASE = {"vm_id": "web01", "backup_path": "/srv/backups"}


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    file = write_json(
        tmp_path / "job.json",
        {
            "vmId": "from-file",
            "backupPath": "/file",
            "compressionLevel": 5,
            "maxConcurrentDisks": 3,
            "excludedDisks": ["vdz"],
            "enableCBT": False,
        },
    )
    only_file = load_config(BackupConfig, path=file, environ={})
    assert (only_file.vm_id, only_file.compression_level, only_file.max_concurrent_disks) == ("from-file", 5, 3)
    assert only_file.excluded_disks == ("vdz",) and only_file.enable_cbt is False

    env = {"GENIEVM_COMPRESSION_LEVEL": "7", "GENIEVM_VM_ID": "from-env", "GENIEVM_ENABLE_CBT": "true"}
    with_env = load_config(BackupConfig, path=file, environ=env)
    assert (with_env.vm_id, with_env.compression_level, with_env.max_concurrent_disks) == ("from-env", 7, 3)
    assert with_env.enable_cbt is True

    everything = load_config(
        BackupConfig, path=file, environ=env, overrides={"compression_level": 9, "vm_id": None, "provider": "kvm"}
    )
    assert everything.compression_level == 9
    assert everything.vm_id == "from-env", "an override of None must not hide the lower layers"
    assert everything.provider == "kvm" and everything.backup_path == "/file"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENIEVM_MAX_CONCURRENT_DISKS", "11")
    monkeypatch.setenv("GENIEVM_RETENTION_DAYS", "30")
    config = load_config(BackupConfig, overrides=BASE)
    assert config.max_concurrent_disks == 11 and config.retention_days == 30
    assert load_config(BackupConfig, overrides=BASE, environ={}).max_concurrent_disks == 2


def test_snake_case_keys_are_accepted_in_files(tmp_path: Path) -> None:
    file = write_json(tmp_path / "job.json", {"vm_id": "a", "backup_path": "b", "compression_level": 4})
    assert load_config(BackupConfig, path=file, environ={}).compression_level == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vdb", ("vdb",)),
        ("vdb, vdc", ("vdb", "vdc")),
        ('["vdb", "vdc"]', ("vdb", "vdc")),
        ("2000", ("2000",)),
        ("2000,2001", ("2000", "2001")),
    ],
)
def test_excluded_disks_from_the_environment(value: str, expected: tuple[str, ...]) -> None:
    """Disk names may be VMware device keys such as 2000 (see DiskInfo), so a bare number is a name."""
    config = load_config(BackupConfig, overrides=BASE, environ={"GENIEVM_EXCLUDED_DISKS": value})
    assert config.excluded_disks == expected


def test_provider_options_and_paths_from_the_environment() -> None:
    env = {
        "GENIEVM_PROVIDER_OPTIONS": '{"uri": "qemu:///system", "vms": {"a": {"vda": "/x"}}}',
        "GENIEVM_BACKUP_DIR": "/var/tmp/gvm",
        "GENIEVM_INCREMENTAL": "false",
    }
    config = load_config(BackupConfig, overrides=BASE, environ=env)
    assert config.provider_options["uri"] == "qemu:///system"
    assert config.backup_dir == Path("/var/tmp/gvm") and config.incremental is False


def test_restore_config_with_disk_configs(tmp_path: Path) -> None:
    file = write_json(
        tmp_path / "restore.json",
        {
            "vmId": "web01",
            "backupPath": "/b",
            "restorePath": "/r",
            "force": True,
            "diskConfigs": [{"name": "vda", "target": "/dev/vg/vda"}, {"name": "vdb", "skip": True}],
        },
    )
    config = load_config(RestoreConfig, path=file, environ={"GENIEVM_BACKUP_ID": "20260101T000000.000000Z-0123abcd"})
    assert config.backup_id == "20260101T000000.000000Z-0123abcd" and config.restore_path == Path("/r")
    assert config.disk_configs == (DiskConfig(name="vda", target="/dev/vg/vda"), DiskConfig(name="vdb", skip=True))
    assert config.force and config.verify_after_restore


def one_line_error(call: Callable[[], Any]) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"compressionLevel": 0}, "compressionLevel"),
        ({"compressionLevel": 23}, "compressionLevel"),
        ({"compressionLevel": "fast"}, "compressionLevel"),
        ({"maxConcurrentDisks": 0}, "maxConcurrentDisks"),
        ({"retentionDays": 0}, "retentionDays"),
        ({"vmId": ""}, "vmId"),
        ({"excludedDisks": 5}, "excludedDisks"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_validation_errors_name_the_camel_case_field(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    file = write_json(tmp_path / "job.json", {"vmId": "a", "backupPath": "b"} | data)
    message = one_line_error(lambda: load_config(BackupConfig, path=file, environ={}))
    assert message.startswith("invalid BackupConfig: ")
    assert f"{field}: " in message
    snake = {"compressionLevel": "compression_level", "maxConcurrentDisks": "max_concurrent_disks"}.get(field)
    if snake:
        assert snake not in message


@pytest.mark.parametrize("model", [BackupConfig, RestoreConfig])
def test_every_field_variable_is_layered_and_no_other(model: type[BackupConfig] | type[RestoreConfig]) -> None:
    """load_config skips the layering (and pydantic-settings' import) only when no variable names a field."""
    for name in model.model_fields:
        assert names_a_field(model, {f"GENIEVM_{name.upper()}": "x"}), name
    others = {"GENIEVM_PASSPHRASE": "x", "GENIEVM_JOB_DB": "x", "GENIEVM_vm_id": "x", "VM_ID": "x", "GENIEVM_VMID": "x"}
    assert not names_a_field(model, others)
    assert load_config(BackupConfig, overrides=BASE, environ=others) == load_config(BackupConfig, overrides=BASE)


def test_the_options_alone_give_what_the_layering_gives() -> None:
    """Without a file or a field's variable the options are validated as they are: the same config, and the same
    one-line error, as through the layers (a variable of another field forces them here)."""
    layers = {"GENIEVM_QUIESCE": "false"}
    options = BASE | {"excluded_disks": ("vdb",), "storage_options": {"region": "x"}, "enable_cbt": False}
    assert load_config(BackupConfig, overrides=options, environ={}) == load_config(
        BackupConfig, overrides=options, environ=layers
    )
    for bad in ({"compression_level": 99}, {"enableCBT": "maybe"}, {"no_such_field": 1}, {"vm_id": ""}):
        alone = one_line_error(partial(load_config, BackupConfig, overrides=BASE | bad, environ={}))
        assert alone == one_line_error(partial(load_config, BackupConfig, overrides=BASE | bad, environ=layers))


def test_missing_fields_are_all_named() -> None:
    message = one_line_error(lambda: load_config(RestoreConfig, environ={}))
    for field in ("vmId", "backupPath"):
        assert f"{field}: Field required" in message


def test_environment_errors_name_the_field() -> None:
    message = one_line_error(
        lambda: load_config(BackupConfig, overrides=BASE, environ={"GENIEVM_COMPRESSION_LEVEL": "max"})
    )
    assert "compressionLevel" in message


@pytest.mark.parametrize("name", ["../vda", "vda/x", "", ".vda", "vda\n"])
def test_disk_config_names_are_plain(name: str) -> None:
    message = one_line_error(
        lambda: load_config(
            RestoreConfig,
            environ={},
            overrides={"vm_id": "a", "backup_path": "b", "restore_path": "/r", "disk_configs": [{"name": name}]},
        )
    )
    assert "diskConfigs.0.name" in message


def test_disk_config_format_is_checked() -> None:
    message = one_line_error(
        lambda: load_config(
            RestoreConfig,
            environ={},
            overrides={
                "vm_id": "a",
                "backup_path": "b",
                "restore_path": "/r",
                "disk_configs": [{"name": "vda", "format": "vmdk"}],
            },
        )
    )
    assert "diskConfigs.0.format" in message


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "cannot read config file"), ("{not json", "is not JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_bad_config_files(tmp_path: Path, content: str | None, match: str) -> None:
    file = tmp_path / "job.json"
    if content is not None:
        file.write_text(content)
    message = one_line_error(lambda: load_config(BackupConfig, path=file, environ={}))
    assert match in message and str(file) in message


@given(st.integers(-100, 100))
def test_compression_level_bounds(level: int) -> None:
    overrides = BASE | {"compression_level": level}
    if 1 <= level <= 22:
        assert load_config(BackupConfig, overrides=overrides, environ={}).compression_level == level
    else:
        with pytest.raises(ConfigError, match="compressionLevel"):
            load_config(BackupConfig, overrides=overrides, environ={})


def test_models_are_frozen() -> None:
    config = load_config(BackupConfig, overrides=BASE, environ={})
    with pytest.raises(ValidationError, match="frozen"):
        config.vm_id = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- through the CLI


def test_cli_config_error_exit_3_one_line(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    result = cli("backup", "--vm", "web01", "--repo", str(tmp_path / "r"), "--compression-level", "30")
    assert result.code == 3
    assert len(result.err_lines) == 1, result.stderr
    assert result.err_lines == [
        "genievm: error: invalid configuration: --compression-level: 30 is out of range (1 to 22)"
    ]
    assert not (tmp_path / "r").exists()


def test_cli_config_error_from_file_and_environment(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    file = write_json(tmp_path / "job.json", {"vmId": "web01", "backupPath": str(tmp_path / "r"), "maxBackups": 0})
    result = cli("backup", "--config", str(file))
    assert result.code == 3 and len(result.err_lines) == 1
    assert "maxBackups" in result.stderr

    result = cli("backup", "--vm", "web01", "--repo", str(tmp_path / "r"), env={"GENIEVM_MAX_CONCURRENT_DISKS": "none"})
    assert result.code == 3 and len(result.err_lines) == 1
    assert "maxConcurrentDisks" in result.stderr


def test_cli_restore_needs_a_target(
    cli: Callable[..., CLIResult], tmp_path: Path, host: PluginHost, new_repo: Callable[..., Any]
) -> None:
    repo, path = new_repo()
    image = write_image(tmp_path / "vda.img", 5000, [(0, b"data")])
    backup_vm(host, repo, "web01", {"vda": image})
    result = cli("restore", "--vm", "web01", "--repo", str(path))
    assert result.code == 3 and len(result.err_lines) == 1
    assert "restorePath: give --target, or a target for disk vda" in result.stderr


def test_a_config_from_an_endless_pipe_is_refused_after_its_bound(tmp_path: Path) -> None:
    """A pipe is read (``--config <(make-config)``), but no further than a config can be long."""
    fifo = tmp_path / "job.fifo"
    os.mkfifo(fifo)
    written = [0]

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                while written[0] < 64 << 20:  # stops when the reader closes (EPIPE), or at 64 MiB
                    written[0] += f.write(b" " * 65536)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(ConfigError) as info:
        load_config(BackupConfig, path=fifo, environ={})
    writer.join(10)
    assert str(info.value) == f"config file {fifo} is larger than 4 MiB"
    assert not writer.is_alive() and written[0] < 8 << 20


def test_a_pipe_within_the_bound_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "job.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w") as f:
            json.dump(BASE, f)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    config = load_config(BackupConfig, path=fifo, environ={})
    writer.join(10)
    assert (config.vm_id, config.backup_path) == ("web01", "/srv/backups")


# ---------------------------------------------------------------- TOML files


def test_a_toml_file_is_the_lowest_layer(tmp_path: Path) -> None:
    file = tmp_path / "job.toml"
    file.write_text(
        'vmId = "from-toml"\nbackupPath = "/toml"\ncompressionLevel = 5\nexcludedDisks = ["vdz"]\nenableCBT = false\n'
        '\n[providerOptions]\nuri = "qemu:///system"\n'
    )
    only_file = load_config(BackupConfig, path=file, environ={})
    assert (only_file.vm_id, only_file.compression_level, only_file.excluded_disks) == ("from-toml", 5, ("vdz",))
    assert only_file.enable_cbt is False and only_file.provider_options == {"uri": "qemu:///system"}

    layered = load_config(
        BackupConfig, path=file, environ={"GENIEVM_COMPRESSION_LEVEL": "7"}, overrides={"vm_id": "from-option"}
    )
    assert (layered.vm_id, layered.compression_level, layered.backup_path) == ("from-option", 7, "/toml")


def test_a_toml_restore_config_with_disk_configs(tmp_path: Path) -> None:
    file = tmp_path / "restore.toml"
    file.write_text('vmId = "web01"\nbackupPath = "/b"\n\n[[diskConfigs]]\nname = "vda"\nformat = "qcow2"\n')
    config = load_config(RestoreConfig, path=file, environ={})
    assert config.disk_configs == (DiskConfig(name="vda", format="qcow2"),)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('vmId = "x', "is not TOML: "),
        ('vmId = "x"\nvmID = "x"\nbackupPath = "/b"', "invalid BackupConfig: vmID: Extra inputs are not permitted"),
        ('vmId = "x"\nbackupPath = "/b"\ncompressionLevel = 99', "compressionLevel: Input should be less than or"),
    ],
)
def test_bad_toml_files(tmp_path: Path, content: str, match: str) -> None:
    file = tmp_path / "job.toml"
    file.write_text(content)
    message = one_line_error(lambda: load_config(BackupConfig, path=file, environ={}))
    assert match in message


def test_cli_backup_from_a_toml_config(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    file = tmp_path / "job.toml"
    file.write_text(f'vmId = "web01"\nbackupPath = "{tmp_path / "r"}"\nmaxBackups = 0\n')
    result = cli("backup", "--config", str(file))
    assert result.code == 3 and len(result.err_lines) == 1
    assert result.err_lines == [
        "genievm: error: invalid BackupConfig: maxBackups: Input should be greater than or equal to 1"
    ]


def test_variables_are_upper_case_only() -> None:
    """As before pydantic-settings: GENIEVM_COMPRESSION_LEVEL, never genievm_compression_level."""
    config = load_config(BackupConfig, overrides=BASE, environ={"genievm_compression_level": "7"})
    assert config.compression_level == 3
    assert load_config(BackupConfig, overrides=BASE, environ={"GENIEVM_COMPRESSION_LEVEL": "7"}).compression_level == 7
