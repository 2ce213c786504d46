#!/usr/bin/env bash
# Where the server's CPU goes under load: runs the load generator at N calls
# (server on CPU 0, generator on CPU 1), samples the server with perf for a
# few seconds, and prints kernel vs user time, the syscalls' share, and the
# hottest functions. Needs perf (Debian: linux-perf). Not part of the tests.
#
# Usage: bash tests/profile.sh [calls, default 300] [extra loadgen arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-300}"; shift || true
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)"; exit 1; }
cargo build --profile profiling -p voice-agent-bench --bin loadgen -p voice-agent-server --bin voice-agent-server
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
taskset -c 1 ./target/profiling/loadgen --server-cpus 0 --levels "$calls" --seconds 15 --mode transcode "$@" \
  >"$work/loadgen.txt" 2>&1 &
lg=$!
pid=""
for _ in $(seq 1 100); do
  pid="$(pgrep -n -x voice-agent-ser || true)"
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { cat "$work/loadgen.txt"; echo "the server did not start"; exit 1; }
sleep 6 # calls placed and warmed up
perf record -q -e cpu-clock -F 499 -g -p "$pid" -o "$work/perf.data" -- sleep 6 >/dev/null 2>&1
wait "$lg" || true
grep '^| transcode' "$work/loadgen.txt" || cat "$work/loadgen.txt"
echo
echo "== server CPU by where it runs"
perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -5
echo
echo "== inclusive share of the socket syscalls and of the runtime's idle path"
perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
  | grep -E '\[k\] (__x64_sys_sendto|__x64_sys_recvfrom|__x64_sys_epoll_wait|__x64_sys_futex|process_backlog|sock_def_readable) ' \
  | sed -E 's/ +- +- *$//' || true
echo
echo "== hottest functions (self time)"
perf report -i "$work/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -25 | cut -c1-140
