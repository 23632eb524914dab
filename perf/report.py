#!/usr/bin/env python3
"""Turn the records of one perf run into the markdown results page.

    report.py --records records.jsonl --meta meta.json --commands commands.txt \
              --configs DIR --out results/YYYY-MM-DD-HHMM.md

Every figure is shown with its ratio to nginx measured in the same round
(value / nginx's value); the summary gives the median over rounds of both.
"""
import argparse
import json
import os
import statistics
from collections import defaultdict

PROXIES = ["ringside", "nginx", "haproxy"]

WORKLOAD_DESC = {
    "small64": "128-byte response, keep-alive, 64 connections (wrk -c64)",
    "small256": "128-byte response, keep-alive, 256 connections (wrk -c256)",
    "small64-paced": "as small64, each connection pausing PACE_SMALL_MS (default 2 ms; see the "
                     "exact commands) between requests with perf/paced.lua: every proxy at about "
                     "the same offered load, below saturation; the workloads to compare tails on",
    "64k": "64 KiB response, keep-alive, 64 connections",
    "64k-paced": "as 64k, each connection pausing PACE_64K_MS (default 6 ms) between requests",
    "1m": "1 MiB response, keep-alive, 256 connections",
    "close": "128-byte response, a new client connection per request "
             "(wrk -H 'Connection: close', 64 at a time); upstream stays keep-alive",
    "close4": "as close, from 4 wrk threads (one core each where wrk has several)",
    "idle10k": "10,000 client connections, one request each, then held idle; "
               "bytes/idle conn = (RSS holding - RSS before) / connections held",
    "tls-handshake": "a full TLS 1.3 handshake (ECDSA P-256 certificate) per connection and one "
                     "HTTP/1.0 GET /small on it: 4 `openssl s_time -new` at once (never resuming); "
                     "req/s = handshakes/s; no latency figures",
    "tls12-handshake": "the same with TLS 1.2 (s_time -tls1_2)",
    "tls-small": "128-byte response over TLS 1.3 keep-alive, 64 connections (wrk https)",
    "h2-small": "128-byte response over HTTP/2 (h2load -c64 -m10: 64 connections, 10 streams "
                "each); h2load reports no percentiles, its mean time per request is 'mean ms'",
    "idle-tls": "as idle10k, each connection over TLS 1.3: memory per idle TLS keep-alive connection",
}

# (key, header, format, show the ratio to nginx)
LOAD_COLUMNS = [
    ("rps", "req/s", "{:,.0f}", True),
    ("p50_ms", "p50 ms", "{:.3f}", True),
    ("p99_ms", "p99 ms", "{:.3f}", True),
    ("p999_ms", "p99.9 ms", "{:.3f}", True),
    ("mean_ms", "mean ms", "{:.3f}", True),
    ("cpu_s", "CPU s", "{:.2f}", True),
    ("req_per_cpu_s", "req/CPU-s", "{:,.0f}", True),
    ("peak_rss_mib", "peak RSS MiB", "{:.1f}", True),
]
CORE_COLUMNS = [
    ("core_busy_s", "proxy core busy s", "{:.2f}", True),
    ("core_irq_s", "of it irq+softirq s", "{:.2f}", False),
    ("ksoftirqd_s", "ksoftirqd s", "{:.2f}", False),
    ("req_per_core_s", "req/core-s", "{:,.0f}", True),
    ("wrk_cpu_s", "wrk CPU s", "{:.2f}", False),
    ("backend_cpu_s", "backend CPU s", "{:.2f}", False),
]
IDLE_COLUMNS = [
    ("conns_held", "held", "{:,.0f}", False),
    ("rss_base_mib", "RSS before MiB", "{:.1f}", False),
    ("rss_held_mib", "RSS holding MiB", "{:.1f}", True),
    ("bytes_per_conn", "bytes/idle conn", "{:,.0f}", True),
    ("rss_after_close_mib", "RSS after close MiB", "{:.1f}", True),
]


def load_records(path):
    recs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                for k in ("peak_rss_kib", "rss_base_kib", "rss_held_kib", "rss_after_close_kib"):
                    if k in r:
                        r[k.replace("_kib", "_mib")] = r[k] / 1024
                recs.append(r)
    return recs


