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
# The build says nothing for a minute or two on a fresh clone, and Prisma's generator wrote a
# stray "Prisma schema loaded from …" line between the demo's (found by a walk): its output goes
# to a log, shown only when it fails, and a dot every 5 s says it is still going.
build_log=$(mktemp "${TMPDIR:-/tmp}/fleet-demo-build.XXXXXX")
printf 'building (a minute or two on a fresh clone, seconds after that)'
started=$SECONDS
(while sleep 5; do printf '.'; done) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT
if ! npm run build --silent >"$build_log" 2>&1; then
  kill "$ticker" 2>/dev/null || true
  echo
  tail -n 40 "$build_log" >&2
  echo "the build failed (its whole output: $build_log)" >&2
  exit 1
fi
kill "$ticker" 2>/dev/null || true
trap - EXIT
echo " built in $((SECONDS - started)) s"
rm -f "$build_log"
exec node apps/cli/dist/main.js demo "$@"
