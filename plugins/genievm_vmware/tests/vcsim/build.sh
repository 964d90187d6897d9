#!/usr/bin/env bash
# Build the vcsim launcher for GenieVM's VMware tests, offline, from Debian's govmomi sources:
# a copy of /usr/share/gocode's govmomi with patches/*.patch applied and the QueryChangedDiskAreas
# test double (double/*.go) added to its simulator package. Prints the binary's path. Rebuilt only
# when these sources or the Debian package change. Cache: $GENIEVM_VCSIM_CACHE or <repo>/.venv/vcsim.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
cache=${GENIEVM_VCSIM_CACHE:-$root/.venv/vcsim}
debian=/usr/share/gocode/src/github.com/vmware/govmomi
if [[ ! -d $debian/simulator ]] || ! command -v go >/dev/null; then
  echo "vcsim: needs the Debian packages golang-go and golang-github-vmware-govmomi-dev (scripts/setup.sh)" >&2
  exit 1
fi
stamp=$( (dpkg-query -W -f '${Version}' golang-github-vmware-govmomi-dev golang-go 2>/dev/null; go version
  cat "$here"/main.go "$here"/double/*.go "$here"/patches/*.patch "$here"/build.sh) | sha256sum | cut -c1-16)
binary=$cache/vcsim-genievm-$stamp
if [[ ! -x $binary ]]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/genievm-vcsim-build-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/gopath/src/github.com/vmware" "$work/gopath/src/genievm/vcsim" "$cache"
  cp -r "$debian" "$work/gopath/src/github.com/vmware/govmomi"
  for p in "$here"/patches/*.patch; do
    patch -s -d "$work/gopath/src/github.com/vmware/govmomi" -p1 <"$p"
  done
  cp "$here"/double/*.go "$work/gopath/src/github.com/vmware/govmomi/simulator/"
  cp "$here/main.go" "$work/gopath/src/genievm/vcsim/"
  (cd "$work/gopath/src/genievm/vcsim" && GOPATH="$work/gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off \
    GOCACHE="$cache/gocache" go build -o "$binary.tmp.$$" .)
  mv "$binary.tmp.$$" "$binary"
  find "$cache" -maxdepth 1 -name 'vcsim-genievm-*' ! -name '*.tmp.*' ! -name "$(basename "$binary")" -delete
fi
echo "$binary"
