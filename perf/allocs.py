#!/usr/bin/env python3
"""What a proxy's heap holds at its peak: live allocations by size and call site.

    # uprobes on glibc's allocator (once per boot):
    L=/lib/x86_64-linux-gnu/libc.so.6
    perf probe -x $L -a 'malloc_sz=malloc bytes=%di:u64'   -a 'malloc_ret=malloc%return ret=$retval'
    perf probe -x $L -a 'calloc_sz=calloc n=%di:u64 sz=%si:u64' -a 'calloc_ret=calloc%return ret=$retval'
    perf probe -x $L -a 'realloc_p=realloc ptr=%di:u64 bytes=%si:u64' -a 'realloc_ret=realloc%return ret=$retval'
    perf probe -x $L -a 'free_p=free ptr=%di:u64'
    # record while a workload runs; ringside without address randomisation,
    # so call sites map back to the binary (setarch -R in a wrapper script):
    perf record -a -o allocs.data -e 'probe_libc:*' &  perf/run.sh --quick --only ringside \\
        --workloads idle10k --ringside /path/to/wrapper --no-build --no-save;  kill -INT %1
    perf script -i allocs.data -F comm,pid,tid,time,event,trace > allocs.txt
    perf/allocs.py allocs.txt --binary target/release/ringside

Replays every allocation and free of the threads named ringside*, finds the
moment the most bytes were live, and lists what was live then, largest
totals first, each call site resolved with addr2line (PIE base 0x555555554000,
as under setarch -R).
"""
import argparse
import collections
import re
import subprocess

EVENT = re.compile(r'\s*(\S+)\s+\d+/(\d+)\s+[\d.]+:\s+probe_libc:(\S+):\s+\(\w+(?: <- (\w+))?\)\s*(.*)')
PIE_BASE = 0x555555554000


def replay(lines, stop=None):
    """Live allocations after line `stop` (all lines if None), and the peak."""
    pending, live = {}, {}
    cur = peak = peak_at = 0
    for i, line in enumerate(lines):
        if stop is not None and i > stop:
            break
        m = EVENT.match(line)
        if not m or not m.group(1).startswith('ringside'):
            continue
        _, tid, ev, caller, args = m.groups()
        a = dict(kv.split('=', 1) for kv in args.split())
        # An allocator call made inside libc hits its PLT probe first, then
        # the function's own: the later (inner) one wins.
        if ev == 'malloc_sz':
            pending[tid] = (int(a['bytes']), None)
        elif ev == 'calloc_sz':
            pending[tid] = (int(a['n']) * int(a['sz']), None)
        elif ev == 'realloc_p':
            pending[tid] = (int(a['bytes']), int(a['ptr']))
        elif ev.endswith('__return'):
            p = pending.pop(tid, None)
            if p is None:
                continue
            size, old = p
            if old and old in live:
                cur -= live.pop(old)[0]
            live[int(a['ret'], 16)] = (size, caller)
            cur += size
            if cur > peak:
                peak, peak_at = cur, i
        elif ev == 'free_p':
            old = live.pop(int(a['ptr']), None)
            if old:
                cur -= old[0]
    return live, peak, peak_at


def where(binary, addr):
    if not binary:
        return addr
    off = int(addr, 16) - PIE_BASE
    out = subprocess.run(['addr2line', '-f', '-C', '-i', '-e', binary, hex(off)],
                         capture_output=True, text=True).stdout.split('\n')
    # The innermost frame outside alloc/core/std says who asked.
    names = [n for n in out[0::2] if n and not n.startswith(('alloc::', 'core::', 'std::', '<alloc'))]
    return names[0] if names else out[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('script')
    ap.add_argument('--binary')
    ap.add_argument('--top', type=int, default=20)
    args = ap.parse_args()
    lines = [line for line in open(args.script) if 'ringside' in line]
    _, peak, at = replay(lines)
    live, _, _ = replay(lines, at)
    print(f'peak live: {peak:,} bytes')
    sites = collections.Counter((size, caller) for size, caller in live.values())
    ranked = sorted(sites.items(), key=lambda kv: -kv[0][0] * kv[1])[:args.top]
    for (size, caller), n in ranked:
        print(f'{n:8,} x {size:7,} B = {n * size:11,} B  {where(args.binary, caller)}')


if __name__ == '__main__':
    main()
