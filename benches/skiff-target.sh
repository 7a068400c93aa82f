#!/bin/sh
# One skiff instance for the load harness (../shared/bench): writes its mesh file, then execs.
# Args: listen upstream workdir admin aux hop mid  (hop = single | client | server)
# single: outbound on LISTEN -> UPSTREAM.  client: outbound on LISTEN -> workload "server"
# (inbound at MID).  server: inbound (workload "server") on LISTEN -> app UPSTREAM.
# Upstream nginx speaks HTTP/1.1 only, so the service says protocol: http1 (h2c clients too).
set -eu
listen=$1 upstream=$2 workdir=$3 admin=$4 aux=$5 hop=$6 mid=$7
bin=${SKIFF_BIN:-./target/release/skiff}
mesh=$workdir/mesh.yaml
case $hop in
  single)
    cat >"$mesh" <<YAML
services:
  - name: bench
    hosts: ["*"]
    protocol: http1
    endpoints: [ { address: 127.0.0.1:$upstream } ]
YAML
    exec "$bin" run --config "$mesh" --log warn --admin-addr 127.0.0.1:$admin \
      --outbound-addr 127.0.0.1:$listen --inbound-addr 127.0.0.1:$aux ;;
  client)
    cat >"$mesh" <<YAML
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
workloads:
  - name: server
    inbound: { listen: 127.0.0.1:$listen, app: 127.0.0.1:$upstream }
YAML
    exec "$bin" run --config "$mesh" --workload server --log warn --admin-addr 127.0.0.1:$admin \
      --outbound-addr 127.0.0.1:$aux ;;
  *) echo "skiff-target.sh: unknown hop $hop" >&2; exit 2 ;;
esac
