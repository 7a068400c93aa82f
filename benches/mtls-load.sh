#!/usr/bin/env bash
# What mesh mTLS costs on the two-hop path (client sidecar -> server sidecar -> app), in one run
# of the loopback harness (../shared/bench): direct; envoy-2hop (the harness's builtin envoy,
# plaintext between the hops); envoy-mtls-2hop (the same envoys with mutual TLS 1.3 between
# them, benches/envoy-mtls-target.sh); skiff-mesh-2hop (xDS mode, plaintext between the
# sidecars) and skiff-mtls-2hop (xDS mode with the mesh CA: mTLS between the sidecars), both
# benches/skiff-mesh-target.sh with the control plane in the measured tree. HTTP/1.1 (test a)
# and h2c into the client hop (test c); the hops speak HTTP/1.1 to each other and to the app.
# The harness also runs a one-hop instance of every --proxy: envoy-mtls is then a plaintext
# envoy like the builtin one, skiff-mesh and skiff-mtls the static one-hop skiff; those rows
# are one-hop references, not mTLS. Appends the summary to benches/RESULTS.md.
#   bash benches/mtls-load.sh                          # 3 reps x 10 s (~12 min)
#   bash benches/mtls-load.sh --reps 1 --duration 3    # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SKIFF_BENCH_HARNESS:-../shared/bench}
[ -f "$harness/proxy-bench.sh" ] || { echo "mtls-load.sh: no harness at $harness" >&2; exit 1; }

cargo build --release --bin skiff --bin skiff-xds
# The templates run these; a CARGO_TARGET_DIR elsewhere is followed unless they are set.
bins=${CARGO_TARGET_DIR:-target}/release
export SKIFF_BIN=${SKIFF_BIN:-$bins/skiff} SKIFF_XDS_BIN=${SKIFF_XDS_BIN:-$bins/skiff-xds}
certs=$(mktemp -d)
trap 'rm -rf "$certs"' EXIT
benches/envoy-mtls-target.sh --make-certs "$certs"

args='{listen} {upstream} {workdir} {admin} {aux} {hop} {mid}'
mesh="benches/skiff-mesh-target.sh $args"
out="benches/results/$(date +%Y%m%d-%H%M%S)-mtls"
bash "$harness/proxy-bench.sh" --out "$out" --tests a,c --reps 3 --duration 10 \
  --builtin direct,envoy --two-hop envoy \
  --proxy "envoy-mtls=env ENVOY_MTLS_CERTS=$certs benches/envoy-mtls-target.sh $args" \
  --h2c envoy-mtls --two-hop envoy-mtls \
  --proxy "skiff-mesh=$mesh" --h2c skiff-mesh --two-hop skiff-mesh \
  --proxy "skiff-mtls=env SKIFF_BENCH_MTLS=1 $mesh" --h2c skiff-mtls --two-hop skiff-mtls \
  "$@"

{
  echo
  echo "## Two-hop mTLS run $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "Command: \`bash benches/mtls-load.sh $*\`. The \`-2hop\` rows are the comparison; the"
  echo "one-hop rows envoy-mtls, skiff-mesh and skiff-mtls are plaintext one-hop references"
  echo "(the harness runs every template one hop too)."
  echo
  cat "$out/summary.md"
} >> benches/RESULTS.md
echo "mtls-load.sh: summary appended to benches/RESULTS.md (raw data in $out)"
