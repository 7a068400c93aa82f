#!/usr/bin/env bash
# Instructions per request of one skiff hop, counted by callgrind: repeatable on a shared,
# noisy machine where req/s is not. For each binary (and with SKIFF_BENCH_POLICY=1 for the
# first one too) it runs N1 and N2 requests (HTTP/1.1 or h2c, h2load, upstream nginx) and
# prints (I(N2) - I(N1)) / (N2 - N1), so start-up cancels out.
#   bash benches/instructions.sh [BIN ...]      # default: ./target/release/skiff
# POLICIES=0 leaves the policy row out. Needs valgrind, nginx and h2load
# (apt: valgrind nginx-light nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(./target/release/skiff)
n1=${N1:-1000} n2=${N2:-3000}
work=$(mktemp -d)
trap 'kill $(cat "$work/nginx.pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT
up=$((39000 + RANDOM % 1000))
cat >"$work/nginx.conf" <<CONF
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$up; keepalive_requests 1000000;
  location / { return 200 "ok"; } } }
CONF
nginx -c "$work/nginx.conf" -p "$work"

# Instructions for N requests through BIN; POLICY 0/1; PROTO h1/h2c.
count() {
  local bin=$1 policy=$2 n=$3 proto=$4 port=$((40000 + RANDOM % 5000)) d
  d=$(mktemp -d -p "$work")
  SKIFF_BIN=/bin/true SKIFF_BENCH_POLICY=$policy sh benches/skiff-target.sh \
    $port $up "$d" $((port + 5000)) $((port + 10000)) single 0
  valgrind --tool=callgrind --callgrind-out-file="$d/cg" "$bin" run --config "$d/mesh.yaml" \
    --log warn --admin-addr 127.0.0.1:$((port + 5000)) --outbound-addr 127.0.0.1:$port \
    --inbound-addr 127.0.0.1:$((port + 10000)) >"$d/log" 2>&1 &
  local vg=$!
  for _ in $(seq 200); do
    curl -fs -o /dev/null "http://127.0.0.1:$((port + 5000))/ready" && break
    sleep 0.1
  done
  case $proto in
    h1) h2load --h1 -n "$n" -c 4 "http://127.0.0.1:$port/" >"$d/load" ;;
    h2c) h2load -n "$n" -c 4 -m 4 "http://127.0.0.1:$port/" >"$d/load" ;;
  esac
  grep -q "$n succeeded" "$d/load" || { echo "instructions.sh: requests failed through $bin" >&2; cat "$d/load" >&2; }
  kill -INT $vg
  wait $vg || true
  awk '/^(summary|totals):/ {print $2; exit}' "$d/cg"
}

per_request() {
  local a b
  a=$(count "$@" "$n1" "$proto")
  b=$(count "$@" "$n2" "$proto")
  echo $(((b - a) / (n2 - n1)))
}

printf '| binary | policy | HTTP/1.1 instr/req | h2c instr/req |\n|---|---|---|---|\n'
for bin in "${bins[@]}"; do
  for policy in ${POLICIES:-0 1}; do
    [ $policy = 1 ] && [ "$bin" != "${bins[0]}" ] && continue
    row="| $bin | $policy |"
    for proto in h1 h2c; do
      row="$row $(per_request "$bin" $policy) |"
    done
    echo "$row"
  done
done
