#!/usr/bin/env bash
# Builds a small family of real Debian disk images from Debian packages, for the chunking and
# transfer benchmarks: debootstrap into a folder, then `mke2fs -t ext4 -d DIR` (no loop mount).
#   minbase.img  debootstrap --variant=minbase
#   ssh.img      minbase + openssh-server
#   nginx.img    minbase + openssh-server + nginx
# Usage: debian-family.sh OUTDIR [SIZE]   (SIZE for mke2fs, default 2G). Idempotent: images that
# exist are kept. The mirror is the one apt on this machine uses.
set -euo pipefail
out=${1:?usage: debian-family.sh OUTDIR [SIZE]}
size=${2:-2G}
suite=${SUITE:-bookworm}
. "$(dirname "$0")/debian-mirror.sh"
mkdir -p "$out"
build() { # name includes
  local name=$1 include=$2 root="$out/$1.root"
  [ -s "$out/$name.img" ] && return 0
  if [ ! -e "$root/.done" ]; then
    rm -rf "$root"
    echo "debian-family: debootstrap $name (${include:-minbase})" >&2
    debootstrap --variant=minbase ${include:+--include=$include} "$suite" "$root" "$mirror" >"$out/$name.log" 2>&1
    rm -rf "$root"/var/cache/apt/archives/*.deb
    touch "$root/.done"
  fi
  rm -f "$root/.done"
  mke2fs -q -F -t ext4 -d "$root" "$out/$name.img.tmp" "$size"
  touch "$root/.done"
  mv "$out/$name.img.tmp" "$out/$name.img"
}
build minbase ""
build ssh openssh-server
build nginx openssh-server,nginx
ls -l "$out"/*.img >&2
