#!/usr/bin/env bash
# Makes a checkout runnable: Debian packages (as root), npm dependencies, the native addon and the
# TypeScript build. Idempotent and quick when nothing changed. Usage: setup.sh [runtime|lint|test|bench]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh "${1:-runtime}"
# `npm install` with the lockfile installs exactly the locked versions and, unlike `npm ci`, keeps
# what is already there: it runs only when package.json or the lockfile changed.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-fund --no-audit --loglevel=error
fi
addon=build/Release/vmifs_native.node
if [ ! -f "$addon" ] || [ ! -f build/Release/vmifs-fuse-holder ] || [ -n "$(find native binding.gyp -newer "$addon")" ]; then
  npx --no-install node-gyp rebuild >/dev/null
fi
npx --no-install tsc -p .
