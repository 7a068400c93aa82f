#!/usr/bin/env bash
# What tracing costs on one hop (client -> skiff outbound -> the harness's nginx upstream), in one
# run of the loopback harness (../shared/bench): direct; skiff with tracing off; and skiff
# exporting its spans over OTLP/gRPC to a sink (examples/otlp-sink.rs) with
# `mesh.tracing.sampling` 0.0, 0.01 and 1.0. HTTP/1.1 (test a) and h2c (test c). Prints req/s
# and proxy CPU per request as ratios against tracing off, the spans the sink received and the
# proxies' own span counters, and appends the harness summary and those tables to
# benches/RESULTS.md.
#   bash benches/trace-load.sh                          # 3 reps x 10 s (~6 min)
#   bash benches/trace-load.sh --reps 1 --duration 3    # smoke run
#   SKIFF_BASE_BIN=/path/to/old/skiff bash benches/trace-load.sh   # adds a skiff-base row
# Extra arguments go to the harness (a later --tests or --reps wins). The sink is pinned to
# SINK_CPU (default: the load generator's CPU, LOADGEN_CPU or 0): its work is counted as foreign
# CPU there. OTEL_BSP_* variables set in the environment reach the traced proxies (the proxy's
# defaults: 5 s delay, a queue of 2048, batches of 512).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SKIFF_BENCH_HARNESS:-../shared/bench}
[ -f "$harness/proxy-bench.sh" ] || { echo "trace-load.sh: no harness at $harness" >&2; exit 1; }

cargo build --release --bin skiff --example otlp-sink
# The targets run these; a CARGO_TARGET_DIR elsewhere is followed unless they are set.
bins=${CARGO_TARGET_DIR:-target}/release
export SKIFF_BIN=${SKIFF_BIN:-$bins/skiff}
sink_bin=${SKIFF_OTLP_SINK:-$bins/examples/otlp-sink}
sink_cpu=${SINK_CPU:-${LOADGEN_CPU:-0}}
# Only the targets below decide whether they trace, and at which ratio.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_TRACES_SAMPLER \
  OTEL_TRACES_SAMPLER_ARG OTEL_SERVICE_NAME

out="benches/results/$(date +%Y%m%d-%H%M%S)-trace"
mkdir -p "$out"
sink_log=$out/otlp-sink.log
taskset -c "$sink_cpu" "$sink_bin" 127.0.0.1:0 >"$sink_log" 2>&1 &
sink_pid=$!
poll_pid=""
stop_sink() {
  if kill -0 "$sink_pid" 2>/dev/null; then
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
  fi
}
cleanup() {
  if [ -n "$poll_pid" ]; then kill "$poll_pid" 2>/dev/null || true; fi
  stop_sink
}
trap cleanup EXIT
sink_addr=""
for _ in $(seq 100); do
  sink_addr=$(awk '/^otlp-sink listening / { print $3 }' "$sink_log")
  [ -n "$sink_addr" ] && break
  kill -0 "$sink_pid" 2>/dev/null || { cat "$sink_log" >&2; echo "trace-load.sh: the sink exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$sink_addr" ] || { echo "trace-load.sh: the sink printed no listening line; see $sink_log" >&2; exit 1; }
echo "trace-load.sh: OTLP sink at $sink_addr (cpu $sink_cpu), log $sink_log"

args='{listen} {upstream} {workdir} {admin} {aux} {hop} {mid}'
target="benches/skiff-target.sh $args"
proxies=(--proxy "skiff=$target" --h2c skiff)
# The build before tracing, when given: what tracing switched off costs against it.
if [ -n "${SKIFF_BASE_BIN:-}" ]; then
  proxies+=(--proxy "skiff-base=env SKIFF_BIN=$SKIFF_BASE_BIN $target" --h2c skiff-base)
fi
for s in 0.0 0.01 1.0; do
  name=skiff-trace-$s
  proxies+=(--proxy "$name=env OTEL_EXPORTER_OTLP_ENDPOINT=http://$sink_addr OTEL_SERVICE_NAME=$name \
SKIFF_BENCH_SAMPLING=$s SKIFF_BENCH_ADMIN_NOTE=$out/admin-$name $target" --h2c "$name")
done

