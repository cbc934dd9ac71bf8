#!/usr/bin/env bash
# `npm test`: bring up everything the suite needs, then run it. Works as the first command on a
# fresh clone of a machine that has only Node, Redis and PostgreSQL:
#   1. npm dependencies, if missing or older than package-lock.json (as `npm run demo` does);
#   2. the system packages the tests use as real servers, installed with apt when missing
#      (as root): openssh-server (a private sshd per SFTP/SSH test file), chromium (the
#      dashboard's browser test), faketime (libfaketime: a scheduler replica on a host whose
#      clock is off); PostgreSQL's server binaries (initdb/pg_ctl for the private
#      clusters of the fault tests) and redis-server come with the services themselves;
#   3. checks that Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) answer, and says how
#      to start them if not (.ci/run starts them);
#   4. builds (tests spawn the compiled apps), type-checks the tests (tsconfig.test.json: test
#      files, harnesses and docs/examples, against the built packages' types), and runs jest;
#      arguments go to jest
#      (`npm test -- apps/worker/test/crash.test.ts`).
# `npm test -- --plan` prints what steps 1–3 would do, and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

plan=false
if [ "${1:-}" = "--plan" ]; then plan=true; shift; fi
say() { printf '[test] %s\n' "$*" >&2; }

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  say "Fleet needs Node.js 20.19 or newer (found $(node --version))."
  exit 1
fi

# ---- 1. npm dependencies ----
install_dependencies() {
  # npm ci refuses a lockfile that lacks other platforms' optional binaries (swc, turbo), and
  # the registry this machine reaches does not serve those, so the lockfile cannot hold them.
  # Fall back to npm install, which installs exactly the locked versions for this platform,
  # and make sure it did not have to change the lockfile.
  local log
  log=$(mktemp)
  if ! npm ci --no-audit --no-fund --loglevel=error 2>"$log"; then
    grep -q "can only install packages when your package.json and package-lock.json" "$log" || { cat "$log" >&2; exit 1; }
    say "npm ci refused the platform-incomplete lockfile; using npm install with the same lockfile"
    npm install --no-audit --no-fund --loglevel=error
    if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- package-lock.json; then
      say "npm install changed package-lock.json: commit an up-to-date lockfile"
      git --no-pager diff --stat -- package-lock.json >&2
      exit 1
    fi
  fi
  rm -f "$log"
}
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if $plan; then say "would install npm dependencies (npm ci, else npm install with the lockfile)"; else say "installing npm dependencies"; install_dependencies; fi
else
  say "npm dependencies present"
fi

# ---- 2. system packages ----
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(faketime)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
  # initdb/pg_ctl come with PostgreSQL's server package; only a machine whose PostgreSQL runs
  # elsewhere (FLEET_TEST_DATABASE_URL) lacks them.
  missing+=(postgresql)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if $plan; then
    say "would install with apt-get: ${missing[*]}"
  elif [ "$(id -u)" -ne 0 ]; then
    say "the tests need: ${missing[*]}. Install them (sudo apt-get install -y ${missing[*]}) or run npm test as root."
    exit 1
  else
    say "installing ${missing[*]} (the tests run them as private servers on loopback)"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists of a fresh machine may be missing or old: update once if a plain install fails.
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
else
  say "system packages present (sshd, chromium, faketime, initdb, redis-server)"
fi
# sshd refuses to start without its privilege-separation directory.
if $plan; then [ -d /run/sshd ] || say "would create /run/sshd"; elif [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; fi

# ---- 3. services ----
redis_url=${FLEET_TEST_REDIS_URL:-redis://127.0.0.1:6379}
pg_url=${FLEET_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
services_ok=true
if ! node -e 'const n=require("net");const u=new URL(process.argv[1]);const s=n.connect(+u.port||6379,u.hostname,()=>{s.write("PING\r\n")});s.on("data",d=>process.exit(/PONG/.test(d)?0:1));s.on("error",()=>process.exit(1));setTimeout(()=>process.exit(1),2000)' "$redis_url"; then
  say "Redis does not answer at $redis_url: start it (e.g. redis-server --daemonize yes --port 6379 --save \"\")"
  services_ok=false
fi
if ! node -e 'const n=require("net");const u=new URL(process.argv[1]);const s=n.connect(+u.port||5432,u.hostname,()=>process.exit(0));s.on("error",()=>process.exit(1));setTimeout(()=>process.exit(1),2000)' "$pg_url"; then
  say "PostgreSQL does not answer at $pg_url: start it (e.g. pg_ctlcluster <version> main start)"
  services_ok=false
fi
if $plan; then
  $services_ok && say "Redis and PostgreSQL answer"
  exit 0
fi
$services_ok || exit 1

# ---- 4. build and test ----
say "building"
npm run build --silent
# jest strips types without checking them (swc): a test that does not type-check would pass.
say "type-checking the tests"
npx tsc -p tsconfig.test.json
say "running jest"
exec npx jest "$@"
