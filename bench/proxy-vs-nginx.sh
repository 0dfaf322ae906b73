#!/usr/bin/env bash
# Benchmarks `umbra proxy` against nginx as a reverse proxy (issue 4, acceptance 4).
#
# Everything runs on this machine, on 127.0.0.1, in one run so the ratios compare
# like with like:
#   upstreams  nginx `return 200 "ok"` (production and a fast shadow), and a
#              shadow that answers after 300 ms (a small asyncio server);
#   peer       nginx as a reverse proxy (proxy_pass with upstream keepalive), and
#              with its `mirror` module for the shadowing cases;
#   client     wrk, 64 connections, --latency for p99.
# The proxy under test (umbra with one worker thread, or nginx with one worker
# process) is pinned to CPU 0; wrk and the upstreams to CPU 1, so the proxies
# are what limits throughput (pins skipped on a 1-core machine).
#
# Cases, each measured ROUNDS times, alternating umbra and nginx:
#   plain        no mirroring
#   mirror-fast  100% mirrored to the fast shadow
#   mirror-slow  100% mirrored to the 300 ms shadow
# and umbra alone mirroring to the fast shadow with masking off, for the cost of
# the default masking rules (issue 5).
# Prints each figure, the ratios the issue asks for, and one JSON object.
#
# Usage: [UMBRA=binary] bench/proxy-vs-nginx.sh [SECONDS] [ROUNDS]   (defaults: 10 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
conns=64

need=()
command -v wrk >/dev/null || need+=(wrk)
[[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [[ -n ${UMBRA:-} ]]; then
  umbra=$UMBRA
else
  cargo build --profile dist -q -p umbra
  umbra=$PWD/target/dist/umbra
fi
source bench/common.sh
common_http="access_log off; client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
  uwsgi_temp_path $tmp; scgi_temp_path $tmp; keepalive_requests 100000000;"

# Upstreams: production and the fast shadow (one nginx worker on CPU 1).
prod=$(free_port)
fast=$(free_port "$prod")
cat >"$tmp/upstreams.conf" <<CONF
daemon off; worker_processes 1; pid $tmp/upstreams.pid; error_log $tmp/upstreams.err;
events { worker_connections 4096; }
http { $common_http
  server { listen 127.0.0.1:$prod; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$fast; location / { return 200 "ok"; } }
}
CONF
"${pin_rest[@]}" /usr/sbin/nginx -c "$tmp/upstreams.conf" -p "$tmp" &
pids+=($!)

# The slow shadow: answers every request after 300 ms, keep-alive.
slow=$(free_port "$prod" "$fast")
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
            await asyncio.sleep(0.3)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
"${pin_rest[@]}" python3 "$tmp/slow.py" "$slow" &
pids+=($!)
wait_port "$prod"; wait_port "$fast"; wait_port "$slow"

listen=$(free_port "$prod" "$fast" "$slow")
admin=$(free_port "$prod" "$fast" "$slow" "$listen")

# nginx as the peer proxy: plain, or mirroring every request to a shadow.
nginx_conf() { # $1: shadow port or empty
  local mirror="" mirror_loc=""
  if [[ -n $1 ]]; then
    mirror="mirror /_mirror; mirror_request_body on;"
    mirror_loc="location = /_mirror { internal; proxy_pass http://shadow\$request_uri;
      $nginx_forwarding proxy_set_header X-Umbra-Shadow 1; }"
  fi
  cat <<CONF
daemon off; worker_processes 1; pid $tmp/peer.pid; error_log $tmp/peer.err;
events { worker_connections 4096; }
http { $common_http
  upstream production { server 127.0.0.1:$prod; keepalive 128; }
  upstream shadow { server 127.0.0.1:${1:-$fast}; keepalive 128; }
  server { listen 127.0.0.1:$listen;
    location / { $mirror proxy_pass http://production; $nginx_forwarding }
    $mirror_loc
  }
}
CONF
}

# Runs wrk against the proxy; prints "rps p99_ms".
run_wrk() {
  "${pin_rest[@]}" wrk -t1 -c$conns -d"${secs}s" --latency "http://127.0.0.1:$listen/" >"$tmp/wrk.txt"
  python3 - "$tmp/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
print(f"{rps:.1f} {float(m.group(1)) * scale:.3f}")
PY
}

# One measurement of nginx; $1: case.
measure_nginx() {
  local shadow=""
  case $1 in mirror-fast) shadow=$fast ;; mirror-slow) shadow=$slow ;; esac
  nginx_conf "$shadow" >"$tmp/peer.conf"
  "${pin_proxy[@]}" /usr/sbin/nginx -c "$tmp/peer.conf" -p "$tmp" &
  local pid=$!
  wait_port "$listen" "$pid" "$tmp/peer.err"
  run_wrk
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# One measurement of umbra; $1: case. Also records peak RSS in $tmp/rss.
measure_umbra() {
  local args=(proxy --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" --threads 1
              --production "http://127.0.0.1:$prod")
  case $1 in
    mirror-fast) args+=(--shadow "http://127.0.0.1:$fast" --mirror 100%) ;;
    mirror-slow) args+=(--shadow "http://127.0.0.1:$slow" --mirror 100%) ;;
    mirror-fast-nomask)
      # The same as mirror-fast with masking switched off: no default rules, detectors nowhere.
      cat >"$tmp/nomask.toml" <<CONF
