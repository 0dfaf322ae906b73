#!/usr/bin/env bash
# Compares umbra binaries with each other and with nginx on the plain reverse-proxy case of
# proxy-vs-nginx.sh (the same pinning, upstream and wrk settings), alternating every run so the
# host's drift falls on all of them alike. For A/B tests of a change: differences of a few
# percent need this, not two separate benchmark runs.
#
# Usage: bench/plain-ab.sh ROUNDS SECONDS UMBRA_BINARY...
# Prints each run (req/s, p99 ms) and the means per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bench/plain-ab.sh ROUNDS SECONDS UMBRA_BINARY..."
if (($# < 3)) || [[ ! $1 =~ ^[1-9][0-9]*$ || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage (ROUNDS and SECONDS are whole numbers above 0; got: $*)" >&2
  exit 2
fi
rounds=$1
secs=$2
shift 2
for b in "$@"; do
  [[ -x $b ]] || { echo "$b: not an executable umbra binary" >&2; exit 2; }
done
source bench/common.sh
common="access_log off; client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
  uwsgi_temp_path $tmp; scgi_temp_path $tmp; keepalive_requests 100000000;"
prod=$(free_port)
cat >"$tmp/up.conf" <<CONF
daemon off; worker_processes 1; pid $tmp/up.pid; error_log $tmp/up.err;
events { worker_connections 4096; }
http { $common server { listen 127.0.0.1:$prod; location / { return 200 "ok"; } } }
CONF
"${pin_rest[@]}" /usr/sbin/nginx -c "$tmp/up.conf" -p "$tmp" &
pids+=($!)
wait_port "$prod" "$!" "$tmp/up.err"
listen=$(free_port "$prod")
admin=$(free_port "$prod" "$listen")
cat >"$tmp/peer.conf" <<CONF
daemon off; worker_processes 1; pid $tmp/peer.pid; error_log $tmp/peer.err;
events { worker_connections 4096; }
http { $common upstream production { server 127.0.0.1:$prod; keepalive 128; }
  server { listen 127.0.0.1:$listen; location / { proxy_pass http://production;
    $nginx_forwarding } } }
CONF

# One run against whatever listens; prints "rps p99_ms".
run() {
  "${pin_rest[@]}" wrk -t1 -c64 -d"${secs}s" --latency "http://127.0.0.1:$listen/" >"$tmp/wrk.txt"
  awk '/Requests\/sec/ { r = $2 }
       $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
                     p = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
       END { printf "%s %.3f\n", r, p }' "$tmp/wrk.txt"
}
measure() { # NAME COMMAND...
  local name=$1; shift
  "${pin_proxy[@]}" "$@" 2>"$tmp/server.err" &
  local pid=$!
  wait_port "$listen" "$pid" "$tmp/server.err"
  read -r rps p99 < <(run)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%s %s %s\n' "$name" "$rps" "$p99" | tee -a "$tmp/all.txt"
}
for r in $(seq "$rounds"); do
  echo "round $r"
  measure nginx /usr/sbin/nginx -c "$tmp/peer.conf" -p "$tmp"
  for b in "$@"; do
    measure "$b" "$b" proxy --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" --threads 1 \
      --production "http://127.0.0.1:$prod"
  done
done
echo "means (req/s, p99 ms):"
awk '{ n[$1]++; r[$1] += $2; p[$1] += $3; if (!($1 in o)) { o[$1] = ++k; name[k] = $1 } }
     END { for (i = 1; i <= k; i++) { b = name[i]; printf "  %s %.0f %.3f\n", b, r[b] / n[b], p[b] / n[b] } }' "$tmp/all.txt"
