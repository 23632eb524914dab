#!/usr/bin/env python3
"""CPU time and memory of a process tree, read from /proc.

A proxy under test is one process (ringside, haproxy -db) or a master with
workers (nginx). Everything here sums over the root and all its descendants;
/proc/PID/stat already sums the threads of one process.

    procstat.py PID         prints one JSON snapshot of the tree
    procstat.py --pids PID  prints the pids of the tree, one a line
    procstat.py --wait-quiet CPUS SECONDS
                            waits (up to SECONDS) until each of CPUS (e.g. 0,1)
                            is less than 10% busy over one second; exits 1 if
                            it never was (another job is using the machine)
"""
import json
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    # The command name is in parentheses and may itself contain spaces or ')'.
    return raw[raw.rindex(")") + 2:].split()


def tree(root):
    """The root pid and every live descendant, root first."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(name)[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def snapshot(root):
    """CPU seconds (user+system, all threads), RSS and peak RSS of the tree."""
    ticks = rss = hwm = threads = 0
    pids = []
    for pid in tree(root):
        try:
            f = _stat_fields(pid)
            # field 14 utime, 15 stime (1-based) -> index 11, 12 here
            ticks += int(f[11]) + int(f[12])
            threads += int(f[17])
            rss += _status_kib(pid, "VmRSS")
            hwm += _status_kib(pid, "VmHWM")
            pids.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return {
        "pids": pids,
        "threads": threads,
        "cpu_s": ticks / CLK_TCK,
        "rss_kib": rss,
        "hwm_kib": hwm,
    }


def cpu_times(cpu):
    """Seconds CPU `cpu` spent so far, from /proc/stat: task time (user, nice,
    system), interrupt time (irq, softirq: with IRQ time accounting the
    kernel's network receive work lands here, charged to no process), steal."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return {
                    "task": (v[0] + v[1] + v[2]) / CLK_TCK,
                    "irq": (v[5] + v[6]) / CLK_TCK,
                    "steal": v[7] / CLK_TCK if len(v) > 7 else 0.0,
                }
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def cpus_times(cpus):
    """cpu_times summed over the CPUs in `cpus`."""
    out = {"task": 0.0, "irq": 0.0, "steal": 0.0}
    for c in cpus:
        for k, v in cpu_times(c).items():
            out[k] += v
    return out


def thread_cpu(comm):
    """CPU seconds of the (kernel) thread named comm, e.g. ksoftirqd/1; 0 if none."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if f.read().strip() != comm:
                    continue
            fields = _stat_fields(name)
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, ValueError, IndexError):
            continue
    return 0.0


def wait_quiet(cpus, max_wait, threshold=0.10):
    """True once every cpu in cpus was under `threshold` busy for a second."""
    deadline = time.monotonic() + max_wait
    while True:
        t0 = [cpu_times(c) for c in cpus]
        time.sleep(1.0)
        t1 = [cpu_times(c) for c in cpus]
        worst = max(b["task"] - a["task"] + b["irq"] - a["irq"] for a, b in zip(t0, t1))
        if worst < threshold:
            return True
        if time.monotonic() > deadline:
            return False


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] not in "ZX"
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--wait-quiet":
        t = time.monotonic()
        quiet = wait_quiet([int(c) for c in sys.argv[2].split(",")], float(sys.argv[3]))
        if time.monotonic() - t > 2.5:
            print(f"  (waited {time.monotonic() - t:.0f} s for other jobs to leave the CPUs)", flush=True)
        sys.exit(0 if quiet else 1)
    elif len(sys.argv) == 3 and sys.argv[1] == "--pids":
        print("\n".join(str(p) for p in tree(int(sys.argv[2]))))
    elif len(sys.argv) == 2:
        print(json.dumps(snapshot(int(sys.argv[1]))))
    else:
        sys.exit("usage: procstat.py [--pids] PID")