def cell(value, ratio, fmt):
    if value is None:
        return "–"
    text = fmt.format(value)
    return f"{text} ({ratio:.2f}×)" if ratio is not None else text


def ratios(recs, columns):
    """{(workload, proxy): {key: [(value, ratio or None) per round]}}"""
    by_round = {(r["workload"], r["round"], r["proxy"]): r for r in recs if r.get("ok")}
    out = defaultdict(lambda: defaultdict(list))
    for (wl, rnd, proxy), r in by_round.items():
        ref = by_round.get((wl, rnd, "nginx"))
        for key, _, _, show in columns:
            v = r.get(key)
            if v is None:
                continue
            rv = ref.get(key) if (ref and show) else None
            out[(wl, proxy)][key].append((v, v / rv if rv else None))
    return out


def median_cell(pairs, fmt):
    if not pairs:
        return "–"
    v = statistics.median(p[0] for p in pairs)
    rs = [p[1] for p in pairs if p[1] is not None]
    return cell(v, statistics.median(rs) if rs else None, fmt)


def table(rows, columns, lead):
    head = "| " + " | ".join(lead + [c[1] for c in columns]) + " |"
    sep = "|" + "---|" * (len(lead) + len(columns))
    return "\n".join([head, sep] + rows)


def summary(recs, columns, workloads, na=()):
    agg = ratios(recs, columns)
    missing = {(r["workload"], r["proxy"]) for r in na}
    rows = []
    for wl in workloads:
        for proxy in PROXIES:
            if (wl, proxy) not in agg:
                if (wl, proxy) in missing:
                    rows.append(f"| {wl} | {proxy} | n/a (see Problems seen) |"
                                + " |" * (len(columns) - 1))
                continue
            cells = [median_cell(agg[(wl, proxy)].get(k, []), fmt) for k, _, fmt, _ in columns]
            rows.append(f"| {wl} | {proxy} | " + " | ".join(cells) + " |")
    return table(rows, columns, ["workload", "proxy"])


def per_round(recs, columns, workloads):
    agg_round = {(r["workload"], r["round"], r["proxy"]): r for r in recs if r.get("ok")}
    rows = []
    for r in sorted(
        (r for r in recs if r.get("ok")),
        key=lambda r: (r["round"], workloads.index(r["workload"]), PROXIES.index(r["proxy"])),
    ):
        ref = agg_round.get((r["workload"], r["round"], "nginx"))
        cells = []
        for key, _, fmt, show in columns:
            v = r.get(key)
            rv = ref.get(key) if (ref and show) else None
            cells.append(cell(v, v / rv if (v is not None and rv) else None, fmt))
        rows.append(f"| {r['round']} | {r['workload']} | {r['proxy']} | " + " | ".join(cells) + " |")
    return table(rows, columns, ["round", "workload", "proxy"])


def pinning(meta):
    if meta.get("backend_cpu", meta["load_cpu"]) == meta["load_cpu"]:
        return (f"- pinning: proxy on CPU {meta['proxy_cpu']}; wrk, the backend nginx and "
                f"the helper scripts on CPU {meta['load_cpu']} (the proxy is not saturated)")
    return (f"- pinning: proxy on CPUs {meta['proxy_cpu']} (one worker per CPU), backend nginx on "
            f"{meta['backend_cpu']}, wrk ({meta.get('wrk_threads', 1)} threads) on {meta['load_cpu']}, "
            "helpers on 0-1")


def describe(w):
    base, _, workers = w.partition("@w")
    d = WORKLOAD_DESC.get(base, "")
    return f"{d}; {workers} worker(s) (processes, threads) per proxy" if workers else d


