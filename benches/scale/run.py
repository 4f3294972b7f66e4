#!/usr/bin/env python3
"""Portico at scale over a manifest folder (see benches/RESULTS.md).

  benches/scale/run.py --portico target/release/ingress-controller
      [--ingresses 10000 --paths 5 --secrets 1000] [--edits 10]

Writes the folder with benches/gen.py (one file per app: Service, 3-pod EndpointSlice,
Ingress, and for every 10th app a TLS Secret), starts Portico on it and reports:
  time to ready   process start until /readyz answers 200 (everything loaded, compiled,
                  first config published)
  peak RSS        VmHWM after start-up and after the edits
  edit latency    one app file rewritten (atomically, as editors do) with one more path,
                  until a request for that path is served by its backend instead of 404;
                  then the path is removed again, until 404 again. Median of --edits.
  idle CPU        CPU time Portico spends per second over --idle seconds with no edits
                  and no requests: the folder's periodic walk (every 5 s), timers.
The edited app's EndpointSlice points at a small local backend so "served" means a real
200 from it.
"""

import argparse
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import gen  # noqa: E402


class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def status(port, host, path, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(32).decode(errors="replace")
            return int(head[9:12]) if head.startswith("HTTP/1.") else None
    except (OSError, ValueError):
        return None


def cpu_s(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--ingresses", type=int, default=10000)
    ap.add_argument("--paths", type=int, default=5)
    ap.add_argument("--secrets", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--idle", type=int, default=20, help="seconds of idle CPU measured")
    ap.add_argument("--worker-threads", type=int, default=0, help="0: Portico's default")
    ap.add_argument("--work", default="/tmp/portico-bench-scale")
    ap.add_argument("--http-port", type=int, default=28080)
    ap.add_argument("--admin-port", type=int, default=28254)
    a = ap.parse_args()

    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    t = time.time()
    gen.cmd_scale(argparse.Namespace(out=work, ingresses=a.ingresses, paths=a.paths, secrets=a.secrets))
    print(f"generated {a.ingresses} Ingresses / {a.ingresses * a.paths} paths / {a.secrets} TLS Secrets "
          f"in {time.time() - t:.1f}s under {work}/manifests", flush=True)

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    bport = backend.server_address[1]

    # The app whose file is edited: its EndpointSlice points at the local backend.
    k = a.ingresses // 2
    app = os.path.join(work, "manifests", f"{k // 1000:02d}", f"vh{k}.yaml")
    paths = [f"/svc{p}" for p in range(a.paths)]

    def app_text(extra):
        return "---\n".join([gen.service(f"vh{k}"),
                             gen.endpoint_slice(f"vh{k}", ["127.0.0.1"], bport),
                             gen.ingress(f"vh{k}", gen.host(k), f"vh{k}", paths, None, extra)])

    gen.write_atomic(app, app_text(None))

    cmd = [a.portico, "--manifests", os.path.join(work, "manifests"),
           "--http-addr", f"127.0.0.1:{a.http_port}", "--https-addr", "127.0.0.1:0",
           "--admin-addr", f"127.0.0.1:{a.admin_port}"]
    if a.worker_threads:
        cmd += ["--worker-threads", str(a.worker_threads)]
    log = open(os.path.join(work, "portico.log"), "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
    try:
        ready = None
        while time.monotonic() - t0 < 300:
            if proc.poll() is not None:
                sys.exit(f"Portico exited with {proc.returncode}; see {work}/portico.log")
            if status(a.admin_port, "localhost", "/readyz", 0.5) == 200:
                ready = time.monotonic() - t0
                break
            time.sleep(0.01)
        if ready is None:
            sys.exit("Portico not ready after 300s")
        served = None
        while time.monotonic() - t0 < 300:
            if status(a.http_port, gen.host(k), paths[0]) == 200:
                served = time.monotonic() - t0
                break
            time.sleep(0.01)
        rss_ready = vm(proc.pid, "VmHWM")
        print(f"time to ready (/readyz 200): {ready:.3f}s; first request served: {served:.3f}s; "
              f"peak RSS {rss_ready:.1f} MiB (RSS now {vm(proc.pid, 'VmRSS'):.1f} MiB)", flush=True)

        lat = []
        for e in range(a.edits):
            adding = e % 2 == 0
            want = 200 if adding else 404
            if status(a.http_port, gen.host(k), "/fresh") == want:
                sys.exit("the edit is already in effect before it is written")
            t1 = time.monotonic()
            gen.write_atomic(app, app_text("/fresh" if adding else None))
            while time.monotonic() - t1 < 60:
                if status(a.http_port, gen.host(k), "/fresh") == want:
                    break
                time.sleep(0.001)
            else:
                sys.exit(f"edit {e} not served within 60s")
            lat.append((time.monotonic() - t1) * 1000)
            print(f"edit {e + 1} ({'add' if adding else 'remove'} a path): served after {lat[-1]:.0f} ms",
                  flush=True)
            time.sleep(0.5)
        idle = None
        if a.idle:
            time.sleep(1)
            c0, t2 = cpu_s(proc.pid), time.monotonic()
            time.sleep(a.idle)
            idle = (cpu_s(proc.pid) - c0) * 1000 / (time.monotonic() - t2)
        print(f"\nscale: {a.ingresses} Ingresses / {a.ingresses * a.paths} paths / {a.secrets} TLS Secrets")
        print(f"  time to ready    {ready:.3f} s")
        print(f"  peak RSS         {max(rss_ready, vm(proc.pid, 'VmHWM') or 0):.1f} MiB")
        if lat:
            print(f"  edit -> served   median {statistics.median(lat):.0f} ms "
                  f"[{min(lat):.0f}-{max(lat):.0f}] over {len(lat)} edits")
        if idle is not None:
            print(f"  idle CPU         {idle:.1f} ms per second over {a.idle} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        backend.shutdown()


if __name__ == "__main__":
    main()
