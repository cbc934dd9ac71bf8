#!/usr/bin/env bash
# `npm run demo`: install what is missing, build, migrate the demo database, and run the
# demo migration (see README "Quick start"). Extra arguments go to `fleet demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "Fleet needs Node.js 20.19 or newer (found $(node --version))." >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing dependencies…"
  # npm install (not ci): see .ci/run for why; it installs the locked versions.
  npm install --no-audit --no-fund --loglevel=error
fi
echo "building…"
npm run build --silent >/dev/null
exec node apps/cli/dist/main.js demo "$@"
