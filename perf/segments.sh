#!/usr/bin/env bash
# Where the paced small request's time goes, per proxy: a packet capture on
# loopback during `PACE_MS=2 wrk -t1 -c64 -s perf/paced.lua` (as perf/run.sh's
# small64-paced, each request tagged with its own query), split by
# perf/segments.py into the proxy's receive side, the backend and the send
# side. One proxy worker on CPU 1; wrk, the backend nginx and tcpdump on CPU 0.
#
#   perf/segments.sh [ringside|nginx|haproxy ...]     (default: ringside nginx)
#
# SEG_SECONDS (default 5), SEG_PACE_MS (default 2), SEG_RINGSIDE (the binary,
# default target/release/ringside), SEG_KEEP (a folder to keep each capture in).
set -euo pipefail
PERF=$(cd "$(dirname "$0")" && pwd)
BIN=${SEG_RINGSIDE:-target/release/ringside}
SECS=${SEG_SECONDS:-5}
[ $# -ge 1 ] || set -- ringside nginx
W=$(mktemp -d /dev/shm/segments.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
. "$PERF/rig.sh"
rig_ringside_toml "$W/ringside.toml"
cat >"$W/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:18080; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18081 backlog=4096;
    location / { proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
cat >"$W/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option forwardfor
    http-reuse always
frontend f
    bind 127.0.0.1:18081
    default_backend b
backend b
    server s 127.0.0.1:18080
CONF
rig_backend "$W" 18080
for proxy in "$@"; do
    case $proxy in
        ringside) taskset -c 1 "$BIN" -c "$W/ringside.toml" 2>"$W/ringside.err" & ;;
        nginx) taskset -c 1 nginx -p "$W" -c "$W/nginx.conf" & ;;
        haproxy) taskset -c 1 haproxy -f "$W/haproxy.cfg" & ;;
        *) echo "unknown proxy $proxy" >&2; exit 2 ;;
    esac
    P=$!
    for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18081/small && break; sleep 0.05; done
    taskset -c 0 wrk -t1 -c64 -d1s http://127.0.0.1:18081/small >/dev/null
    taskset -c 0 tcpdump -q -i lo -s 200 -B 65536 --time-stamp-precision=nano \
        -w "$W/$proxy.pcap" 'tcp port 18081 or tcp port 18080' 2>"$W/tcpdump.err" &
    T=$!
    for _ in $(seq 100); do grep -q listening "$W/tcpdump.err" && break; sleep 0.05; done
    PACE_MS=${SEG_PACE_MS:-2} PACE_IDS=1 taskset -c 0 wrk -t1 -c64 -d"${SECS}s" \
        -s "$PERF/paced.lua" http://127.0.0.1:18081/small | grep percentiles
    kill -INT $T; wait $T 2>/dev/null || true
    grep -E 'dropped by kernel' "$W/tcpdump.err" || true
    python3 "$PERF/segments.py" "$W/$proxy.pcap" --name "$proxy"
    if [ -n "${SEG_KEEP:-}" ]; then mkdir -p "$SEG_KEEP"; cp "$W/$proxy.pcap" "$SEG_KEEP/"; fi
    kill $P; wait $P 2>/dev/null || true
done
