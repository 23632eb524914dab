#!/usr/bin/env python3
"""Wait until a freshly started server is ready, then check it answers 200.

    probe.py --port PORT [--pid PID] [--ready-file FILE --ready-text TEXT]
             [--tls [--alpn h2]] [--timeout 15] [--expect /small=128 ...]

Ready means: the process (if --pid) is alive, its readiness line appeared in
--ready-file (if given; ringside prints `ringside ready: listening on ...` on
stderr) and the port accepts a TCP connection. Polls every 20 ms; no fixed
sleep. Then each --expect PATH=BYTES must answer 200 with exactly that many
body bytes (over TLS with --tls, any certificate accepted). With --alpn h2
a TLS handshake offering h2 and http/1.1 must pick h2. Exits 0 when all
holds, 1 with the reason otherwise.
"""
import argparse
import http.client
import socket
import ssl
import sys
import time

import procstat


def wait_ready(a):
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if a.pid and not procstat.alive(a.pid):
            return f"process {a.pid} exited during start-up"
        if a.ready_file:
            try:
                with open(a.ready_file, errors="replace") as f:
                    if a.ready_text not in f.read():
                        time.sleep(0.02)
                        continue
            except OSError:
                time.sleep(0.02)
                continue
        try:
            socket.create_connection(("127.0.0.1", a.port), timeout=0.5).close()
            return None
        except OSError:
            time.sleep(0.02)
    what = f"'{a.ready_text}' in {a.ready_file} and " if a.ready_file else ""
    return f"no {what}port {a.port} open after {a.timeout} s"


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the run's own self-signed certificate
    return ctx


def alpn(port, want):
    """None if a handshake offering `want` and http/1.1 picks `want`."""
    ctx = tls_context()
    ctx.set_alpn_protocols([want, "http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                got = s.selected_alpn_protocol()
    except OSError as e:
        return f"TLS handshake: {e!r}"
    return None if got == want else f"ALPN offered {want}, http/1.1; the server chose {got or 'none'}"


def check(port, path, size, tls):
    if tls:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"User-Agent": "ringside-perf-probe"})
        r = c.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException) as e:
        return f"GET {path}: {e!r}"
    finally:
        c.close()
    if r.status != 200 or len(body) != size:
        return f"GET {path}: status {r.status}, {len(body)} body bytes (want 200, {size})"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--ready-file")
    ap.add_argument("--ready-text", default="ringside ready")
    ap.add_argument("--timeout", type=float, default=15)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--alpn")
    a = ap.parse_args()
    problem = wait_ready(a)
    if problem is None and a.alpn:
        problem = alpn(a.port, a.alpn)
    for spec in a.expect if problem is None else []:
        path, _, size = spec.partition("=")
        problem = check(a.port, path, int(size), a.tls)
        if problem:
            break
    if problem:
        print(f"probe: port {a.port}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
