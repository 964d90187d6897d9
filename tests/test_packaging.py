"""Packaging (issue 21): the core's sdist holds the core only; metadata for Python 3.11-3.13; plugins bound
to a compatible genievm-core; the locked workspace installs and imports on each supported Python."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SUPPORTED = ("3.11", "3.12", "3.13")
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def core_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([*uv(), "build", "-q", "--package", "genievm-core", "--out-dir", str(out)], cwd=ROOT, check=True)
    return out


def test_the_core_sdist_holds_the_core_only(core_dist: Path) -> None:
    (sdist,) = core_dist.glob("genievm_core-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = {Path(name).parts[1] for name in tar.getnames() if len(Path(name).parts) > 1}
    # hatchling always adds the root .gitignore (its list of what a build leaves out)
    assert top == {"genievm_core", "README.md", "pyproject.toml", "PKG-INFO", ".gitignore"}


def test_the_core_metadata(core_dist: Path) -> None:
    (wheel,) = core_dist.glob("genievm_core-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(whl.read(name).decode())
    assert metadata["Requires-Python"] == "<3.14,>=3.11"
    assert metadata["License-Expression"] == "Apache-2.0" and metadata["Author"] == "GenieVM developers"
    classifiers = metadata.get_all("Classifier") or []
    assert [c for c in classifiers if c.startswith("Programming Language :: Python :: 3.")] == [
        f"Programming Language :: Python :: {v}" for v in SUPPORTED
    ]
    assert any(r.startswith("pydantic-settings") for r in metadata.get_all("Requires-Dist") or [])


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugin_depends_on_a_compatible_core(plugin: Path) -> None:
    project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    assert project["dependencies"][0] == "genievm-core>=0.2,<1"
    assert project["requires-python"] == ">=3.11,<3.14"
    sdist = tomllib.loads((plugin / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["sdist"]
    assert sdist["only-include"] == [plugin.name, "pyproject.toml"]  # not its tests


def _interpreter(version: str) -> str | None:
    """A Python ``version`` where scripts/check_pythons.sh looks: PATH, pyenv's versions, /usr/bin, uv's."""
    pyenv = Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")
    candidates = [shutil.which(f"python{version}"), *map(str, pyenv), f"/usr/bin/python{version}"]
    wanted = tuple(map(int, version.split(".")))
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", f"import sys; sys.exit(sys.version_info[:2] != {wanted})"]
        if Path(candidate).exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    done = subprocess.run(
        [*uv(), "python", "find", "--no-python-downloads", version], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.parametrize("version", [v for v in SUPPORTED if v != f"{sys.version_info[0]}.{sys.version_info[1]}"])
def test_the_locked_workspace_installs_and_imports_on(version: str) -> None:
    """The suite runs on one Python (3.11 in CI); scripts/check_pythons.sh checks each other one here."""
    if _interpreter(version) is None:
        pytest.skip(f"no Python {version} interpreter on this machine (pyenv, PATH or uv's); none is downloaded")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_pythons.sh"), version], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"check_pythons: {version}: ok" in done.stdout
