#!/usr/bin/env python3
"""HTTP/2 to pods and gRPC: Portico against nginx on the same pinned core.

Two comparisons, each over fresh proxy processes in interleaved rounds (medians, with the
min-max spread), CPU time per request read from /proc as bench.py does:

- upstream: wrk (HTTP/1.1 keep-alive) through Portico to one pod, once over pooled
  HTTP/1.1 connections (`backend-protocol: HTTP`) and once over shared HTTP/2 ones
  (`H2C`). nginx cannot proxy_pass over HTTP/2, so its HTTP/1.1 run is the reference.
- grpc: h2load sending gRPC unary calls (POST, `application/grpc`, a 10-byte message) over
  h2c to Portico (`backend-protocol: GRPC`) and to nginx (`grpc_pass`), both relaying to
  the same gRPC pod.

The pod is nginx on the load core: HTTP/1.1 on one port, h2c on another, answering a gRPC
call with a static message and `grpc-status: 0` in the trailers.

    python3 benches/load/upstream_h2.py --portico target/release/ingress-controller
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import cpu_seconds, parse_wrk, peak_rss_kib, wait_port  # noqa: E402

PROXY_PORT = 18080
ADMIN_PORT = 18254
NGINX_GRPC_PORT = 18081
POD_H1 = 19000
POD_H2C = 19100

# One gRPC message: uncompressed flag, 4-byte length, 10 bytes.
GRPC_MESSAGE = b"\x00\x00\x00\x00\x0a" + b"0123456789"


def nginx_common(root):
    for d in ["tmp-body", "tmp-proxy", "tmp-fastcgi", "tmp-uwsgi", "tmp-scgi"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    return f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp-body;
    proxy_temp_path {root}/tmp-proxy;
    fastcgi_temp_path {root}/tmp-fastcgi;
    uwsgi_temp_path {root}/tmp-uwsgi;
    scgi_temp_path {root}/tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_requests 100000000;
"""


def start_pod(a, work):
    root = os.path.join(work, "pod")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "body"), "wb") as f:
        f.write(b"x" * 13)
    with open(os.path.join(root, "grpc"), "wb") as f:
        f.write(GRPC_MESSAGE)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_common(root) + f"""
    server {{
        listen 127.0.0.1:{POD_H1};
        location / {{ root {root}; default_type text/plain; try_files /body =500; }}
    }}
    server {{
        listen 127.0.0.1:{POD_H2C} http2;
        location / {{ root {root}; default_type text/plain; try_files /body =500; }}
        location /bench.Echo/ {{
            # nginx answers a static file to GET only; a gRPC call is a POST.
            error_page 405 =200 /grpc;
            root {root};
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            try_files /grpc =500;
        }}
        location = /grpc {{
            internal;
            root {root};
            default_type application/grpc;
            add_trailer grpc-status 0 always;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", str(a.load_cpu), "nginx", "-c", conf, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(POD_H1, proc=proc)
    wait_port(POD_H2C, proc=proc)
    return proc


def write_portico(work):
    d = os.path.join(work, "manifests")
    os.makedirs(d, exist_ok=True)
    text = """apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: portico.dev/ingress-controller}
"""
    for name, port in (("h1", POD_H1), ("h2", POD_H2C)):
        text += f"""---
