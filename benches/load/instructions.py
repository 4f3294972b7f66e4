#!/usr/bin/env python3
"""Instructions Portico executes per proxied request, counted by valgrind's callgrind.

Wall-clock figures on a shared machine move with whatever else runs; instruction counts
do not. This starts the same backend and routes as bench.py's `http` variant, runs
Portico under callgrind, warms it up, zeroes the counters, sends keep-alive load with
wrk, dumps the counters and divides by the requests wrk completed. User-space only: the
kernel's share of each request (the socket syscalls) is not counted.

    python3 benches/load/instructions.py --portico target/release/ingress-controller
    python3 benches/load/instructions.py --portico target/release/ingress-controller \
        --proxies portico,nginx,haproxy
    callgrind_annotate --inclusive=yes /tmp/portico-bench-cg/callgrind.portico.* | head -60

nginx (without its master process) and HAProxy (without master-worker) are counted the
same way, on the same routes and backend, so the ratio is of like for like.

`--atomics` also counts the locked read-modify-writes executed per request (x86
`lock`-prefixed instructions and `xchg` with memory: reference counts, mutexes, the
runtime's task and readiness states). Each costs several times an ordinary instruction,
so they matter beyond their number; a single-threaded event loop such as nginx's needs
almost none. The busiest callers are listed too.
"""

import argparse
import glob
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--work", default="/tmp/portico-bench-cg")
    ap.add_argument("--proxies", default="portico",
                    help="comma-separated: portico, nginx, haproxy, tcp-relay (bench.py's; each "
                         "counted the same way)")
    ap.add_argument("--workers", type=int, default=1, help="Portico's --worker-threads")
    ap.add_argument("--runtime", choices=["work-stealing", "per-core"], default="work-stealing",
                    help="Portico's --runtime")
    ap.add_argument("--atomics", action="store_true",
                    help="also count locked read-modify-writes per request (needs objdump)")
    a = ap.parse_args()
    counts = bench.each_proxy(a, lambda name, a, work: measure(a, work, name))
    if "portico" in counts:
        for name, n in counts.items():
            if name != "portico":
                print(f"portico / {name}: {counts['portico'] / n:.2f}x")


def proxy_cmd(a, work, name):
    """The proxy's command line, one process, so callgrind sees every request."""
    if name == "portico":
        return bench.portico_cmd(a, work)
    if name == "nginx":
        # No master: the one process serving is the one callgrind runs.
        return ["nginx", "-c", os.path.join(work, "nginx.conf"),
                "-g", "daemon off; master_process off;"]
    if name == "haproxy":
        # Without -W HAProxy serves from the process it was started as.
        return ["haproxy", "-db", "-f", os.path.join(work, "haproxy.cfg")]
    if name == "tcp-relay":
        return ["haproxy", "-db", "-f", bench.write_relay_cfg(a, work)]
    sys.exit(f"unknown proxy {name}")


def measure(a, work, name):
    # Instruction-level positions, written out in full, for `--atomics`.
    positions = ["--dump-instr=yes", "--compress-pos=no"] if a.atomics else []
    cmd = ["valgrind", "--tool=callgrind", "--compress-strings=no", *positions,
           f"--callgrind-out-file={work}/callgrind.{name}.%p"] + proxy_cmd(a, work, name)
    log = open(os.path.join(work, f"{name}.log"), "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True,
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        bench.wait_port(a.http_port, deadline_s=300, proc=proc)
        bench.wait_routed(a.http_port, deadline_s=300, proc=proc)
        wrk = ["wrk", "-t", "1", "-c", str(a.connections), "--latency",
               "-s", os.path.join(work, "requests.lua"), f"http://127.0.0.1:{a.http_port}/"]
        subprocess.run(wrk[:5] + ["-d", "3s"] + wrk[5:], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        out = subprocess.run(wrk[:5] + ["-d", f"{a.duration}s"] + wrk[5:],
                             capture_output=True, text=True, check=True).stdout
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        r = bench.parse_wrk(out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        bench.wait_port_free(a.http_port)
    # The dump taken after the measured load is the newest numbered file.
    dumps = sorted(glob.glob(f"{work}/callgrind.{name}.{proc.pid}.*"), key=os.path.getmtime)
    if not dumps or not r.get("requests"):
        sys.exit(f"{name}: no callgrind dump or no requests (wrk: {r})")
    with open(dumps[-1]) as f:
        total = next(int(m.group(1)) for line in f if (m := re.match(r"summary: (\d+)", line)))
    per = total / r["requests"]
    print(f"{name}: requests {r['requests']} non-2xx {r['non2xx']} socket errors {r['socket_errors']}")
    print(f"{name}: instructions per request: {per:,.0f}   (dump: {dumps[-1]})")
    if a.atomics:
        atomics, callers = locked_per_request(dumps[-1], r["requests"])
        print(f"{name}: locked read-modify-writes per request: {atomics:.1f}")
        for fn, n in callers[:12]:
            print(f"    {n:6.2f}  {fn[:140]}")
    return per


# `lock`-prefixed instructions, and `xchg` with a memory operand (locked implicitly).
LOCKED = re.compile(r"^\s*([0-9a-f]+):\s+(lock\s|xchg\s+\S*\()")


def locked_addresses(path):
    """Addresses of the locked instructions in one executable or library."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                         capture_output=True, text=True).stdout
    return {int(m.group(1), 16) for m in map(LOCKED.match, out.splitlines()) if m}


def locked_per_request(dump, requests):
    """(locked instructions executed per request, [(function, per request)] busiest
    first), from a dump with instruction positions. Callgrind gives each object's
    addresses as its file does, so objdump's addresses match them."""
    locked, by_fn, total = {}, {}, 0
    obj = fn = None
    after_call = False
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
                if obj not in locked:
                    locked[obj] = locked_addresses(obj) if os.path.isfile(obj) else set()
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                # The next line is the call's inclusive cost, not an instruction's own.
                after_call = True
            elif line.startswith("0x"):
                if after_call:
                    after_call = False
                    continue
                fields = line.split()
                if int(fields[0], 16) in locked.get(obj, ()):
                    n = int(fields[-1])
                    total += n
                    by_fn[fn] = by_fn.get(fn, 0) + n
    callers = sorted(((k, v / requests) for k, v in by_fn.items()), key=lambda kv: -kv[1])
    return total / requests, callers


if __name__ == "__main__":
    main()
