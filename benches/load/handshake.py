#!/usr/bin/env python3
"""CPU per new TLS connection: Portico against nginx and HAProxy, same certificate.

Each proxy is started over the bench's generated routes (RSA 2048 certificate, the
one `bench.py`'s HTTPS suites use). `openssl s_time -new` then opens connection after
connection to the HTTPS port from the load CPU, each a full handshake (no resumption)
that is closed at once, for `--duration` seconds. The proxy's CPU time (user +
system, all its processes) over that run, divided by the handshakes completed, is what
a new client costs it: TCP accept and close included, as a client that reconnects
pays them too. `--rounds` interleaves the proxies, so noise hits all alike.

A burst of new connections is also what every keep-alive run of `bench.py` starts
with, so a proxy whose handshakes cost more holds its first requests longer: that
shows in the tail of a short run.

    python3 benches/load/handshake.py --portico target/release/ingress-controller
"""

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402


def handshakes(name, a, work):
    """(handshakes completed, CPU µs per handshake) for one run against proxy `name`."""
    p = bench.Proxy(name, a, work)
    p.start()
    try:
        cpu0 = bench.cpu_seconds(p.proc.pid)
        out = subprocess.run(
            ["taskset", "-c", str(a.load_cpu), "openssl", "s_time", "-new",
             "-connect", f"127.0.0.1:{a.https_port}", "-time", str(a.duration)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
        cpu = bench.cpu_seconds(p.proc.pid) - cpu0
    finally:
        p.stop()
    m = re.search(r"^(\d+) connections in [\d.]+s", out, re.M)
    if not m or int(m.group(1)) == 0:
        sys.exit(f"{name}: openssl s_time completed no handshake:\n{out[-2000:]}")
    n = int(m.group(1))
    return n, cpu * 1e6 / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--duration", type=int, default=5, help="seconds of handshakes per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/portico-bench-handshake")
    ap.add_argument("--proxies", default="portico,nginx,haproxy")
    a = ap.parse_args()
    results = {name: [] for name in a.proxies.split(",")}
    for _ in range(a.rounds):
        for name, got in bench.each_proxy(a, handshakes).items():
            results[name].append(got)
            print(f"{name}: {got[0]} handshakes, {got[1]:.0f} µs CPU each", flush=True)
    print("\nCPU µs per new TLS connection (openssl s_time -new, RSA 2048), median [min-max]")
    med = {}
    for name, runs in results.items():
        per = sorted(r[1] for r in runs)
        med[name] = bench.med(per)
        print(f"  {name:10} {med[name]:8.0f} [{per[0]:.0f}-{per[-1]:.0f}]")
    first, *others = list(med)
    for other in others:
        print(f"  {first}/{other}: {med[first] / med[other]:.2f}x")


if __name__ == "__main__":
    main()
