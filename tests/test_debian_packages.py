"""The Debian packages (issue 15), built by packaging/debian/build.sh (lintian without errors) and installed on
a clean Debian 12 root: ``genievm`` then ``genievm-kvm`` give a ``genievm`` whose ``genievm plugins`` lists
exactly what is installed; removing the plugin's package removes its provider; purging leaves no file behind.

Slow (a package build, about four minutes on this machine, and a root to install into): marked ``slow``,
it runs in scripts/test.sh, so in CI. The root (mmdebstrap, Debian 12 with the packages' dependencies) is
cached as a tarball in ~/.cache/genievm (or $GENIEVM_CACHE_DIR), keyed by those dependencies, so a rerun
only unpacks it. Needs root (chroot) and Debian's archive (deb.debian.org) when the cache is cold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from genievm_core.cli import COMMANDS

ROOT = Path(__file__).parents[1]
SUITE = "bookworm"
MIRRORS = [
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
]
# what a package run leaves where no package owns it: dpkg's and apt's own records, logs, the test's /tmp
NOT_COMPARED = ("var/lib/dpkg", "var/log", "var/cache", "var/lib/apt", "tmp", "proc", "dev", "run")
CORE_PLUGINS = {"image": "genievm-core", "verifiers": "genievm-core", "file": "genievm-storage-fs"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs into a Debian root with chroot: needs root"),
]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("debs")
    started = time.monotonic()
    result = subprocess.run(["bash", "packaging/debian/build.sh", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"packaging/debian/build.sh: {time.monotonic() - started:.0f} s")
    return out


def deb(debs: Path, package: str) -> Path:
    (found,) = debs.glob(f"{package}_*.deb")
    return found


def depends(path: Path) -> set[str]:
    """The Debian packages ``path`` depends on, without versions (the first of alternatives)."""
    field = subprocess.run(["dpkg-deb", "-f", str(path), "Depends"], capture_output=True, text=True, check=True).stdout
    return {re.split(r"[\s(|]", d.strip(), maxsplit=1)[0] for d in field.split(",")} - {"genievm"}


def base_root(packages: set[str]) -> Path:
    """A Debian 12 root with ``packages`` installed, as a tarball in the cache (made by mmdebstrap when missing)."""
    cache = Path(os.environ.get("GENIEVM_CACHE_DIR", Path.home() / ".cache/genievm"))
    key = hashlib.sha256(" ".join([SUITE, *sorted(packages)]).encode()).hexdigest()[:16]
    tarball = cache / f"debian12-root-{key}.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            pytest.fail("mmdebstrap is missing: scripts/setup.sh installs it")
        cache.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(sorted(packages))}", SUITE, str(partial),
             *MIRRORS],
            check=True,
        )
        partial.replace(tarball)
    return tarball


def files(root: Path) -> set[str]:
    """Every path under ``root`` (relative), but for the folders of NOT_COMPARED."""
    found: set[str] = set()
    for folder, dirs, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if str(relative / d) not in NOT_COMPARED]
        found.update(str(relative / n) for n in dirs + names)
    return found


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
               "GENIEVM_JOB_DB": "/tmp/jobs.sqlite", "GENIEVM_PASSPHRASE": "package test"}
        result = subprocess.run(["chroot", str(self.root), *command], env=env, capture_output=True, text=True)
        if check:
            assert result.returncode == 0, f"{' '.join(command)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        return result

    def plugins(self) -> dict[str, str]:
        """``genievm plugins``: each plugin's name and distribution."""
        return {p["name"]: p["distribution"] for p in json.loads(self.run("genievm", "plugins", "--json").stdout)}

    def installed(self) -> list[str]:
        listing = self.run("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n").stdout
        return sorted(line.split()[0] for line in listing.splitlines() if line.startswith("genievm"))


@pytest.fixture(scope="module")
def chroot(debs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    tarball = base_root(depends(deb(debs, "genievm")) | depends(deb(debs, "genievm-kvm")))
    root = tmp_path_factory.mktemp("debian12") / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(root)], check=True)
    shutil.copytree(debs, root / "tmp/debs")
    yield Chroot(root)
    shutil.rmtree(root, ignore_errors=True)


