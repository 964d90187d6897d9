"""Storage options reach the storage target's factory: GENIEVM_STORAGE_OPTIONS, then a job
config's storageOptions, then ``genievm --storage-option KEY=VALUE``; malformed ones are one line."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from genievm_storage_fs import FilesystemStorage
from support import CLIResult

from genievm_core.cli.common import State, parse_storage_options
from genievm_core.errors import ConfigError
from genievm_core.models.config import BackupConfig, RestoreConfig, load_config
from genievm_core.plugin import PluginHost, StorageRegistry, hookimpl


class OptionsRecorder:
    """A storage plugin whose factory keeps the options it was given (and opens a real folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def genievm_register_storage(self, registry: StorageRegistry) -> None:
        registry.add("rec", self.open)

    def open(self, url: str, options: Mapping[str, Any]) -> FilesystemStorage:
        self.seen.append(dict(options))
        return FilesystemStorage(self.root)


def test_options_are_layered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = OptionsRecorder(tmp_path)
    st = State(storage_options={"c": "from-cli"}, _host=PluginHost(autoload=False, extra_plugins=[("rec", recorder)]))
    monkeypatch.setenv("GENIEVM_STORAGE_OPTIONS", json.dumps({"a": "env", "b": "env", "c": "env"}))
    st.open_storage("rec://x", {"b": "config", "c": "config"})
    assert recorder.seen[-1] == {"a": "env", "b": "config", "c": "from-cli"}
    st.open_storage("rec://x")
    assert recorder.seen[-1] == {"a": "env", "b": "env", "c": "from-cli"}


def test_job_configs_carry_storage_options(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"vmId": "web01", "backupPath": "s3://b/p", "storageOptions": {"endpointUrl": "http://e"}})
    )
    assert load_config(BackupConfig, path=job).storage_options == {"endpointUrl": "http://e"}
    env = {"GENIEVM_STORAGE_OPTIONS": '{"region": "eu-1"}'}
    assert load_config(RestoreConfig, path=job, environ=env).storage_options == {"region": "eu-1"}


def test_parse_storage_options() -> None:
    assert parse_storage_options(["endpoint_url=http://h:9000/x?a=b", " region =eu-1", "empty="]) == {
        "endpoint_url": "http://h:9000/x?a=b",
        "region": "eu-1",
        "empty": "",
    }
    for bad in ["a-secret-without-its-key", "=value"]:
        with pytest.raises(ConfigError) as info:
            parse_storage_options([bad])
        assert str(info.value) == "invalid configuration: --storage-option: give KEY=VALUE"


def test_the_command_line_reaches_the_filesystem_target(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    ok = cli("--storage-option", "fsync=false", "repo", "init", str(tmp_path / "r"), "--encryption", "none")
    assert ok.code == 0, ok.stderr
    bad = cli("--storage-option", "fsync=maybe", "repo", "info", str(tmp_path / "r"))
    assert (bad.code, bad.err_lines) == (
        3,
        ["genievm: error: invalid configuration: storage option fsync: 'maybe' is not true or false"],
    )
    env = {"GENIEVM_STORAGE_OPTIONS": "fsync=false"}
    bad_env = cli("repo", "info", str(tmp_path / "r"), env=env)
    assert (bad_env.code, bad_env.err_lines) == (
        3,
        ["genievm: error: invalid configuration: GENIEVM_STORAGE_OPTIONS: not a JSON object"],
    )
