#!/usr/bin/env bash
# Reproduces docs/benchmarks-results.md: the criterion micro-benchmarks of the
# per-frame hot path and the load generator's ramp, both modes, on this machine.
# Usage: bash tests/bench.sh [levels, default 50,100,250,500,1000] [seconds per level, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
levels="${1:-50,100,250,500,1000}"
seconds="${2:-20}"
out=docs/benchmarks-results.md

cargo build --release -p voice-agent-tests --bin loadgen
micro="$(cargo bench -p voice-agent-server --bench audio --bench hot_path -- --warm-up-time 1 --measurement-time 3 2>/dev/null \
  | grep -E '^[a-zA-Z].*|time:' | paste - - | sed -E 's/ +/ /g')"
load="$(./target/release/loadgen --levels "$levels" --seconds "$seconds")"

{
  echo "# Benchmark results"
  echo
  echo "Produced by \`bash tests/bench.sh $levels $seconds\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB."
  echo
  echo "## Hot path, per 20 ms frame (criterion, release)"
  echo
  echo '```'
  echo "$micro"
  echo '```'
  echo
  echo "## Concurrent calls (load generator, release; server and load generator share the machine)"
  echo
  echo "$load"
} > "$out"
echo "wrote $out"
