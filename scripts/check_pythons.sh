#!/usr/bin/env bash
# Check that GenieVM builds, installs from uv.lock and imports on each supported Python (3.11, 3.12, 3.13):
# for each, a throw-away environment gets the locked workspace (`uv sync --locked`: the core and every plugin,
# libvirt-python built from source), then every package is imported, `genievm --help` and `genievm plugins`
# run, and the wheels and sdists are built. CI runs the test suite on 3.11 (scripts/setup.sh); this checks the
# others. A version with no interpreter on this machine is reported and skipped, never downloaded
# (UV_PYTHON_DOWNLOADS=never); exit 1 if a version found fails, or with --require-all if one is missing.
#
#   bash scripts/check_pythons.sh [--require-all] [VERSION ...]     (default: 3.11 3.12 3.13)
#
# libnbd's binding (the KVM plugin's NBD transport) is Debian's python3-libnbd, built for the system Python
# only (3.11 on Debian 12, 3.12 on Ubuntu 24.04, 3.13 on Debian 13): it is linked into the environment when its
# ABI matches, as scripts/setup.sh does, and reported otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

require_all=0
if [[ ${1:-} == --require-all ]]; then require_all=1; shift; fi
versions=("$@")
((${#versions[@]})) || versions=(3.11 3.12 3.13)
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
UV=(uv)
command -v uv >/dev/null 2>&1 || UV=(.venv/bin/python -m uv)
work=$(mktemp -d /tmp/genievm-pythons.XXXXXX)
trap 'rm -rf "$work"' EXIT

find_python() {  # an interpreter of version $1: on PATH, from pyenv, or one uv knows
  local v=$1 candidate
  for candidate in "python$v" "$HOME/.pyenv/versions/$v"*/bin/python"$v" "/usr/bin/python$v"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null; then
      "$candidate" -c 'import sys; print(sys.executable)'
      return 0
    fi
  done
  "${UV[@]}" python find --no-python-downloads "$v" 2>/dev/null
}

failed=() missing=()
for v in "${versions[@]}"; do
  python=$(find_python "$v") || { echo "check_pythons: $v: no interpreter here (skipped)"; missing+=("$v"); continue; }
  env_dir="$work/venv-$v"
  echo "check_pythons: $v: $python"
  if ! UV_PROJECT_ENVIRONMENT="$env_dir" "${UV[@]}" sync --locked -q --python "$python" >"$work/sync-$v.log" 2>&1; then
    echo "check_pythons: $v: FAILED: uv sync --locked (log below)"; tail -20 "$work/sync-$v.log"; failed+=("$v"); continue
  fi
  tag=$("$env_dir/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  so=(/usr/lib/python3/dist-packages/libnbdmod.cpython-"$tag"-*.so)
  if [[ -e ${so[0]} ]]; then
    mkdir -p "$env_dir/debian-libnbd"
    ln -sf /usr/lib/python3/dist-packages/nbd.py "${so[0]}" "$env_dir/debian-libnbd/"
    site=$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$env_dir/debian-libnbd" >"$site/genievm-debian-libnbd.pth"
    nbd="import nbd;"
  else
    echo "check_pythons: $v: no python3-libnbd for CPython $tag here: the KVM plugin's NBD transport is unavailable"
    nbd=""
  fi
  if ! "$env_dir/bin/python" -c "
import genievm_core.cli, genievm_core.api, genievm_kvm.plugin, genievm_vmware.plugin, genievm_storage_fs.plugin, genievm_recovery.cli
import genievm_server.app, genievm_server.cli
import genievm_storage_s3.storage, genievm_recovery.files_cli, libvirt, pyVmomi; $nbd
from genievm_core.plugin import PluginHost
names = sorted(p.name for p in PluginHost().plugins())
assert {'kvm', 'vmware', 'file', 's3'} <= set(names), names
print('  imports:', ', '.join(names))" ||
    ! "$env_dir/bin/genievm" --help >/dev/null ||
    ! GENIEVM_JOB_DB="$work/jobs-$v.sqlite" "$env_dir/bin/genievm" plugins >/dev/null; then
    echo "check_pythons: $v: FAILED: import or run"; failed+=("$v"); continue
  fi
  if ! "${UV[@]}" build -q --python "$python" --all-packages --out-dir "$work/dist-$v" >"$work/build-$v.log" 2>&1; then
    echo "check_pythons: $v: FAILED: uv build (log below)"; tail -20 "$work/build-$v.log"; failed+=("$v"); continue
  fi
  echo "check_pythons: $v: ok ($(ls "$work/dist-$v" | wc -l) wheels and sdists built)"
done

if ((${#failed[@]})); then echo "check_pythons: failed on ${failed[*]}"; exit 1; fi
if ((require_all && ${#missing[@]})); then echo "check_pythons: no interpreter for ${missing[*]}"; exit 1; fi
echo "check_pythons: ok on $(( ${#versions[@]} - ${#missing[@]} )) of ${#versions[@]} versions${missing:+ (missing: ${missing[*]})}"