[listen]
address = "127.0.0.1:$listen"
[admin]
address = "127.0.0.1:$admin"
[production]
servers = [{ url = "http://127.0.0.1:$prod" }]
[[shadow]]
name = "shadow"
url = "http://127.0.0.1:$fast"
[mirror]
percent = "100%"
[mask]
defaults = false
scan = []
CONF
      args=(proxy --config "$tmp/nomask.toml" --threads 1) ;;
  esac
  "${pin_proxy[@]}" "$umbra" "${args[@]}" 2>"$tmp/umbra.err" &
  local pid=$!
  wait_port "$listen" "$pid" "$tmp/umbra.err"
  run_wrk
  awk '/VmHWM/ { print $2 }' "/proc/$pid/status" >"$tmp/rss"
  curl -s "http://127.0.0.1:$admin/metrics" >"$tmp/metrics.txt" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

results="$tmp/results.txt"
: >"$results"
for case in plain mirror-fast mirror-slow; do
  for round in $(seq "$rounds"); do
    measure_nginx "$case" >"$tmp/n.txt"
    measure_umbra "$case" >"$tmp/u.txt"
    read -r n_rps n_p99 <"$tmp/n.txt"
    read -r u_rps u_p99 <"$tmp/u.txt"
    rss=$(cat "$tmp/rss")
    dropped=$(awk '/^umbra_shadow_copies_total/ && /queue_full/ { s += $2 } END { print s + 0 }' "$tmp/metrics.txt")
    echo "$case round $round: nginx $n_rps req/s p99 ${n_p99} ms | umbra $u_rps req/s p99 ${u_p99} ms (peak RSS $((rss / 1024)) MiB, copies dropped $dropped)"
    echo "$case $n_rps $n_p99 $u_rps $u_p99 $rss $dropped" >>"$results"
  done
done
# Masking on (mirror-fast above) against off, umbra alone.
for round in $(seq "$rounds"); do
  measure_umbra mirror-fast-nomask >"$tmp/u.txt"
  read -r u_rps u_p99 <"$tmp/u.txt"
  echo "mirror-fast, masking off, round $round: umbra $u_rps req/s p99 ${u_p99} ms"
  echo "$u_rps" >>"$tmp/nomask.txt"
done

python3 - "$results" "$secs" "$rounds" "$tmp/nomask.txt" <<'PY'
import json, sys
rows = [l.split() for l in open(sys.argv[1])]
nomask = [float(l) for l in open(sys.argv[4])]
by = {}
for case, n_rps, n_p99, u_rps, u_p99, rss, dropped in rows:
    d = by.setdefault(case, {"nginx_rps": [], "nginx_p99_ms": [], "umbra_rps": [], "umbra_p99_ms": [], "umbra_peak_rss_mib": [], "copies_dropped": []})
    d["nginx_rps"].append(float(n_rps)); d["nginx_p99_ms"].append(float(n_p99))
    d["umbra_rps"].append(float(u_rps)); d["umbra_p99_ms"].append(float(u_p99))
    d["umbra_peak_rss_mib"].append(round(int(rss) / 1024, 1)); d["copies_dropped"].append(int(float(dropped)))
mean = lambda xs: sum(xs) / len(xs)
p, f, s = by["plain"], by["mirror-fast"], by["mirror-slow"]
ratios = {
    "plain_throughput_umbra_over_nginx": mean(p["umbra_rps"]) / mean(p["nginx_rps"]),
    "plain_p99_umbra_over_nginx": mean(p["umbra_p99_ms"]) / mean(p["nginx_p99_ms"]),
    "mirror_fast_throughput_umbra_over_nginx_mirror": mean(f["umbra_rps"]) / mean(f["nginx_rps"]),
    "mirror_slow_throughput_over_own_fast": mean(s["umbra_rps"]) / mean(f["umbra_rps"]),
    "mirror_slow_p99_over_own_fast": mean(s["umbra_p99_ms"]) / mean(f["umbra_p99_ms"]),
    "mirror_slow_nginx_throughput_over_umbra": mean(s["nginx_rps"]) / mean(s["umbra_rps"]),
    "masking_on_over_off": mean(f["umbra_rps"]) / mean(nomask),
}
print()
print(f"plain:        umbra/nginx throughput {ratios['plain_throughput_umbra_over_nginx']:.3f} (target >= 1.0), p99 ratio {ratios['plain_p99_umbra_over_nginx']:.3f} (target <= 1.0)")
print(f"mirror fast:  umbra / nginx-with-mirror throughput {ratios['mirror_fast_throughput_umbra_over_nginx_mirror']:.2f} (target >= 3)")
print(f"mirror slow:  umbra slow / umbra fast throughput {ratios['mirror_slow_throughput_over_own_fast']:.3f} (target >= 0.9), p99 {ratios['mirror_slow_p99_over_own_fast']:.3f} (target <= 1.2)")
print(f"masking:      umbra mirror-fast with default masking / without {ratios['masking_on_over_off']:.3f} (target >= 0.9)")
print(f"              nginx with a 300 ms mirror: {mean(s['nginx_rps']):.0f} req/s, p99 {mean(s['nginx_p99_ms']):.0f} ms (its mirror holds the client's next request)")
print(json.dumps({"bench": "proxy-vs-nginx", "seconds": int(sys.argv[2]), "rounds": int(sys.argv[3]), "connections": 64,
                  "cases": by, "umbra_mirror_fast_nomask_rps": nomask, "ratios": {k: round(v, 4) for k, v in ratios.items()}}))
PY
