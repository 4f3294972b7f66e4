#!/usr/bin/env python3
"""Where a request's time goes: the proxy's own share of it against the pod's.

wrk's latency is the whole round trip, wrk -> proxy -> pod -> proxy -> wrk, on a machine
where wrk and the pod share one CPU, so its p99 moves with how that CPU is shared as
much as with the proxy. This splits it. While paced keep-alive load (bench.py's `http`
variant, `--pace-ms`) runs through one proxy, `perf record` traces the socket system
calls of wrk, the proxy and the pod, and `ss` names the two ends of every connection.
Each request is then followed through eight points:

    wrk writes (t0) -> the proxy reads it -> the proxy writes to the pod (t2)
    -> the pod reads it -> the pod writes the answer (t4) -> the proxy reads it
    -> the proxy writes to wrk (t6) -> wrk reads it (t7)

and split into the proxy's share, (t2 - t0) + (t6 - t4): its wake-up, its queue and its
work, with the kernel's delivery over loopback; the pod's, t4 - t2; and the whole,
t7 - t0. The proxy's share is split again into its waits (from a write until the proxy
reads it) and its work (from that read to its own write). Tracing slows every system
call, so the absolute figures are larger than untraced ones; read the proxies side by
side, measured in the same run. Last, the time the proxy's serving threads spent ready
to run but waiting for their CPU (bench.py's run-queue column): on this machine other
work takes turns on the proxy's CPU, and every request queued meanwhile waits for it.
Needs root (the syscall tracepoints), perf and ss.

    python3 benches/load/latency.py --portico target/release/ingress-controller
"""

import argparse
import bisect
import collections
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402

SENDS = ("write", "writev", "sendmsg", "sendto")
RECVS = ("read", "recvfrom")
EVENTS = ",".join([f"syscalls:sys_enter_{s}" for s in SENDS + RECVS]
                  + [f"syscalls:sys_exit_{s}" for s in RECVS])


def connection_ends(pids):
    """{(pid, fd): (peer pid, peer fd)} for the established TCP connections between
    `pids`, from `ss -tnp`."""
    ends = {}
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+\d+\s+(\S+)\s+(\S+)\s+users:\((.*)\)", line)
        if not m:
            continue
        for pid, fd in re.findall(r"pid=(\d+),fd=(\d+)", m.group(3)):
            if int(pid) in pids:
                ends.setdefault((m.group(1), m.group(2)), []).append((int(pid), int(fd)))
    peers = {}
    for (local, remote), mine in ends.items():
        for end in mine:
            for other in ends.get((remote, local), []):
                peers[end] = other
    return peers


