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
