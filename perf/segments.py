#!/usr/bin/env python3
"""Where a proxied request's time goes, from a packet capture on loopback.

    segments.py CAPTURE.pcap [--proxy-port 18081] [--backend-port 18080] [--name NAME]

The capture (tcpdump -i lo -w, see perf/segments.sh) must hold the client's
requests to the proxy, the proxy's to the backend and both responses, each
request carrying a unique query (`?n=ID`, perf/paced.lua with PACE_IDS=1).
On loopback a packet is captured as its sender transmits it, so for each
request:

    A  the client sends it          B  the proxy sends it upstream
    C  the backend sends its answer D  the proxy sends the answer on

and the segments are: in (A->B, the proxy's receive, wake-up and work),
backend (B->C), out (C->D), total (A->D), and proxy (in + out: the
proxy's own share). Prints percentiles of each, and
for the slowest 1% by total, how much of it each segment was.
"""
import argparse
import struct
import sys


def packets(path):
    """(time in ns, sport, dport, payload) of every TCP segment with data."""
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        scale = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}.get(magic)
        if scale is None:
            sys.exit(f"{path}: not a little-endian pcap file")
        link = struct.unpack("<I", head[20:24])[0]
        skip = {1: 14, 113: 16, 0: 4}.get(link)
        if skip is None:
            sys.exit(f"{path}: link type {link} not handled")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", rec)
            data = f.read(incl)
            ip = data[skip:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            sport, dport = struct.unpack(">HH", tcp[:4])
            off = (tcp[12] >> 4) * 4
            if total - ihl - off <= 0:
                continue
            yield sec * 1_000_000_000 + frac * scale, sport, dport, tcp[off:]


def request_id(payload):
    line = payload.split(b"\r\n", 1)[0]
    at = line.find(b"n=")
    if not line.startswith(b"GET ") or at < 0:
        return None
    end = at + 2
    while end < len(line) and line[end : end + 1].isdigit():
        end += 1
    return int(line[at + 2 : end])


def pct(ordered, p):
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("capture")
    ap.add_argument("--proxy-port", type=int, default=18081)
    ap.add_argument("--backend-port", type=int, default=18080)
    ap.add_argument("--name", default="proxy")
    a = ap.parse_args()
    A, B, C, D = {}, {}, {}, {}
    on_client, on_upstream = {}, {}  # port -> the id last requested there
    for t, sport, dport, payload in packets(a.capture):
        if dport == a.proxy_port:
            rid = request_id(payload)
            if rid is not None:
                A[rid] = t
                on_client[sport] = rid
        elif dport == a.backend_port:
            rid = request_id(payload)
            if rid is not None:
                B[rid] = t
                on_upstream[sport] = rid
        elif sport == a.backend_port and payload.startswith(b"HTTP/1."):
            rid = on_upstream.get(dport)
            if rid is not None and rid not in C:
                C[rid] = t
        elif sport == a.proxy_port and payload.startswith(b"HTTP/1."):
            rid = on_client.get(dport)
            if rid is not None and rid not in D:
                D[rid] = t
    ids = [i for i in A if i in B and i in C and i in D]
    if not ids:
        sys.exit("no request was seen on all four legs")
    seg = {
        "total": {i: D[i] - A[i] for i in ids},
        "in": {i: B[i] - A[i] for i in ids},
        "backend": {i: C[i] - B[i] for i in ids},
        "out": {i: D[i] - C[i] for i in ids},
        "proxy": {i: D[i] - C[i] + B[i] - A[i] for i in ids},
    }
    print(f"{a.name}: {len(ids)} requests traced (of {len(A)} sent)")
    print(f"  {'segment':8} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8}   (µs)")
    for name, v in seg.items():
        vals = sorted(v.values())
        print(f"  {name:8}" + "".join(f" {pct(vals, p) / 1000:8.1f}" for p in (50, 90, 99, 99.9)))
    slow = sorted(ids, key=lambda i: seg["total"][i])[-max(1, len(ids) // 100) :]
    mean = {k: sum(seg[k][i] for i in slow) / len(slow) / 1000 for k in seg if k != "proxy"}
    print(
        f"  slowest 1% ({len(slow)}): total {mean['total']:.1f} µs = in {mean['in']:.1f}"
        f" + backend {mean['backend']:.1f} + out {mean['out']:.1f}"
    )


if __name__ == "__main__":
    main()
