"""The plugin host: entry-point discovery of a real installed plugin, failures, opt-outs, registries.

A plugin is "installed" the way an installer leaves it: its package and a
``.dist-info`` folder (METADATA, entry_points.txt) in a folder on the path.
The ``genievm`` console script runs in a subprocess with that folder on
PYTHONPATH, so discovery goes through importlib.metadata and stevedore exactly
as on a user's machine. The demo plugin's source is tests/plugin_pkg/ (a real
package with its own pyproject.toml); its dist-info is built from that file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import CLIResult, genievm_path, open_repo, restore_vm

from genievm_core import __version__
from genievm_core.errors import PluginError
from genievm_core.plugin import ENTRY_POINT_GROUP, PLUGIN_API, PluginHost, hookimpl, spec
from genievm_core.plugin.registry import ProviderRegistry, SelfCheckRegistry, StorageRegistry, VerifierRegistry
from genievm_core.repository import Repository
from genievm_core.repository.storage import open_storage

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
Run = Callable[..., CLIResult]


def install(site: Path, name: str, version: str, entry_points: Mapping[str, str], modules: Mapping[str, str]) -> None:
    """Install a distribution into ``site`` as an installer would: modules plus a dist-info folder."""
    for rel, source in modules.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[genievm]\n{lines}")


def install_demo(site: Path) -> dict[str, Any]:
    """Install tests/plugin_pkg into ``site``; return its [project] table."""
    project = tomllib.loads((PLUGIN_PKG / "pyproject.toml").read_text())["project"]
    shutil.copytree(
        PLUGIN_PKG / "genievm_demo_plugin", site / "genievm_demo_plugin", ignore=shutil.ignore_patterns("__pycache__")
    )
    install(site, project["name"], project["version"], project["entry-points"]["genievm"], {})
    return project


def plugins_json(result: CLIResult) -> dict[str, dict[str, Any]]:
    assert result.code == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def site_env(site: Path, cache: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run with ``site`` on PYTHONPATH, a private entry-point cache and job registry
    (never the host's own ``/var/lib/genievm``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_")}
    private = {"PYTHONPATH": str(site), "XDG_CACHE_HOME": str(cache), "GENIEVM_JOB_DB": str(cache / "jobs.sqlite")}
    return env | private | dict(extra or {})


def run_all(runs: Mapping[str, tuple[list[str], dict[str, str]]]) -> dict[str, CLIResult]:
    """Run several independent ``genievm`` processes at once (each takes a second or more to start)."""
    procs = {
        name: subprocess.Popen(
            [genievm_path(), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = CLIResult(proc.returncode, out, err)
    return results


BROKEN = 'raise RuntimeError("the vendor SDK is missing")\n'
NOISY = (
    "import os, pathlib\n"
    "pathlib.Path(os.environ['NOISY_MARKER']).write_text('imported')\n"
    "from genievm_core.plugin import hookimpl\n"
    "@hookimpl\n"
    "def genievm_register_verifiers(registry):\n"
    "    pass\n"
)


@dataclass
class Runs:
    """The sites, and the result of each run made on them."""

    demo_site: Path
    project: dict[str, Any]
    repo: Path
    markers: dict[str, Path]
    results: dict[str, CLIResult]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Two sites and the ``genievm`` runs on them, started together.

    - demo site: the demo plugin only (tests/plugin_pkg);
    - mixed site: the demo plugin, ``broken`` (its import raises) and ``noisy``
      (its import writes the file named by NOISY_MARKER).
    """
    root = tmp_path_factory.mktemp("plugin-runs")
    demo_site, mixed_site = root / "site-demo", root / "site-mixed"
    project = install_demo(demo_site)
    install_demo(mixed_site)
    install(
        mixed_site,
        "genievm-broken",
        "0.9",
        {"broken": "genievm_broken.plugin"},
        {"genievm_broken/__init__.py": "", "genievm_broken/plugin.py": BROKEN},
    )
    install(
        mixed_site,
        "genievm-noisy",
        "0.1",
        {"noisy": "genievm_noisy.plugin"},
        {"genievm_noisy/__init__.py": "", "genievm_noisy/plugin.py": NOISY},
    )
    repo = root / "repo"
    Repository.init(open_storage(PluginHost(), str(repo)), passphrase=None, chunk_size=65536)
    markers = {name: root / f"marker-{name}" for name in ("broken", "disabled", "no-autoload")}

    def mixed(name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return site_env(mixed_site, root / f"cache-{name}", {"NOISY_MARKER": str(markers[name])} | dict(extra or {}))

    results = run_all(
        {
            "discover": (["plugins", "--json"], site_env(demo_site, root / "cache-discover")),
            "backup": (
                ["backup", "--provider", "demo", "--vm", "demo1", "--repo", str(repo), "--json"],
                site_env(demo_site, root / "cache-backup"),
            ),
            "broken": (["plugins", "--json"], mixed("broken")),
            "disabled": (
                ["--disable-plugin", "broken", "--disable-plugin", "noisy", "plugins", "--json"],
                mixed("disabled"),
            ),
            "no-autoload": (["plugins", "--json"], mixed("no-autoload", {"GENIEVM_DISABLE_PLUGIN_AUTOLOAD": "1"})),
        }
    )
    return Runs(demo_site, project, repo, markers, results)


# ---------------------------------------------------------------- discovery through entry points


def test_an_installed_plugin_is_discovered(runs: Runs) -> None:
    found = plugins_json(runs.results["discover"])
    demo = found["demo"]
    assert demo["distribution"] == runs.project["name"] == "genievm-demo-plugin"
    assert demo["version"] == runs.project["version"] == "1.2.3"
    assert demo["origin"] == "entry-point"
    assert demo["registers"] == {
        "storage target": ["demo"],
        "provider": ["demo"],
        "CBT source": ["demo-cbt"],
        "verifier": ["demo-size"],
    }
    # the other plugins are still there, each with what it registers
    assert found["file"]["distribution"] == "genievm-storage-fs"
    assert found["image"]["registers"] == {"provider": ["image"], "self-check": ["image-contract"]}
    assert found["verifiers"]["registers"] == {
        "verifier": ["chunks", "data", "manifest"],
        "self-check": ["chunks-contract", "data-contract", "manifest-contract"],
    }


def test_the_plugin_provider_backs_up_a_vm(runs: Runs, host: PluginHost, tmp_path: Path) -> None:
    """A provider from an installed plugin does a whole backup; the image provider restores it."""
    result = runs.results["backup"]
    assert result.code == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["vm"]["provider"] == "demo" and [d["name"] for d in manifest["disks"]] == ["vda", "vdb"]
    assert [d["cbt"]["token"] for d in manifest["disks"]] == ["demo-token", "demo-token"]
    vda = manifest["disks"][0]["stats"]
    assert vda["chunks_zero"] == 1 and vda["bytes_read"] == 3 * 65536 + 32768 - 65536  # the hole is not read

    restore_vm(host, open_repo(host, runs.repo), "demo1", tmp_path / "out", backup_id=manifest["backup_id"])
    module_file = runs.demo_site / "genievm_demo_plugin" / "plugin.py"
    spec_ = importlib.util.spec_from_file_location("demo_plugin_module", module_file)
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    for disk in ("vda", "vdb"):
        assert (tmp_path / "out" / f"{disk}.img").read_bytes() == module.disk_bytes(disk)


# ---------------------------------------------------------------- a plugin that fails, and the opt-outs


def test_a_plugin_whose_import_fails_exits_4_naming_it(runs: Runs) -> None:
    result = runs.results["broken"]
    assert result.code == 4
    assert len(result.err_lines) == 1, result.stderr
    line = result.err_lines[0]
    assert line.startswith("genievm: error: plugin broken ")
    assert "genievm_broken.plugin" in line and "RuntimeError: the vendor SDK is missing" in line
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout) == {  # run with --json: the error is JSON on stdout too
        "error": {"code": "PluginError", "exit": 4, "message": line.removeprefix("genievm: error: ")}
    }


