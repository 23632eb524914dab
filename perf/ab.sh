#!/usr/bin/env bash
# A/B on the small-request workload, alternated, for changes smaller than
# one perf/run.sh round's noise: each named binary+config runs ROUNDS times in
# turn (one worker on CPU 1, wrk -t1 -c64 and the backend nginx on CPU 0) and
# the proxy's own CPU time (utime+stime from /proc) gives requests per
# CPU-second. Prints every run, then per variant the median and the mean of
# the best three (this VM has slow spells that hit any run at random).
#
#   perf/ab.sh [ROUNDS] NAME=BINARY:CONFIG[:PORT] ...
#   perf/ab.sh 10 plain=target/release/ringside:/tmp/plain.toml shield=target/release/ringside:/tmp/shield.toml
#
# A BINARY named nginx or haproxy runs that peer as one process (nginx with
# master_process off) on its config from a perf/run.sh run, at its PORT:
#   perf/ab.sh 4 ringside=target/release/ringside:/tmp/ab.toml \
#       nginx=nginx:/dev/shm/ringside-perf/conf/nginx-proxy.conf:18082 \
#       haproxy=haproxy:/dev/shm/ringside-perf/conf/haproxy.cfg:18083
#
# AB_WRK (default "-t1 -c64") and AB_HEADER (e.g. "Connection: close", for a
# new connection per request) change the load; AB_PATH (default /small, a
# 128-byte answer; /4k, /12k, /64k and /1m are there too) the answer.
#
# AB_H2=1 loads over HTTP/2 instead: `h2load -t1 -c64 -m10` (AB_H2LOAD
# changes it) on https://127.0.0.1:PORT, so each config must be a TLS
# listener with `http2 = true` (as perf/run.sh's h2-small config).
#
# AB_PROFILE=DIR also samples the proxy during each measured run (`perf
# record -F 999 -g -p`, DIR/NAME-rROUND.data; sort one with
# perf/profile_sum.py). It slows every variant alike. AB_CALLGRAPH=dwarf
# (or dwarf,16384) unwinds through code built without frame pointers.
#
# AB_QUOTA=PCT caps the proxy at PCT% of one CPU (a cgroup v1 or v2 CPU
# quota, 10 ms period): the proxy is then saturated on this small machine,
# as on a core of its own with load to spare, and connections queue while
# it is throttled.
#
# The configs must listen on 127.0.0.1:$AB_PORT (18081; else name the PORT)
# and proxy to the backend started here on 127.0.0.1:$AB_BACKEND (18080), as
# perf/run.sh's configs do (with perf/shield.toml appended to ringside.toml
# for the shield's cost).
set -euo pipefail
ROUNDS=10
if [[ ${1:-} =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
[ $# -ge 1 ] || { sed -n 2,38p "$0"; exit 2; }
PORT=${AB_PORT:-18081} BACKEND=${AB_BACKEND:-18080} SECS=${AB_SECONDS:-8}
read -ra LOAD <<<"${AB_WRK:--t1 -c64}"
URL_PATH=${AB_PATH:-/small}
if [ -n "${AB_HEADER:-}" ]; then LOAD+=(-H "$AB_HEADER"); fi
WORK=$(mktemp -d /dev/shm/ringside-ab.XXXXXX)
trap 'kill $(cat "$WORK/backend.pid" 2>/dev/null) 2>/dev/null; rm -rf "$WORK"' EXIT
. "$(dirname "$0")/rig.sh"
rig_backend "$WORK" "$BACKEND" "sendfile on;"
for n in 4k:4096 12k:12288 64k:65536 1m:1048576; do head -c "${n#*:}" /dev/zero >"$WORK/${n%:*}"; done

quota() {  # quota PID: moves PID into a cgroup capped at AB_QUOTA% of a CPU
    local g
    if [ -d /sys/fs/cgroup/cpu ]; then
        g=/sys/fs/cgroup/cpu/ringside-ab; mkdir -p "$g"
        echo 10000 >"$g/cpu.cfs_period_us"; echo $((AB_QUOTA * 100)) >"$g/cpu.cfs_quota_us"
    else
        g=/sys/fs/cgroup/ringside-ab; mkdir -p "$g"
        echo "$((AB_QUOTA * 100)) 10000" >"$g/cpu.max"
    fi
    echo "$1" >"$g/cgroup.procs"
}

load() {  # load SECONDS URL: wrk, or h2load with AB_H2, on CPU 0
    if [ -n "${AB_H2:-}" ]; then
        read -ra h2 <<<"${AB_H2LOAD:--t1 -c64 -m10}"
        taskset -c 0 h2load "${h2[@]}" -D "$1" "$2"
    else
        taskset -c 0 wrk "${LOAD[@]}" -d"$1s" "$2"
    fi
}

one() {  # one NAME BINARY CONFIG [PORT]: prints NAME requests req/cpu-s
    local port=${4:-$PORT} cmd
    case $(basename "$2") in
        nginx) cmd=(nginx -c "$3" -g "master_process off;") ;;
        haproxy) cmd=(haproxy -db -f "$3") ;;
        *) cmd=("$2" -c "$3") ;;
    esac
    taskset -c 1 "${cmd[@]}" 2>"$WORK/$1.err" & local p=$!
    if [ -n "${AB_QUOTA:-}" ]; then quota $p; fi
    local scheme=http; [ -n "${AB_H2:-}" ] && scheme=https
    for _ in $(seq 100); do curl -kfs -o /dev/null "$scheme://127.0.0.1:$port/small" && break; sleep 0.05; done
    load 1 "$scheme://127.0.0.1:$port$URL_PATH" >/dev/null
    local t0 t1 out rec=
    if [ -n "${AB_PROFILE:-}" ]; then
        perf record -q -F 999 --call-graph "${AB_CALLGRAPH:-fp}" -p $p -o "$AB_PROFILE/$1-r$round.data" 2>/dev/null & rec=$!
    fi
    t0=$(awk '{print $14 + $15}' "/proc/$p/stat")
    out=$(load "$SECS" "$scheme://127.0.0.1:$port$URL_PATH")
    t1=$(awk '{print $14 + $15}' "/proc/$p/stat")
    if [ -n "$rec" ]; then kill -INT $rec; wait $rec 2>/dev/null || true; fi
    kill $p; wait $p 2>/dev/null || true
    if grep -q 'Non-2xx' <<<"$out" || { [ -n "${AB_H2:-}" ] && ! grep -q ' 0 failed, 0 errored' <<<"$out"; }; then
        echo "ab.sh: $1 answered errors:" >&2; echo "$out" >&2; exit 1
    fi
    local req; req=$(awk '/requests in/ {print $1} /^requests:/ {print $8}' <<<"$out")
    echo "$1 $req $(( req * 100 / (t1 - t0) ))"
}
for round in $(seq "$ROUNDS"); do
    for v in "$@"; do
        IFS=: read -r bin conf port <<<"${v#*=}"
        one "${v%%=*}" "$bin" "$conf" "$port"
    done
done | tee "$WORK/runs"
python3 - "$WORK/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, _, rate = line.split()
    runs[name].append(int(rate))
for name, r in runs.items():
    best = sorted(r)[-3:]
    print(f"{name}: {len(r)} runs, req/CPU-s median {statistics.median(r):,.0f}, best-3 mean {statistics.mean(best):,.0f}")
PY
