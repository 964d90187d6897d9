"""``genievm vms`` lists what a provider can back up, from a job config's providerOptions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support import CLIResult

from genievm_core.plugin import PluginHost


def test_vms_lists_the_image_providers_vms(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    vms = {"web01": {"vda": "/srv/web01.img"}, "db01": ["/srv/db01-a.img", "/srv/db01-b.img"]}
    config.write_text(json.dumps({"vmId": "web01", "backupPath": "/r", "providerOptions": {"vms": vms}}))
    result = cli("vms", "--config", str(config), "--json")
    assert result.code == 0, result.stderr
    assert [(vm["id"], vm["name"]) for vm in json.loads(result.stdout)] == [("db01", "db01"), ("web01", "web01")]


def test_vms_of_an_uninstalled_provider(cli: Callable[..., CLIResult]) -> None:
    result = cli("vms", "--provider", "hyperv")
    installed = ", ".join(PluginHost().providers.names())  # image, kvm, vmware and the example plugin dirvm
    assert result.code == 4 and result.err_lines == [
        f"genievm: error: no provider named 'hyperv' is installed (installed: {installed})"
    ]


def test_vms_reads_a_toml_job_config(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text('vmId = "web01"\nbackupPath = "/r"\n\n[providerOptions.vms]\nweb01 = ["/srv/web01.img"]\n')
    result = cli("vms", "--config", str(config), "--json")
    assert result.code == 0, result.stderr
    assert [vm["id"] for vm in json.loads(result.stdout)] == ["web01"]


def test_vms_refuses_a_config_that_is_not_an_object(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text("[1]")
    result = cli("vms", "--config", str(config))
    assert result.code == 3 and result.err_lines == [f"genievm: error: config file {config} must hold a JSON object"]
