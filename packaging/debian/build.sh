#!/usr/bin/env bash
# Build the Debian packages of GenieVM: `genievm` (the core, the CLI, the image provider and the filesystem
# storage target) and one per other workspace distribution (genievm-kvm, genievm-vmware, genievm-storage-s3,
# genievm-recovery, and the server and workers when the workspace has them), then check them with lintian.
#
#   bash packaging/debian/build.sh [OUT]     # OUT: where the .deb files go (default dist/debian)
#
# Needs the project's environment (.venv, from scripts/setup.sh: the man pages and completions come from the
# installed command's own help) and a Debian 12 machine (its python3.11 runs the packages' environment);
# installs debhelper and lintian when they are missing. See docs/user-guide.md, "Installing from Debian packages".
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-dist/debian}")

BUILD_PACKAGES=(debhelper dpkg-dev lintian)
missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "build.sh: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi

# the packages' version is the project's (pyproject.toml) and the changelog's newest entry must name it
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
debian_version=$(dpkg-parsechangelog -l packaging/debian/changelog -SVersion)
if [[ ${debian_version%-*} != "$version" ]]; then
  echo "build.sh: packaging/debian/changelog's newest entry is $debian_version, the project is $version:" \
    "add an entry (dch -v $version-1 -c packaging/debian/changelog)" >&2
  exit 1
fi
date=$(date -u -d "@$(dpkg-parsechangelog -l packaging/debian/changelog -STimestamp)" +%Y-%m-%d)

work=$(mktemp -d /tmp/genievm-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
"${UV[@]}" build -q --all-packages --wheel --out-dir "$work/wheels"
.venv/bin/python packaging/manpages.py "$work/man" --version "$version" --date "$date" >/dev/null
mkdir "$work/completions"
_GENIEVM_COMPLETE=source_bash .venv/bin/genievm >"$work/completions/genievm.bash"
# autoloaded by zsh's compinit: "#compdef" on the first line, and the file's body runs at each completion, so
# it ends by completing
_GENIEVM_COMPLETE=source_zsh .venv/bin/genievm |
  sed -e '/./,$!d' -e 's/^compdef _genievm_completion genievm$/_genievm_completion "$@"/' >"$work/completions/_genievm"
packages=$(python3 packaging/debian/stage.py "$work/src" "$work/wheels" "$work/man" "$work/completions")
echo "build.sh: building $packages ($debian_version; ${SECONDS}s so far)" >&2
(cd "$work/src" && dpkg-buildpackage -b -us -uc -j1 >"$work/dpkg-buildpackage.log" 2>&1) || {
  tail -30 "$work/dpkg-buildpackage.log" >&2
  exit 1
}
mkdir -p "$OUT"
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo
mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$OUT"/
echo "build.sh: built in ${SECONDS}s; lintian" >&2
# errors fail the build; warnings and notes are kept in OUT/lintian.txt
if ! lintian --fail-on error "$OUT"/*.changes >"$OUT/lintian.txt" 2>&1; then
  grep '^E: ' "$OUT/lintian.txt" >&2 || tail "$OUT/lintian.txt" >&2
  echo "build.sh: lintian found errors (all it found: $OUT/lintian.txt)" >&2
  exit 1
fi
ls "$OUT"/*.deb