def targets(recs):
    """Issue 14's targets for ringside, judged on the medians of this run."""
    def med(wl, proxy, key):
        vs = [r[key] for r in recs if r.get("ok") and r["workload"] == wl and r["proxy"] == proxy and key in r]
        return statistics.median(vs) if vs else None

    def against_best(wl, key):
        rs = med(wl, "ringside", key)
        peers = [v for v in (med(wl, p, key) for p in ("nginx", "haproxy")) if v]
        return (rs, max(peers)) if rs and peers else None

    lines = []
    ratios = (("small64", 1.2), ("small256", 1.2), ("close", 1.2), ("close4", 1.2),
              ("h2-small", 1.3), ("64k", 2.0), ("1m", 3.0),
              ("tls-handshake", 1.5), ("tls12-handshake", 1.5))
    for wl, want in ratios:
        got = against_best(wl, "req_per_cpu_s")
        if got:
            r = got[0] / got[1]
            lines.append(f"- {wl}: req/CPU-s {r:.2f}× the best peer (target ≥ {want}×): {verdict(r >= want)}")
    for wl in ("close", "close4"):
        got = against_best(wl, "rps")
        if got:
            r = got[0] / got[1]
            lines.append(f"- {wl}: req/s {r:.2f}× the best peer's (target ≥ 1.00×): {verdict(r >= 1.0)}")
    # p99 at saturation and at a paced load: at most 1.1x the best peer's.
    for wl in ("small64", "small64-paced"):
        rs = med(wl, "ringside", "p99_ms")
        peers = [v for v in (med(wl, p, "p99_ms") for p in ("nginx", "haproxy")) if v]
        if rs and peers:
            r = rs / min(peers)
            lines.append(f"- {wl}: p99 {rs:.3f} ms, {r:.2f}× the best peer's {min(peers):.3f} ms "
                         f"(target ≤ 1.1×): {verdict(r <= 1.1)}")
    # Idle keep-alive connection: at most 512 bytes, and below nginx's.
    b = med("idle10k", "ringside", "bytes_per_conn")
    if b:
        lines.append(f"- idle: {b:,.0f} bytes per idle keep-alive connection (target ≤ 512): "
                     f"{verdict(b <= 512)}")
        n = med("idle10k", "nginx", "bytes_per_conn")
        if n:
            lines.append(f"- idle: {b / n:.2f}× nginx's {n:,.0f} bytes (target below nginx's): "
                         f"{verdict(b < n)}")
    lines += scaling_targets(med)
    return "\n".join(lines)


def scaling_targets(med):
    """--scaling: ringside at N workers against N times its one-worker rate, and
    against the best peer at 4 and 8 workers."""
    lines = []
    for wl in ("small64", "close4"):
        one = med(f"{wl}@w1", "ringside", "rps")
        for n in (2, 4, 8):
            rs = med(f"{wl}@w{n}", "ringside", "rps")
            if not (one and rs):
                continue
            lin = rs / (one * n)
            lines.append(f"- {wl}, {n} workers: {rs:,.0f} req/s, {lin:.2f} of linear "
                         f"(target ≥ 0.9): {verdict(lin >= 0.9)}")
            peers = [v for v in (med(f"{wl}@w{n}", p, "rps") for p in ("nginx", "haproxy")) if v]
            if n >= 4 and peers:
                r = rs / max(peers)
                lines.append(f"- {wl}, {n} workers: {r:.2f}× the best peer's req/s "
                             f"(target ≥ 1.3×): {verdict(r >= 1.3)}")
    return lines


def verdict(ok):
    return "met" if ok else "NOT met"


