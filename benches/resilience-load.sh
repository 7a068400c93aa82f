#!/usr/bin/env bash
# The resilience layer's cost under load, in one run of the loopback harness (../shared/bench):
# direct; skiff at SKIFF_BASE_BIN (a build of the commit before a change, when given); skiff
# as built now; and skiff with a retry policy, a retry budget, a circuit breaker, outlier
# detection and timeouts on its route (present, never triggered). HTTP/1.1 (test a) and h2c
# (test c), single hop. Appends the summary to benches/RESULTS.md.
#   SKIFF_BASE_BIN=/path/to/old/skiff bash benches/resilience-load.sh [--reps 3 --duration 10]
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SKIFF_BENCH_HARNESS:-../shared/bench}
[ -f "$harness/proxy-bench.sh" ] || { echo "resilience-load.sh: no harness at $harness" >&2; exit 1; }

cargo build --release --bin skiff
target='benches/skiff-target.sh {listen} {upstream} {workdir} {admin} {aux} {hop} {mid}'
args=(--builtin direct --tests a,c
  --proxy "skiff=$target" --h2c skiff
  --proxy "skiff-policy=env SKIFF_BENCH_POLICY=1 $target" --h2c skiff-policy)
if [ -n "${SKIFF_BASE_BIN:-}" ]; then
  args+=(--proxy "skiff-base=env SKIFF_BIN=$SKIFF_BASE_BIN $target" --h2c skiff-base)
fi
out="benches/results/$(date +%Y%m%d-%H%M%S)-resilience"
bash "$harness/proxy-bench.sh" --out "$out" "${args[@]}" "$@"

{
  echo
  echo "## Resilience overhead run $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "Command: \`SKIFF_BASE_BIN=${SKIFF_BASE_BIN:-} bash benches/resilience-load.sh $*\`"
  echo
  cat "$out/summary.md"
} >> benches/RESULTS.md
echo "resilience-load.sh: summary appended to benches/RESULTS.md (raw data in $out)"
