#!/usr/bin/env python3
"""System calls and TCP segments per proxied request: Portico against nginx and
HAProxy, same routes.

Each proxy is started over the bench's generated routes (bench.py's `http` variant:
keep-alive, small answers), warmed up, then `strace -c` is attached to all its
processes and threads while wrk sends keep-alive load. The counts are divided by the
requests wrk completed. strace slows every syscall down, so the request rate under it
means nothing; the calls each request takes do not change with it.

A second pass counts the TCP segments the machine sent and received during the load
(`nstat`, machine-wide: wrk and the backend included, nothing else runs), divided by
the requests: four data segments a request is the floor for a proxy on loopback, and a
pure ACK more would be the kernel work a proxy's reads and writes could cause.

    python3 benches/load/syscalls.py --portico target/release/ingress-controller
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402


def count(name, a, work):
    """(requests, {syscall: calls}) for one proxy under strace."""
    out = os.path.join(work, f"strace-{name}.txt")

    def strace(pids):
        tasks = []
        for pid in pids:
            try:
                tasks += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                pass
        return ["strace", "-c", "-o", out] + [x for t in tasks for x in ("-p", str(t))]

    r = bench.run_under(name, a, work, strace, 1)
    calls = {}
    with open(out) as f:
        for line in f:
            # % time, seconds, usecs/call, calls, [errors], syscall
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = calls.get(m.group(2), 0) + int(m.group(1))
    return r["requests"], calls


def segments(name, a, work):
    """(requests, {nstat counter: count}) for one proxy's load, machine-wide."""
    out = os.path.join(work, f"nstat-{name}.txt")
    # `nstat -n` starts the count; on SIGINT the counts since are written.
    script = (f"nstat -n >/dev/null; trap 'nstat -z > {out}; exit 0' INT; "
              "while :; do sleep 0.05; done")
    r = bench.run_under(name, a, work, lambda pids: ["bash", "-c", script], 0.5)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return r["requests"], counts


SEGMENT_COUNTERS = ["TcpOutSegs", "TcpInSegs", "TcpExtTCPPureAcks", "TcpExtDelayedACKs",
                    "TcpRetransSegs"]


def load_name(a):
    if a.variant == "h2":
        return "HTTP/2, %d connections of %d streams" % (a.h2_connections, a.h2_streams)
    return "keep-alive%s, %d connections" % (" over TLS" if a.variant == "https" else "",
                                             a.connections)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--duration", type=int, default=5, help="seconds of traced load")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--work", default="/tmp/portico-bench-syscalls")
    ap.add_argument("--proxies", default="portico,nginx,haproxy")
    ap.add_argument("--runtime", choices=["work-stealing", "per-core"], default="work-stealing",
                    help="Portico's --runtime")
    ap.add_argument("--variant", choices=["http", "https", "h2"], default="http",
                    help="http: wrk, keep-alive HTTP/1.1; https: the same over TLS; "
                         "h2: h2load, HTTP/2 over TLS (16 connections of 8 streams)")
    a = ap.parse_args()
    rows = bench.each_proxy(a, count)
    names = sorted({s for _, calls in rows.values() for s in calls},
                   key=lambda s: -max(c.get(s, 0) / max(n, 1) for n, c in rows.values()))
    print("system calls per request (strace -c, %s)" % load_name(a))
    print("  %-16s" % "" + "".join("%10s" % n for n in rows))
    for s in names:
        per = [c.get(s, 0) / max(n, 1) for n, c in rows.values()]
        if max(per) >= 0.01:
            print("  %-16s" % s + "".join("%10.2f" % v for v in per))
    totals = [sum(c.values()) / max(n, 1) for n, c in rows.values()]
    print("  %-16s" % "total" + "".join("%10.2f" % v for v in totals))
    print("  %-16s" % "requests" + "".join("%10d" % n for n, _ in rows.values()))
    rows = bench.each_proxy(a, segments)
    print("TCP segments per request, machine-wide (nstat, %s)" % load_name(a))
    print("  %-18s" % "" + "".join("%10s" % n for n in rows))
    for counter in SEGMENT_COUNTERS:
        per = [c.get(counter, 0) / max(n, 1) for n, c in rows.values()]
        print("  %-18s" % counter + "".join("%10.2f" % v for v in per))


if __name__ == "__main__":
    main()
