#!/usr/bin/env bash
# Ring operations and system calls per request: ringside with one worker on
# CPU 1 in front of a backend nginx, wrk -t1 -c64 on CPU 0 (as perf/ab.sh),
# `perf stat` on io_uring's and the syscall tracepoints for 5 s of load.
#
#   perf/ringops.sh [BINARY] [CONFIG]           keep-alive small requests
#   RINGOPS_HEADER="Connection: close" perf/ringops.sh    a new connection each
#   RINGOPS_RECORD=FILE perf/ringops.sh         instead, record every submitted
#       op for 2 s (perf script -i FILE shows the opcode of each)
#   RINGOPS_CONNS=1000 perf/ringops.sh          wrk's connections (default 64)
#
# CONFIG must listen on 127.0.0.1:18081 and proxy to 127.0.0.1:18080, as
# perf/ab.sh's configs do.
set -euo pipefail
BIN=${1:-target/release/ringside}
CONF=${2:-}
W=$(mktemp -d /dev/shm/ringops.XXXXXX)
. "$(dirname "$0")/rig.sh"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
if [ -z "$CONF" ]; then
    CONF=$W/ringside.toml
    rig_ringside_toml "$CONF"
fi
rig_backend "$W" 18080
taskset -c 1 "$BIN" -c "$CONF" 2>"$W/ringside.err" & P=$!
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18081/small && break; sleep 0.05; done
LOAD=(-t1 -c${RINGOPS_CONNS:-64})
if [ -n "${RINGOPS_HEADER:-}" ]; then LOAD+=(-H "$RINGOPS_HEADER"); fi
taskset -c 0 wrk "${LOAD[@]}" -d1s http://127.0.0.1:18081/small >/dev/null
if [ -n "${RINGOPS_RECORD:-}" ]; then
    perf record -q -o "$RINGOPS_RECORD" -e io_uring:io_uring_submit_req -p $P -- sleep 2 &
    taskset -c 0 wrk "${LOAD[@]}" -d3s http://127.0.0.1:18081/small >/dev/null
    wait %3 2>/dev/null || true
    perf script -i "$RINGOPS_RECORD" 2>/dev/null | grep -o 'opcode [A-Z_0-9]*' | sort | uniq -c
    exit 0
fi
EVENTS=io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,syscalls:sys_enter_io_uring_enter
EVENTS+=,syscalls:sys_enter_recvfrom,syscalls:sys_enter_accept4,raw_syscalls:sys_enter
perf stat -x, -o "$W/stat" -e "$EVENTS" -p $P -- sleep 5 & S=$!
out=$(taskset -c 0 wrk "${LOAD[@]}" -d5s http://127.0.0.1:18081/small)
wait $S
req=$(awk '/requests in/ {print $1}' <<<"$out")
echo "requests in 5 s: $req"
awk -F, -v r="$req" '/^[0-9]/ {printf "%-40s %10d  %5.2f per request\n", $3, $1, $1 / r}' "$W/stat"
