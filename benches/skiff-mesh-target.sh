#!/bin/sh
# The two-hop mesh path in xDS mode for the load harness (../shared/bench), as `--two-hop`:
# client sidecar (workload "client") -> server sidecar (workload "server") -> app, both fed by a
# control plane (skiff-xds) that the server hop starts.
# Args: listen upstream workdir admin aux hop mid  (hop = single | client | server)
#   server: writes the mesh file, starts `skiff-xds serve` in the background (gRPC on MID+6,
#           admin on MID+7; the harness leaves MID+5..MID+9 unused), then execs the server
#           sidecar: inbound on LISTEN (= MID) -> app UPSTREAM.
#   client: execs the client sidecar: outbound on LISTEN -> service "bench" -> workload
#           "server" (its inbound at MID).
#   single: the harness always starts a one-hop instance of every --proxy as well; it is the
#           plain static-mode forwarder of skiff-target.sh (no control plane, no mTLS), a
#           one-hop reference in the same run.
# SKIFF_BENCH_MTLS=1: the control plane gets a CA (--ca-dir, created in the server's workdir)
# and bootstrap tokens; each sidecar gets --token-file, so the hop between the sidecars is
# mutual TLS (ALPN skiff-mesh/1). The server's inbound is `mtls: strict`, so a request can
# only pass once the client holds its certificate: the harness's readiness probe (GET / = 200)
# then proves that the measured hop is mTLS, never a plaintext fallback.
# SKIFF_BIN / SKIFF_XDS_BIN pick the binaries (default ./target/release/skiff, skiff-xds).
#
# The control plane is part of the measured process tree: the server sidecar is its parent,
# because this shell execs into the sidecar after starting it. Its idle CPU (a discovery
# stream per sidecar, HTTP/2 PINGs every 30 s, no pushes during a run) is negligible; its RSS
# (about 10 MB) is counted in the tree's memory, as a control plane's share of a two-pod mesh.
set -eu
listen=$1 upstream=$2 workdir=$3 admin=$4 aux=$5 hop=$6 mid=$7
bin=${SKIFF_BIN:-./target/release/skiff}
xds_bin=${SKIFF_XDS_BIN:-./target/release/skiff-xds}
mtls=${SKIFF_BENCH_MTLS:-0}
grpc=$((mid + 6))
xds_admin=$((mid + 7))
xds_url=http://127.0.0.1:$grpc

# Both hops know a workload's token without sharing a file: their workdirs differ, so the
# token is a fixed function of the workload's name. Bench-only secrets.
token() { printf 'skiff-bench-token-%s' "$1"; }

# Writes this hop's token file when mTLS is on and sets tokenfile to it (else empty).
identity() {
  if [ "$mtls" = 1 ]; then
    (umask 077 && token "$1" >"$workdir/token")
    tokenfile=$workdir/token
  else
    tokenfile=""
  fi
}

case $hop in
  single)
    exec "$(dirname "$0")/skiff-target.sh" "$@" ;;
  server)
    inbound_mtls=""
    [ "$mtls" = 1 ] && inbound_mtls=", mtls: strict"
    cat >"$workdir/mesh.yaml" <<YAML
services:
  - name: bench
    hosts: ["*"]
    protocol: http1
    endpoints: [ { workload: server } ]
workloads:
  - name: server
    serviceAccount: server
    inbound: { listen: 127.0.0.1:$listen, app: 127.0.0.1:$upstream$inbound_mtls }
  - name: client
    serviceAccount: client
YAML
    set --
    if [ "$mtls" = 1 ]; then
      (umask 077 && printf 'default/server: %s\ndefault/client: %s\n' \
        "$(token server)" "$(token client)" >"$workdir/tokens.yaml")
      # The CA directory does not exist yet: skiff-xds creates it with a fresh anchor.
      set -- --ca-dir "$workdir/ca" --bootstrap-tokens "$workdir/tokens.yaml"
    fi
    RUST_LOG=warn "$xds_bin" serve --config "$workdir/mesh.yaml" "$@" \
      --grpc-addr 127.0.0.1:$grpc --admin-addr 127.0.0.1:$xds_admin &
    identity server
    set -- --xds "$xds_url" --workload server --namespace default --log warn \
      --inbound-addr "127.0.0.1:$listen" --admin-addr "127.0.0.1:$admin" --outbound-addr "127.0.0.1:$aux"
    [ -n "$tokenfile" ] && set -- "$@" --token-file "$tokenfile"
    exec "$bin" run "$@" ;;
  client)
    identity client
    set -- --xds "$xds_url" --workload client --namespace default --log warn \
      --outbound-addr "127.0.0.1:$listen" --admin-addr "127.0.0.1:$admin" --inbound-addr "127.0.0.1:$aux"
    [ -n "$tokenfile" ] && set -- "$@" --token-file "$tokenfile"
    exec "$bin" run "$@" ;;
  *) echo "skiff-mesh-target.sh: unknown hop $hop" >&2; exit 2 ;;
esac
