#!/usr/bin/env python3
"""Where each proxy's CPU goes, kernel included: `perf record` samples per request.

Each proxy is started over the bench's generated routes (bench.py's `http` variant:
keep-alive, small answers), warmed up, then `perf record -e cpu-clock` samples its
processes while wrk sends keep-alive load. Samples are grouped by where they fell: the
proxy's own code, the C library and allocator, and the kernel (split into the socket
send path, the receive path, epoll, the scheduler and the rest), and reported as
microseconds per request, so the three proxies' kernel shares can be compared
function by function. Needs root (kernel samples) and a perf that can read the kernel's
symbols; the machine's noise moves every figure, so read the proxies side by side.

    python3 benches/load/kernel.py --portico target/release/ingress-controller
    python3 benches/load/kernel.py --portico BIN --top 40    # the busiest symbols too
    python3 benches/load/kernel.py --portico BIN --pace-ms 2 # equal load, woken each time
"""

import argparse
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402

# Kernel symbols by the part of a request's path they belong to; first match wins.
GROUPS = [
    ("epoll", re.compile(r"epoll|ep_poll|ep_send|ep_item|ep_autoremove")),
    ("sched/wakeup", re.compile(r"schedule|sched_|enqueue|dequeue|try_to_wake|wake_up|"
                                r"update_curr|select_task|pick_next|switch|ttwu|psi_")),
    ("tcp send", re.compile(r"tcp_sendmsg|tcp_write|tcp_push|__tcp_transmit|tcp_transmit|"
                            r"ip_finish|ip_output|ip_queue|__dev_queue|dev_hard|loopback|"
                            r"ip_local_out|__ip_queue|tcp_event_new|skb_copy_datagram_from|"
                            r"sk_stream_alloc|tcp_stream_alloc|__alloc_skb|kmalloc_reserve|"
                            r"tcp_skb_entail|tcp_rate_skb_sent|tcp_small_queue|"
                            r"tcp_options_write|tcp_established_options")),
    ("tcp receive", re.compile(r"tcp_v4_rcv|tcp_rcv|tcp_data_queue|tcp_recvmsg|tcp_ack|"
                               r"ip_rcv|ip_local_deliver|__netif_receive|netif_rx|"
                               r"process_backlog|net_rx_action|__napi|skb_copy_datagram_iter|"
                               r"tcp_event_data_recv|tcp_queue_rcv|tcp_cleanup_rbuf|"
                               r"sock_def_readable|tcp_v4_do_rcv|skb_release|kfree_skb|"
                               r"__kfree_skb|tcp_clean_rtx|tcp_check_space|sk_wake_async|"
                               r"tcp_urg|tcp_validate|tcp_parse|__inet_lookup|"
                               r"inet_ehashfn|tcp_add_backlog|tcp_filter|sk_filter")),
    ("syscall entry", re.compile(r"entry_SYSCALL|do_syscall|syscall_exit|syscall_return|"
                                 r"__x64_sys|__sys_|sock_|__fdget|fput|fget|security_|"
                                 r"import_iovec|copy_msghdr|rw_verify|exit_to_user|"
                                 r"ksys_|vfs_|__check_object_size|__virt_addr_valid")),
]


def group_of(sym, dso):
    if dso.startswith("[kernel"):
        for name, rx in GROUPS:
            if rx.search(sym):
                return "kernel: " + name
        return "kernel: other"
    if "libc" in dso or "ld-linux" in dso:
        return "user: libc"
    return "user: proxy"


def record(name, a, work):
    """(requests, {(dso, symbol): samples}, sample period in seconds) for one proxy."""
    data = os.path.join(work, f"perf-{name}.data")
    freq = 4000
    r = bench.run_under(name, a, work, lambda pids: [
        "perf", "record", "-e", "cpu-clock", "-F", str(freq),
        "-p", ",".join(str(x) for x in pids), "-o", data], 0.5)
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                          "--sort", "dso,sym", "-F", "sample,dso,sym", "--percent-limit", "0"],
                         capture_output=True, text=True, check=True).stdout
    samples = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+\[[k.]\]\s+(.*)$", line)
        if m:
            samples[(m.group(2), m.group(3).strip())] += int(m.group(1))
    return r["requests"], samples, 1.0 / freq


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--duration", type=int, default=8, help="seconds of sampled load")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--work", default="/tmp/portico-bench-kernel")
    ap.add_argument("--proxies", default="portico,nginx,haproxy")
    ap.add_argument("--runtime", choices=["work-stealing", "per-core"], default="work-stealing",
                    help="Portico's --runtime")
    ap.add_argument("--variant", choices=["http", "https", "h2"], default="http",
                    help="http: wrk, keep-alive HTTP/1.1; https: the same over TLS; "
                         "h2: h2load, HTTP/2 over TLS (16 connections of 8 streams)")
    ap.add_argument("--top", type=int, default=0, help="also list the N busiest symbols")
    ap.add_argument("--pace-ms", type=int, default=0,
                    help="each wrk connection waits this long after an answer (bench.py's "
                         "--pace-ms: every proxy offered the same rate, so each request "
                         "also pays for waking the proxy)")
    a = ap.parse_args()
    rows = bench.each_proxy(a, record)
    per = {}
    for name, (n, samples, period) in rows.items():
        g = collections.Counter()
        for (dso, sym), c in samples.items():
            g[group_of(sym, dso)] += c
        per[name] = {k: v * period * 1e6 / max(n, 1) for k, v in g.items()}
    groups = sorted({k for v in per.values() for k in v})
    load = ("HTTP/2, %d connections of %d streams" % (a.h2_connections, a.h2_streams)
            if a.variant == "h2" else "keep-alive%s, %d connections%s"
            % (" over TLS" if a.variant == "https" else "", a.connections,
               ", paced %d ms" % a.pace_ms if a.pace_ms else ""))
    print("CPU µs per request by where it went (perf cpu-clock samples, %s)" % load)
    print("  %-22s" % "" + "".join("%10s" % n for n in rows))
    for k in groups:
        print("  %-22s" % k + "".join("%10.2f" % per[n].get(k, 0.0) for n in rows))
    for side in ("user", "kernel"):
        print("  %-22s" % (side + " total") + "".join(
            "%10.2f" % sum(v for k, v in per[n].items() if k.startswith(side)) for n in rows))
    print("  %-22s" % "total" + "".join("%10.2f" % sum(per[n].values()) for n in rows))
    print("  %-22s" % "requests" + "".join("%10d" % rows[n][0] for n in rows))
    if a.top:
        for name, (n, samples, period) in rows.items():
            print(f"\n{name}: busiest symbols, µs per request")
            for (dso, sym), c in samples.most_common(a.top):
                print("  %8.3f  %-28s %s" % (c * period * 1e6 / max(n, 1), dso[:28], sym[:90]))


if __name__ == "__main__":
    main()
