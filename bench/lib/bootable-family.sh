#!/usr/bin/env bash
# Builds bootable Debian 12 disk images from Debian packages for the boot benchmark: debootstrap
# into a folder (kernel, systemd, udev, initramfs-tools), then `mke2fs -t ext4 -d DIR` (no loop
# mount). The kernel and initrd are copied out beside the image for qemu's direct kernel boot.
#   boot-a.img  minbase + linux-image-amd64 systemd-sysv udev initramfs-tools
#   boot-b.img  the same + openssh-server nginx-light, from its own debootstrap (a sibling: most
#               of boot-a's boot blocks are in it too, at other offsets)
# Each image boots (root=/dev/vda ro fsck.mode=skip) to multi-user.target; when the kernel command
# line carries `vmifs.marker`, the unit vmifs-marker.service prints "VMIFS-BOOT-MARKER" to
# /dev/ttyS0 and powers the VM off.
# Pitfalls met: an initramfs built in a chroot lacks fsck.ext4 unless FSTYPE=ext4 is set for
# initramfs-tools (it cannot detect the root fs type there); udev is needed for systemd to see
# the root device.
# Usage: bootable-family.sh OUTDIR [SIZE]   (SIZE for mke2fs, default 2047M: 2 GiB less 1 MiB, as
# Debian's httpfs2 0.1.4, one of the readers compared, aborts on files of 2 GiB or more). Idempotent: what
# exists is kept. Logs: OUTDIR/<name>.log. The mirror is the one apt on this machine uses.
set -euo pipefail
out=${1:?usage: bootable-family.sh OUTDIR [SIZE]}
size=${2:-2047M}
suite=${SUITE:-bookworm}
. "$(dirname "$0")/debian-mirror.sh"
mkdir -p "$out"
base=linux-image-amd64,systemd-sysv,udev,initramfs-tools,e2fsprogs

configure() { # root: everything a boot needs that packages do not set up
  local root=$1
  mkdir -p "$root/etc/initramfs-tools/conf.d"
  echo 'FSTYPE=ext4' >"$root/etc/initramfs-tools/conf.d/vmifs-fstype"
  echo 'vmifs-boot' >"$root/etc/hostname"
  printf '/dev/vda / ext4 ro,errors=remount-ro 0 0\n' >"$root/etc/fstab"
  cat >"$root/etc/systemd/system/vmifs-marker.service" <<'EOF'
[Unit]
Description=vmifs boot benchmark marker (prints a line on ttyS0 and powers off)
ConditionKernelCommandLine=vmifs.marker
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo VMIFS-BOOT-MARKER >/dev/ttyS0; systemctl --no-block poweroff'

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/vmifs-marker.service "$root/etc/systemd/system/multi-user.target.wants/vmifs-marker.service"
  # the initramfs again, now with FSTYPE=ext4 (the kernel's postinst built one without fsck)
  mount --bind /proc "$root/proc"
  mount --bind /dev "$root/dev"
  mount --bind /sys "$root/sys"
  local rc=0
  chroot "$root" update-initramfs -u -k all || rc=$?
  umount "$root/sys" "$root/dev" "$root/proc"
  return $rc
}

build() { # name extra-packages
  local name=$1 include=$base${2:+,$2} root="$out/$1.root"
  if [ -s "$out/$name.img" ] && [ -s "$out/$name.vmlinuz" ] && [ -s "$out/$name.initrd.img" ] && [ "$(cat "$out/$name.size" 2>/dev/null)" = "$size" ]; then return 0; fi
  if [ ! -e "$root/.done" ]; then
    rm -rf "$root"
    echo "bootable-family: debootstrap $name ($include), log $out/$name.log" >&2
    debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$out/$name.log" 2>&1
    configure "$root" >>"$out/$name.log" 2>&1
    rm -rf "$root"/var/cache/apt/archives/*.deb
    touch "$root/.done"
  fi
  local kver
  kver=$(ls "$root"/boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -1)
  cp "$root/boot/vmlinuz-$kver" "$out/$name.vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$out/$name.initrd.img"
  rm -f "$root/.done"
  mke2fs -q -F -t ext4 -L vmifs-root -d "$root" "$out/$name.img.tmp" "$size"
  touch "$root/.done"
  mv "$out/$name.img.tmp" "$out/$name.img"
  echo "$size" >"$out/$name.size"
}
build boot-a ""
build boot-b openssh-server,nginx-light
ls -l "$out"/boot-?.img "$out"/*.vmlinuz "$out"/*.initrd.img >&2
