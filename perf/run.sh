#!/usr/bin/env bash
# perf/run.sh — ringside against nginx and HAProxy, per CPU-second, on one box.
#
# One command on a fresh Debian machine (run as root):
#
#   perf/run.sh                 full: 3 rounds, 10 s per workload (~16 min)
#   perf/run.sh --quick         1 round, 5 s per workload (~4 min)
#   perf/run.sh --only nginx,haproxy --quick
#   perf/run.sh --scaling       1, 2, 4, 8 workers each (as many as the cores allow)
#
# What it does, in order:
#   1. installs nginx, haproxy, wrk, h2load (nghttp2-client) and openssl from Debian if missing
#   2. builds ringside (cargo build --release) if target/release/ringside is missing
#   3. starts a backend nginx serving fixed files from tmpfs
#   4. for each round, workload and proxy (order rotated each round): starts the
#      proxy alone on its core(s), checks it answers 200, warms up, measures
#      with wrk, reads the proxy's CPU time and memory from /proc, stops it
#
#   Cores: below 8 CPUs the proxy (one worker) has CPU 1 and wrk, the backend
#   and the helpers share CPU 0, so the proxy is not saturated. From 8 CPUs on
#   each has cores of its own: CPUs 0-1 the helpers, then the proxy's (one, or
#   up to 8 with --scaling, one per worker), then the backend's and wrk's
#   (one wrk thread per core), so one proxy core is saturated.
#      (TLS workloads: the same, with a self-signed certificate made at run time)
#   5. writes perf/results/YYYY-MM-DD-HHMM.md and a copy as perf/results/latest.md
#
# See perf/README.md for what each workload means and how to read the ratios.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

usage() {
    cat <<'EOF'
usage: perf/run.sh [options]
  --quick              1 round, 5 s per workload, 1 s warm-up
  --scaling            small64 and close4 at 1, 2, 4 and 8 workers (those that fit
                       on the proxy's cores), instead of the workload list
  --rounds N           rounds (default 3)
  --duration S         seconds of wrk per workload (default 10)
  --only LIST          proxies to run, comma-separated (default ringside,nginx,haproxy)
  --workloads LIST     default small64,small64-paced,small256,64k,64k-paced,1m,close,idle10k
                       (close4: close with 4 wrk threads) and the TLS ones tls-handshake,tls12-handshake,tls-small,h2-small,idle-tls
                       (`plain` and `tls` stand for each group)
  --idle-conns N       connections held by the idle workload (default 10000)
  --defer-accept       every proxy's listener accepts a connection once its first bytes
                       are in: ringside's defer_accept, nginx's deferred, HAProxy's
                       defer-accept (default: each proxy's default, off)
  --quiet-wait S       before each measurement wait up to S s for idle CPUs (default 60, quick 20; 0 = never)
  --ringside PATH      ringside binary (default target/release/ringside)
  --no-install         do not apt-get install missing tools
  --no-build           do not build ringside when its binary is missing
  --no-save            print the report path under the work dir; leave perf/results alone
  --profile DIR        also sample the proxy's core(s) with `perf record` (999 Hz, every
                       CPU of the proxy, kernel and user) during each measured run, and
                       write DIR/PROXY-WORKLOAD-rN.txt: the share of kernel and user
                       time, and the top symbols (needs linux-perf)
  -h, --help
environment: PERF_WORK (default /dev/shm/ringside-perf), LOAD_CPU (0), PROXY_CPU (1),
             PACE_SMALL_MS (2), PACE_64K_MS (6): the pauses of the *-paced workloads
EOF
}

ROUNDS=3 DURATION=10 WARMUP=2 MODE=full QUIET_WAIT=60 PROFILE=
ONLY=ringside,nginx,haproxy
PLAIN_WORKLOADS=small64,small64-paced,small256,64k,64k-paced,1m,close,close4,idle10k
TLS_WORKLOADS=tls-handshake,tls12-handshake,tls-small,h2-small,idle-tls
WORKLOADS=$PLAIN_WORKLOADS,$TLS_WORKLOADS
IDLE_CONNS=10000
INSTALL=1 BUILD=1 SAVE=1 SCALING=0 DEFER=0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PERF=$REPO/perf
RINGSIDE_BIN=$REPO/target/release/ringside

while [ $# -gt 0 ]; do
    case $1 in
        --quick) ROUNDS=1 DURATION=5 WARMUP=1 MODE=quick QUIET_WAIT=20 ;;
        --scaling) SCALING=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --workloads) WORKLOADS=$2; shift ;;
        --idle-conns) IDLE_CONNS=$2; shift ;;
        --defer-accept) DEFER=1 ;;
        --profile) PROFILE=$(realpath -m "$2"); shift ;;
        --quiet-wait) QUIET_WAIT_SET=$2; shift ;;
        --ringside) RINGSIDE_BIN=$(realpath "$2"); shift ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --no-save) SAVE=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

