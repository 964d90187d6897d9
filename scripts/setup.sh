#!/usr/bin/env bash
# Prepare a fresh machine: Debian packages, uv, and the project's virtual environment (.venv)
# holding genievm-core and every plugin of the workspace. Safe to run again; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu and libvirt for the KVM plugin (libvirt-dev and pkg-config build libvirt-python; libvirt-daemon-system
# is left out because it drags in systemd); libnbd's Python binding and nbdcopy; thin_delta for LVM thin CBT;
# openssh-server for the tests of qemu+ssh:// connections (a private sshd on 127.0.0.1); golang-go and govmomi's
# sources build the vSphere API simulator (vcsim) the VMware plugin's tests talk to (scripts/services/vcsim.sh).
APT_PACKAGES=(qemu-utils qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  pkg-config gcc libnbd-bin python3-libnbd nbdkit nbdkit-plugin-python thin-provisioning-tools openssh-server
  golang-go golang-github-vmware-govmomi-dev)
# the Debian packages' build, lint and install test (packaging/debian/build.sh, tests/test_debian_packages.py) and
# systemd-analyze for the units' check (tests/test_systemd_units.py)
APT_PACKAGES+=(debhelper lintian mmdebstrap systemd)
# libguestfs for file-level restore (genievm files: its Python binding, a kernel for its appliance, XFS in it);
# mtools and dosfstools make the FAT guest disks of its tests.
APT_PACKAGES+=(python3-guestfs libguestfs-tools linux-image-amd64 libguestfs-xfs mtools dosfstools)
# the server: its other database (scripts/services/postgres.sh) and its console's tests in Chromium
APT_PACKAGES+=(postgresql chromium chromium-driver)
# the boot check's test guest (scripts/guest/build.sh) and EFI firmware for translated and booted VMs (issue 17)
APT_PACKAGES+=(busybox-static syslinux syslinux-common mtools dosfstools cpio linux-image-amd64 ovmf)
# certtool for the x509 certificates of the remote KVM tests' NBD over TLS (plugins/genievm_kvm/tests/tls_support.py)
APT_PACKAGES+=(gnutls-bin)
# a vTPM's emulator, whose state the kvm plugin backs up (plugins/genievm_kvm/tests/test_firmware.py)
APT_PACKAGES+=(swtpm swtpm-tools)
# the workers' broker, result backend and locks (scripts/services/redis.sh; issue 16)
APT_PACKAGES+=(redis-server)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# GenieVM supports Python 3.11-3.13 (scripts/check_pythons.sh checks 3.12 and 3.13); this machine's
# environment, and so CI, is 3.11, the Python Debian 12's python3-libnbd is built for.
PYTHON=${GENIEVM_PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: the development environment is Python 3.11; $PYTHON is $("$PYTHON" --version)" >&2
  exit 1
fi
# the interpreter itself, not a shim (pyenv): uv recreates a venv whose Python is not the one asked for
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
    echo "setup: installing uv" >&2
    "$PYTHON" -m pip install -q uv
  fi
  UV=("$PYTHON" -m uv)  # a fresh pip install may not be on PATH yet (pyenv shims)
fi
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
# Bytecode is compiled here, once: where PYTHONDONTWRITEBYTECODE is set (as on these machines) Python
# would otherwise compile every module from source on every command, about a second each time.
"${UV[@]}" sync --locked --compile-bytecode --python "$PYTHON" -q
# The example third-party plugin (docs/plugin-guide.md) is installed from its own pyproject, as a user would,
# not as a workspace member: `uv sync` removes it again (it is not in uv.lock), so this line runs after every sync.
"${UV[@]}" pip install -q --python .venv/bin/python -e docs/examples/genievm-dirvm
.venv/bin/python -m compileall -q -j 0 genievm_core plugins docs/examples/genievm-dirvm/genievm_dirvm >/dev/null

# libnbd's Python binding exists only as Debian's python3-libnbd, built for the system Python (3.11 on
# Debian 12, 3.12 on Ubuntu 24.04, 3.13 on Debian 13): link it into the venv, whose Python must be that one.
nbd_dir=.venv/debian-libnbd
mkdir -p "$nbd_dir"
abi=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
# (libguestfs's likewise as python3-guestfs)
for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod.cpython-"$abi"-*.so \
  /usr/lib/python3/dist-packages/guestfs.py /usr/lib/python3/dist-packages/libguestfsmod.cpython-"$abi"-*.so; do
  ln -sf "$f" "$nbd_dir/"
done
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
realpath "$nbd_dir" >"$site/genievm-debian-libnbd.pth"
