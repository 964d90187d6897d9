#!/usr/bin/env bash
# The main job on an embedded default: a real KVM virtual machine (no OS needed) with two qcow2
# disks is backed up while it runs, through libvirt's backup API; the guest writes; an incremental
# backup reads only what changed (libvirt checkpoints); the latest backup is restored as a new VM,
# whose disks are compared byte for byte with the source; the repository is verified.
# Everything lives under ./demo (made anew on each run); the demo VMs are removed at the end.
# Without root (libvirtd needs it here) the same steps run on a raw disk image with the built-in
# image provider (scripts/demo_image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DEMO=${GENIEVM_DEMO_DIR:-demo}
rm -rf "$DEMO" && mkdir -p "$DEMO"
export GENIEVM_DEMO_DIR=$(realpath "$DEMO")
export GENIEVM_PASSPHRASE=${GENIEVM_PASSPHRASE:-demo-passphrase}
export GENIEVM_JOB_DB=$GENIEVM_DEMO_DIR/jobs.sqlite  # the demo's job registry, not the machine's
if [[ $EUID -ne 0 ]]; then
  echo "demo: not root, so no libvirtd here; running the image-provider demo instead" >&2
  exec bash scripts/demo_image.sh
fi
bash scripts/services/libvirtd.sh
exec .venv/bin/python scripts/demo_kvm.py "$GENIEVM_DEMO_DIR"