def problems(recs):
    out = []
    for r in recs:
        if r["kind"] == "skip":
            out.append(f"- {r['proxy']}: skipped — {r['reason']}")
        elif r["kind"] == "na":
            out.append(f"- {r['proxy']} {r['workload']} round {r['round']}: n/a — {r['reason']}")
        elif not r.get("ok"):
            out.append(f"- {r['proxy']} {r['workload']} round {r['round']}: measurement failed "
                       "(left out of the tables)")
        else:
            bad = []
            if r.get("socket_errors"):
                bad.append(f"{r['socket_errors']} socket errors")
            if r.get("non_2xx"):
                bad.append(f"{r['non_2xx']} non-2xx responses")
            if r.get("pids_changed"):
                bad.append("proxy process set changed during the run")
            if r.get("disturbed"):
                bad.append(f"other processes ran during it ({r['foreign_proxy_core_s']:.2f} s on "
                           f"the proxy core, {r['foreign_load_core_s']:.2f} s on the load core)")
            # A proxy busy most of a paced run is near saturation: its tail is queueing.
            if r["workload"].endswith("-paced") and r.get("cpu_s", 0) > 0.8 * r.get("duration_s", 1e9):
                bad.append(f"CPU {r['cpu_s']:.2f} s of {r['duration_s']:.1f} s: near saturation, "
                           "raise its PACE_*_MS to compare tails")
            if r.get("conns_failed"):
                bad.append(f"{r['conns_failed']} idle connections failed")
            if bad:
                out.append(f"- {r['proxy']} {r['workload']} round {r['round']}: " + ", ".join(bad))
    return "\n".join(out) or "None."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--commands", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    recs = load_records(a.records)
    with open(a.meta) as f:
        meta = json.load(f)
    load = [r for r in recs if r["kind"] == "load"]
    idle = [r for r in recs if r["kind"] == "idle"]
    na = [r for r in recs if r["kind"] == "na"]
    na_load = [r for r in na if not r["workload"].startswith("idle")]
    na_idle = [r for r in na if r["workload"].startswith("idle")]
    wls = meta["workloads"]

    md = [f"# ringside perf run {meta['date']}", ""]
    md += [
        f"- machine: {meta['nproc']} CPUs ({meta['cpu_model']}), {meta['mem']}, "
        f"kernel {meta['kernel']}, {meta['os']}",
        f"- load average (1, 5, 15 min) at start: {meta['loadavg']}; at the end: {meta['loadavg_end']}",
        f"- mode: {meta['mode']} — {meta['rounds']} round(s), {meta['duration']} s per workload "
        f"after a {meta['warmup']} s warm-up; proxies in each round in the order "
        f"{', '.join(meta['proxies'])}",
        pinning(meta),
        *(["- listeners: deferred accept on every proxy (ringside `defer_accept`, nginx "
            "`deferred`, HAProxy `defer-accept`)"] if meta.get("defer_accept") else []),
        f"- versions: {meta['versions']}",
        f"- open-file limit {meta['nofile']}; the idle workload holds {meta['idle_conns']:,} connections"
        + (" (HAProxy needs two fds per connection, so the hard limit capped it below 10,000)"
           if meta["idle_conns"] < 10000 else ""),
        "",
        "Each cell is the figure and, in parentheses, its ratio to nginx in the same round "
        "(the median over rounds of each). For req/s and req/CPU-s above 1.00× is better; "
        "for latency and memory below 1.00× is better. CPU s is the proxy's user+system time "
        "during the wrk run, all its processes and threads.",
        "",
        "## Load (median over rounds)",
        "",
        summary(load, LOAD_COLUMNS, wls, na_load),
        "",
        "## The whole proxy core (median over rounds)",
        "",
        "The proxy core's busy time from /proc/stat, whoever was charged for it. The softirq "
        "network work done on that core (on loopback, the TCP receive path of the packets the "
        "proxy sends) is charged to the proxy when it runs on the proxy's time, and to the "
        "ksoftirqd/N thread when the kernel defers it there under load. req/core-s (requests "
        "per second of the whole core) counts both, so it is the fairer figure when a proxy's "
        "ksoftirqd s is large; CPU s above counts only the first.",
        "",
        summary(load, CORE_COLUMNS, wls),
        "",
        "## Idle keep-alive connections (median over rounds)",
        "",
        summary(idle, IDLE_COLUMNS, wls, na_idle),
        "",
    ]
    t = targets(recs)
    if t:
        md += ["## Issue 14 targets for ringside", "",
               "Judged on this run's medians against the best peer in the same run.", "", t, ""]
    md += ["## Problems seen", "", problems(recs), ""]
    md += ["## Every round", "", per_round(load, LOAD_COLUMNS, wls), "",
           per_round(idle, IDLE_COLUMNS, wls), ""]
    md += ["## Workloads", ""] + [f"- `{w}`: {describe(w)}" for w in wls] + [""]
    with open(a.commands) as f:
        cmds = f.read().strip()
    md += ["## Exact commands", "", "```sh", cmds, "```", ""]
    md += ["## Configs", ""]
    for name in sorted(os.listdir(a.configs)):
        with open(os.path.join(a.configs, name)) as f:
            md += [f"`{name}`:", "", "```", f.read().rstrip(), "```", ""]
    with open(a.out, "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
