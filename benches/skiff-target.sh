#!/bin/sh
# One skiff instance for the load harness (../shared/bench): writes its mesh file, then execs.
# Args: listen upstream workdir admin aux hop mid  (hop = single | client | server)
# single: outbound on LISTEN -> UPSTREAM.  client: outbound on LISTEN -> workload "server"
# (inbound at MID).  server: inbound (workload "server") on LISTEN -> app UPSTREAM.
# Upstream nginx speaks HTTP/1.1 only, so the service says protocol: http1 (h2c clients too).
# SKIFF_BIN picks the binary (a base build and the new one can be two targets of one run);
# SKIFF_BENCH_POLICY=1 puts a retry policy, a retry budget, a circuit breaker, outlier
# detection and timeouts on the single hop's service and route (present, never triggered).
# SKIFF_BENCH_SAMPLING=X writes `mesh: { tracing: { sampling: X } }` into every hop's mesh file
# (tracing itself is on only with OTEL_EXPORTER_OTLP_ENDPOINT in the environment);
# SKIFF_BENCH_ADMIN_NOTE=FILE writes the admin port to FILE, for a script that scrapes /metrics.
set -eu
listen=$1 upstream=$2 workdir=$3 admin=$4 aux=$5 hop=$6 mid=$7
bin=${SKIFF_BIN:-./target/release/skiff}
mesh=$workdir/mesh.yaml
policy=""
if [ "${SKIFF_BENCH_POLICY:-0}" = 1 ]; then
  policy='    circuitBreaker: { maxConnections: 10000, maxPendingRequests: 10000, maxRequests: 10000, maxRetries: 100 }
    outlierDetection: { consecutiveErrors: 5 }
    retryBudget: { ratio: 0.2, minRetriesPerSecond: 10 }
    routes:
      - name: all
        timeouts: { request: 10s, backendRequest: 5s }
        retry: { attempts: 3, retryOn: [5xx, reset, connect-failure] }'
fi
meshblock=""
if [ -n "${SKIFF_BENCH_SAMPLING:-}" ]; then
  meshblock="mesh:
  tracing: { sampling: $SKIFF_BENCH_SAMPLING }"
fi
if [ -n "${SKIFF_BENCH_ADMIN_NOTE:-}" ]; then
  echo "$admin" >"$SKIFF_BENCH_ADMIN_NOTE"
fi
case $hop in
  single)
    cat >"$mesh" <<YAML
$meshblock
services:
  - name: bench
    hosts: ["*"]
    protocol: http1
    endpoints: [ { address: 127.0.0.1:$upstream } ]
$policy
YAML
    exec "$bin" run --config "$mesh" --log warn --admin-addr 127.0.0.1:$admin \
      --outbound-addr 127.0.0.1:$listen --inbound-addr 127.0.0.1:$aux ;;
  client)
    cat >"$mesh" <<YAML
$meshblock
services:
  - name: bench
    hosts: ["*"]
    protocol: http1
    endpoints: [ { workload: server } ]
workloads:
  - name: server
    inbound: { listen: 127.0.0.1:$mid, app: 127.0.0.1:9 }
YAML
    exec "$bin" run --config "$mesh" --log warn --admin-addr 127.0.0.1:$admin \
      --outbound-addr 127.0.0.1:$listen --inbound-addr 127.0.0.1:$aux ;;
  server)
    cat >"$mesh" <<YAML
$meshblock
workloads:
  - name: server
    inbound: { listen: 127.0.0.1:$listen, app: 127.0.0.1:$upstream }
YAML
    exec "$bin" run --config "$mesh" --workload server --log warn --admin-addr 127.0.0.1:$admin \
      --outbound-addr 127.0.0.1:$aux ;;
  *) echo "skiff-target.sh: unknown hop $hop" >&2; exit 2 ;;
esac
