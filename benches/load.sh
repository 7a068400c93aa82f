#!/usr/bin/env bash
# Load benchmark: skiff as one hop (and two chained sidecars) against direct, nginx, haproxy
# and envoy in the same run, through ../shared/bench/proxy-bench.sh. Writes the run into
# benches/results/<timestamp>/ and appends its summary to benches/RESULTS.md.
#   bash benches/load.sh                 # full run (~10 min)
#   bash benches/load.sh --reps 1 --duration 3   # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SKIFF_BENCH_HARNESS:-../shared/bench}
[ -f "$harness/proxy-bench.sh" ] || { echo "load.sh: no harness at $harness" >&2; exit 1; }

cargo build --release --bin skiff
out="benches/results/$(date +%Y%m%d-%H%M%S)"
bash "$harness/proxy-bench.sh" --out "$out" \
  --builtin direct,nginx,haproxy,envoy --two-hop envoy \
  --proxy 'skiff=benches/skiff-target.sh {listen} {upstream} {workdir} {admin} {aux} {hop} {mid}' \
  --h2c skiff --two-hop skiff "$@"

{
  echo
  echo "## Run $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "Command: \`bash benches/load.sh $*\`"
  echo
  cat "$out/summary.md"
} >> benches/RESULTS.md
echo "load.sh: summary appended to benches/RESULTS.md (raw data in $out)"
