#!/usr/bin/env bash
# Benchmarks `umbra load` against wrk on this machine (issue 3, acceptance 4):
#   1. closed-model throughput next to wrk's: the same nginx on 127.0.0.1 (one
#      worker, `return 200 "ok"`), 16 connections, one client thread each, 10 s,
#      alternating wrk / umbra twice; prints each figure and the ratio umbra / wrk
#      measured in this run;
#   2. peak memory (VmHWM, via /usr/bin/time -v) of a closed-model run of
#      10 million requests.
# nginx is pinned to CPU 0 and each client to CPU 1, so the two never fight for a core
# (on a 2-core machine; the pins are skipped on a 1-core one).
#
# Usage: [UMBRA=binary] bench/load-vs-wrk.sh [SECONDS] [REQUESTS]   (defaults: 10 and 10000000)
# Output: a few human lines, then one JSON object with every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
total=${2:-10000000}
out=bench/out/load
mkdir -p "$out"

need=()
command -v wrk >/dev/null || need+=(wrk)
[[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# UMBRA=path/to/umbra measures a binary built elsewhere instead of building this tree.
if [[ -n ${UMBRA:-} ]]; then
  umbra=$UMBRA
else
  cargo build --profile dist -q -p umbra
  umbra=$PWD/target/dist/umbra
fi

if (($(nproc) >= 2)); then
  pin_server=(taskset -c 0)
  pin_client=(taskset -c 1)
else
  pin_server=()
  pin_client=()
fi

tmp=$(mktemp -d)
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
  uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$port; location / { return 200 "ok"; } }
}
CONF
"${pin_server[@]}" /usr/sbin/nginx -c "$tmp/nginx.conf" -p "$tmp" &
nginx_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.05
done
url=http://127.0.0.1:$port

# The smallest profile set: one profile, one template, GET / with no headers or body,
# the same request wrk sends.
cat >"$tmp/profiles.json" <<'JSON'
{
  "format": "umbra-profiles", "version": 1, "generated_at": "2026-01-01T00:00:00Z",
  "as_of_ms": null, "half_life_secs": null, "retire_below": 0.005,
  "baseline_rps": 100.0, "stress": 1.0, "sources": [],
  "clustering": { "k": 1, "k_choice": "fixed", "reason": "bench/load-vs-wrk.sh", "silhouette": null,
                  "inertia": 0.0, "restarts": 1, "seed": 1 },
  "features": { "names": [], "center": [], "scale": [], "vocab": {} },
  "profiles": [ {
    "id": "p-root", "name": "GET /", "share": 1.0, "mass": 1.0, "centroid": [], "spread": 0.0,
    "user_agent_classes": {}, "status_classes": { "2xx": 1.0 },
    "templates": [ {
      "method": "GET", "path": "/", "weight": 1.0, "params": [], "query": [], "headers": [],
      "user_agents": [], "content_type": null,
      "request_bytes": { "min": 0, "p10": 0, "p25": 0, "p50": 0, "p75": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0 },
      "response_bytes": { "min": 2, "p10": 2, "p25": 2, "p50": 2, "p75": 2, "p90": 2, "p95": 2, "p99": 2, "max": 2 },
      "latency_ms": null, "status": { "200": 1.0 }
    } ]
  } ]
}
JSON

run_wrk() {
  "${pin_client[@]}" wrk -t1 -c16 -d"${secs}s" "$url/" | awk '/^Requests\/sec:/ { print $2 }'
}
run_umbra() {
  "${pin_client[@]}" "$umbra" load -p "$tmp/profiles.json" -t "$url" --connections 16 \
    --threads 1 --duration "${secs}s" --quiet --json "$tmp/umbra.json" >/dev/null
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["totals"]["achieved_rps"])' "$tmp/umbra.json"
}

wrk_rps=()
umbra_rps=()
for round in 1 2; do
  w=$(run_wrk)
  u=$(run_umbra)
  echo "round $round: wrk $w req/s, umbra $u req/s"
  wrk_rps+=("$w")
  umbra_rps+=("$u")
done

echo "peak memory: $total requests, closed model, 16 connections, 1 thread ..."
/usr/bin/time -v -o "$tmp/time.txt" "${pin_client[@]}" "$umbra" load -p "$tmp/profiles.json" \
  -t "$url" --connections 16 --threads 1 --requests "$total" --quiet --json "$tmp/long.json" >/dev/null
rss_kib=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/time.txt")

python3 - "${wrk_rps[@]}" "${umbra_rps[@]}" "$rss_kib" "$tmp/long.json" "$total" "$secs" <<'PY'
import json, sys
w = [float(x) for x in sys.argv[1:3]]
u = [float(x) for x in sys.argv[3:5]]
rss_mib = int(sys.argv[5]) / 1024
long = json.load(open(sys.argv[6]))
ratio = sum(u) / sum(w)
print(f"wrk   {w[0]:.0f}, {w[1]:.0f} req/s (mean {sum(w)/2:.0f})")
print(f"umbra {u[0]:.0f}, {u[1]:.0f} req/s (mean {sum(u)/2:.0f})")
rounds = [b / a for a, b in zip(w, u)]
# Per-round ratios too: a neighbour's load on a shared machine shows as rounds that disagree.
print(f"ratio umbra / wrk: {ratio:.3f} (rounds {rounds[0]:.3f}, {rounds[1]:.3f}; target >= 1.0)")
t = long["totals"]
print(f"{t['requests']} requests in {long['duration_secs']:.1f} s: peak RSS {rss_mib:.1f} MiB (target < 64)")
print(json.dumps({
    "bench": "load-vs-wrk", "seconds": int(sys.argv[8]), "connections": 16, "threads": 1,
    "wrk_rps": w, "umbra_rps": u, "ratio": round(ratio, 4), "round_ratios": [round(r, 4) for r in rounds],
    "long_requests": t["requests"], "long_planned": int(sys.argv[7]),
    "long_seconds": round(long["duration_secs"], 2), "long_errors": t["errors"],
    "peak_rss_mib": round(rss_mib, 1),
}))
PY
