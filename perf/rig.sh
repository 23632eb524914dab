# The one-worker rig that perf/ab.sh, perf/ringops.sh and perf/segments.sh
# share (source it): the backend nginx on CPU 0 and ringside's config in
# front of it. perf/run.sh builds its own, for every proxy and core count.

# rig_backend DIR PORT [HTTP_DIRECTIVES]: a 128-byte DIR/small and a
# one-worker nginx serving DIR on 127.0.0.1:PORT, on CPU 0, started in the
# background (its pid in DIR/backend.pid); returns once it answers 200,
# fails if it never does.
rig_backend() {
    # nginx's workers run as nobody: a mktemp -d directory (0700) answers 403.
    chmod 755 "$1"
    head -c 128 /dev/zero | tr '\0' x >"$1/small"
    cat >"$1/backend.conf" <<CONF
worker_processes 1; daemon off; pid $1/backend-nginx.pid; error_log $1/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; ${3:-}
  server { listen 127.0.0.1:$2 backlog=4096; root $1; } }
CONF
    taskset -c 0 nginx -p "$1" -c "$1/backend.conf" &
    echo $! >"$1/backend.pid"
    for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$2/small" && return 0; sleep 0.1; done
    echo "rig_backend: no 200 from http://127.0.0.1:$2/small (see $1/backend.err)" >&2
    return 1
}

# rig_ringside_toml FILE: one worker, no access log, 127.0.0.1:18081 proxying
# to the backend on 127.0.0.1:18080.
rig_ringside_toml() {
    printf '%s\n' '[runtime]' 'workers = 1' '[log]' 'access = "off"' '[[upstream]]' \
        'name = "backend"' 'keepalive = 1024' 'servers = [ { address = "127.0.0.1:18080" } ]' \
        '[[route]]' 'path = "/"' 'upstream = "backend"' '[[listen]]' 'address = "127.0.0.1:18081"' \
        >"$1"
}
