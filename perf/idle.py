#!/usr/bin/env python3
"""Idle keep-alive memory: hold N client connections open through a proxy.

    idle.py --pid PID --proxy NAME --round N --port PORT --conns 10000 \
            --out records.jsonl [--workload idle10k] [--path /small] [--window 128] [--tls]

Opens N connections, sends one GET on each and reads the whole response
(at most --window requests in flight, so the proxy needs only a few upstream
connections), then leaves them all idle. The proxy's RSS (summed over its
process tree) before and while holding them gives bytes per idle connection.
It then closes them and reads RSS again, to show whether the memory comes back.

With --tls every connection first completes a TLS handshake (any certificate
accepted; TLS 1.3 when offered), so the figure is the memory of an idle TLS
keep-alive connection: the socket, the proxy's connection state and its TLS
session state and buffers.
"""
import argparse
import errno
import json
import resource
import selectors
import socket
import ssl
import sys
import time

import procstat


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def response_complete(buf):
    """True once buf holds a whole response with a Content-Length body."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the run's own self-signed certificate
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Conn:
    """One connection's progress: connecting, then (TLS) handshaking, then
    waiting for its response in buf."""

    def __init__(self, sock):
        self.sock, self.buf, self.state = sock, bytearray(), "connect"


def open_idle(port, n, path, window, deadline_s, tls):
    """Returns (held sockets, failures, seconds taken)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ringside-perf-idle\r\n\r\n".encode()
    ctx = tls_context() if tls else None
    sel = selectors.DefaultSelector()
    held, failed, started, inflight = [], 0, 0, 0
    t0 = time.monotonic()
    while len(held) + failed < n:
        while inflight < window and started < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
            else:
                sel.register(s, selectors.EVENT_WRITE, Conn(s))
                inflight += 1
            started += 1
        if time.monotonic() - t0 > deadline_s:
            break
        for key, ev in sel.select(timeout=1.0):
            c = key.data
            s, buf = c.sock, c.buf
            try:
                if c.state == "connect":
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise OSError("connect failed")
                    if tls:
                        # The selector keeps watching the same descriptor.
                        sel.unregister(s)
                        s = c.sock = ctx.wrap_socket(s, server_hostname="localhost",
                                                     do_handshake_on_connect=False)
                        sel.register(s, selectors.EVENT_WRITE, c)
                        c.state = "handshake"
                    else:
                        c.state = "send"
                if c.state == "handshake":
                    try:
                        s.do_handshake()
                    except ssl.SSLWantReadError:
                        sel.modify(s, selectors.EVENT_READ, c)
                        continue
                    except ssl.SSLWantWriteError:
                        sel.modify(s, selectors.EVENT_WRITE, c)
                        continue
                    c.state = "send"
                if c.state == "send":
                    s.sendall(request)
                    sel.modify(s, selectors.EVENT_READ, c)
                    c.state = "read"
                    continue
                try:
                    chunk = s.recv(65536)
                except ssl.SSLWantReadError:
                    continue  # a TLS record that held no data (a session ticket)
                if not chunk:
                    raise OSError("closed before the response ended")
                buf += chunk
                if not buf.startswith(b"HTTP/1.1 200"):
                    if len(buf) >= 12:
                        raise OSError("not a 200: " + buf[:40].decode("latin1"))
                    continue
                if response_complete(buf):
                    sel.unregister(s)
                    held.append(s)
                    inflight -= 1
            except (OSError, ValueError):
                sel.unregister(s)
                s.close()
                failed += 1
                inflight -= 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        failed += 1
    sel.close()
    return held, failed, time.monotonic() - t0


def still_open(socks):
    """How many held connections the proxy has not closed (no EOF pending)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0.2))
    sel.close()
    return len(socks) - closed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--workload", default="idle10k")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--path", default="/small")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--deadline", type=float, default=120, help="give up opening after this many seconds")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tls", action="store_true", help="a TLS handshake on each connection first")
    a = ap.parse_args()

    limit = raise_nofile(a.conns + 256)
    if limit < a.conns + 64:
        sys.exit(f"idle.py: RLIMIT_NOFILE is {limit}, need {a.conns + 64}: raise ulimit -n")

    base = procstat.snapshot(a.pid)
    held, failed, took = open_idle(a.port, a.conns, a.path, a.window, deadline_s=a.deadline, tls=a.tls)
    time.sleep(a.settle)
    samples = []
    for _ in range(3):
        samples.append(procstat.snapshot(a.pid))
        time.sleep(0.3)
    holding = max(samples, key=lambda s: s["rss_kib"])
    open_now = still_open(held)
    for s in held:
        s.close()
    time.sleep(a.settle)
    after = procstat.snapshot(a.pid)

    rec = {
        "kind": "idle",
        "proxy": a.proxy,
        "workload": a.workload,
        "round": a.round,
        "command": " ".join(sys.argv),
        "conns_wanted": a.conns,
        "conns_held": open_now,
        "conns_failed": failed,
        "open_s": round(took, 2),
        "rss_base_kib": base["rss_kib"],
        "rss_held_kib": holding["rss_kib"],
        "rss_after_close_kib": after["rss_kib"],
        "peak_rss_kib": after["hwm_kib"],
        "cpu_s": round(after["cpu_s"] - base["cpu_s"], 3),
        "ok": open_now >= a.conns * 0.99 and procstat.alive(a.pid),
    }
    if open_now:
        rec["bytes_per_conn"] = (holding["rss_kib"] - base["rss_kib"]) * 1024 / open_now
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(
        f"  {a.proxy:9} {rec['workload']:10} r{a.round}: held {open_now}/{a.conns} "
        f"(failed {failed}, {took:.1f} s to open)  RSS {base['rss_kib'] / 1024:.1f} -> "
        f"{holding['rss_kib'] / 1024:.1f} MiB, {rec.get('bytes_per_conn', 0):,.0f} B/conn; "
        f"after close {after['rss_kib'] / 1024:.1f} MiB"
        + ("" if rec["ok"] else "  [FAILED: fewer than 99% held, or proxy died]"),
        flush=True,
    )
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
