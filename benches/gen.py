#!/usr/bin/env python3
"""Write equivalent configurations for Portico, nginx and HAProxy.

  gen.py load  --out DIR --backend-port N [--vhosts 100] [--paths 4] ...
      DIR/manifests/   Portico manifest folder: one file per virtual host (Service,
                       EndpointSlice, Ingress), the IngressClass and one TLS Secret
      DIR/nginx.conf   the same hosts and prefixes as nginx server/location blocks
      DIR/haproxy.cfg  the same as one HAProxy frontend with a host+path prefix map
      DIR/requests.lua wrk script cycling through every host and path

  gen.py scale --out DIR [--ingresses 10000] [--paths 5] [--secrets 1000]
      DIR/manifests/   N Ingresses with P paths each, over N Services with 3-pod
                       EndpointSlices, and S TLS Secrets (one cert, one Secret per 10th app)

The TLS key pair is made once with openssl (RSA 2048, SAN *.bench.test) and shared by
all three proxies. Every object lives in namespace `bench`; host i is vh{i}.bench.test.
"""

import argparse
import base64
import os
import subprocess
import sys

NS = "bench"
DOMAIN = "bench.test"


def host(i):
    return f"vh{i}.{DOMAIN}"


def pod(i):
    """Virtual host i's pod: an address of its own, as each Service's pods have in a
    cluster, so no proxy serves two hosts over one pool of pod connections."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


# The second endpoint the churn run adds to one host and takes away again.
SECOND_POD = "127.0.0.2"


def make_cert(out):
    crt, key = os.path.join(out, "tls.crt"), os.path.join(out, "tls.key")
    if not (os.path.exists(crt) and os.path.exists(key)):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", crt, "-days", "30", "-subj", f"/CN=*.{DOMAIN}",
             "-addext", f"subjectAltName=DNS:*.{DOMAIN},DNS:{DOMAIN}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "tls.pem"), "w") as f:  # HAProxy wants both in one file
        f.write(open(crt).read() + open(key).read())
    return open(crt).read(), open(key).read()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def ingress_class():
    return ("apiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
            "metadata:\n  name: portico\nspec:\n  controller: portico.dev/ingress-controller\n")


def secret(name, crt, key):
    return (f"apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n"
            f"metadata:\n  name: {name}\n  namespace: {NS}\n"
            f"data:\n  tls.crt: {b64(crt)}\n  tls.key: {b64(key)}\n")


def service(name):
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\n"
            f"spec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n"
            f"    targetPort: http\n")


def endpoint_slice(name, addrs, port):
    eps = "".join(f"- addresses: [\"{a}\"]\n  conditions:\n    ready: true\n" for a in addrs)
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata:\n  name: {name}-0\n  namespace: {NS}\n"
            f"  labels:\n    kubernetes.io/service-name: {name}\n"
            f"addressType: IPv4\nports:\n- name: http\n  port: {port}\nendpoints:\n{eps}")


def ingress(name, h, svc, paths, tls_secret=None, extra_path=None, ssl_redirect=True):
    # The load benchmark serves the same hosts over HTTP and HTTPS, as its nginx and
    # HAProxy configs do, so it turns the default HTTP->HTTPS redirect off.
    notes = "" if ssl_redirect else '  annotations:\n    portico.dev/ssl-redirect: "false"\n'
    lines = [f"apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
             f"metadata:\n  name: {name}\n  namespace: {NS}\n{notes}"
             f"spec:\n  ingressClassName: portico\n"]
    if tls_secret:
        lines.append(f"  tls:\n  - hosts: [\"{h}\"]\n    secretName: {tls_secret}\n")
    lines.append(f"  rules:\n  - host: {h}\n    http:\n      paths:\n")
    for p in list(paths) + ([extra_path] if extra_path else []):
        lines.append(f"      - path: {p}\n        pathType: Prefix\n        backend:\n"
                     f"          service:\n            name: {svc}\n"
                     f"            port:\n              name: http\n")
    return "".join(lines)


def write_atomic(path, text):
    """Write then rename, as editors and `kubectl`-style tools do, so no reader sees half."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_paths(n):
    return [f"/p{p}" for p in range(n)]


def app_file(i, port, paths, second_endpoint=False, extra_path=None, tls=True):
    name = f"vh{i}"
    addrs = [pod(i)] + ([SECOND_POD] if second_endpoint else [])
    return "---\n".join([
        service(name),
        endpoint_slice(name, addrs, port),
        ingress(name, host(i), name, paths, "wildcard-tls" if tls else None, extra_path,
                ssl_redirect=False),
    ])


