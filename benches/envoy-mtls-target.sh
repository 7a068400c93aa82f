#!/bin/sh
# Envoy as two sidecars with mutual TLS between them, for the load harness (../shared/bench) as
# `--two-hop`: the peer of skiff-mesh-target.sh with SKIFF_BENCH_MTLS=1. Its listeners and
# clusters are those of the harness's builtin envoy (one worker, access log off, default
# buffer limits, codec AUTO so h2c clients work, 1 s connect timeout), so the builtin
# `envoy-2hop` and this one differ only by TLS between the hops.
#   benches/envoy-mtls-target.sh --make-certs DIR    # once: CA + two SPIFFE leaves into DIR
#   ENVOY_MTLS_CERTS=DIR benches/envoy-mtls-target.sh listen upstream workdir admin aux hop mid
# hop = client: listener on LISTEN -> TLS 1.3 to MID with the client certificate, requiring
#               the server's URI SAN spiffe://cluster.local/ns/default/sa/server.
#       server: TLS listener on LISTEN (= MID) requiring a client certificate from the CA
#               -> plaintext HTTP/1.1 to UPSTREAM.
#       single: the harness starts a one-hop instance of every --proxy as well; it is the
#               builtin envoy's plaintext forwarder (LISTEN -> UPSTREAM).
# Both hops need the same CA, and their workdirs differ, so the certificates live in a
# directory made beforehand (mtls-load.sh does it). Skiff neither issues nor accepts TLS
# session resumption (it checks the peer's SPIFFE ID on every handshake), so resumption is
# off here too. Envoy is found as the harness finds it: $ENVOY, PATH, then setup.sh's venv.
set -eu

td=cluster.local

make_certs() {
  dir=$1
  mkdir -p "$dir"
  umask 077
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -subj "/O=skiff bench/CN=bench mesh CA" -days 7 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt"
  for sa in server client; do
    key "$dir/$sa.key"
    openssl req -new -key "$dir/$sa.key" -subj "/O=skiff bench" -out "$dir/$sa.csr"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth" \
      "subjectAltName=critical,URI:spiffe://$td/ns/default/sa/$sa" >"$dir/$sa.ext"
    openssl x509 -req -in "$dir/$sa.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -set_serial "0x$(openssl rand -hex 12)" -days 7 -extfile "$dir/$sa.ext" \
      -out "$dir/$sa.crt" 2>/dev/null
    rm -f "$dir/$sa.csr" "$dir/$sa.ext"
  done
  openssl verify -CAfile "$dir/ca.crt" "$dir/server.crt" "$dir/client.crt" >/dev/null
}

if [ "${1:-}" = --make-certs ]; then
  [ $# = 2 ] || { echo "usage: $0 --make-certs DIR" >&2; exit 2; }
  make_certs "$2"
  exit 0
fi

[ $# = 7 ] || { echo "usage: $0 listen upstream workdir admin aux hop mid" >&2; exit 2; }
listen=$1 upstream=$2 workdir=$3 admin=$4 hop=$6 mid=$7

find_envoy() {
  if [ -n "${ENVOY:-}" ]; then echo "$ENVOY"; return; fi
  if command -v envoy >/dev/null 2>&1; then command -v envoy; return; fi
  for c in "${XDG_CACHE_HOME:-$HOME/.cache}"/skiff-bench/envoy/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [ -x "$c" ]; then echo "$c"; return; fi
  done
  echo "envoy-mtls-target.sh: no envoy (set ENVOY, or run ../shared/bench/setup.sh)" >&2
  exit 1
}
envoy=$(find_envoy)

certs=${ENVOY_MTLS_CERTS:-}
if [ "$hop" != single ]; then
  if [ -z "$certs" ] || [ ! -f "$certs/ca.crt" ]; then
    echo "envoy-mtls-target.sh: set ENVOY_MTLS_CERTS to a directory made by --make-certs" >&2
    exit 2
  fi
fi

# Everything but the TLS parts, as the harness's builtin envoy has it. $1 = the listener's
# port, $2 = the cluster's port, $3 = the listener's transport socket (indented YAML or
# empty), $4 = the cluster's.
config() {
  cat <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: $1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
$3
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}
$4
YAML
}

# TLS 1.3 with X25519, as Skiff's rustls (ring) negotiates it; Envoy's own default would be
# the larger X25519MLKEM768 hybrid, a dearer handshake than the one compared against.
tls13='        tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3, ecdh_curves: [X25519]}'

# The server's listener: its certificate, and a client certificate from the CA required.
server_tls="      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          disable_stateless_session_resumption: true
          disable_stateful_session_resumption: true
          common_tls_context:
    $tls13
            alpn_protocols: [\"http/1.1\"]
            tls_certificates:
            - certificate_chain: {filename: \"$certs/server.crt\"}
              private_key: {filename: \"$certs/server.key\"}
            validation_context:
              trusted_ca: {filename: \"$certs/ca.crt\"}"

# The client's cluster: its certificate, and the server's SPIFFE ID required.
client_tls="    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        max_session_keys: 0
        common_tls_context:
  $tls13
          alpn_protocols: [\"http/1.1\"]
          tls_certificates:
          - certificate_chain: {filename: \"$certs/client.crt\"}
            private_key: {filename: \"$certs/client.key\"}
          validation_context:
            trusted_ca: {filename: \"$certs/ca.crt\"}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {exact: \"spiffe://$td/ns/default/sa/server\"}"

cfg=$workdir/envoy.yaml
case $hop in
  single) config "$listen" "$upstream" "" "" >"$cfg" ;;
  client) config "$listen" "$mid" "" "$client_tls" >"$cfg" ;;
  server) config "$listen" "$upstream" "$server_tls" "" >"$cfg" ;;
  *) echo "envoy-mtls-target.sh: unknown hop $hop" >&2; exit 2 ;;
esac
exec "$envoy" --concurrency 1 --log-level warn --disable-hot-restart -c "$cfg"
