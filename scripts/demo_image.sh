#!/usr/bin/env bash
# The main job with the built-in image provider (scripts/demo.sh runs it where there is no
# libvirtd): make a sample disk image, back it up into a new encrypted repository, change the
# image, back it up again (incremental), restore the latest backup, verify the repository and the
# restored disk, take one file out of the latest backup (genievm files get: a second disk, vdb, holds a small
# ext4 filesystem made with mkfs.ext4 -d) and show the result. Everything lives under $GENIEVM_DEMO_DIR
# (default ./demo).
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv/bin/genievm
PY=.venv/bin/python
DEMO=${GENIEVM_DEMO_DIR:-demo}
mkdir -p "$DEMO"
export GENIEVM_PASSPHRASE=${GENIEVM_PASSPHRASE:-demo-passphrase}

step() { printf '\n== %s\n' "$*"; }

step "making a 256 MiB sample disk: data, zeros and holes"
$PY - "$DEMO/web01-vda.img" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(256 << 20)                       # sparse: holes read as zeros
    for mib in range(0, 256, 8):                # every 8th MiB: 1 MiB of data
        f.seek(mib << 20)
        f.write(os.urandom(512 << 10) + (b"GenieVM demo text " * 29128)[: 512 << 10])
PY
ls -ls "$DEMO/web01-vda.img"

step "making a 16 MiB second disk holding an ext4 filesystem with a known file (nothing mounted)"
mkdir -p "$DEMO/guest-files/notes"
echo "GenieVM demo: this file was restored from a backup." >"$DEMO/guest-files/notes/read me.txt"
mkfs.ext4 -q -F -d "$DEMO/guest-files" "$DEMO/web01-vdb.img" 16M

step "creating an encrypted repository"
$G repo init "$DEMO/repo"

step "full backup of VM web01"
$G backup --vm web01 --repo "$DEMO/repo" --disk "vda=$DEMO/web01-vda.img" --disk "vdb=$DEMO/web01-vdb.img"

step "changing 3 MiB of the disk"
$PY - "$DEMO/web01-vda.img" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    for mib in (1, 100, 200):
        f.seek(mib << 20)
        f.write(os.urandom(1 << 20))
PY

step "incremental backup (only changed chunks are stored)"
$G backup --vm web01 --repo "$DEMO/repo" --disk "vda=$DEMO/web01-vda.img" --disk "vdb=$DEMO/web01-vdb.img"

step "backups in the repository"
$G backups list --repo "$DEMO/repo"

step "verifying every chunk of every backup"
$G verify --repo "$DEMO/repo" --read-data

step "restoring the latest backup (read back and checked against the backup)"
$G restore --vm web01 --repo "$DEMO/repo" --target "$DEMO/restored"

step "result"
cmp "$DEMO/web01-vda.img" "$DEMO/restored/vda.img"
echo "restored disk is byte-identical to the source: $(sha256sum < "$DEMO/restored/vda.img" | cut -c1-16)"
ls -ls "$DEMO/restored/vda.img"
du -sh "$DEMO/repo"

step "restoring one file from the latest backup (libguestfs over an NBD export of it)"
$G files get --repo "$DEMO/repo" --vm web01 --disk vdb "/notes/read me.txt" --to "$DEMO/files"
cmp "$DEMO/guest-files/notes/read me.txt" "$DEMO/files/read me.txt"
echo "restored file is byte-identical to the one in the guest: $(cat "$DEMO/files/read me.txt")"
