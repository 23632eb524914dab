#!/usr/bin/env python3
"""One load measurement: run wrk against a proxy and charge the proxy's CPU.

    loadrun.py --pid PID --proxy NAME --workload NAME --round N \
               --out records.jsonl --log wrk.txt [--parallel K] -- wrk ARGS...

The load command may also be h2load or `openssl s_time` (the TLS
workloads); --parallel K runs K copies of it at once and adds up their
counts (s_time opens one connection at a time).

Samples the proxy's process tree (procstat.py) just before wrk starts and
just after it exits, parses wrk's --latency report, and appends one JSON
record to --out. Prints a one-line summary. Exits 1 if wrk failed.

With --proxy-cpu/--load-cpu/--backend-pid it also reads both cores from
/proc/stat: the proxy core's whole busy time (the proxy's own CPU plus the
softirq network work done there, which no process is charged for) and CPU
used on either core by anything that is not the proxy, wrk or the backend
("foreign": another job on the machine, which makes the run unreliable).
"""
import argparse
import json
import re
import resource
import shlex
import subprocess
import sys
import time

import procstat

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else None


def parse_wrk(out):
    """requests, duration, req/s, p50/p99/p99.9 (ms), errors and non-2xx from wrk's text."""
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = _ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            r[f"p{pct}_ms"] = _ms(m.group(1))
    # --latency stops at 99%; perf/paced.lua (the paced workloads) adds 99.9.
    m = re.search(r"^percentiles \(ms\):.* 99\.9=([\d.]+)", out, re.M)
    if m:
        r["p999_ms"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r


def parse_h2load(out):
    """The same fields from h2load's text. h2load gives no percentiles: its
    mean time per request goes to mean_ms, p50/p99 stay empty."""
    r = {}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    if m:
        r["duration_s"] = _ms(m.group(1) + m.group(2)) / 1000.0
        r["rps"] = float(m.group(3))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        r["requests"] = int(m.group(1))
        r["socket_errors"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["non_2xx"] = sum(int(x) for x in m.groups()[2:]) if m else 0
    m = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if m:
        r["mean_ms"] = _ms(m.group(1))
    m = re.search(r"Application protocol: (\S+)", out)
    r["protocol"] = m.group(1) if m else None
    return r


def parse_s_time(outs, wall):
    """Connections from K `openssl s_time -new -www PATH` outputs. s_time
    prints whole real seconds only, so the rate is over our own wall clock;
    it gives no latency and no status (the probe checked 200 first)."""
    r = {"requests": 0, "socket_errors": 0, "non_2xx": 0, "duration_s": wall}
    for out in outs:
        m = re.search(r"(\d+) connections in [\d.]+s;", out)
        if not m:
            return {}
        r["requests"] += int(m.group(1))
        m = re.search(r"(\d+) bytes read per connection", out)
        if not m or int(m.group(1)) == 0:
            r["non_2xx"] += 1  # no response read at all
    r["rps"] = r["requests"] / wall
    return r


def busy(t0, t1):
    return t1["task"] - t0["task"] + t1["irq"] - t0["irq"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", required=True)
    # Comma lists where the proxy or the load has several cores.
    ap.add_argument("--proxy-cpu", type=lambda v: [int(c) for c in v.split(",")])
    ap.add_argument("--load-cpu", type=lambda v: [int(c) for c in v.split(",")])
    ap.add_argument("--backend-pid", type=int)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("wrk", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.wrk[1:] if a.wrk and a.wrk[0] == "--" else a.wrk
    tool = next((c.rsplit("/", 1)[-1] for c in cmd if c.endswith(("wrk", "h2load", "s_time"))), "wrk")
    h2load = tool == "h2load"

    cores = (a.proxy_cpu is not None and a.load_cpu is not None
             and not set(a.proxy_cpu) & set(a.load_cpu))
    if cores:
        pc0, lc0 = procstat.cpus_times(a.proxy_cpu), procstat.cpus_times(a.load_cpu)
        be0 = procstat.snapshot(a.backend_pid)["cpu_s"] if a.backend_pid else 0.0
        kp0 = sum(procstat.thread_cpu(f"ksoftirqd/{c}") for c in a.proxy_cpu)
        kl0 = sum(procstat.thread_cpu(f"ksoftirqd/{c}") for c in a.load_cpu)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = procstat.snapshot(a.pid)
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(a.parallel)]
    outs = [(p, *p.communicate()) for p in procs]
    wall = time.monotonic() - t0
    returncode = max(p.returncode for p, _, _ in outs)
    stdout = "".join(o for _, o, _ in outs)
    stderr = "".join(e for _, _, e in outs)
    after = procstat.snapshot(a.pid)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    extra = {"wrk_cpu_s": round(wrk_cpu, 3)}
    if cores:
        pc1, lc1 = procstat.cpus_times(a.proxy_cpu), procstat.cpus_times(a.load_cpu)
        be1 = procstat.snapshot(a.backend_pid)["cpu_s"] if a.backend_pid else 0.0
        kp1 = sum(procstat.thread_cpu(f"ksoftirqd/{c}") for c in a.proxy_cpu)
        kl1 = sum(procstat.thread_cpu(f"ksoftirqd/{c}") for c in a.load_cpu)
        proxy_cpu = after["cpu_s"] - before["cpu_s"]
        extra.update({
            "core_busy_s": round(busy(pc0, pc1), 3),
            "core_irq_s": round(pc1["irq"] - pc0["irq"], 3),
            # Softirq work the kernel defers to ksoftirqd (under heavy network
            # load) is charged to that thread, not to the proxy: it is the
            # proxy's traffic all the same, so it is counted apart.
            "ksoftirqd_s": round(kp1 - kp0, 3),
            # A task's utime+stime already holds the softirq work done while it
            # ran, so what is left of a core's busy time is another job's.
            "foreign_proxy_core_s": round(max(0.0, busy(pc0, pc1) - proxy_cpu - (kp1 - kp0)), 3),
            "foreign_load_core_s": round(
                max(0.0, busy(lc0, lc1) - wrk_cpu - (be1 - be0) - (kl1 - kl0)), 3),
            "steal_s": round(pc1["steal"] - pc0["steal"] + lc1["steal"] - lc0["steal"], 3),
            "backend_cpu_s": round(be1 - be0, 3),
        })

    with open(a.log, "w") as f:
        f.write("$ " + shlex.join(cmd) + f"  (x{a.parallel})\n" + stdout + stderr)
    rec = {
        "kind": "load",
        "proxy": a.proxy,
        "workload": a.workload,
        "round": a.round,
        "command": shlex.join(cmd) + (f"  (x{a.parallel})" if a.parallel > 1 else ""),
        "wall_s": round(wall, 3),
        **(parse_h2load(stdout) if tool == "h2load"
           else parse_s_time([o for _, o, _ in outs], wall) if tool == "s_time"
           else parse_wrk(stdout)),
        "cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
        "peak_rss_kib": after["hwm_kib"],
        "rss_kib": after["rss_kib"],
        "threads": after["threads"],
        "pids_changed": sorted(before["pids"]) != sorted(after["pids"]),
        **extra,
    }
    ok = returncode == 0 and "requests" in rec and procstat.alive(a.pid)
    # h2load falls back to HTTP/1.1 when the server does not choose h2.
    ok = ok and (not h2load or rec.get("protocol") == "h2")
    rec["ok"] = ok
    if rec.get("requests") and rec["cpu_s"] > 0:
        rec["req_per_cpu_s"] = rec["requests"] / rec["cpu_s"]
    if rec.get("requests") and rec.get("core_busy_s", 0) > 0:
        rec["req_per_core_s"] = rec["requests"] / rec["core_busy_s"]
    # Another job using more than 5% of a core during the run skews it.
    foreign = rec.get("foreign_proxy_core_s", 0) + rec.get("foreign_load_core_s", 0)
    rec["disturbed"] = foreign > 0.05 * wall
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")

    flags = []
    if rec["socket_errors"]:
        flags.append(f"socket errors {rec['socket_errors']}")
    if rec["non_2xx"]:
        flags.append(f"non-2xx {rec['non_2xx']}")
    if rec["pids_changed"]:
        flags.append("proxy process set changed during the run")
    if rec["disturbed"]:
        flags.append(f"other processes used {rec['foreign_proxy_core_s']:.2f} s of the proxy core, "
                     f"{rec['foreign_load_core_s']:.2f} s of the load core")
    if not ok:
        proto = f", protocol {rec.get('protocol')}" if h2load else ""
        flags.append(f"FAILED (exit {returncode}{proto}, see {a.log})")
    print(
        f"  {a.proxy:9} {a.workload:10} r{a.round}: "
        f"{rec.get('rps', 0):>10,.0f} req/s  "
        + (f"mean {rec.get('mean_ms') or 0:.3f} ms  " if h2load else
           f"p50 {rec.get('p50_ms', 0):.3f} ms  p99 {rec.get('p99_ms', 0):.3f} ms  "
           + (f"p99.9 {rec['p999_ms']:.3f} ms  " if "p999_ms" in rec else "") if tool == "wrk"
           else "")
        + f"cpu {rec['cpu_s']:.2f} s  "
        f"{rec.get('req_per_cpu_s', 0):>9,.0f} req/cpu-s  "
        f"peak {rec['peak_rss_kib'] / 1024:.1f} MiB"
        + ("  [" + "; ".join(flags) + "]" if flags else ""),
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
