#!/usr/bin/env bash
# A real bootable test guest, built offline from Debian packages and cached: prints the image's path.
#
# A raw disk with an MBR partition table (util-linux's sfdisk) and syslinux's MBR boot code, one
# bootable FAT partition (dosfstools, mtools: no mount, no loop device) holding syslinux
# (syslinux, syslinux-common), the host's Debian kernel (linux-image-amd64) and an initramfs of
# busybox-static whose init prints
#     GENIEVM-GUEST-ALIVE <hostname>
# on the first serial port every 2 seconds. The BIOS boots the disk as any disk: firmware → MBR →
# the partition's boot record → syslinux → kernel, so a boot proves the disk boots (no direct kernel boot).
# The tests of `genievm verify --boot` back it up and boot the backup.
#
# Cache: $GENIEVM_GUEST_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/genievm-guest), keyed by this
# script, the kernel and busybox; a second run only prints the path.
set -euo pipefail

PACKAGES=(busybox-static syslinux syslinux-common mtools dosfstools util-linux cpio linux-image-amd64)
missing=()
for pkg in "${PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if ((${#missing[@]})); then
  echo "guest: installing ${missing[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
busybox=/bin/busybox
key=$(cat "$0" "$kernel" "$busybox" | sha256sum | cut -c1-16)
cache=${GENIEVM_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genievm-guest}
image=$cache/guest-$key.raw
if [[ -f $image ]]; then
  echo "$image"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d -t genievm-guest-XXXXXX)
trap 'rm -rf "$work"' EXIT

# the initramfs: busybox and an init that beats on the serial console
mkdir -p "$work/root"/{bin,dev,proc,sys}
cp "$busybox" "$work/root/bin/busybox"
ln -s busybox "$work/root/bin/sh"
cat >"$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
hostname genievm-guest
while :; do
  echo "GENIEVM-GUEST-ALIVE $(hostname)" >/dev/ttyS0
  sleep 2
done
INIT
chmod 755 "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.gz"

# the boot partition: FAT with syslinux, the kernel and the initramfs
cat >"$work/syslinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0,115200 quiet panic=-1
CFG
part_mib=40
truncate -s "${part_mib}M" "$work/boot.fat"
mkfs.vfat -n GENIEVM "$work/boot.fat" >/dev/null
mcopy -i "$work/boot.fat" "$kernel" ::vmlinuz
mcopy -i "$work/boot.fat" "$work/initrd.gz" ::initrd.gz
mcopy -i "$work/boot.fat" "$work/syslinux.cfg" ::syslinux.cfg
mcopy -i "$work/boot.fat" /usr/lib/syslinux/modules/bios/ldlinux.c32 ::ldlinux.c32
syslinux --install "$work/boot.fat"

# the disk: a partition table, syslinux's MBR code, the partition at 1 MiB
truncate -s $((part_mib + 2))M "$work/disk.raw"
echo "start=2048, size=$((part_mib * 2048)), type=c, bootable" | sfdisk -q "$work/disk.raw"
dd if="$work/boot.fat" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
mv "$work/disk.raw" "$image.partial"
mv "$image.partial" "$image"
echo "$image"
