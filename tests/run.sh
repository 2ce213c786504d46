#!/usr/bin/env bash
# The one command that runs every test (README "Test"): formatting, lints,
# the Rust unit and end-to-end tests, the web client's tests and its browser
# end-to-end test against the real server in emulator mode.
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