def nginx_conf(a, out, second_endpoint_for=None):
    ups, servers = [], []
    for i in range(a.vhosts):
        extra = f"        server {SECOND_POD}:{a.backend_port};\n" if second_endpoint_for == i else ""
        ups.append(f"    upstream vh{i} {{\n        server {pod(i)}:{a.backend_port};\n{extra}"
                   f"        keepalive 320;\n        keepalive_requests 10000;\n    }}\n")
        locs = "".join(f"        location {p}/ {{ proxy_pass http://vh{i}; }}\n"
                       f"        location = {p} {{ proxy_pass http://vh{i}; }}\n"
                       for p in load_paths(a.paths))
        servers.append(f"    server {{\n        listen 127.0.0.1:{a.http_port};\n"
                       f"        listen 127.0.0.1:{a.https_port} ssl http2;\n"
                       f"        server_name {host(i)};\n{locs}    }}\n")
    return f"""# Generated by benches/gen.py: {a.vhosts} virtual hosts x {a.paths} prefixes.
worker_processes {getattr(a, "workers", 1)};
pid {out}/nginx.pid;
error_log {out}/nginx-error.log error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {out}/tmp-body;
    proxy_temp_path {out}/tmp-proxy;
    fastcgi_temp_path {out}/tmp-fastcgi;
    uwsgi_temp_path {out}/tmp-uwsgi;
    scgi_temp_path {out}/tmp-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    ssl_certificate {out}/tls.crt;
    ssl_certificate_key {out}/tls.key;
    # As ingress-nginx does: HTTP/1.1 keep-alive upstream, original Host, X-Forwarded-*.
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_buffering on;
{''.join(ups)}
    server {{
        listen 127.0.0.1:{a.http_port} default_server;
        listen 127.0.0.1:{a.https_port} ssl http2 default_server;
        return 404;
    }}
{''.join(servers)}}}
"""


def haproxy_cfg(a, out, second_endpoint_for=None):
    backs = []
    for i in range(a.vhosts):
        extra = (f"    server s2 {SECOND_POD}:{a.backend_port}\n"
                 if second_endpoint_for == i else "")
        backs.append(f"backend vh{i}\n    server s1 {pod(i)}:{a.backend_port}\n{extra}")
    with open(os.path.join(out, "haproxy-routes.map"), "w") as f:
        for i in range(a.vhosts):
            for p in load_paths(a.paths):
                f.write(f"{host(i)}{p}/ vh{i}\n")
    return f"""# Generated by benches/gen.py: {a.vhosts} virtual hosts x {a.paths} prefixes.
global
    nbthread {getattr(a, "workers", 1)}
    maxconn 4096
    pidfile {out}/haproxy.pid
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend main
    bind 127.0.0.1:{a.http_port}
    bind 127.0.0.1:{a.https_port} ssl crt {out}/tls.pem alpn h2,http/1.1
    # As ingress-nginx does: X-Forwarded-* and the original Host.
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Port %[dst_port]
    # Host + path against "host/prefix/" keys: a longest-prefix tree lookup.
    use_backend %[base,lower,map_beg({out}/haproxy-routes.map)]
    default_backend notfound

backend notfound
    http-request return status 404

{''.join(backs)}"""


def wrk_lua(a):
    return f"""-- Generated by benches/gen.py: cycle through {a.vhosts} hosts x {a.paths} prefixes.
local reqs = {{}}
local n = 0
function init(args)
  for h = 0, {a.vhosts - 1} do
    for p = 0, {a.paths - 1} do
      reqs[#reqs + 1] = wrk.format("GET", "/p" .. p .. "/item", {{["Host"] = "vh" .. h .. ".{DOMAIN}"}})
    end
  end
  n = math.random(#reqs) - 1
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
"""


def cmd_load(a):
    out = os.path.abspath(a.out)
    man = os.path.join(out, "manifests")
    os.makedirs(man, exist_ok=True)
    for d in ["tmp-body", "tmp-proxy", "tmp-fastcgi", "tmp-uwsgi", "tmp-scgi"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    crt, key = make_cert(out)
    write_atomic(os.path.join(man, "00-class.yaml"), ingress_class())
    write_atomic(os.path.join(man, "01-secret.yaml"), secret("wildcard-tls", crt, key))
    for i in range(a.vhosts):
        write_atomic(os.path.join(man, f"vh{i}.yaml"), app_file(i, a.backend_port, load_paths(a.paths)))
    write_atomic(os.path.join(out, "nginx.conf"), nginx_conf(a, out))
    write_atomic(os.path.join(out, "haproxy.cfg"), haproxy_cfg(a, out))
    write_atomic(os.path.join(out, "requests.lua"), wrk_lua(a))


def cmd_scale(a):
    out = os.path.abspath(a.out)
    man = os.path.join(out, "manifests")
    os.makedirs(man, exist_ok=True)
    crt, key = make_cert(out)
    write_atomic(os.path.join(man, "00-class.yaml"), ingress_class())
    every = max(1, a.ingresses // max(1, a.secrets)) if a.secrets else 0
    paths = [f"/svc{p}" for p in range(a.paths)]
    for i in range(a.ingresses):
        name = f"vh{i}"
        tls = every and i % every == 0 and i // every < a.secrets
        docs = [service(name),
                endpoint_slice(name, [f"10.{(i >> 8) & 255}.{i & 255}.{e + 1}" for e in range(3)],
                               8080)]
        if tls:
            docs.append(secret(f"{name}-tls", crt, key))
        docs.append(ingress(name, host(i), name, paths, f"{name}-tls" if tls else None))
        sub = os.path.join(man, f"{i // 1000:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{name}.yaml"), "w") as f:
            f.write("---\n".join(docs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--out", required=True)
    ld.add_argument("--vhosts", type=int, default=100)
    ld.add_argument("--paths", type=int, default=4)
    ld.add_argument("--backend-port", type=int, required=True)
    ld.add_argument("--http-port", type=int, default=18080)
    ld.add_argument("--https-port", type=int, default=18443)
    sc = sub.add_parser("scale")
    sc.add_argument("--out", required=True)
    sc.add_argument("--ingresses", type=int, default=10000)
    sc.add_argument("--paths", type=int, default=5)
    sc.add_argument("--secrets", type=int, default=1000)
    a = ap.parse_args()
    {"load": cmd_load, "scale": cmd_scale}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