apiVersion: v1
kind: Service
metadata: {{name: pod-{name}, namespace: bench}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pod-{name}
  namespace: bench
  labels: {{kubernetes.io/service-name: pod-{name}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
ports: [{{name: http, port: {port}}}]
"""
    for host, svc, proto in (("h1.bench.test", "pod-h1", "HTTP"),
                             ("h2.bench.test", "pod-h2", "H2C"),
                             ("grpc.bench.test", "pod-h2", "GRPC")):
        name = host.split(".")[0]
        text += f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: bench
  annotations:
    nginx.ingress.kubernetes.io/backend-protocol: {proto}
    nginx.ingress.kubernetes.io/proxy-request-buffering: "off"
spec:
  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}
"""
    with open(os.path.join(d, "bench.yaml"), "w") as f:
        f.write(text)


def write_nginx(work):
    root = os.path.join(work, "nginx")
    os.makedirs(root, exist_ok=True)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_common(root) + f"""
    upstream pod_h1 {{ server 127.0.0.1:{POD_H1}; keepalive 320; }}
    upstream pod_h2c {{ server 127.0.0.1:{POD_H2C}; keepalive 320; }}
    server {{
        listen 127.0.0.1:{PROXY_PORT};
        server_name h1.bench.test;
        location / {{
            proxy_pass http://pod_h1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{NGINX_GRPC_PORT} http2;
        server_name grpc.bench.test;
        location / {{ grpc_pass grpc://pod_h2c; }}
    }}
}}
""")
    return conf


class Proxy:
    def __init__(self, name, a, work):
        self.name, self.a, self.work, self.proc = name, a, work, None

    def start(self):
        pin = ["taskset", "-c", str(self.a.proxy_cpu)]
        log = open(os.path.join(self.work, f"{self.name}.log"), "ab")
        if self.name == "portico":
            cmd = pin + [self.a.portico, "--manifests", os.path.join(self.work, "manifests"),
                         "--http-addr", f"127.0.0.1:{PROXY_PORT}",
                         "--https-addr", "127.0.0.1:18443",
                         "--admin-addr", f"127.0.0.1:{ADMIN_PORT}",
                         "--worker-threads", "1"]
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        else:
            cmd = pin + ["nginx", "-c", write_nginx(self.work), "-g", "daemon off;"]
            env = None
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        wait_port(PROXY_PORT, proc=self.proc)
        time.sleep(0.5)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_wrk(a, work, host, duration):
    script = os.path.join(work, f"{host}.lua")
    with open(script, "w") as f:
        f.write(f'wrk.headers["Host"] = "{host}"\n')
    cmd = ["taskset", "-c", str(a.load_cpu), "wrk", "-t", "1", "-c", str(a.connections),
           "-d", f"{duration}s", "--latency", "-s", script, f"http://127.0.0.1:{PROXY_PORT}/item"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def run_grpc(a, work, port, duration):
    data = os.path.join(work, "grpc-request")
    with open(data, "wb") as f:
        f.write(GRPC_MESSAGE)
    cmd = ["taskset", "-c", str(a.load_cpu), "h2load", "-t", "1", "-c", str(a.h2_connections),
           "-m", str(a.h2_streams), "-D", str(duration), "-d", data,
           "-H", ":authority: grpc.bench.test", "-H", "content-type: application/grpc",
           "-H", "te: trailers", f"http://127.0.0.1:{port}/bench.Echo/Unary"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    r = {"requests": 0, "non2xx": 0}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if m:
        r["requests"] = int(m.group(3))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["non2xx"] = sum(int(x) for x in m.groups()[1:])
    return r


def measure(px, run):
    cpu0 = cpu_seconds(px.proc.pid)
    r = run()
    if r.get("requests"):
        r["cpu_us_per_req"] = round((cpu_seconds(px.proc.pid) - cpu0) * 1e6 / r["requests"], 1)
    r["rss_kib"] = peak_rss_kib(px.proc.pid)
    return r


def summary(title, results):
    lines = [f"\n#### {title}\n", "| run | req/s (median, min-max) | CPU µs/request | non-2xx |", "| --- | --- | --- | --- |"]
    for name, rs in results.items():
        rps = [r["rps"] for r in rs]
        cpu = [r.get("cpu_us_per_req") or 0 for r in rs]
        lines.append(f"| {name} | {statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) | "
                     f"{statistics.median(cpu):.1f} | {sum(r['non2xx'] for r in rs)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--h2-connections", type=int, default=16)
    ap.add_argument("--h2-streams", type=int, default=8)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--work", default="/tmp/portico-bench-h2")
    a = ap.parse_args()

    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    write_portico(work)
    pod = start_pod(a, work)
    upstream = {"portico HTTP/1.1 to the pod": [], "portico HTTP/2 (h2c) to the pod": [],
                "nginx HTTP/1.1 to the pod": []}
    grpc = {"portico (GRPC)": [], "nginx (grpc_pass)": []}
    try:
        for rnd in range(a.rounds):
            for name in ("portico", "nginx"):
                px = Proxy(name, a, work)
                px.start()
                try:
                    runs = [("h1.bench.test", f"{name} HTTP/1.1 to the pod")]
                    if name == "portico":
                        runs.append(("h2.bench.test", "portico HTTP/2 (h2c) to the pod"))
                    for host, key in runs:
                        run_wrk(a, work, host, a.warmup)
                        r = measure(px, lambda: run_wrk(a, work, host, a.duration))
                        upstream[key].append(r)
                        print(f"[round {rnd + 1}] {key}: {json.dumps(r)}", flush=True)
                    port = PROXY_PORT if name == "portico" else NGINX_GRPC_PORT
                    key = "portico (GRPC)" if name == "portico" else "nginx (grpc_pass)"
                    run_grpc(a, work, port, a.warmup)
                    r = measure(px, lambda: run_grpc(a, work, port, a.duration))
                    grpc[key].append(r)
                    print(f"[round {rnd + 1}] {key}: {json.dumps(r)}", flush=True)
                finally:
                    px.stop()
    finally:
        pod.terminate()
        pod.wait()
    print(summary("HTTP/1.1 clients, one pod: HTTP/1.1 against HTTP/2 to the pod", upstream))
    print(summary("gRPC unary calls over h2c", grpc))


if __name__ == "__main__":
    main()
