#!/usr/bin/env bash
# The one command that runs every test (README "Test"): formatting, lints,
# the Rust unit and end-to-end tests, the web client's tests and its browser
# end-to-end test against the real server in emulator mode, the generated
# Python and TypeScript clients against the real server, and `buf breaking`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "no unused dependencies (cargo-machete)"
if command -v cargo-machete >/dev/null 2>&1; then
  cargo machete
else
  echo "cargo-machete is not installed: cargo install --locked cargo-machete" >&2
  exit 1
fi

step "deployment recipes: hadolint, yamllint, Kubernetes schemas"
bash deploy/lint.sh

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "build the binaries the end-to-end tests run"
cargo build --workspace --bins

step "PostgreSQL for the store and replica tests"
# The tests create (and drop) a database each on the PostgreSQL at
# TEST_DATABASE_URL. When none answers there, a throwaway cluster is started
# in a temporary directory (Debian's postgresql package; .ci/run installs it)
# and stopped when this script ends.
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql "$TEST_DATABASE_URL" -qAtc 'SELECT 1' >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}
if pg_answers; then
  echo "PostgreSQL answers at $TEST_DATABASE_URL"
else
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "no PostgreSQL answers at $TEST_DATABASE_URL and none is installed: apt-get install postgresql (.ci/run does)" >&2
    exit 1
  fi
  pg_dir=$(mktemp -d /tmp/va-pg.XXXXXX)
  pg_port=55432
  as_pg=()
  # PostgreSQL refuses to run as root: as root, the cluster is the postgres user's.
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; as_pg=(runuser -u postgres --); fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=300" start >/dev/null
  trap '"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null; rm -rf "$pg_dir"' EXIT
  "${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres test
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/test"
  echo "started a throwaway PostgreSQL at $TEST_DATABASE_URL"
fi

step "cargo test"
cargo test --workspace

if [ -f web-client/package.json ]; then
  step "web client: install, generated code up to date, proto lint, type check, build, component tests"
  (cd web-client && npm ci --no-audit --no-fund && npm run ci)

  step "web client: end-to-end in headless Chromium against the real server"
  bash tests/e2e-web.sh
fi

server_bin="$PWD/target/debug/voice-agent-server"

step "TypeScript client: install, generated code up to date, format, build, Node test against the real server"
(cd clients/typescript && npm ci --no-audit --no-fund && VOICE_AGENT_SERVER_BIN="$server_bin" npm run ci)

step "the contract only grows: buf breaking against main"
bash tests/buf-breaking.sh

step "Python client: venv, stubs up to date, test against the real server"
# A venv under the ignored clients/python/.venv: nothing is installed outside the repository.
venv="clients/python/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "./clients/python[generate]"
"$venv/bin/python" clients/python/scripts/generate.py --check
(cd clients/python && VOICE_AGENT_SERVER_BIN="$server_bin" .venv/bin/python -m unittest discover -s tests -v)
