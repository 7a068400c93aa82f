#!/usr/bin/env bash
# Stress: an h2c client (h2load) through skiff to a `protocol: auto` service whose endpoint
# speaks HTTP/1.1 only (nginx). Every upstream HTTP/2 connection dies at once, with streams
# racing onto it; every request must end (as a 502), none may wait forever. Runs h2load RUNS
# times (default 20) and counts the runs that did not finish within 40 s; exits 1 if any hung.
#   bash benches/h2-to-h1-stress.sh [RUNS]
# Needs nginx and h2load (bash ../shared/bench/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
for tool in nginx h2load curl python3; do
  command -v "$tool" >/dev/null || { echo "h2-to-h1-stress: $tool is missing" >&2; exit 2; }
done

cargo build --release --locked --bin skiff
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
printf 'services:\n  - name: up\n    hosts: ["*"]\n    endpoints: [{ address: "127.0.0.1:%s" }]\n' "$port" \
  > "$work/mesh.yaml"
./target/release/skiff run --config "$work/mesh.yaml" --admin-addr 127.0.0.1:0 \
  --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 > "$work/skiff.out" 2> "$work/skiff.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^skiff listening' "$work/skiff.out" && break; sleep 0.1; done
line=$(grep '^skiff listening' "$work/skiff.out") || { cat "$work/skiff.err" >&2; exit 1; }
outbound=$(sed -E 's/.* outbound=([^ ]+).*/\1/' <<<"$line")
admin=$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$line")

hung=0
for i in $(seq "$runs"); do
  h2load -n 30000 -c4 -m4 "http://$outbound/" > "$work/h2load.log" 2>&1 &
  h=$!
  for _ in $(seq 400); do kill -0 "$h" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$h" 2>/dev/null; then
    hung=$((hung + 1))
    echo "run $i: HUNG; in flight per endpoint:" \
      "$(curl -s "http://$admin/config_dump" | grep -o '"inFlight":[0-9]*' | tr '\n' ' ')"
    kill "$h"; wait "$h" 2>/dev/null || true
  else
    wait "$h" || true
    echo "run $i: $(grep -E '^requests:' "$work/h2load.log")"
  fi
done
echo "h2-to-h1-stress: $hung of $runs runs hung"
[ "$hung" -eq 0 ]