def read_trace(data):
    """{(pid, fd): ([send times], [times a read returned data])}, and the proxy side's
    per-thread order of events, from a `perf record` of EVENTS."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,tid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    sends, recvs = collections.defaultdict(list), collections.defaultdict(list)
    reading = {}
    by_thread = collections.defaultdict(list)  # tid: [(time, "send"|"recv", pid, fd)]
    rx = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)")
    for line in out.splitlines():
        m = rx.match(line)
        if not m:
            continue
        pid, tid, t, side, call, rest = (int(m.group(1)), int(m.group(2)), float(m.group(3)),
                                         m.group(4), m.group(5), m.group(6))
        if side == "enter":
            fd = int(re.search(r"fd: (0x[0-9a-f]+|\d+)", rest).group(1), 0)
            if call in SENDS:
                sends[(pid, fd)].append(t)
                by_thread[tid].append((t, "send", pid, fd))
            else:
                reading[tid] = fd
            continue
        ret = int(re.search(r"0x[0-9a-f]+", rest).group(0), 16)
        fd = reading.pop(tid, None)
        if fd is not None and 0 < ret < 1 << 62:
            recvs[(pid, fd)].append(t)
            by_thread[tid].append((t, "recv", pid, fd))
    return sends, recvs, by_thread


def after(times, t):
    """The first of sorted `times` at or after `t`, or None."""
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def before(times, t):
    """The last of sorted `times` at or before `t`, or None."""
    i = bisect.bisect_right(times, t)
    return times[i - 1] if i else None


# What `follow` gives for each request, in this order.
PARTS = ("wait for the request", "work on the request", "wait for the answer",
         "work on the answer", "proxy's share", "pod's share", "whole")


def follow(proxy_pids, wrk_pid, peers, sends, recvs, by_thread):
    """For every request followed end to end, its PARTS in µs."""
    client_ends = {e for e, peer in peers.items() if e[0] in proxy_pids and peer[0] == wrk_pid}
    out = []
    for events in by_thread.values():
        for i, (t1, kind, pid, fd) in enumerate(events):
            x = (pid, fd)
            if kind != "recv" or x not in client_ends:
                continue
            # The proxy forwards a request in the same turn it reads it: the thread's
            # next write is to the pod.
            nxt = next((e for e in events[i + 1:] if e[1] == "send"), None)
            if nxt is None or (nxt[2], nxt[3]) in client_ends:
                continue
            t2, y = nxt[0], (nxt[2], nxt[3])
            w, b = peers.get(x), peers.get(y)
            if w is None or b is None:
                continue
            t0 = before(sends[w], t1)
            # The pod reads and answers, the proxy reads the answer and writes it to wrk,
            # wrk reads it: each the first such call after the one before.
            points, t = [], t2
            for times in (recvs.get(b, []), sends.get(b, []), recvs.get(y, []),
                          sends.get(x, []), recvs.get(w, [])):
                t = after(times, t)
                if t is None:
                    break
                points.append(t)
            if t0 is None or len(points) < 5:
                continue
            _, t4, t5, t6, t7 = points
            out.append(tuple(x * 1e6 for x in (t1 - t0, t2 - t1, t5 - t4, t6 - t5,
                                               (t2 - t0) + (t6 - t4), t4 - t2, t7 - t0)))
    return out


def measure(name, a, work, backend_pids):
    p = bench.Proxy(name, a, work)
    p.start()
    data = os.path.join(work, f"latency-{name}.data")
    try:
        bench.run_wrk(a, work, 2)
        wrk = subprocess.Popen(bench.wrk_cmd(a, work, a.duration + 3),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        proxy_pids = set(bench.tree_pids(p.proc.pid))
        pids = proxy_pids | backend_pids | {wrk.pid}
        peers = connection_ends(pids)
        sched0 = bench.schedstats(p.proc.pid)
        subprocess.run(["perf", "record", "-q", "-e", EVENTS, "-o", data,
                        "-p", ",".join(str(x) for x in sorted(pids)),
                        "--", "sleep", str(a.duration)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        waited = bench.run_queue_ms(sched0, bench.schedstats(p.proc.pid))
        wrk.send_signal(signal.SIGINT)
        wrk.wait(timeout=30)
    finally:
        p.stop()
    return follow(proxy_pids, wrk.pid, peers, *read_trace(data)), waited


def pct(vals, q):
    return vals[min(len(vals) - 1, int(q * len(vals)))] if vals else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--duration", type=int, default=3, help="seconds of traced load")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--pace-ms", type=int, default=2,
                    help="each wrk connection waits this long after an answer")
    ap.add_argument("--rounds", type=int, default=1, help="proxies interleaved, this many times")
    ap.add_argument("--work", default="/tmp/portico-bench-latency")
    ap.add_argument("--proxies", default="portico,nginx",
                    help="proxies that forward a request in the turn they read it; HAProxy "
                         "writes to the pod later in its loop, so its requests cannot be "
                         "followed this way")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    bench.prepare(a, work)
    backend = bench.start_backend(a, work, 13)
    rows, waits = collections.defaultdict(list), collections.defaultdict(list)
    try:
        backend_pids = set(bench.tree_pids(backend.pid))
        for _ in range(a.rounds):
            for name in a.proxies.split(","):
                reqs, waited = measure(name, a, work, backend_pids)
                rows[name] += reqs
                waits[name].append(waited)
    finally:
        backend.terminate()
        backend.wait()
    qs = (0.5, 0.9, 0.99, 0.999)
    print("µs per request, paced %d ms, %d connections (traced: compare side by side)"
          % (a.pace_ms, a.connections))
    print("  %-9s %-21s %9s" % ("proxy", "part", "requests")
          + "".join("%9s" % ("p%g" % (q * 100)) for q in qs))
    for name, reqs in rows.items():
        for col, part in enumerate(PARTS):
            vals = sorted(r[col] for r in reqs)
            print("  %-9s %-21s %9d" % (name, part, len(vals))
                  + "".join("%9.0f" % pct(vals, q) for q in qs))
    print("Run-queue wait of the proxy's serving threads over each traced run (ms): "
          + "; ".join("%s %s" % (n, ", ".join("%.1f" % w for w in ws)) for n, ws in waits.items()))


if __name__ == "__main__":
    main()
