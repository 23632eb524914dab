#!/usr/bin/env python3
"""Sorts a CPU profile's samples into where the time goes.

    perf/profile_sum.py PROFILE.data [...]     (perf record output, e.g. from perf/run.sh --profile)

For each file: the share of the sampled CPU(s) that was idle, then the busy
time split into kernel groups (TCP/IP, io_uring, syscall entry and fd
lookup, scheduling and wake-ups, kernel memory, other) and user groups (the
proxy's own code by crate, memory copies, the allocator, TLS crypto, other).
"""
import re
import subprocess
import sys

KERNEL = [
    ('tcp/ip', r'^(__)?(tcp|ip|inet|skb|sk_|sock|net|dev_|napi|loopback|bbr|__dev|__netif|__napi|__sk|__skb|__sock|__inet|__ip|__tcp|validate_xmit|eth|release_sock|lock_sock|ipv4|nf_|__copy_skb|kfree_skb|consume_skb|raw_v4|__release_sock|process_backlog|__local_bh|do_softirq|handle_softirqs|__do_softirq|rps_|csum|__x64_sys_(send|recv)|__sys_(send|recv)|_copy_(to|from)_iter|copy_(to|from)_iter|rep_movs_alternative|simple_copy_to_iter|__check_object_size|check_heap_object|__virt_addr_valid)'),
    ('io_uring', r'^(__)?io_|^io_uring|^__io'),
    ('syscall entry, fd lookup', r'^(do_syscall_64|entry_|syscall_|__x64_sys|x64_sys_call|fget|fput|__fget|__fput|fdget|__fdget|exit_to_user|syscall_exit|__rcu_read)'),
    ('scheduling, wake-ups, timers', r'^(_raw_spin|__raw_callee|pv_|native_|finish_task_switch|__schedule|schedule|try_to_wake|ttwu|wake_up|__wake_up|select_task|enqueue|dequeue|update_|psi_|hrtimer|__hrtimer|read_tsc|ktime|__smp|smp_|sched_|pick_next|set_next|put_prev|__switch_to|switch_mm|__pv_queued|queued_spin|futex|do_futex|ep_|__ep|irq|__irq|asm_|sysvec|lapic|clockevents|tick_|__update|cpuacct|rcu_|__rcu|account|__cgroup_account)'),
    ('kernel memory', r'^(kmem_cache|__kmem|kmalloc|__kmalloc|kfree|__kfree|__memcg|memcg|mod_memcg|obj_cgroup|page_|__page|alloc_pages|__alloc_pages|free_unref|get_page|put_page|folio|__folio|slab|__slab|___slab)'),
]
USER_LIBC = [
    ('memory copies', r'memmove|memcpy|memset'),
    ('allocator', r'malloc|free|realloc|calloc|unlink_chunk|_int_|tcache|consolidate|sysmalloc|arena'),
]
USER_CRATE = re.compile(r'^<?(?:<)?([a-z_][a-z0-9_]*)::')


def samples(path):
    out = subprocess.run(['perf', 'report', '-i', path, '--stdio', '--no-children',
                          '--sort', 'comm,dso,sym', '-q', '--percent-limit', '0', '-F', 'overhead,comm,dso,sym'],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r'\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)', line)
        if m:
            yield float(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5).strip()


def group(comm, dso, priv, sym):
    if comm == 'swapper':
        return 'idle'
    if priv == 'k':
        for name, pat in KERNEL:
            if re.search(pat, sym):
                return 'k: ' + name
        return 'k: other'
    if 'libc' in dso:
        for name, pat in USER_LIBC:
            if re.search(pat, sym):
                return 'u: ' + name
        return 'u: libc other'
    if 'crypto' in dso or 'ssl' in dso or sym.startswith(('ring_core', 'ring::', '<ring::', 'aws_lc', 'rustls', '<rustls')):
        return 'u: tls'
    m = USER_CRATE.match(sym)
    return 'u: ' + (m.group(1) if m else dso)


def main():
    for path in sys.argv[1:]:
        total = {}
        for pct, comm, dso, priv, sym in samples(path):
            g = group(comm, dso, priv, sym)
            total[g] = total.get(g, 0.0) + pct
        idle = total.pop('idle', 0.0)
        busy = sum(total.values()) or 1.0
        print(f'== {path}: idle {idle:.1f}% of the sampled CPU; of the busy time:')
        for g, pct in sorted(total.items(), key=lambda kv: -kv[1]):
            if pct / busy >= 0.005:
                print(f'   {100 * pct / busy:5.1f}%  {g}')


if __name__ == '__main__':
    main()