def test_disable_plugin_skips_the_failing_plugin(runs: Runs) -> None:
    result = runs.results["disabled"]
    found = plugins_json(result)
    assert "broken" not in found and "noisy" not in found
    assert found["demo"]["version"] == "1.2.3" and "file" in found
    assert result.stderr == ""


def test_disable_plugin_does_not_import_it(runs: Runs) -> None:
    """``--disable-plugin NAME`` is the operator's way around a plugin that breaks on import
    (a crashing native library, a hang): the plugin's code must not run at all (pytest's ``-p no:NAME``)."""
    assert runs.results["disabled"].code == 0, runs.results["disabled"].stderr
    assert not runs.markers["disabled"].exists(), "the disabled plugin 'noisy' was imported anyway"


def test_autoload_can_be_turned_off(runs: Runs) -> None:
    found = plugins_json(runs.results["no-autoload"])
    assert sorted(found) == ["image", "verifiers"], "only the built-in plugins load without autoload"
    assert not runs.markers["no-autoload"].exists()


def test_entry_point_changes_are_seen(genievm_exe: Run, tmp_path: Path) -> None:
    """A plugin reinstalled at the same version with its module renamed (a developer's `uv sync`).

    stevedore caches entry points under XDG_CACHE_HOME keyed by sys.path and the
    mtimes of each entry_points.txt, packed as 32-bit floats (a resolution of
    128 s today): two installs a minute apart can key the same cache entry, which
    then serves the old entry point. Here the two mtimes are set 60 s apart, in
    the same 128 s step, so the outcome does not depend on the clock.
    """
    site = tmp_path / "site"
    files = {
        "genievm_dev/__init__.py": "",
        "genievm_dev/hooks.py": "from genievm_core.plugin import hookimpl\n"
        "@hookimpl\ndef genievm_register_providers(registry):\n"
        "    registry.add('dev', dict)\n",
    }
    install(
        site,
        "genievm-dev",
        "0.1",
        {"dev": "genievm_dev.plugin"},
        files | {"genievm_dev/plugin.py": files["genievm_dev/hooks.py"]},
    )
    entry_points = site / "genievm_dev-0.1.dist-info" / "entry_points.txt"
    step = (int(time.time()) // 128) * 128 + 1
    os.utime(entry_points, (step, step))
    env = {"PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = plugins_json(genievm_exe("plugins", "--json", env=env))
    assert first["dev"]["registers"] == {"provider": ["dev"]}

    # reinstall: the module is now genievm_dev.hooks; genievm_dev/plugin.py is gone
    (site / "genievm_dev" / "plugin.py").unlink()
    install(site, "genievm-dev", "0.1", {"dev": "genievm_dev.hooks"}, files)
    os.utime(entry_points, (step + 60, step + 60))
    second = genievm_exe("plugins", "--json", env=env)
    assert second.code == 0, f"stale entry point served after a reinstall: {second.stderr.strip()}"
    assert plugins_json(second)["dev"]["registers"] == {"provider": ["dev"]}


def test_a_plugin_built_for_another_plugin_api_is_refused_in_one_line(genievm_exe: Run, tmp_path: Path) -> None:
    site = tmp_path / "site"
    plugin = "from genievm_core.plugin import hookimpl\nGENIEVM_PLUGIN_API = {api}\n" + (
        "@hookimpl\ndef genievm_register_providers(registry):\n    registry.add('{name}', dict)\n"
    )
    for name, api in (("future", 2), ("current", PLUGIN_API)):
        install(
            site,
            f"genievm-{name}",
            "3.0",
            {name: f"genievm_{name}.plugin"},
            {f"genievm_{name}/__init__.py": "", f"genievm_{name}/plugin.py": plugin.format(api=api, name=name)},
        )
    refused = genievm_exe("plugins", "--json", env=site_env(site, tmp_path / "cache"))
    assert refused.code == 4 and json.loads(refused.stdout)["error"]["code"] == "PluginError"  # --json: JSON too
    assert refused.err_lines == [
        f"genievm: error: plugin future (genievm-future 3.0) is built for plugin API 2; genievm-core "
        f"{__version__} has plugin API {PLUGIN_API} (install a genievm-future for it, or --disable-plugin future)"
    ]
    # the plugin of this API loads, and the operator's way around the other works
    around = genievm_exe("--disable-plugin", "future", "plugins", "--json", env=site_env(site, tmp_path / "cache2"))
    found = plugins_json(around)
    assert found["current"]["registers"] == {"provider": ["current"]} and "future" not in found


def test_every_plugin_here_declares_the_plugin_api() -> None:
    for name in ("kvm", "vmware", "aws", "file", "s3", "dirvm"):
        (entry_point,) = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
        assert getattr(entry_point.load(), "GENIEVM_PLUGIN_API", None) == PLUGIN_API, name


# ---------------------------------------------------------------- the host in this process


class Recorder:
    """A plugin with every hook, recording the order they fire in."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def genievm_register_storage(self, registry: StorageRegistry) -> None:
        self.calls.append("storage")
        registry.add("rec", lambda url, options: None)  # type: ignore[arg-type,return-value]

    @hookimpl
    def genievm_register_providers(self, registry: ProviderRegistry) -> None:
        self.calls.append("providers")

    @hookimpl
    def genievm_register_cbt_sources(self, registry: Any) -> None:
        self.calls.append("cbt_sources")

    @hookimpl
    def genievm_register_verifiers(self, registry: VerifierRegistry) -> None:
        self.calls.append("verifiers")

    @hookimpl
    def genievm_register_self_checks(self, registry: SelfCheckRegistry) -> None:
        self.calls.append("self_checks")


def test_hooks_fire_once_each_in_the_documented_order() -> None:
    rec = Recorder()
    host = PluginHost(autoload=False, extra_plugins=[("rec", rec)])
    assert rec.calls == ["storage", "providers", "cbt_sources", "verifiers", "self_checks"]
    info = {p.name: p for p in host.plugins()}["rec"]
    assert (info.origin, info.registers) == ("manual", {"storage target": ["rec"]})
    assert "rec" in host.storage and "file" not in host.storage  # no autoload: no entry points


def test_disabled_builtins_are_not_registered() -> None:
    host = PluginHost(autoload=False, disabled=["image"])
    assert "image" not in host.providers
    assert [p.name for p in host.plugins()] == ["verifiers"]
    with pytest.raises(PluginError, match=r"no provider named 'image' is installed \(installed: none\)"):
        host.providers.get("image")


def test_a_name_clash_names_both_plugins() -> None:
    class Clash:
        @hookimpl
        def genievm_register_providers(self, registry: ProviderRegistry) -> None:
            registry.add("image", dict)  # type: ignore[arg-type]

    with pytest.raises(PluginError, match=r"plugin clash: provider 'image' is already registered by image"):
        PluginHost(autoload=False, extra_plugins=[("clash", Clash())])


def test_a_registration_hook_wrapper_is_a_plugin_error_naming_the_plugin() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def genievm_register_providers(self, registry: ProviderRegistry) -> Any:
            registry.add("wrapped", dict)  # type: ignore[arg-type]
            return (yield)

    with pytest.raises(PluginError, match=r"plugin wrapper: genievm_register_providers cannot be a hook wrapper"):
        PluginHost(autoload=False, extra_plugins=[("wrapper", Wrapper())])


def test_a_plugin_name_registered_twice_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="plugin image"):
        PluginHost(autoload=False, extra_plugins=[("image", Recorder())])


def test_a_misspelt_hook_is_a_plugin_error_naming_the_plugin() -> None:
    class Typo:
        @hookimpl
        def genievm_register_provider(self, registry: Any) -> None:  # the hook is ..._providers
            pass

    with pytest.raises(PluginError, match="typo"):
        PluginHost(autoload=False, extra_plugins=[("typo", Typo())])


def test_a_hook_with_wrong_arguments_is_a_plugin_error_naming_the_plugin() -> None:
    class WrongArgs:
        @hookimpl
        def genievm_register_providers(self, providers: Any) -> None:  # the argument is `registry`
            pass

    with pytest.raises(PluginError, match="wrongargs"):
        PluginHost(autoload=False, extra_plugins=[("wrongargs", WrongArgs())])


def test_every_hookspec_is_documented_with_its_version() -> None:
    hooks = [name for name in dir(spec) if name.startswith("genievm_")]
    assert sorted(hooks) == sorted(n for n in spec.__all__ if n.startswith("genievm_"))
    for name in hooks:
        doc = getattr(spec, name).__doc__ or ""
        assert ":param registry:" in doc and "Since 0.1" in doc, name


def test_a_sigterm_while_a_plugin_loads_is_an_interruption_not_a_broken_plugin(
    genievm_exe: Run, tmp_path: Path
) -> None:
    """A worker stopped while its plugins loaded said "plugin aws ... failed to load: JobInterruptedError"."""
    site = tmp_path / "site"
    stopped = "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\n"
    install(site, "genievm-slow", "1.0", {"slow": "genievm_slow.plugin"},
            {"genievm_slow/__init__.py": "", "genievm_slow/plugin.py": stopped})  # fmt: skip
    result = genievm_exe("plugins", "--json", env=site_env(site, tmp_path / "cache"))
    assert (result.code, result.err_lines) == (130, ["genievm: error: interrupted by SIGTERM"])
