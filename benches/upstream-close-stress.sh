#!/usr/bin/env bash
# Stress: requests racing the end of their upstream connection. Every request must end; none
# may wait forever. Runs h2load RUNS times (default 20), counts the runs that did not finish
# within 40 s, and exits 1 if any hung.
#   bash benches/upstream-close-stress.sh h2 [RUNS]
#     an h2c client through skiff to a `protocol: auto` service on nginx, which speaks
#     HTTP/1.1 only: every upstream HTTP/2 connection dies at once with streams racing onto
#     it (every request ends as a 502)
#   bash benches/upstream-close-stress.sh h1 [RUNS]
#     an HTTP/1.1 client through skiff to a server that hangs up after each answer without
#     saying `Connection: close`: pooled connections are reused as they close (requests end
#     as 200, or as 502 when one was written to a closing connection)
# Needs nginx and h2load (bash ../shared/bench/setup.sh installs both), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
runs=${2:-20}
case "$mode" in
  h1 | h2) ;;
  *) echo "usage: bash benches/upstream-close-stress.sh h1|h2 [RUNS]" >&2; exit 2 ;;
esac
for tool in nginx h2load curl python3; do
  command -v "$tool" >/dev/null || { echo "upstream-close-stress: $tool is missing" >&2; exit 2; }
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
if [ "$mode" = h2 ]; then
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
  protocol=auto
  load=(h2load -n 30000 -c4 -m4)
else
  cat > "$work/hang-up.py" <<'EOF'
import asyncio, sys

async def answer_once(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except Exception:
        pass
    writer.close()

async def main():
    server = await asyncio.start_server(answer_once, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
EOF
  python3 "$work/hang-up.py" "$port" &
  protocol=http1
  load=(h2load --h1 -n 20000 -c8)
fi
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
printf 'services:\n  - name: up\n    hosts: ["*"]\n    protocol: %s\n    endpoints: [{ address: "127.0.0.1:%s" }]\n' \
  "$protocol" "$port" > "$work/mesh.yaml"
./target/release/skiff run --config "$work/mesh.yaml" --admin-addr 127.0.0.1:0 \
  --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 > "$work/skiff.out" 2> "$work/skiff.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^skiff listening' "$work/skiff.out" && break; sleep 0.1; done
line=$(grep '^skiff listening' "$work/skiff.out") || { cat "$work/skiff.err" >&2; exit 1; }
outbound=$(sed -E 's/.* outbound=([^ ]+).*/\1/' <<<"$line")
admin=$(sed -E 's/.* admin=([^ ]+).*/\1/' <<<"$line")

hung=0
for i in $(seq "$runs"); do
  "${load[@]}" "http://$outbound/" > "$work/h2load.log" 2>&1 &
  h=$!
  for _ in $(seq 400); do kill -0 "$h" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$h" 2>/dev/null; then
    hung=$((hung + 1))
    echo "run $i: HUNG; in flight per endpoint:" \
      "$(curl -s "http://$admin/config_dump" | grep -o '"inFlight": *[0-9]*' | tr '\n' ' ')"
    kill "$h"; wait "$h" 2>/dev/null || true
  else
    wait "$h" || true
    echo "run $i: $(grep -E '^requests:' "$work/h2load.log")"
  fi
done
echo "upstream-close-stress $mode: $hung of $runs runs hung"
[ "$hung" -eq 0 ]
