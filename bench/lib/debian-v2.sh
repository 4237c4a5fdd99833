#!/usr/bin/env bash
# Builds "version 2" of the nginx family image for the transfer benchmark: the nginx root of
# debian-family.sh plus an extra package set (curl and its libraries, unpacked with dpkg-deb -x
# from Debian packages apt downloads) and a changed nginx.conf, packed with `mke2fs -d` like the
# family. Usage: debian-v2.sh FAMILYDIR OUTDIR [SIZE]. Idempotent (an existing OUTDIR/nginx2.img is kept).
set -euo pipefail
fam=${1:?usage: debian-v2.sh FAMILYDIR OUTDIR [SIZE]}
out=${2:?usage: debian-v2.sh FAMILYDIR OUTDIR [SIZE]}
size=${3:-2G}
[ -s "$out/nginx2.img" ] && exit 0
[ -d "$fam/nginx.root" ] || { echo "debian-v2: $fam/nginx.root missing (run debian-family.sh first)" >&2; exit 1; }
mkdir -p "$out"
root="$out/nginx2.root"
rm -rf "$root" "$out/debs"
cp -a "$fam/nginx.root" "$root"
rm -f "$root/.done"
mkdir -p "$out/debs"
( cd "$out/debs" && apt-get download -q curl libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libbrotli1 >/dev/null 2>&1 )
for d in "$out"/debs/*.deb; do dpkg-deb -x "$d" "$root"; done
sed -i 's/worker_connections 768;/worker_connections 4096;/' "$root/etc/nginx/nginx.conf"
echo "vmifs v2 $(date -u +%F)" > "$root/etc/vmifs-release"
mke2fs -q -F -t ext4 -d "$root" "$out/nginx2.img.tmp" "$size"
mv "$out/nginx2.img.tmp" "$out/nginx2.img"
ls -l "$out/nginx2.img" >&2