def test_every_workspace_distribution_has_a_package(debs: Path) -> None:
    """genievm holds the core and the filesystem target; every other distribution has its own package."""
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    pyprojects = [p for member in workspace for p in ROOT.glob(f"{member}/pyproject.toml")]
    members = {tomllib.loads(p.read_text())["project"]["name"] for p in pyprojects}
    assert {"genievm-kvm", "genievm-vmware", "genievm-storage-s3", "genievm-recovery"} <= members
    expected = {"genievm", *members} - {"genievm-storage-fs"}
    assert {p.name.split("_")[0] for p in debs.glob("*.deb")} == expected
    version = subprocess.run(["dpkg-deb", "-f", str(deb(debs, "genievm")), "Version"], capture_output=True, text=True)
    assert version.stdout.strip() == "0.2.0-1"  # the project's version (pyproject.toml), Debian revision 1
    lintian = (debs / "lintian.txt").read_text()
    assert not [line for line in lintian.splitlines() if line.startswith("E: ")]


def test_a_plugin_package_depends_on_what_it_runs(debs: Path) -> None:
    assert {"libvirt-clients", "qemu-utils", "python3-libnbd", "python3-libvirt"} <= depends(deb(debs, "genievm-kvm"))
    assert {"nbdkit", "nbdkit-plugin-python"} <= depends(deb(debs, "genievm-recovery"))
    assert "python3.11" in depends(deb(debs, "genievm"))


def test_install_list_remove_and_purge(chroot: Chroot) -> None:
    before = files(chroot.root)
    chroot.run("dpkg", "-i", *[f"/tmp/debs/{deb(chroot.root / 'tmp/debs', 'genievm').name}"])
    assert chroot.plugins() == CORE_PLUGINS
    assert chroot.run("genievm", "--version").stdout.splitlines()[0] == "genievm-core 0.2.0"
    # the private environment works: a backup of an image (zstd, BLAKE3, AES-GCM) and a verify of its data
    chroot.run("/opt/genievm/bin/python", "-c", "import os; open('/tmp/vda.img', 'wb').write(os.urandom(1 << 22) * 2)")
    chroot.run("genievm", "repo", "init", "/tmp/repo")
    chroot.run("genievm", "backup", "--vm", "web01", "--repo", "/tmp/repo", "--disk", "vda=/tmp/vda.img")
    verified = chroot.run("genievm", "verify", "--repo", "/tmp/repo", "--read-data").stdout
    assert re.search(r"data: [1-9]\d* checked, ok", verified), verified
    for command in ["genievm", *(f"genievm-{c}" for c in COMMANDS)]:
        assert (chroot.root / f"usr/share/man/man1/{command}.1.gz").is_file()
    assert (chroot.root / "usr/share/bash-completion/completions/genievm").is_file()
    # zsh's compinit autoloads a file whose first line is #compdef
    assert (chroot.root / "usr/share/zsh/vendor-completions/_genievm").read_text().startswith("#compdef genievm\n")
    assert (chroot.root / "lib/systemd/system/genievm-backup@.timer").is_file()

    chroot.run("dpkg", "-i", f"/tmp/debs/{deb(chroot.root / 'tmp/debs', 'genievm-kvm').name}")
    assert chroot.plugins() == CORE_PLUGINS | {"kvm": "genievm-kvm"}
    chroot.run("/opt/genievm/bin/python", "-c", "import libvirt, nbd")  # Debian's bindings, linked in
    assert chroot.installed() == ["genievm", "genievm-kvm"]

    chroot.run("dpkg", "-r", "genievm-kvm")
    assert chroot.plugins() == CORE_PLUGINS
    assert not (chroot.root / "opt/genievm/plugins").exists()

    chroot.run("dpkg", "-P", "genievm")
    assert chroot.installed() == []
    after = files(chroot.root)
    assert (sorted(after - before), sorted(before - after)) == ([], [])
