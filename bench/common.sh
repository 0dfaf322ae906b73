# Sourced by the bench scripts (from the repository's root): CPU pins, a scratch
# folder that goes (with every server in `pids`) when the script exits, and ports
# for the servers on 127.0.0.1.

# The proxy under test on CPU 0; the client and the upstreams on CPU 1 (no pins on one core).
if (($(nproc) >= 2)); then
  pin_proxy=(taskset -c 0)
  pin_rest=(taskset -c 1)
else
  pin_proxy=()
  pin_rest=()
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] || rm -rf "$tmp" # KEEP=1 keeps it, for the servers' logs
}
trap cleanup EXIT

# A free port below the kernel's ephemeral range, other than the ones given.
# bind(0) hands out ports from inside that range, where an outgoing connection
# may take the same number as its source port; its TIME_WAIT then keeps the
# benchmark's next server from binding (seen once as "address already in use").
free_port() { # [PORT...] to avoid
  python3 - "$@" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
taken = {int(p) for p in sys.argv[1:]}
for _ in range(10000):
    port = random.randrange(10000, max(low, 10001))
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit("no free port below the ephemeral range")
PY
}

# Waits up to 10 s for a server on the port; gives up at once, with its stderr,
# when the server's process has exited.
wait_port() { # PORT [PID STDERR_FILE]
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    if [[ -n ${2:-} ]] && ! kill -0 "$2" 2>/dev/null; then
      echo "the server for port $1 exited before listening${3:+:}" >&2
      [[ -n ${3:-} ]] && cat "$3" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "nothing listens on $1 after 10 s" >&2
  [[ -n ${3:-} ]] && cat "$3" >&2
  exit 1
}

# What nginx as the peer proxy sends upstream besides the request: the fields
# umbra sends by default (the client's Host, this hop appended to
# X-Forwarded-For, X-Forwarded-Proto), as a reverse-proxy config usually has
# them. Without them nginx sends production a shorter request (its upstream's
# name as Host, no forwarding fields) and the two proxies do unequal work.
nginx_forwarding='proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;'
