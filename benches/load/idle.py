#!/usr/bin/env python3
"""Memory per idle keep-alive client connection: Portico against nginx, same routes.

Each proxy is started fresh over the bench's generated routes, then N clients each open a
connection, send one keep-alive request, read the answer and go quiet. The proxy's
resident memory (VmRSS, summed over its processes) is read before, with the N
connections idle, and again a few seconds after they all closed (what was given back).

    python3 benches/load/idle.py --portico target/release/ingress-controller --conns 10000
"""

import argparse
import os
import resource
import selectors
import shutil
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402
import gen  # noqa: E402


def rss_kib(root):
    return bench.peak_rss_kib(root, field="VmRSS")


def open_idle(port, n, host="vh0.bench.test", path="/p0/item"):
    """n connections, each with one answered keep-alive request; returns the sockets."""
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    socks, pending = [], {}
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
        s.sendall(req)
        pending[s.fileno()] = s
        sel.register(s, selectors.EVENT_READ)
    got = {}
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(65536)
            buf = got.get(s.fileno(), b"") + data
            got[s.fileno()] = buf
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) >= length or not data:
                    sel.unregister(s)
                    pending.pop(s.fileno(), None)
    sel.close()
    if pending:
        raise RuntimeError(f"{len(pending)} connections got no answer")
    return socks


def measure(name, a, work, conns):
    p = bench.Proxy(name, a, work)
    p.start()
    try:
        time.sleep(1)
        before = rss_kib(p.proc.pid)
        socks = open_idle(a.http_port, conns)
        time.sleep(2)
        idle = rss_kib(p.proc.pid)
        for s in socks:
            s.close()
        time.sleep(5)
        after = rss_kib(p.proc.pid)
    finally:
        p.stop()
    return before, idle, after


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--work", default="/tmp/portico-bench-idle")
    ap.add_argument("--proxies", default="portico,nginx")
    a = ap.parse_args()
    a.vhosts, a.paths, a.load_cpu, a.proxy_cpu = 10, 4, 1, 0
    a.http_port, a.https_port, a.admin_port, a.backend_port = 18080, 18443, 18254, 19000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.conns + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    # Portico's default cap is half the open-file limit; this bench wants them all.
    os.environ["PORTICO_MAX_CONNECTIONS"] = str(need)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    gen.cmd_load(argparse.Namespace(out=work, vhosts=a.vhosts, paths=a.paths,
                                    backend_port=a.backend_port, http_port=a.http_port,
                                    https_port=a.https_port))
    conf = os.path.join(work, "nginx.conf")
    with open(conf) as f:
        text = f.read()
    # Room for the clients; nginx's default 1024-connection worker would refuse them.
    text = text.replace("events { worker_connections 8192; }",
                        f"worker_rlimit_nofile {need * 2};\nevents {{ worker_connections {need}; }}")
    with open(conf, "w") as f:
        f.write(text)
    backend = bench.start_backend(a, work, 13)
    try:
        rows = {}
        for name in a.proxies.split(","):
            rows[name] = measure(name, a, work, a.conns)
    finally:
        backend.terminate()
        backend.wait()
    print(f"{a.conns} idle keep-alive connections, RSS in KiB (before / idle / 5 s after closing)")
    per = {}
    for name, (before, idle, after) in rows.items():
        per[name] = (idle - before) * 1024 / a.conns
        print(f"  {name:8} {before:8} {idle:8} {after:8}   {per[name] / 1024:6.2f} KiB per connection")
    if per.get("nginx"):
        print(f"  portico / nginx per connection: {per['portico'] / per['nginx']:.2f}x")


if __name__ == "__main__":
    main()
