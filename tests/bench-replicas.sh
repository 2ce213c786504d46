#!/usr/bin/env bash
# Reproduces docs/benchmarks-replicas-results.md: the figures of issue #13
# (replicas on PostgreSQL), side by side in one run, release builds:
#
#   1. the store's append path (storebench): events per second that
#      Store::update commits with 1..64 concurrent calls writing, SQLite
#      against PostgreSQL (as the server configures each, and PostgreSQL with
#      synchronous_commit=off, which is what SQLite's synchronous=NORMAL
#      compares with);
#   2. cross-replica WatchCall delivery: two replicas on PostgreSQL, every
#      call placed on and served by the first (its Twilio side and media
#      land there), each call watched on both; an event's delivery latency
#      is its stamp (taken by the committing replica just before its
#      transaction commits) to its arrival at the watcher;
#   3. the load generator against one replica on SQLite, then against two
#      replicas on PostgreSQL behind haproxy (docs/haproxy.cfg): calls carried
#      and CPU per call-minute (replicas, haproxy, PostgreSQL's backends).
#
# Usage: bash tests/bench-replicas.sh [levels, default 50,100] [seconds per level, default 20]
# BENCH_PROFILE=debug uses debug builds (quicker to build, far more CPU per call:
# compare only figures of the same profile).
# PostgreSQL: TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test);
# each run creates a database of its own there and drops it. Needs haproxy
# (apt-get install haproxy). About 10 minutes at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
levels="${1:-50,100}"
seconds="${2:-20}"
db="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
out=docs/benchmarks-replicas-results.md
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { echo "haproxy is not installed: apt-get install haproxy" >&2; exit 1; }

profile="${BENCH_PROFILE:-release}"
case "$profile" in
  release) cargo build --release -p voice-agent-bench --bin loadgen --bin storebench -p voice-agent-server --bin voice-agent-server ;;
  debug) cargo build -p voice-agent-bench --bin loadgen --bin storebench -p voice-agent-server --bin voice-agent-server ;;
  *) echo "BENCH_PROFILE is release or debug" >&2; exit 1 ;;
esac
lg=./target/$profile/loadgen
sb=./target/$profile/storebench
pg_version="$(psql "$db" -Atc 'SHOW server_version' 2>/dev/null || echo unknown)"

section() { # title, then the command (its stderr goes in too: the generator's notes)
  local title="$1"; shift
  echo "## $title"
  echo
  echo "\`${*}\`"
  echo
  # A run that fails (a level the machine cannot carry may lose a /metrics
  # request) is reported, and the next one still runs.
  "$@" 2>&1 | sed 's/^\([a-z]* [0-9]*: set up.*\)$/    \1/' || echo "(exited with status ${PIPESTATUS[0]})"
  echo
}

{
  echo "# Benchmark results: replicas on PostgreSQL (issue #13)"
  echo
  echo "Produced by \`BENCH_PROFILE=$profile bash tests/bench-replicas.sh $levels $seconds\` ($profile builds) on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r);"
  echo "PostgreSQL $pg_version on the same machine (loopback), $(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3 || /usr/sbin/haproxy -v | head -1 | cut -d' ' -f1-3)."
  echo "Load average when it began: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares its cores)."
  echo
  section "The store's append path (Store::update), events per second" \
    "$sb" --engines sqlite,postgres,postgres-async --writers 1,4,16,64 --seconds 10 --database-url "$db"
  section "Cross-replica WatchCall delivery: 2 replicas on PostgreSQL, calls served by r1, watched on r1 and r2 (the highest level)" \
    "$lg" --replicas 2 --database-url "$db" --watch --mode transcode --ai-chunk-ms 100 --levels "${levels##*,}" --seconds "$seconds"
  section "Load generator: one replica on SQLite" \
    "$lg" --mode transcode --ai-chunk-ms 100 --levels "$levels" --seconds "$seconds" --keep-going
  section "Load generator: two replicas on PostgreSQL behind haproxy" \
    "$lg" --replicas 2 --database-url "$db" --haproxy --mode transcode --ai-chunk-ms 100 --levels "$levels" --seconds "$seconds" --keep-going
  echo "Load average when it ended: $(cut -d' ' -f1-3 /proc/loadavg)."
} > "$out"
echo "wrote $out"
