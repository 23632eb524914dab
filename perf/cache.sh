#!/usr/bin/env bash
# The cache hit path next to a proxied request, on one ringside worker.
#
#   perf/cache.sh [SECONDS] [CONNECTIONS]      (defaults: 5 s, 50 connections)
#
# CPU 1: ringside under test (workers = 1): /p/ proxied, /c/ the same
#        upstream with cache = { "200" = "1h" } (every request after the
#        first is a HIT), /s/ a static file of the same size.
# CPU 0: wrk (1 thread) and the upstream: a second ringside answering a
#        128-byte `respond` body, so the backend costs little.
# Prints req/s and requests per CPU-second of the process under test (its
# utime + stime from /proc, so the figure does not depend on what else CPU 0
# does). Needs wrk (apt-get install -y wrk) and target/release/ringside.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-50}
bin=target/release/ringside
work=$(mktemp -d /dev/shm/ringside-cache.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
body=$(head -c 128 /dev/zero | tr '\0' 'x')
mkdir -p "$work/www"
printf '%s' "$body" >"$work/www/small"

cat >"$work/backend.toml" <<EOF
[runtime]
workers = 1
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[route]]
path = "/"
respond = { status = 200, body = "$body" }
EOF
taskset -c 0 "$bin" -c "$work/backend.toml" 2>"$work/backend.err" &
until grep -q "ready" "$work/backend.err"; do sleep 0.05; done
backend=$(sed -n 's/.*listening on //p' "$work/backend.err")

cat >"$work/proxy.toml" <<EOF
[runtime]
workers = 1
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[upstream]]
name = "app"
keepalive = 1024
servers = [ { address = "$backend" } ]
[[route]]
path = "/p/"
upstream = "app"
[[route]]
path = "/c/"
upstream = "app"
cache = { "200" = "1h" }
[[route]]
path = "/s/"
static = "$work/www/"
EOF
taskset -c 1 "$bin" -c "$work/proxy.toml" 2>"$work/proxy.err" &
pid=$!
until grep -q "ready" "$work/proxy.err"; do sleep 0.05; done
addr=$(sed -n 's/.*listening on //p' "$work/proxy.err")

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tick=$(getconf CLK_TCK)
echo "$(date -u '+%F %H:%M') UTC, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $secs s, $conns connections"
for path in /p/small /c/small /s/small; do
  curl -s -o /dev/null "http://$addr$path" || true
  taskset -c 0 wrk -t1 -c"$conns" -d1s "http://$addr$path" >/dev/null
  before=$(cpu)
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://$addr$path")
  after=$(cpu)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  lat=$(echo "$out" | awk '/Latency/ {print $2}')
  cpus=$(echo "scale=3; ($after - $before) / $tick" | bc)
  per=$(echo "scale=0; $total / $cpus" | bc)
  printf '%-10s %10s req/s  %10s req/CPU-s  (latency avg %s, proxy CPU %s s)\n' "$path" "$rps" "$per" "$lat" "$cpus"
done
