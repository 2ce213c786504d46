#!/usr/bin/env bash
# Reproduces docs/benchmarks-results.md: the criterion micro-benchmarks of the
# per-frame hot path, then the load generator's ramps on this machine.
#
# Usage: bash tests/bench.sh [levels, default 100,200,...,1000] [seconds per level, default 20]
#
# Ramps (each stops at the first level not carried):
#   - the server on CPU 0 and the load generator on CPU 1 (each its own core),
#     both audio modes, with AI deltas of 20 ms (one per Twilio frame, the most
#     messages) and of 100 ms (the size the built-in AI emulator streams);
#   - no pinning at all (server and generator share both cores), transcode, 20 ms;
# then the floor (bench/src/bin/floor.rs): the same message pattern over the
# same loopback TCP with no server or generator work at all, which is what this
# machine's kernel alone allows.
set -euo pipefail
cd "$(dirname "$0")/.."
levels="${1:-100,200,300,400,500,600,800,1000}"
seconds="${2:-20}"
out=docs/benchmarks-results.md

cargo build --release -p voice-agent-bench --bin loadgen --bin floor -p voice-agent-server --bin voice-agent-server
micro="$(cargo bench -p voice-agent-audio --bench audio -p voice-agent-server --bench hot_path -- --output-format bencher 2>/dev/null \
  | sed -n 's/^test \(.*\) \.\.\. bench: *\([0-9,]*\) ns\/iter.*/| \1 | \2 |/p')"

ramp() { # description, then loadgen arguments
  local what="$1"; shift
  echo "### $what"
  echo
  "$@" 2>&1 | sed 's/^\([a-z]* [0-9]*: set up.*\)$/    \1/'
  echo
}
lg=./target/release/loadgen
pinned=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pinned=(taskset -c 1 "$lg" --server-cpus 0)
fi

{
  echo "# Benchmark results"
  echo
  echo "Produced by \`bash tests/bench.sh $levels $seconds\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)."
  echo
  echo "## Hot path, per 20 ms frame (criterion, release, median)"
  echo
  echo "| benchmark | ns |"
  echo "|---|---|"
  echo "$micro"
  echo
  echo "## Concurrent calls (load generator, release)"
  echo
  echo "Columns are explained in docs/benchmarks.md. Latencies in ms; \"bridge\" is measured by the server"
  echo "(\`/metrics\`), \"end-to-end\" by the load generator across both loopback hops."
  echo
  if [ ${#pinned[@]} -gt 0 ]; then
    ramp "Server on CPU 0, load generator on CPU 1, AI deltas of 20 ms" \
      "${pinned[@]}" --levels "$levels" --seconds "$seconds" --ai-chunk-ms 20
    ramp "Server on CPU 0, load generator on CPU 1, AI deltas of 100 ms" \
      "${pinned[@]}" --levels "$levels" --seconds "$seconds" --ai-chunk-ms 100
  fi
  ramp "No pinning (server and load generator share every core), transcode, AI deltas of 20 ms" \
    "$lg" --mode transcode --levels "$levels" --seconds "$seconds" --ai-chunk-ms 20
  echo "## The floor: the same messages with no work at all (floor)"
  echo
  echo "The relay takes the server's place and the ends the generator's; see docs/benchmarks.md."
  echo
  fl=./target/release/floor
  floor_levels="250,500,1000,1500,2000"
  for args in "" "--no-pin" "--ai-chunk-ms 100" "--passthrough"; do
    # shellcheck disable=SC2086 # the arguments are meant to split
    "$fl" --levels "$floor_levels" --seconds 10 $args
    echo
  done
} > "$out"
echo "wrote $out"
