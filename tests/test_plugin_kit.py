"""The plugin author's kit: ``genievm plugins --check``, the pytest plugin's fixtures, the in-memory target.

``--check`` runs in a real ``genievm`` process over installed plugins: the
example plugin (docs/examples/genievm-dirvm, installed by scripts/setup.sh)
passes; ``leaky``, installed into a site folder for the test, declares its
contract suite and a module that does not exist, and fails both; ``broken``
(its import fails) is disabled, for the command and for the checks' processes.
"""

from __future__ import annotations

import json

import pytest
from test_plugins import install, run_all, site_env

from genievm_core.errors import PluginCheckError
from genievm_core.plugin import PluginHost
from genievm_core.repository import Repository
from genievm_core.testing import MemoryStorage

LEAKY_PLUGIN = '''
from genievm_core.builtin.image import ImageProvider
from genievm_core.plugin import hookimpl


class LeakyProvider(ImageProvider):
    """The image provider, but an unknown VM is a KeyError, not a VMNotFoundError."""

    name = "leaky"

    def describe_vm(self, vm_id):
        if vm_id not in self._vms:
            raise KeyError(vm_id)
        return super().describe_vm(vm_id)


@hookimpl
def genievm_register_providers(registry):
    registry.add("leaky", LeakyProvider)


@hookimpl
def genievm_register_self_checks(registry):
    registry.add("leaky-contract", "genievm_leaky.checks")
    registry.add("leaky-missing", "genievm_leaky.nowhere")
'''
LEAKY_CHECKS = """
from genievm_core.builtin.checks import TestImageProvider


class TestLeakyProvider(TestImageProvider):
    provider_name = "leaky"
"""


@pytest.fixture(scope="module")
def check_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("check-runs")
    site = root / "site"
    install(
        site,
        "genievm-leaky",
        "0.1",
        {"leaky": "genievm_leaky.plugin"},
        {
            "genievm_leaky/__init__.py": "",
            "genievm_leaky/plugin.py": LEAKY_PLUGIN,
            "genievm_leaky/checks.py": LEAKY_CHECKS,
        },
    )
    install(site, "genievm-broken", "0.9", {"broken": "genievm_broken.plugin"}, {"genievm_broken/__init__.py": "",
            "genievm_broken/plugin.py": 'raise RuntimeError("the vendor SDK is missing")\n'})  # fmt: skip
    off = ["--disable-plugin", "broken"]
    runs = {
        "pass": (["plugins", "--check", "--only", "dirvm", "--json"], site_env(root / "empty", root / "c1")),
        "fail": ([*off, "plugins", "--check", "--only", "leaky", "--only", "image"], site_env(site, root / "c2")),
        "unknown": ([*off, "plugins", "--check", "--only", "nosuch"], site_env(site, root / "c3")),
    }
    return dict(run_all(runs))


def test_check_runs_the_self_checks_of_the_example_plugin(check_runs: dict[str, object]) -> None:
    result = check_runs["pass"]
    assert result.code == 0, result.stderr  # type: ignore[attr-defined]
    (only,) = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert (only["plugin"], only["name"], only["outcome"]) == ("dirvm", "dirvm-contracts", "passed")
    assert only["passed"] >= 15 and only["failed"] == 0 and only["problems"] == []


def test_check_fails_naming_the_plugin_and_the_broken_contract(check_runs: dict[str, object]) -> None:
    result = check_runs["fail"]
    assert result.code == PluginCheckError.exit_code == 28, result.stderr  # type: ignore[attr-defined]
    assert result.err_lines == [  # type: ignore[attr-defined]
        "genievm: error: self-checks failed: 2 of 3 (leaky: leaky-contract, leaky: leaky-missing)"
    ]
    out = result.stdout  # type: ignore[attr-defined]
    assert "leaky: leaky-contract: TestLeakyProvider::test_an_unknown_vm_is_vm_not_found:" in out
    assert "KeyError" in out
    assert "leaky: leaky-missing: pytest exited 4" in out  # pytest's usage error: no such module
    assert "image-contract" in out and "passed" in out


def test_check_of_an_unknown_plugin_is_a_plugin_error(check_runs: dict[str, object]) -> None:
    result = check_runs["unknown"]
    assert result.code == 4  # type: ignore[attr-defined]
    assert "no plugin named 'nosuch' is installed" in result.stderr  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the pytest plugin's fixtures


def test_the_fixtures_come_from_the_pytest11_plugin(
    pytestconfig: pytest.Config, genievm_host: PluginHost, genievm_repository: Repository, memory_storage: MemoryStorage
) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("genievm")
    assert plugin is not None and plugin.__name__ == "genievm_core.testing.plugin"
    assert "memory" in genievm_host.storage and "image" in genievm_host.providers
    assert genievm_repository.storage.exists("config") and genievm_repository.chunk_size == 65536
    assert genievm_repository.storage is memory_storage and memory_storage.keys() == ["config"]


def test_memory_urls_open_one_store_per_name(genievm_host: PluginHost) -> None:
    from genievm_core.repository.storage import open_storage

    first = open_storage(genievm_host, "memory://kit-test")
    Repository.init(first, passphrase=None)
    assert Repository.open(open_storage(genievm_host, "memory://kit-test")).config.repository_id
    assert not open_storage(genievm_host, "memory://kit-other").exists("config")
