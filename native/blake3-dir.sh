#!/bin/sh
# Prints where the BLAKE3 C library the addon compiles in is, relative to the build's directory:
# Debian's librust-blake3-dev ships the reference implementation's C sources (scripts/setup.sh
# installs it). Used by binding.gyp.
d=$(ls -d /usr/share/cargo/registry/blake3-*/c 2>/dev/null | sort -V | tail -1)
if [ -z "$d" ]; then
  echo "vmifs: the BLAKE3 C sources are missing (apt-get install librust-blake3-dev, or run npm run setup)" >&2
  exit 1
fi
realpath --relative-to=. "$d"
