#!/usr/bin/env python3
"""Connection-level load for the tuning guide (tuning.md), loopback only.

    storm.py storm --port P --conns N [--path /small]
        N clients connect at the same instant and each sends one GET
        (Connection: close). Prints how long each waited for its answer:
        p50/p99/max, how many waited over 0.9 s (the signature of a dropped
        SYN or handshake ACK: the kernel retransmits after 1 s) and how many
        failed. This is a listen backlog under a connection storm.

    storm.py churn --port P --seconds S
        One client connects and closes at once, again and again, closing
        first so that every connection leaves a TIME_WAIT socket on the
        client side, as a proxy leaves them towards an upstream it does not
        keep alive. Prints connections per second and the errors
        (EADDRNOTAVAIL: no free ephemeral port).
"""
import argparse
import errno
import resource
import selectors
import socket
import statistics
import sys
import time


def storm(port, n, path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    start, waits, failed = {}, [], 0
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            failed += 1
            s.close()
            continue
        start[s] = time.monotonic()
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 30
    while sel.get_map() and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1):
            s = key.fileobj
            try:
                if ev & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise OSError
                    s.send(req)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                if s.recv(65536):
                    continue  # read until the server closes
                waits.append(time.monotonic() - start[s])
            except OSError:
                failed += 1
            sel.unregister(s)
            s.close()
    failed += len(sel.get_map())
    took = time.monotonic() - t0
    waits.sort()
    if not waits:
        print(f"storm {n}: all failed")
        return 1
    q = statistics.quantiles(waits, n=100) if len(waits) > 1 else waits * 99
    print(f"storm {n} connections: answered {len(waits)}, failed {failed}, "
          f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {waits[-1] * 1000:.0f} ms, "
          f"over 0.9 s: {sum(w > 0.9 for w in waits)}, all done in {took:.2f} s")
    return 0


def churn(port, seconds):
    ok, errs = 0, {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            ok += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            errs[name] = errs.get(name, 0) + 1
        finally:
            s.close()
    took = time.monotonic() - t0
    print(f"churn {took:.1f} s: {ok} connections ({ok / took:,.0f}/s), errors: "
          + (", ".join(f"{k} {v}" for k, v in errs.items()) or "none"))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("storm")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--conns", type=int, default=5000)
    s.add_argument("--path", default="/small")
    c = sub.add_parser("churn")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args()
    return storm(a.port, a.conns, a.path) if a.mode == "storm" else churn(a.port, a.seconds)


if __name__ == "__main__":
    sys.exit(main())