# The traced proxies' span counters, scraped every 2 s while they run (the harness stops them
# at its end): the last scrape is what the report shows.
(
  while sleep 2; do
    for note in "$out"/admin-*; do
      [ -f "$note" ] || continue
      name=${note##*/admin-}
      if metrics=$(curl -sf --max-time 1 "http://127.0.0.1:$(cat "$note")/metrics"); then
        grep -E '^skiff_(trace|access_log)_' <<<"$metrics" >"$out/.metrics-$name" || true
        mv "$out/.metrics-$name" "$out/trace-metrics-$name.txt"
      fi
    done
  done
) &
poll_pid=$!

bash "$harness/proxy-bench.sh" --out "$out" --builtin direct --tests a,c "${proxies[@]}" "$@"

kill "$poll_pid" 2>/dev/null || true
poll_pid=""
stop_sink

python3 - "$out" >"$out/trace-summary.md" <<'PY'
import json, os, re, statistics, sys

out = sys.argv[1]
res = json.load(open(os.path.join(out, "results.json")))
runs = res["runs"]
base = "skiff"
sampling = {"skiff": "off", "skiff-trace-0.0": "0.0", "skiff-trace-0.01": "0.01", "skiff-trace-1.0": "1.0"}
goal = {"skiff-trace-0.01": 0.97, "skiff-trace-1.0": 0.85}
names = [n for n in sampling if n in res["meta"]["targets"]]
tests = [t for t in ("a", "c") if any(r["test"] == t for r in runs)]


def med(test, name, key):
    v = [r.get(key) for r in runs if r["test"] == test and r["target"] == name and r.get(key) is not None]
    return statistics.median(v) if v else None


def f(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"


def ratio(x, y):
    return x / y if x is not None and y else None


L = [f"Tracing overhead, one hop ({res['meta']['reps']} reps x {res['meta']['duration_s']} s, medians); "
     "ratios against skiff with tracing off in the same run. Issue 16's goal: sampling 0.01 within 3 % "
     "of tracing off (req/s ratio >= 0.97), 1.0 within 15 % (>= 0.85).", ""]
titles = {"a": "a. HTTP/1.1 (wrk -t1 -c50)", "c": "c. h2c (h2load -t1 -c10 -m10)"}
for t in tests:
    L += [f"### {titles[t]}", "",
          "| target | sampling | req/s | req/s vs off | p99 µs | proxy CPU s/100k | CPU vs off | goal |",
          "|---|---|---|---|---|---|---|---|"]
    b_rps, b_cpu = med(t, base, "rps"), med(t, base, "proxy_cpu_s_per_100k")
    for n in names:
        rps, cpu = med(t, n, "rps"), med(t, n, "proxy_cpu_s_per_100k")
        r = ratio(rps, b_rps)
        g = "-" if n not in goal or r is None else (f">= {goal[n]}: " + ("met" if r >= goal[n] else "missed"))
        L.append(f"| {n} | {sampling[n]} | {f(rps)} | {f(r, 3)} | {f(med(t, n, 'p99_us'))} | {f(cpu, 3)} | "
                 f"{f(ratio(cpu, b_cpu), 3)} | {g} |")
    L.append("")

sink = {}
for line in open(os.path.join(out, "otlp-sink.log"), errors="replace"):
    m = re.match(r"otlp-sink service=(\S+) spans=(\d+)", line)
    if m:
        sink[m.group(1)] = int(m.group(2))


def metrics(name):
    vals = {}
    try:
        for line in open(os.path.join(out, f"trace-metrics-{name}.txt")):
            m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)", line)
            if m:
                vals[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    except FileNotFoundError:
        pass
    return vals


L += ["### Spans", "",
      "Requests measured exclude the harness's readiness probes and 2 s warm-up, which are traced too. "
      "Proxy counters are from the last scrape of /metrics (every 2 s) before the harness stopped the proxies.", "",
      "| target | requests measured | spans at the sink | spans per request | exported (proxy) | dropped queue-full | "
      "dropped export-failed | export errors |", "|---|---|---|---|---|---|---|---|"]
for n in names:
    if n == base:
        continue
    reqs = sum(r.get("requests") or 0 for r in runs if r["target"] == n)
    got = sink.get(n, 0)
    m = metrics(n)

    keys = ["skiff_trace_spans_exported_total", 'skiff_trace_spans_dropped_total{reason="queue-full"}',
            'skiff_trace_spans_dropped_total{reason="export-failed"}', "skiff_trace_export_errors_total"]
    counters = " | ".join(f(m.get(k)) if m else "-" for k in keys)
    L.append(f"| {n} | {reqs:,} | {got:,} | {f(got / reqs if reqs else None, 4)} | {counters} |")
print("\n".join(L))
PY
cat "$out/trace-summary.md"

{
  echo
  echo "## Tracing overhead run $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(nproc) cores ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "Command: \`SKIFF_BASE_BIN=${SKIFF_BASE_BIN:-} bash benches/trace-load.sh $*\`. skiff-trace-X exports to an OTLP sink"
  echo "(examples/otlp-sink.rs) pinned to cpu $sink_cpu, with \`mesh.tracing.sampling: X\`; the sink's"
  echo "CPU shows as foreign CPU on that cpu."
  echo
  cat "$out/trace-summary.md"
  echo
  cat "$out/summary.md"
} >> benches/RESULTS.md
echo "trace-load.sh: summary appended to benches/RESULTS.md (raw data in $out)"
