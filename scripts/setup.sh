#!/usr/bin/env bash
# Makes a checkout runnable: Debian packages (as root), npm dependencies, the native addon and the
# TypeScript build. Idempotent and quick when nothing changed. Usage: setup.sh [runtime|test|bench]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system.sh "${1:-runtime}"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error
fi
if [ ! -f build/Release/vmifs_native.node ] || [ native/vmifs_native.c -nt build/Release/vmifs_native.node ] || [ binding.gyp -nt build/Release/vmifs_native.node ]; then
  npx --no-install node-gyp rebuild >/dev/null
fi
npx --no-install tsc -p .
