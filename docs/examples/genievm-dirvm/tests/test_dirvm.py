"""genievm-dirvm's tests: the contract suites (its self-checks), discovery, and a CLI round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from genievm_core.plugin import PluginHost
from genievm_core.testing import run_cli

from genievm_dirvm.checks import TestBlockHashCBT, TestDirVMProvider, make_vm_folder

__all__ = ["TestBlockHashCBT", "TestDirVMProvider"]  # the contract suites run here too


def ENV(tmp_path: Path) -> dict[str, str]:
    return {"GENIEVM_JOB_DB": str(tmp_path / "jobs.db"), "GENIEVM_PASSPHRASE": "dirvm example"}


def test_the_plugin_is_found_through_its_entry_point() -> None:
    info = {p.name: p for p in PluginHost().plugins()}["dirvm"]
    assert (info.distribution, info.origin) == ("genievm-dirvm", "entry-point")
    assert info.registers == {
        "provider": ["dirvm"],
        "CBT source": ["dirvm-blockhash"],
        "self-check": ["dirvm-contracts"],
    }


def test_backup_and_restore_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_vm_folder(tmp_path / "vms")
    repo, target = str(tmp_path / "repo"), tmp_path / "restored"
    opts = ["--provider", "dirvm", "-o", f"root={folder}"]

    def cli(*args: str) -> str:
        code, out, err = run_cli(monkeypatch, capsys, *args, env=ENV(tmp_path))
        assert code == 0, err
        return out

    cli("repo", "init", repo, "--chunk-size", "65536")
    assert [v["id"] for v in json.loads(cli("vms", *opts, "--json"))] == ["web01"]
    full = json.loads(cli("backup", *opts, "--vm", "web01", "--repo", repo, "--json"))
    (folder / "web01-vdb.img").write_bytes((folder / "web01-vdb.img").read_bytes()[:-5] + b"12345")
    inc = json.loads(cli("backup", *opts, "--vm", "web01", "--repo", repo, "--json"))
    assert (full["kind"], inc["kind"]) == ("full", "incremental")
    vdb = next(d for d in inc["disks"] if d["name"] == "vdb")
    assert (vdb["cbt"]["mode"], vdb["cbt"]["source"]) == ("cbt", "dirvm-blockhash")
    assert vdb["stats"]["bytes_scanned"] == 200 * 1024 - 3 * 65536  # the last (short) block only

    cli("restore", *opts, "--vm", "web01", "--repo", repo, "--target", str(target), "--new-name", "web01-copy")
    sidecar = json.loads((target / "web01-copy.json").read_text())
    assert sidecar["name"] == "web01-copy" and sidecar["memory_mib"] == 512
    for disk in ("vda", "vdb"):
        assert Path(sidecar["disks"][disk]).read_bytes() == (folder / f"web01-{disk}.img").read_bytes()
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "restore",
        *opts,
        "--vm",
        "web01",
        "--repo",
        repo,
        "--target",
        str(target),
        "--new-name",
        "web01-copy",
        env=ENV(tmp_path),
    )
    assert code == 23 and "exists" in err
