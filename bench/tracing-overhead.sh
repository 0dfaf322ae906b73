#!/usr/bin/env bash
# Live throughput and p99 of `umbra proxy` with tracing on and the collector down
# or slow, against the same with a healthy collector (issue 8, acceptance 3:
# ratios at least 0.95), and against tracing off for the cost of tracing itself.
#
# Everything runs on this machine, on 127.0.0.1, in one run:
#   upstream   nginx `return 200 "ok"` (one worker, CPU 1);
#   collectors one that answers at once (up), none listening (down), or one that
#              answers every export after 5 s (slow);
#   proxy      umbra with one worker thread on CPU 0, every request sampled
#              (OTEL_TRACES_SAMPLER=always_on: the most spans the exporter can get);
#   client     wrk, 64 connections, on CPU 1.
# Cases, ROUNDS times each, alternating: off, up, down, slow. Prints each figure,
# the medians, the ratios to "up" and to "off", and the spans dropped and exported.
#
# Usage: [UMBRA=binary] bench/tracing-overhead.sh [SECONDS] [ROUNDS]   (defaults: 10 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}

command -v wrk >/dev/null && [[ -x /usr/sbin/nginx ]] || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
}
if [[ -n ${UMBRA:-} ]]; then
  umbra=$UMBRA
else
  cargo build --profile dist -q -p umbra
  umbra=$PWD/target/dist/umbra
fi
source bench/common.sh

prod=$(free_port)
cat >"$tmp/upstream.conf" <<CONF
daemon off; worker_processes 1; pid $tmp/upstream.pid; error_log $tmp/upstream.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
  uwsgi_temp_path $tmp; scgi_temp_path $tmp; keepalive_requests 100000000;
  server { listen 127.0.0.1:$prod; location / { return 200 "ok"; } } }
CONF
"${pin_rest[@]}" /usr/sbin/nginx -c "$tmp/upstream.conf" -p "$tmp" &
pids+=($!)

# The slow collector: reads each export and answers 200 five seconds later.
slow=$(free_port "$prod")
cat >"$tmp/slow.py" <<'PY'
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(float(sys.argv[2]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
"${pin_rest[@]}" python3 "$tmp/slow.py" "$slow" 5 &
pids+=($!)
up=$(free_port "$prod" "$slow")
"${pin_rest[@]}" python3 "$tmp/slow.py" "$up" 0 &
pids+=($!)
down=$(free_port "$prod" "$slow" "$up") # nothing listens there
wait_port "$prod"; wait_port "$slow"; wait_port "$up"

listen=$(free_port "$prod" "$slow" "$up" "$down")
admin=$(free_port "$prod" "$slow" "$up" "$down" "$listen")

# One run; $1: off, up, down or slow. Prints "rps p99_ms dropped exported".
measure() {
  local env=(OTEL_EXPORTER_OTLP_ENDPOINT= OTEL_TRACES_SAMPLER=always_on)
  case $1 in
    up) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$up" OTEL_TRACES_SAMPLER=always_on) ;;
    down) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$down" OTEL_TRACES_SAMPLER=always_on) ;;
    slow) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$slow" OTEL_TRACES_SAMPLER=always_on) ;;
  esac
  env "${env[@]}" "${pin_proxy[@]}" "$umbra" proxy --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" \
    --threads 1 --production "http://127.0.0.1:$prod" 2>"$tmp/umbra.err" &
  local pid=$!
  wait_port "$listen" "$pid" "$tmp/umbra.err"
  "${pin_rest[@]}" wrk -t1 -c64 -d"${secs}s" --latency "http://127.0.0.1:$listen/" >"$tmp/wrk.txt"
  curl -s "http://127.0.0.1:$admin/metrics" >"$tmp/metrics.txt" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$tmp/wrk.txt" "$tmp/metrics.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
metrics = open(sys.argv[2]).read()
def spans(outcome):
    m = re.search(r'umbra_trace_spans_total\{outcome="%s"\} (\S+)' % outcome, metrics)
    return int(float(m.group(1))) if m else 0
print(f"{rps:.1f} {p99:.3f} {spans('dropped')} {spans('exported')}")
PY
}

declare -A results
for r in $(seq "$rounds"); do
  for c in off up down slow; do
    line=$(measure "$c")
    results[$c]+="$line;"
    echo "round $r $c: $line  (req/s, p99 ms, spans dropped, spans exported)"
  done
done

python3 - "${results[off]}" "${results[up]}" "${results[down]}" "${results[slow]}" <<'PY'
import json, statistics, sys
def parse(s):
    rows = [list(map(float, x.split())) for x in s.strip(";").split(";")]
    return {"rps": statistics.median(r[0] for r in rows), "p99_ms": statistics.median(r[1] for r in rows),
            "dropped": max(r[2] for r in rows), "exported": max(r[3] for r in rows)}
off, up, down, slow = (parse(a) for a in sys.argv[1:5])
out = {"off": off, "up": up, "down": down, "slow": slow,
       "throughput_down_vs_up": down["rps"] / up["rps"], "throughput_slow_vs_up": slow["rps"] / up["rps"],
       "p99_up_vs_down": up["p99_ms"] / down["p99_ms"], "p99_up_vs_slow": up["p99_ms"] / slow["p99_ms"],
       "throughput_up_vs_off": up["rps"] / off["rps"]}
print(f"median req/s: off {off['rps']:.0f}, collector up {up['rps']:.0f}, down {down['rps']:.0f}, slow {slow['rps']:.0f}")
print(f"throughput ratio to a healthy collector: down {out['throughput_down_vs_up']:.3f}, slow {out['throughput_slow_vs_up']:.3f} (goal >= 0.95)")
print(f"p99 ratio (up / x, goal >= 0.95): down {out['p99_up_vs_down']:.3f}, slow {out['p99_up_vs_slow']:.3f}")
print(f"tracing every request with a healthy collector vs tracing off: {out['throughput_up_vs_off']:.3f}")
print(json.dumps(out))
PY
