"""Lay out the Debian source tree that packaging/debian/build.sh hands to dpkg-buildpackage.

One binary package per workspace distribution (``genievm`` for the core and the distributions it
includes), each staged under ``SRC/stage/<package>/`` as it will be installed:

- ``genievm``: a private Python environment at ``/opt/genievm`` (the system's python3.11, the
  core's locked dependencies from uv.lock), ``/usr/bin/genievm``, man pages, completions, units.
- every plugin: its wheel and the locked dependencies the core's environment lacks, in
  ``/opt/genievm/plugins/<package>/``, named by a ``.pth`` file in the core's site-packages, so
  that ``genievm`` finds its entry points while the package is installed, and not after.

Run by build.sh (``python3 stage.py SRC WHEELS MAN COMPLETIONS``); it needs uv and the checkout.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = "/usr/bin/python3.11"  # Debian 12's interpreter: the one python3-libnbd and python3-libvirt are built for
VENV = "/opt/genievm"
SITE = f"{VENV}/lib/python3.11/site-packages"
UV = ["uv"] if shutil.which("uv") else [sys.executable, "-m", "uv"]  # as scripts/setup.sh finds it


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def workspace() -> dict[str, dict[str, str]]:
    """The workspace's distributions: name to its version and description."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = {normalize(root["project"]["name"]): root["project"]}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(glob.glob(str(ROOT / pattern))):
            project = tomllib.loads((Path(folder) / "pyproject.toml").read_text())["project"]
            found[normalize(project["name"])] = project
    return found


def packages(dists: dict[str, dict[str, str]]) -> dict[str, dict[str, object]]:
    """Debian package name to its settings (packages.toml), for the distributions the workspace has."""
    known = tomllib.loads((HERE / "packages.toml").read_text())
    included = {normalize(d) for d in known["genievm"].get("include", [])}
    by_dist = {normalize(str(v["distribution"])): k for k, v in known.items()}
    package = {d: "genievm" if d in included or d == "genievm-core" else by_dist.get(d, d) for d in dists}
    result: dict[str, dict[str, object]] = {}
    for dist, project in dists.items():
        if dist in included:
            continue
        name = package[dist]
        settings = dict(known.get(name, {}))
        settings.setdefault("distribution", dist)
        settings.setdefault("description", project.get("description", dist))
        # another workspace distribution it requires (a server needing recovery, say): that one's package
        required = {package[r] for r in map(requirement_name, project.get("dependencies", [])) if r in package}
        settings["requires"] = sorted(required - {"genievm", name})
        result[name] = settings
    return result


