"""Fixtures of the core tests: real sparse images, real repositories, the real CLI.

- ``make_image(path, size, layout)``: a sparse raw image (see ``support.write_image``).
- ``new_repo(encrypted=False, chunk_size=65536)``: ``(Repository, path)`` in a fresh folder.
- ``host``: a ``PluginHost`` with the installed plugins.
- ``cli(*args, env=...)``: runs ``genievm_core.cli.main`` (the function the
  console script calls) in this process; exit code, stdout and stderr.
- ``genievm_exe(*args, env=...)``: runs the installed console script in a
  subprocess, for what needs a real process (entry points, tracebacks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from genievm_core.logging import reset_logging

sys.path.insert(0, str(Path(__file__).parent))

from support import CHUNK, PASSPHRASE, CLIResult, genievm_path, write_image  # noqa: E402

from genievm_core.plugin import PluginHost  # noqa: E402
from genievm_core.repository import Repository  # noqa: E402
from genievm_core.repository.storage import open_storage  # noqa: E402
from genievm_core.testing import run_cli  # noqa: E402

# the machine may be busy: examples are judged on their results, never on their speed
settings.register_profile("genievm", deadline=None)
settings.load_profile("genievm")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No GENIEVM_* variable of the caller leaks into a test; each test has its own job registry
    (``GENIEVM_JOB_DB``, passed on to subprocesses); logging is reset after each."""
    for name in list(os.environ):
        if name.startswith("GENIEVM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "jobs.sqlite"))
    yield
    reset_logging()


@pytest.fixture(scope="session")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture
def make_image() -> Callable[..., Path]:
    return write_image


@pytest.fixture
def new_repo(host: PluginHost, tmp_path: Path) -> Callable[..., tuple[Repository, Path]]:
    counter = iter(range(1000))

    def make(encrypted: bool = False, chunk_size: int = CHUNK) -> tuple[Repository, Path]:
        path = tmp_path / f"repo{next(counter)}"
        repo = Repository.init(
            open_storage(host, str(path)), passphrase=PASSPHRASE if encrypted else None, chunk_size=chunk_size
        )
        return repo, path

    return make


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CLIResult]:
    def run(*args: str, env: Mapping[str, str] | None = None) -> CLIResult:
        return CLIResult(*run_cli(monkeypatch, capsys, *args, env=env))

    return run


@pytest.fixture
def genievm_exe() -> Callable[..., CLIResult]:
    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> CLIResult:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENIEVM_") or k == "GENIEVM_JOB_DB"}
        full_env.update(env or {})
        proc = subprocess.run(
            [genievm_path(), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    return run
