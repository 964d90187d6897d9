"""Fixtures of the server's tests: a private job registry per test, no GENIEVM_* variable of the caller,
the server's database on SQLite and on PostgreSQL, a site of image VMs, and the real server."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server_support import (  # noqa: E402
    PASSPHRASE,
    ServerProcess,
    Site,
    ext4_disk,
    genievm,
    postgres_cluster,
    postgres_database,
    start_server,
    write_image,
)

_POSTGRES = os.environ.get("GENIEVM_TEST_POSTGRES_URL")  # read before the environment is cleaned


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("GENIEVM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "state" / "jobs.sqlite"))
    yield


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    if _POSTGRES:
        os.environ["GENIEVM_TEST_POSTGRES_URL"] = _POSTGRES
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's database: a SQLite file, or a fresh database of a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.sqlite'}"
        return
    with postgres_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """Three image VMs and an encrypted repository made by the CLI, the passphrase in a file of the server."""
    images = tmp_path / "images"
    images.mkdir()
    vms = {
        name: {"vda": str(write_image(images / f"{name}.img", 8 << 20, seed))}
        for seed, name in enumerate(["web01", "web02", "db01"])
    }
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    repo = tmp_path / "repo"
    genievm("repo", "init", str(repo), "--passphrase-file", str(passphrase))
    settings = {
        "repositories": {"main": {"url": str(repo), "passphrase_file": str(passphrase)}},
        "providers": {"lab": {"plugin": "image", "options": {"vms": vms}}},
        "job_db": str(tmp_path / "state" / "jobs.sqlite"),
        "scheduler_interval": 0.5,
        "restore_root": str(tmp_path / "restores"),
    }
    return Site(tmp_path, f"sqlite:///{tmp_path / 'state' / 'server.sqlite'}", settings)


@pytest.fixture
def files_site(site: Site) -> Site:
    """The site with a VM files01 whose disk holds a filesystem."""
    ext4_disk(site.root)
    site.settings["providers"]["lab"]["options"]["vms"]["files01"] = {"vda": str(site.root / "files01.img")}
    return site


@pytest.fixture
def server_factory(site: Site) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs: object) -> ServerProcess:
        server = start_server(site, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()
