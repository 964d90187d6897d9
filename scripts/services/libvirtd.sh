#!/usr/bin/env bash
# Start libvirtd (with its QEMU driver) on a machine without systemd, as root; a no-op when it
# already runs. The three traps of such hosts are handled: /var/log/libvirt must exist, the user
# libvirt-qemu must exist, and QEMU's stdio goes to files (no virtlogd). Waits until the daemon
# answers, which includes its first capability probe (several seconds). swtpm runs as root too:
# as libvirt's default user (tss) swtpm_setup cannot take the lock of /var/lib/swtpm-localca once
# a root run has created it, and the vTPM VM fails to start. A running daemon whose qemu.conf
# this script changed is restarted, so that the settings hold.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
  echo "libvirtd.sh: needs root to start libvirtd" >&2
  exit 1
fi
mkdir -p /var/log/libvirt /var/lib/libvirt/images
id libvirt-qemu >/dev/null 2>&1 || useradd -r -U -M libvirt-qemu

conf=/etc/libvirt/qemu.conf
touch "$conf"
before=$(sha256sum "$conf")
set_conf() {  # set_conf KEY VALUE: replace the (maybe commented) line or append one
  if grep -qE "^#?\s*$1\s*=" "$conf"; then
    sed -i -E "s|^#?\s*$1\s*=.*|$1 = $2|" "$conf"
  else
    echo "$1 = $2" >>"$conf"
  fi
}
set_conf user '"root"'
set_conf group '"root"'
set_conf stdio_handler '"file"'
set_conf swtpm_user '"root"'
set_conf swtpm_group '"root"'

if [[ -f /run/libvirtd.pid ]] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
  [[ "$(sha256sum "$conf")" == "$before" ]] && exit 0
  pid=$(cat /run/libvirtd.pid)
  kill "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "libvirtd.sh: libvirtd (pid $pid) did not stop within 10 s; qemu.conf changed, restart it by hand" >&2
    exit 1
  fi
fi
libvirtd -d
for _ in $(seq 1 100); do
  [[ -S /run/libvirt/libvirt-sock ]] && break
  sleep 0.1
done
if ! virsh -c qemu:///system version >/dev/null; then
  echo "libvirtd.sh: libvirtd does not answer on qemu:///system" >&2
  exit 1
fi