def requirements(dist: str) -> list[str]:
    """The locked third-party requirements of ``dist`` (``name==version ; marker``), from uv.lock."""
    out = subprocess.run(
        [*UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-workspace", "--no-header",
         "--no-annotate", "--package", dist],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def requirement_name(line: str) -> str:
    return normalize(re.split(r"[=<>;\s\[]", line, maxsplit=1)[0])


def wheel(wheels: Path, dist: str) -> Path:
    stem = dist.replace("-", "_")
    (found,) = wheels.glob(f"{stem}-*.whl")
    return found


def install(target: list[str], reqs: list[str], wheel_files: list[Path], work: Path) -> None:
    listing = work / "requirements.txt"
    listing.write_text("\n".join(reqs) + "\n")
    subprocess.run(
        [*UV, "pip", "install", "-q", "--no-deps", "--no-compile", "--link-mode", "copy", *target,
         "-r", str(listing), *map(str, wheel_files)],
        check=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    listing.unlink()


def stage_core(src: Path, settings: dict[str, object], wheels: Path, completions: Path) -> set[str]:
    """The genievm package's tree; the requirement names its environment holds."""
    tree = src / "stage/genievm"
    venv = tree / VENV.lstrip("/")
    subprocess.run([*UV, "venv", "-q", "--relocatable", "--python", PYTHON, str(venv)], check=True)
    dists = ["genievm-core", *map(normalize, settings.get("include", []))]  # type: ignore[call-overload]
    reqs = sorted({r for d in dists for r in requirements(d)})
    install(["--python", str(venv / "bin/python")], reqs, [wheel(wheels, d) for d in dists], src)
    # the launcher names the environment's own interpreter (uv's relocatable scripts are sh-and-Python files
    # that lintian rejects); the dependencies' scripts, activate scripts and uv's markers are left out
    for path in [*venv.glob("bin/*"), venv / ".gitignore", venv / ".lock", venv / "CACHEDIR.TAG"]:
        if not path.name.startswith("python"):
            path.unlink(missing_ok=True)
    launcher = venv / "bin/genievm"
    launcher.write_text(f"#!{VENV}/bin/python\nimport sys\n\nfrom genievm_core.cli import run\n\nsys.exit(run())\n")
    launcher.chmod(0o755)
    for path in venv.glob("lib/python3.11/site-packages/*.dist-info/direct_url.json"):  # names the build folder
        path.unlink()
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/genievm").symlink_to(f"{VENV}/bin/genievm")
    (tree / "etc/genievm/jobs").mkdir(parents=True)
    shutil.copy(completions / "genievm.bash", mkdir(tree / "usr/share/bash-completion/completions") / "genievm")
    shutil.copy(completions / "_genievm", mkdir(tree / "usr/share/zsh/vendor-completions") / "_genievm")
    return {requirement_name(r) for r in reqs}


def stage_plugin(src: Path, name: str, settings: dict[str, object], wheels: Path, core: set[str]) -> None:
    """A plugin package's tree: its folder under /opt/genievm/plugins and the .pth that names it."""
    tree = src / "stage" / name
    folder = f"{VENV}/plugins/{name}"
    dist = str(settings["distribution"])
    debian = {normalize(d) for d in settings.get("debian_python", [])}  # type: ignore[attr-defined]
    reqs = [r for r in requirements(dist) if requirement_name(r) not in core | debian]
    install(["--target", str(tree / folder.lstrip("/")), "--python", PYTHON], reqs, [wheel(wheels, dist)], src)
    shutil.rmtree(tree / folder.lstrip("/") / "bin", ignore_errors=True)  # scripts of the dependencies: unused
    for path in (tree / folder.lstrip("/")).glob("*.dist-info/direct_url.json"):
        path.unlink()
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    for module in settings.get("debian_modules", []):  # type: ignore[attr-defined]
        file = str(module).format(ext=ext)
        (tree / folder.lstrip("/") / file).symlink_to(f"/usr/lib/python3/dist-packages/{file}")
    mkdir(tree / SITE.lstrip("/"))
    (tree / SITE.lstrip("/") / f"{name}.pth").write_text(folder + "\n")


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def control(pkgs: dict[str, dict[str, object]]) -> str:
    """debian/control: the source stanza, then one stanza per binary package."""
    stanzas = [
        "Source: genievm\nSection: admin\nPriority: optional\n"
        "Maintainer: GenieVM developers <maintainers@users.noreply.r-seed-1d352224.example>\n"
        "Build-Depends: debhelper-compat (= 13)\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n"
    ]
    for name, settings in pkgs.items():
        # a plugin's folder holds what the core's environment lacks: it needs exactly the genievm built with it
        base = ["python3.11" if name == "genievm" else "genievm (= ${binary:Version})", "${misc:Depends}",
                "${shlibs:Depends}"]
        base += [f"{p} (= ${{binary:Version}})" for p in settings["requires"]]  # type: ignore[attr-defined]
        fields = {"Depends": base + list(settings.get("depends", []))}  # type: ignore[call-overload]
        for field in ("recommends", "suggests"):
            if settings.get(field):
                fields[field.capitalize()] = list(settings[field])  # type: ignore[call-overload]
        summary = {"genievm": "back up and restore whole virtual machines"}.get(
            name, f"GenieVM plugin: {settings['distribution']}"
        )
        text = f"Package: {name}\nArchitecture: any\n"
        text += "".join(f"{k}: {', '.join(v)}\n" for k, v in fields.items())
        long = textwrap.fill(str(settings["description"]), width=72, initial_indent=" ", subsequent_indent=" ")
        text += f"Description: {summary}\n{long}\n"
        stanzas.append(text)
    return "\n".join(stanzas)


def maintainer_scripts(debian: Path, name: str) -> None:
    """postinst compiles the package's Python files, prerm removes what it compiled, postrm purges state."""
    folder = f"{SITE}" if name == "genievm" else f"{VENV}/plugins/{name}"
    (debian / f"{name}.postinst").write_text(
        "#!/bin/sh\nset -e\n"
        # a file that does not compile (none should) is left to be compiled when imported, not a failed install
        f'if [ "$1" = configure ]; then\n    {VENV}/bin/python -m compileall -q {folder} >/dev/null || true\nfi\n'
        "#DEBHELPER#\nexit 0\n"
    )
    (debian / f"{name}.prerm").write_text(
        "#!/bin/sh\nset -e\n"
        f"find {folder} -depth -type d -name __pycache__ -exec rm -rf {{}} + 2>/dev/null || true\n"
        "#DEBHELPER#\nexit 0\n"
    )
    if name == "genievm":
        # base-files makes /opt, owned by no package: dpkg removes it with the last package that had a file in it.
        # Purge removes the job registry the units keep (StateDirectory=genievm).
        (debian / f"{name}.postrm").write_text(
            "#!/bin/sh\nset -e\n"
            'if [ "$1" = remove ] || [ "$1" = purge ]; then\n    [ -d /opt ] || install -d -m 0755 /opt\nfi\n'
            'if [ "$1" = purge ]; then\n    rm -rf /var/lib/genievm\nfi\n'
            "#DEBHELPER#\nexit 0\n"
        )


def main() -> None:
    src, wheels, man, completions = (Path(a) for a in sys.argv[1:5])
    debian = mkdir(src / "debian")
    for file in ("rules", "changelog", "copyright"):
        shutil.copy(HERE / file, debian / file)
    pkgs = packages(workspace())
    (debian / "control").write_text(control(pkgs))
    core = stage_core(src, pkgs["genievm"], wheels, completions)
    for name, settings in pkgs.items():
        if name != "genievm":
            stage_plugin(src, name, settings, wheels, core)
        tree = src / "stage" / name
        pages = man / ("genievm-core" if name == "genievm" else str(settings["distribution"]))
        for page in sorted(pages.glob("*.1")):
            shutil.copy(page, mkdir(tree / "usr/share/man/man1") / page.name)
        for unit in settings.get("units", []):  # type: ignore[attr-defined]
            shutil.copy(ROOT / "packaging/systemd" / str(unit), mkdir(tree / "lib/systemd/system") / str(unit))
        overrides = mkdir(tree / "usr/share/lintian/overrides") / name
        overrides.write_text(f"# a private Python environment, as dh-virtualenv makes (docs/user-guide.md)\n"
                             f"{name}: dir-or-file-in-opt [opt/genievm/]\n{name}: dir-or-file-in-opt [opt/genievm/*]\n")
        maintainer_scripts(debian, name)
    print(" ".join(pkgs))


if __name__ == "__main__":
    main()
