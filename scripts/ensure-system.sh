#!/usr/bin/env bash
# Installs the Debian packages vmifs needs at run time, in its demo and in its tests, if any is missing.
# Called by `npm run demo`, `npm test` and `npm run bench` before anything else, so a fresh
# Debian 12 machine needs nothing done by hand. Usage: ensure-system.sh [runtime|lint|test|bench]
set -euo pipefail
level=${1:-runtime}
# nothing for the mount itself: the agent speaks the FUSE protocol on /dev/fuse without libfuse.
# librust-blake3-dev: the BLAKE3 reference implementation's C sources, compiled into the addon;
# liblmdb-dev: LMDB, the chunk store's index (native/chunk_index.c), linked into the addon
pkgs=(librust-blake3-dev liblmdb-dev)
# `npm run demo` serves its fleet's origin store with nginx (the tests and benchmarks get it below)
[ "$level" = runtime ] && pkgs+=(nginx-light)
# `npm run lint` checks the C addon's format too
[ "$level" = lint ] && pkgs+=(clang-format)
# e2fsprogs, fdisk: ext4 images and partition tables for the file-cut tests; systemd: systemd-analyze
# verify checks the unit file (nothing is started)
[ "$level" = test ] || [ "$level" = bench ] && pkgs+=(qemu-utils nginx-light iproute2 openssl e2fsprogs fdisk systemd redis-server redis-sentinel)
# chromium: the dashboard's test drives Debian's browser (playwright-core, no browser download)
[ "$level" = test ] && pkgs+=(chromium)
# rsync: transfer bench; qemu and the lazy readers: boot bench (fuse: fusermount for httpfs2 and rclone mount)
[ "$level" = bench ] && pkgs+=(b3sum debootstrap rsync qemu-system-x86 qemu-block-extra nbdkit httpfs2 rclone curl fuse)
missing=()
for p in "${pkgs[@]+"${pkgs[@]}"}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "vmifs: missing Debian packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "vmifs: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