QUIET_WAIT=${QUIET_WAIT_SET:-$QUIET_WAIT}
WORK=${PERF_WORK:-/dev/shm/ringside-perf}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
# The proxy's, wrk's and the backend's cores as comma lists (place_cores sets
# them from the CPU count), the proxy's worker count, wrk's thread count.
PROXY_CPUS=$PROXY_CPU LOAD_CPUS=$LOAD_CPU BACKEND_CPUS=$LOAD_CPU
WORKERS=1 WRK_THREADS=1 BACKEND_WORKERS=1 HELPER_CPUS=$LOAD_CPU

place_cores() {  # place_cores NCPU PROXY_CORES: disjoint cores from 8 CPUs on
    local n=$1 p=$2 first=2 rest b
    [ "$n" -ge 8 ] || return 0
    rest=$((n - first - p)); b=$((rest / 2))
    PROXY_CPUS=$(seq -s, $first $((first + p - 1)))
    BACKEND_CPUS=$(seq -s, $((first + p)) $((first + p + b - 1)))
    LOAD_CPUS=$(seq -s, $((first + p + b)) $((n - 1)))
    BACKEND_WORKERS=$b WRK_THREADS=$((rest - b)) HELPER_CPUS=0,1
}

# cpu_masks CPUS COUNT: nginx's worker_cpu_affinity, one CPU of the comma
# list CPUS for each of COUNT workers.
cpu_masks() {
    local cpus i mask out=""
    IFS=, read -ra cpus <<<"$1"
    for ((i = 0; i < $2; i++)); do
        mask=1
        for ((k = 0; k < cpus[i % ${#cpus[@]}]; k++)); do mask+=0; done
        out+=" $mask"
    done
    echo "${out# }"
}

# cpu_range CPUS: the first-last range of a contiguous comma list (HAProxy's cpu-map).
cpu_range() { local f=${1%%,*} l=${1##*,}; [ "$f" = "$l" ] && echo "$f" || echo "$f-$l"; }
# Four consecutive loopback ports: backend, ringside, nginx, haproxy. The
# first base whose four ports are all free is used (other work on the machine
# may hold some); all below the ephemeral range.
BACKEND_PORT=0
declare -A PORT
SMALL_BYTES=128
# openssl s_time processes at once in the handshake workloads (one connection each).
S_TIME_PARALLEL=4
# The paced workloads (perf/paced.lua): each of the 64 connections pauses this
# many ms between a response and its next request, so the offered load is
# about 64 / (pace + latency) whatever the proxy, and tails are compared at the
# same load instead of at each proxy's saturation. Both are well below the
# slowest proxy's saturation on the 2-core development VM (one worker: /small
# 53-63k req/s on 2026-11-27, /64k 10-16k for nginx). Measured that day: 2 ms
# gives 21-23k req/s on /small (proxy CPU 38-48% busy), 6 ms 9.0-9.6k on /64k
# (nginx 60% busy, the others less); 4 ms on /64k (~13k) kept nginx 78% busy,
# too close to saturation for its tail to be its own (README.md, "p50/p99").
PACE_SMALL_MS=${PACE_SMALL_MS:-2}
PACE_64K_MS=${PACE_64K_MS:-6}
EXPECT=(--expect /small=$SMALL_BYTES --expect /64k=65536 --expect /1m=1048576)

say() { printf '%s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }
# Every command that shapes a measurement goes to commands.txt for the report.
note_cmd() { local s; s=$(printf '%q ' "$@"); printf '%s\n' "${s% }" >>"$WORK/commands.txt"; }

# ---------------------------------------------------------------- 1. tools
install_tools() {
    local missing=() tool pkg
    for tool in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl \
                python3:python3 ss:iproute2 taskset:util-linux; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$INSTALL" = 1 ] || die "missing tools (packages: ${missing[*]}) and --no-install given"
    [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
    say "== installing from Debian: ${missing[*]}"
    # Keep the packages' own nginx/haproxy services from starting (they would
    # listen on :80 and take CPU): invoke-rc.d honours policy-rc.d exit 101.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && made_policy=1
    fi
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null || { [ $made_policy = 1 ] && rm -f $policy; die "apt-get install failed"; }
    [ $made_policy = 1 ] && rm -f $policy
    return 0
}

# ---------------------------------------------------------------- 2. ringside
ACTIVE=()
choose_proxies() {
    local p
    IFS=, read -ra want <<<"$ONLY"
    for p in "${want[@]}"; do
        case $p in
            ringside)
                if [ ! -x "$RINGSIDE_BIN" ] && [ "$BUILD" = 1 ] && [ "$RINGSIDE_BIN" = "$REPO/target/release/ringside" ]; then
                    if command -v cargo >/dev/null; then
                        say "== building ringside: (cd $REPO && cargo build --release)"
                        (cd "$REPO" && cargo build --release) || say "ringside: cargo build --release failed"
                    else
                        say "ringside: cargo not found, cannot build"
                    fi
                fi
                if [ -x "$RINGSIDE_BIN" ]; then ACTIVE+=(ringside)
                else skip ringside "no binary at $RINGSIDE_BIN"; fi ;;
            nginx|haproxy) ACTIVE+=("$p") ;;
            *) die "unknown proxy '$p' (ringside, nginx, haproxy)" ;;
        esac
    done
    [ ${#ACTIVE[@]} -gt 0 ] || die "no proxy left to measure"
}

skip() {  # skip PROXY REASON: record it and never run it again this run
    say "SKIP $1: $2"
    python3 -c 'import json, sys; print(json.dumps({"kind": "skip", "proxy": sys.argv[1], "reason": sys.argv[2]}))' \
        "$1" "$2" >>"$WORK/records.jsonl"
    local kept=() p
    for p in "${ACTIVE[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    ACTIVE=("${kept[@]}")
}

# ---------------------------------------------------------------- processes
# Pid files hold every pid of a tree we started; a later run (or the exit
# trap) kills them only if they still look like ours.
ours() {  # ours PID: a live process of this harness (by name, for recycled pids)
    local comm rs
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    rs=$(basename "$RINGSIDE_BIN"); rs=${rs:0:15}      # comm is cut to 15 characters
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ] || return 1
    case $comm in nginx|haproxy|ringside|"$rs"|wrk|python3|taskset) return 0 ;; *) return 1 ;; esac
}

record_pids() {  # record_pids NAME PID
    python3 "$PERF/procstat.py" --pids "$2" >"$WORK/pids/$1.pid"
}

stop_tree() {  # stop_tree NAME: SIGTERM the tree, SIGKILL what is left after 10 s
    local f=$WORK/pids/$1.pid pids=() mine=() pid i left
    [ -f "$f" ] || return 0
    read -ra pids <"$f" || true
    # the tree as it is now (nginx may have respawned a worker), plus the recorded pids
    if [ -n "${pids[0]:-}" ]; then python3 "$PERF/procstat.py" --pids "${pids[0]}" >>"$f" 2>/dev/null || true; fi
    read -ra pids < <(sort -un "$f" | tr "\n" " ") || true
    for pid in "${pids[@]}"; do if ours "$pid"; then mine+=("$pid"); fi; done
    for pid in "${mine[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 100); do
        left=0
        for pid in "${mine[@]}"; do if ours "$pid"; then left=1; fi; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for pid in "${mine[@]}"; do if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi; done
    # reap our own children (never blocks: every pid here is dead or killed)
    for pid in "${mine[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -f "$f"
}

pick_ports() {
    local base p busy
    for base in 18080 19080 21080 23080 25080 27080 29080; do
        busy=0
        for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do
            free_port "$p" 2>/dev/null || { busy=1; break; }
        done
        if [ $busy = 0 ]; then
            BACKEND_PORT=$base
            PORT=([ringside]=$((base + 1)) [nginx]=$((base + 2)) [haproxy]=$((base + 3)))
            return 0
        fi
        say "ports $base-$((base + 3)): in use by other programs, trying the next four"
    done
    die "no four free ports found"
}

free_port() {  # free_port PORT: kill a leftover of ours on it, else refuse
    local line pid
    line=$(ss -Hltnp "sport = :$1" 2>/dev/null || true)
    [ -z "$line" ] && return 0
    pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -1 | cut -d= -f2)
    if [ -n "$pid" ] && ours "$pid" && grep -qa "$WORK" "/proc/$pid/cmdline" 2>/dev/null; then
        say "port $1: killing leftover pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    else
        printf 'run.sh: port %s is taken by something this script did not start: %s\n' "$1" "$line" >&2
        return 1
    fi
}

cleanup() {
    local f
    for f in "$WORK"/pids/*.pid; do [ -e "$f" ] && stop_tree "$(basename "$f" .pid)"; done
    return 0
}

# ---------------------------------------------------------------- configs
write_content_and_configs() {
    mkdir -p "$WORK"/{www,conf,logs,pids,run,tmp/backend,tmp/nginx-proxy,wrk}
    chmod 777 "$WORK"/tmp/*
    head -c $SMALL_BYTES /dev/zero | tr '\0' 'x' >"$WORK/www/small"
    head -c 65536 /dev/urandom >"$WORK/www/64k"
    head -c 1048576 /dev/urandom >"$WORK/www/1m"

    cat >"$WORK/conf/backend-nginx.conf" <<EOF
# The fixed backend: nginx serving files from tmpfs, on CPUs $BACKEND_CPUS.
worker_processes $BACKEND_WORKERS;
worker_cpu_affinity $(cpu_masks "$BACKEND_CPUS" "$BACKEND_WORKERS");
daemon off;
pid $WORK/run/backend.pid;
error_log $WORK/logs/backend.error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $CONN_LIMIT; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/tmp/backend;
    proxy_temp_path $WORK/tmp/backend;
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        root $WORK/www;
    }
}
EOF

    local f
    for f in "${FLAVOURS[@]}"; do write_proxy_configs "$f"; done
}

# A workload's flavour is the kind of client listener it needs: plain HTTP,
# TLS (1.2 and 1.3 offered; the client picks), or TLS with h2 offered by ALPN.
# Each flavour has its own config per proxy; plain keeps the names it always had.
flavour_of() {
    case $1 in
        tls-handshake|tls12-handshake|tls-small|idle-tls) echo tls ;;
        h2-small) echo h2 ;;
        *) echo plain ;;
    esac
}

conf_file() {  # conf_file PROXY FLAVOUR
    local suffix=""
    [ "$2" = plain ] || suffix=-$2
    case $1 in
        ringside) echo "$WORK/conf/ringside$suffix.toml" ;;
        nginx)    echo "$WORK/conf/nginx-proxy$suffix.conf" ;;
        haproxy)  echo "$WORK/conf/haproxy$suffix.cfg" ;;
    esac
}

# One self-signed ECDSA P-256 certificate (the usual choice for a fast edge)
# for every proxy, made fresh for each run.
make_cert() {
    mkdir -p "$WORK/tls"
    local cmd=(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes
               -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -days 7
               -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1")
    note_cmd "${cmd[@]}"
    "${cmd[@]}" 2>"$WORK/tls/openssl.log" ||
        die "openssl could not make a certificate: $(tail -2 "$WORK/tls/openssl.log")"
    # HAProxy wants the certificate and its key in one file.
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"
}

write_proxy_configs() {  # write_proxy_configs FLAVOUR
    local fl=$1 tls=$WORK/tls
    local nginx_listen="listen 127.0.0.1:${PORT[nginx]}" nginx_tls="" scheme=http
    local haproxy_bind="bind 127.0.0.1:${PORT[haproxy]}" ringside_listen=""
    if [ "$DEFER" = 1 ]; then
        nginx_listen+=" deferred" haproxy_bind+=" defer-accept"
        ringside_listen="defer_accept = true"$'\n'
    fi
    case $fl in
        plain) nginx_listen+=" backlog=4096;" ;;
        tls|h2)
            scheme=https
            if [ "$fl" = h2 ]; then nginx_listen+=" ssl http2 backlog=4096;"
            else nginx_listen+=" ssl backlog=4096;"; fi
            # nginx 1.22 offers no TLS 1.3 unless told. Its other defaults: session
            # tickets on, no shared session cache — as ringside (tickets, keys kept
            # in the process) and HAProxy.
            nginx_tls="ssl_certificate $tls/cert.pem;
        ssl_certificate_key $tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"
            haproxy_bind+=" ssl crt $tls/haproxy.pem ssl-min-ver TLSv1.2"
            if [ "$fl" = h2 ]; then haproxy_bind+=" alpn h2,http/1.1"
            else haproxy_bind+=" alpn http/1.1"; fi
            if [ "$fl" = h2 ]; then ringside_listen+="http2 = true"$'\n'; fi
            ringside_listen+="tls = { cert = \"$tls/cert.pem\", key = \"$tls/key.pem\" }" ;;
    esac

    cat >"$(conf_file nginx "$fl")" <<EOF
# nginx as the reverse proxy under test ($fl): $WORKERS worker(s) on CPUs $PROXY_CPUS.
worker_processes $WORKERS;
worker_cpu_affinity $(cpu_masks "$PROXY_CPUS" "$WORKERS");
daemon off;
pid $WORK/run/nginx-proxy.pid;
error_log $WORK/logs/nginx-proxy.error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $CONN_LIMIT; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;      # no proxy here closes a client after N requests
    client_body_temp_path $WORK/tmp/nginx-proxy;
    proxy_temp_path $WORK/tmp/nginx-proxy;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 1024;              # idle pool above the concurrency: never capped
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        $nginx_listen
        $nginx_tls
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Forwarded-Port \$server_port;
            proxy_max_temp_file_size 0;  # relay through memory buffers, never a temp file
        }
    }
}
EOF

    cat >"$(conf_file haproxy "$fl")" <<EOF
# HAProxy as the reverse proxy under test ($fl): $WORKERS thread(s) on CPUs $PROXY_CPUS.
global
    nbthread $WORKERS
    cpu-map auto:1/1-$WORKERS $(cpu_range "$PROXY_CPUS")
    maxconn $HAPROXY_MAXCONN

defaults
    mode http
    maxconn $HAPROXY_MAXCONN
    backlog 4096
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 75s
    option http-keep-alive
    option forwardfor
    http-reuse always               # idle server connections shared; no pool-max-conn cap

frontend fe
    $haproxy_bind
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto $scheme
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend be

backend be
    server s1 127.0.0.1:$BACKEND_PORT
EOF

    # SHIELD=1: the edge shield's cost, a [[limit]] the load never reaches
    # and three [[rule]]s that never match, on the route under test.
    local ringside_route_shield="" ringside_shield=""
    if [ "${SHIELD:-0}" = 1 ]; then
        ringside_route_shield='limit = "all"'
        ringside_shield=$(cat "$REPO/perf/shield.toml")
    fi
    cat >"$(conf_file ringside "$fl")" <<EOF
# ringside as the reverse proxy under test ($fl): $WORKERS worker(s) on CPUs $PROXY_CPUS.
[runtime]
workers = $WORKERS

[log]
access = "off"

[[upstream]]
name = "backend"
keepalive = 1024
servers = [ { address = "127.0.0.1:$BACKEND_PORT" } ]

[[route]]
path = "/"
upstream = "backend"
$ringside_route_shield

[[listen]]
address = "127.0.0.1:${PORT[ringside]}"
$ringside_listen
$ringside_shield
EOF
}

# ---------------------------------------------------------------- backend
start_backend() {
    local cmd=(taskset -c "$BACKEND_CPUS" nginx -p "$WORK/run" -e "$WORK/logs/backend.error.log"
               -c "$WORK/conf/backend-nginx.conf")
    note_cmd "${cmd[@]}"
    "${cmd[@]}" >"$WORK/logs/backend.out" 2>&1 &
    local pid=$!
    python3 "$PERF/probe.py" --pid $pid --port $BACKEND_PORT "${EXPECT[@]}" ||
        die "backend nginx did not start: $(tail -3 "$WORK/logs/backend.error.log" 2>/dev/null)"
    record_pids backend $pid
    BACKEND_PID=$pid
}

# ---------------------------------------------------------------- proxies
proxy_cmd() {  # proxy_cmd PROXY FLAVOUR: sets CMD
    local conf
    conf=$(conf_file "$1" "$2")
    case $1 in
        ringside) CMD=(taskset -c "$PROXY_CPUS" "$RINGSIDE_BIN" -c "$conf") ;;
        nginx)    CMD=(taskset -c "$PROXY_CPUS" nginx -p "$WORK/run" -e "$WORK/logs/nginx-proxy.error.log"
                       -c "$conf") ;;
        haproxy)  CMD=(taskset -c "$PROXY_CPUS" haproxy -db -f "$conf") ;;
    esac
}

# start_proxy NAME WORKLOAD ROUND: sets PROXY_PID; returns 1 on failure. A proxy
# that fails on plain HTTP is skipped for the rest of the run; one that fails a
# TLS flavour (or offers no h2 for h2-small) is only "n/a" for that workload.
start_proxy() {
    local name=$1 wl=$2 round=$3 ready=() tls=() err=$WORK/logs/$1.stderr fl
    fl=$(flavour_of "$wl")
    proxy_cmd "$name" "$fl"
    note_cmd "${CMD[@]}"
    free_port "${PORT[$name]}" || die "port ${PORT[$name]} was taken during the run"
    "${CMD[@]}" >"$WORK/logs/$name.stdout" 2>"$err" &
    PROXY_PID=$!
    echo $PROXY_PID >"$WORK/pids/proxy.pid"
    [ "$name" = ringside ] && ready=(--ready-file "$err" --ready-text "ringside ready")
    [ "$fl" = plain ] || tls=(--tls)
    [ "$fl" = h2 ] && tls+=(--alpn h2)
    if ! python3 "$PERF/probe.py" --pid $PROXY_PID --port "${PORT[$name]}" "${ready[@]}" "${tls[@]}" \
            "${EXPECT[@]}" 2>>"$WORK/logs/$name.probe"; then
        local why
        why="$(tail -1 "$WORK/logs/$name.probe"); stderr: $(tail -2 "$err" | tr '\n' ' ')"
        stop_tree proxy
        if [ "$fl" = plain ]; then
            skip "$name" "failed to start or to answer 200: $why"
        else
            say "  $name $wl r$round: n/a — $why"
            python3 -c 'import json, sys; print(json.dumps({"kind": "na", "proxy": sys.argv[1], "workload": sys.argv[2], "round": int(sys.argv[3]), "reason": sys.argv[4]}))' \
                "$name" "$wl" "$round" "$why" >>"$WORK/records.jsonl"
        fi
        return 1
    fi
    record_pids proxy $PROXY_PID
}

# ---------------------------------------------------------------- workloads
wrk_args() {  # wrk_args WORKLOAD SECONDS PORT: sets WRK (the load command: wrk or h2load)
    local base=(taskset -c "$LOAD_CPUS" wrk -t"$WRK_THREADS" --timeout 5s --latency -d"${2}s")
    local url=http://127.0.0.1:$3 tls=https://127.0.0.1:$3
    case $1 in
        small64)  WRK=("${base[@]}" -c64 "$url/small") ;;
        small256) WRK=("${base[@]}" -c256 "$url/small") ;;
        64k)      WRK=("${base[@]}" -c64 "$url/64k") ;;
        # the same URLs and connections at a fixed pace per connection (see PACE_SMALL_MS)
        small64-paced) WRK=(env PACE_MS="$PACE_SMALL_MS" "${base[@]}" -s "$PERF/paced.lua" -c64 "$url/small") ;;
        64k-paced)     WRK=(env PACE_MS="$PACE_64K_MS" "${base[@]}" -s "$PERF/paced.lua" -c64 "$url/64k") ;;
        1m)       WRK=("${base[@]}" -c256 "$url/1m") ;;
        close)    WRK=("${base[@]}" -c64 -H "Connection: close" "$url/small") ;;
        # new connections from 4 wrk threads, however many cores wrk has
        close4)   WRK=(taskset -c "$LOAD_CPUS" wrk -t4 --timeout 5s --latency -d"${2}s" -c64
                       -H "Connection: close" "$url/small") ;;
        # A full handshake per connection, one HTTP/1.0 GET on it, closed by
        # the proxy. openssl s_time -new never offers a session (wrk would:
        # it resumes after its first handshake); loadrun.py runs 4 at once.
        tls-handshake)   WRK=(taskset -c "$LOAD_CPUS" openssl s_time -connect "127.0.0.1:$3" -new
                              -time "$2" -www /small -tls1_3) ;;
        tls12-handshake) WRK=(taskset -c "$LOAD_CPUS" openssl s_time -connect "127.0.0.1:$3" -new
                              -time "$2" -www /small -tls1_2) ;;
        tls-small) WRK=("${base[@]}" -c64 "$tls/small") ;;
        # 64 h2 connections, 10 streams in flight on each.
        h2-small) WRK=(taskset -c "$LOAD_CPUS" h2load -t"$WRK_THREADS" -c64 -m10 -D "$2" "$tls/small") ;;
        *) die "unknown workload $1" ;;
    esac
}

# --profile: perf record on the proxy's CPUs (whatever runs there: the proxy
# and the kernel work it causes) for the measured run, then a text report.
profile_start() {  # profile_start NAME
    mkdir -p "$PROFILE"
    perf record -q -F 999 -a -C "$PROXY_CPUS" -o "$PROFILE/$1.data" -- sleep "$DURATION" \
        >/dev/null 2>&1 & PROFILE_PID=$!
}
profile_end() {  # profile_end NAME
    wait "$PROFILE_PID" 2>/dev/null || true
    local data=$PROFILE/$1.data out=$PROFILE/$1.txt
    [ -s "$data" ] || { say "  (no profile for $1: perf record failed)"; return 0; }
    {
        echo "# $1: perf record -F 999 -a -C $PROXY_CPUS for ${DURATION}s during the measured run"
        echo "## by privilege (k = kernel, u = user)"
        perf report -i "$data" --stdio --no-children --sort comm,dso -q --percent-limit 1 2>/dev/null
        echo "## top symbols"
        perf report -i "$data" --stdio --no-children --sort comm,sym -q --percent-limit 0.5 2>/dev/null | head -60
    } >"$out"
    say "  profile: $out ($data)"
}

measure() {  # measure PROXY WORKLOAD ROUND
    local proxy=$1 wl=${2%@*} round=$3 port=${PORT[$1]} name=$2
    [ -d "/proc/$BACKEND_PID" ] || die "the backend nginx died (see $WORK/logs/backend.error.log)"
    # Another job on the machine (a build, say) skews every figure: wait for
    # it to pass; loadrun.py still flags a run it disturbed.
    if [ "$QUIET_WAIT" != 0 ]; then
        python3 "$PERF/procstat.py" --wait-quiet "$LOAD_CPUS,$PROXY_CPUS" "$QUIET_WAIT" ||
            say "  (the CPUs are still busy with other jobs after $QUIET_WAIT s; measuring anyway)"
    fi
    start_proxy "$proxy" "$wl" "$round" || return 0
    if [ "$wl" = idle10k ] || [ "$wl" = idle-tls ]; then
        local cmd=(python3 "$PERF/idle.py" --pid "$PROXY_PID" --proxy "$proxy" --round "$round"
                   --workload "$wl" --port "$port" --conns "$IDLE_CONNS" --out "$WORK/records.jsonl")
        [ "$wl" = idle-tls ] && cmd+=(--tls)
        local shown=() arg
        for arg in "${cmd[@]}"; do [ "$arg" = "$PROXY_PID" ] && shown+=(PROXY_PID) || shown+=("$arg"); done
        note_cmd "${shown[@]}"
        "${cmd[@]}" || true
    else
        local parallel=1
        [[ $wl == *-handshake ]] && parallel=$S_TIME_PARALLEL
        wrk_args "$wl" "$WARMUP" "$port"
        "${WRK[@]}" >"$WORK/wrk/$proxy-$name-r$round-warmup.txt" 2>&1 || true
        wrk_args "$wl" "$DURATION" "$port"
        note_cmd "${WRK[@]}"
        if [ -n "$PROFILE" ]; then profile_start "$proxy-$name-r$round"; fi
        python3 "$PERF/loadrun.py" --pid "$PROXY_PID" --proxy "$proxy" --workload "$name" --parallel "$parallel" \
            --proxy-cpu "$PROXY_CPUS" --load-cpu "$LOAD_ALL" --backend-pid "$BACKEND_PID" \
            --round "$round" --out "$WORK/records.jsonl" --log "$WORK/wrk/$proxy-$name-r$round.txt" \
            -- "${WRK[@]}" || true
        if [ -n "$PROFILE" ]; then profile_end "$proxy-$name-r$round"; fi
    fi
    stop_tree proxy
}

# ---------------------------------------------------------------- main
install_tools
mkdir -p "$WORK/pids"
cleanup                       # leftovers of an earlier run that died
rm -rf "$WORK"/{records.jsonl,commands.txt,wrk,logs,conf,tls}   # conf: the results page prints every config there
mkdir -p "$WORK"
: >"$WORK/records.jsonl"
: >"$WORK/commands.txt"
choose_proxies
trap 'cleanup' EXIT
trap 'exit 130' INT TERM

# File descriptors: each proxy holds the idle workload's connections plus its
# upstream ones; the idle client as many. Raise the soft limit (and the hard
# one where we may); size every proxy's connection limit to what the run needs,
# not more (nginx preallocates its whole connection table at start).
ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# HAProxy refuses to start unless 2 fds per connection (client + server side)
# fit in its limit, so it caps how many idle connections every proxy is given.
HAPROXY_MAXCONN=$(( (NOFILE - 100) / 2 ))
if [[ " ${ACTIVE[*]} " == *" haproxy "* ]] && [ "$IDLE_CONNS" -gt $((HAPROXY_MAXCONN - 50)) ]; then
    say "warning: open-file limit is $NOFILE (hard $(ulimit -Hn)); HAProxy needs 2 per connection, so the"
    say "         idle workload holds $((HAPROXY_MAXCONN - 50)) connections (not $IDLE_CONNS) for every proxy."
    say "         Raise the hard limit (ulimit -Hn as root, LimitNOFILE) for the full count."
    IDLE_CONNS=$((HAPROXY_MAXCONN - 50))
fi
CONN_LIMIT=$((IDLE_CONNS + 1000))
[ "$HAPROXY_MAXCONN" -gt "$CONN_LIMIT" ] && HAPROXY_MAXCONN=$CONN_LIMIT
if [ "$NOFILE" -lt $((IDLE_CONNS + 500)) ]; then
    say "warning: open-file limit $NOFILE is too low for $IDLE_CONNS idle connections (raise ulimit -Hn)"
fi
ncpu=$(nproc)
if [ "$ncpu" -lt 2 ]; then
    say "warning: one CPU only — proxy and load generator share it"
    PROXY_CPU=0 PROXY_CPUS=0
fi
# --scaling: up to 8 proxy cores, leaving 4 for the backend and wrk.
proxy_cores=1
if [ "$SCALING" = 1 ] && [ "$ncpu" -ge 8 ]; then
    proxy_cores=$((ncpu - 6)); [ $proxy_cores -gt 8 ] && proxy_cores=8
fi
place_cores "$ncpu" "$proxy_cores"
LOAD_ALL=$(tr , '\n' <<<"$LOAD_CPUS,$BACKEND_CPUS" | sort -un | paste -sd,)
WORKER_COUNTS=(1)
if [ "$SCALING" = 1 ]; then
    WORKER_COUNTS=()
    for w in 1 2 4 8; do [ "$w" -le "$proxy_cores" ] && WORKER_COUNTS+=("$w"); done
    WORKLOADS=small64,close4
fi
pick_ports
WLS=()
IFS=, read -ra asked <<<"$WORKLOADS"
for wl in "${asked[@]}"; do
    case $wl in
        plain) IFS=, read -ra group <<<"$PLAIN_WORKLOADS"; WLS+=("${group[@]}") ;;
        tls)   IFS=, read -ra group <<<"$TLS_WORKLOADS"; WLS+=("${group[@]}") ;;
        *) WLS+=("$wl") ;;
    esac
done
FLAVOURS=()
for wl in "${WLS[@]}"; do
    fl=$(flavour_of "$wl")
    [[ " ${FLAVOURS[*]} " == *" $fl "* ]] || FLAVOURS+=("$fl")
done
[[ " ${FLAVOURS[*]} " == *" plain "* ]] || FLAVOURS+=(plain)
[ "${FLAVOURS[*]}" = plain ] || make_cert
write_content_and_configs
# This shell and the helpers (below 8 CPUs, with wrk and the backend).
taskset -cp "$HELPER_CPUS" $$ >/dev/null
start_backend

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "== ringside perf ($MODE): ${ACTIVE[*]} × ${WLS[*]}, $ROUNDS round(s), ${DURATION}s each"
say "   proxy on CPUs $PROXY_CPUS (workers: ${WORKER_COUNTS[*]}); wrk ($WRK_THREADS threads) on $LOAD_CPUS;" \
    "backend on $BACKEND_CPUS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The workloads as the report names them (with @wN under --scaling).
REPORT_WLS=()
for WORKERS in "${WORKER_COUNTS[@]}"; do
    for wl in "${WLS[@]}"; do
        if [ "$SCALING" = 1 ]; then REPORT_WLS+=("$wl@w$WORKERS"); else REPORT_WLS+=("$wl"); fi
    done
done
for round in $(seq "$ROUNDS"); do
    # rotate the order each round so no proxy always runs first after a pause
    order=()
    for i in "${!ACTIVE[@]}"; do order+=("${ACTIVE[$(( (i + round - 1) % ${#ACTIVE[@]} ))]}"); done
    say "-- round $round/$ROUNDS (${order[*]})"
    for WORKERS in "${WORKER_COUNTS[@]}"; do
        suffix=""
        if [ "$SCALING" = 1 ]; then
            suffix=@w$WORKERS
            for f in "${FLAVOURS[@]}"; do write_proxy_configs "$f"; done
        fi
        for wl in "${WLS[@]}"; do
            for proxy in "${order[@]}"; do
                # a proxy skipped earlier in this run stays skipped
                [[ " ${ACTIVE[*]} " == *" $proxy "* ]] && measure "$proxy" "$wl$suffix" "$round"
            done
        done
    done
done

# ---------------------------------------------------------------- report
# ringside's event loop as its last start logged it ("io_uring (DEFER_TASKRUN)",
# or the epoll it fell back to and why): a machine without io_uring (a
# sandboxed kernel, a seccomp filter) measures another program.
loop_line() {
    local l
    l=$(grep -ho 'event loop on .*' "$WORK/logs/ringside.stderr" 2>/dev/null | tail -1)
    [ -n "$l" ] && printf ' (%s)' "${l#event loop on }"
}
stamp=$(date +%Y-%m-%d-%H%M)
export META_DATE=$stamp META_MODE=$MODE META_ROUNDS=$ROUNDS META_DURATION=$DURATION \
    META_WARMUP=$WARMUP META_PROXIES="${ACTIVE[*]}" META_WORKLOADS="${REPORT_WLS[*]}" \
    META_LOAD_CPU=$LOAD_CPUS META_PROXY_CPU=$PROXY_CPUS META_BACKEND_CPU=$BACKEND_CPUS \
    META_WRK_THREADS=$WRK_THREADS META_SCALING=$SCALING META_IDLE_CONNS=$IDLE_CONNS META_NOFILE=$NOFILE META_DEFER=$DEFER \
    META_LOADAVG="$LOADAVG_START" META_LOADAVG_END="$(cut -d' ' -f1-3 /proc/loadavg)" \
    META_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
    META_KERNEL="$(uname -r)" META_NPROC="$ncpu" \
    META_OS="$(. /etc/os-release && echo "$PRETTY_NAME")" \
    META_MEM="$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)" \
    META_VERSIONS="$(nginx -v 2>&1 | sed 's/.*version: //'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)$( [ -x "$RINGSIDE_BIN" ] && printf '; ringside %s' "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '(uncommitted)')")$(loop_line)"
python3 - "$WORK/meta.json" <<'EOF'
import json, os, sys
e = os.environ
json.dump({
    "date": e["META_DATE"], "mode": e["META_MODE"], "rounds": int(e["META_ROUNDS"]),
    "duration": int(e["META_DURATION"]), "warmup": int(e["META_WARMUP"]),
    "proxies": e["META_PROXIES"].split(), "workloads": e["META_WORKLOADS"].split(),
    "load_cpu": e["META_LOAD_CPU"], "proxy_cpu": e["META_PROXY_CPU"],
    "backend_cpu": e["META_BACKEND_CPU"], "wrk_threads": int(e["META_WRK_THREADS"]),
    "scaling": e["META_SCALING"] == "1",
    "loadavg": e["META_LOADAVG"], "loadavg_end": e["META_LOADAVG_END"], "cpu_model": e["META_CPU"], "kernel": e["META_KERNEL"],
    "nproc": e["META_NPROC"], "os": e["META_OS"], "mem": e["META_MEM"],
    "versions": e["META_VERSIONS"], "idle_conns": int(e["META_IDLE_CONNS"]),
    "nofile": int(e["META_NOFILE"]), "defer_accept": e["META_DEFER"] == "1",
}, open(sys.argv[1], "w"))
EOF
awk '!seen[$0]++' "$WORK/commands.txt" >"$WORK/commands.unique.txt"
if [ "$SAVE" = 1 ]; then
    mkdir -p "$PERF/results"
    out=$PERF/results/$stamp.md
else
    out=$WORK/$stamp.md
fi
python3 "$PERF/report.py" --records "$WORK/records.jsonl" --meta "$WORK/meta.json" \
    --commands "$WORK/commands.unique.txt" --configs "$WORK/conf" --out "$out"
if [ "$SAVE" = 1 ]; then cp "$out" "$PERF/results/latest.md"; fi
say "== results: $out"
if [ "$SAVE" = 1 ]; then say "   (copied to perf/results/latest.md)"; fi
say "   raw wrk output and logs: $WORK/wrk, $WORK/logs"
