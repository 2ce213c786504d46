#!/usr/bin/env bash
# Starts the real server (emulator mode, the web UI built into its binary at /)
# on a free port, from another working directory, and runs the web client's
# browser test against it.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
log="$work/server.log"
cleanup() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

server="$PWD/target/debug/voice-agent-server"
(cd "$work" && PORT=0 DATABASE_URL="sqlite://$work/calls.db" RUST_LOG=info exec "$server") >"$log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$log" | head -n1)"
  [ -n "$addr" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; echo "server exited"; exit 1; fi
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "server did not start"; exit 1; }
grep -q "web UI: built into the binary" "$log" || { cat "$log"; echo "the server binary has no web UI built in"; exit 1; }

(cd web-client && VOICE_AGENT_URL="$addr" npm run e2e) || { echo "--- server log"; tail -n 50 "$log"; exit 1; }
