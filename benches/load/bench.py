#!/usr/bin/env python3
"""Portico, nginx and HAProxy side by side: same routes, same backend, same pinned core.

Called by run.sh (which installs the peers and builds Portico); see benches/RESULTS.md.
Each round starts every proxy fresh, in turn (interleaved, so machine noise hits all
three alike), warms it up, runs the load generator and reads the proxy's peak RSS
(VmHWM, summed over its processes). Figures are medians over rounds with min-max spread.

Variants: http (wrk, keep-alive), https (wrk over TLS), h2 (h2load, HTTP/2 over TLS),
body16k (wrk, 16 KiB responses), churn (wrk while the config changes 10 times a second).
The wrk suites run closed-loop: each connection sends its next request as soon as the
answer comes. `--pace-ms N` makes each wait N ms first, so every proxy is offered about
the same rate and p99 compares tails rather than how close each ran to its limit.

`--proxies` may also name `tcp-relay`: HAProxy in `mode tcp`, passing each connection's
bytes to the pod unread (plain HTTP suites only). It does no HTTP work at all, so its CPU
per request is about the least any proxy can spend on this machine's sockets: the floor
under the HTTP proxies' figures.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import gen  # noqa: E402

PROXIES = ["portico", "nginx", "haproxy"]


def wait_port(port, deadline_s=60.0, proc=None):
    end = time.time() + deadline_s
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {deadline_s}s")


def wait_port_free(port, deadline_s=15.0):
    """A port still held by a draining old worker would fail the next start."""
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                time.sleep(0.1)
        except OSError:
            return


def http_status(port, host, path="/", timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).decode(errors="replace")
            m = re.match(r"HTTP/1\.[01] (\d{3})", head)
            return int(m.group(1)) if m else None
    except OSError:
        return None


def wait_routed(port, deadline_s=120.0, proc=None, host="vh0.bench.test", path="/p0/item"):
    end = time.time() + deadline_s
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode} before routing")
        if http_status(port, host, path) == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port} did not answer 200 for {host}{path} within {deadline_s}s")


def tree_pids(root):
    """root and all its descendants (nginx/HAProxy masters fork workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(root, which=(11, 12)):
    """CPU time of root and its descendants so far: user + system by default."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in which)  # 11 utime, 12 stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def schedstats(root):
    """{thread id: (ns on a CPU, ns ready to run but waiting for one)} for root's tree,
    from /proc/PID/task/TID/schedstat."""
    out = {}
    for p in tree_pids(root):
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    ran, waited = f.read().split()[:2]
                out[int(t)] = (int(ran), int(waited))
            except (OSError, ValueError):
                pass
    return out


def run_queue_ms(before, after):
    """Milliseconds the threads that served the load (a tenth or more of the CPU time
    between two `schedstats`) spent ready to run but waiting for their CPU: other work
    of the machine's, or of the proxy's own, taking its turn. Requests queue meanwhile,
    so a round's tail latency is read alongside it."""
    delta = {t: (r - before.get(t, (0, 0))[0], w - before.get(t, (0, 0))[1])
             for t, (r, w) in after.items()}
    busy = sum(r for r, _ in delta.values())
    return sum(w for r, w in delta.values() if r * 10 >= busy) / 1e6


def peak_rss_kib(root, field="VmHWM"):
    """Peak (VmHWM) or, given field="VmRSS", current resident memory of root's tree."""
    total = 0
    for p in tree_pids(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def portico_cmd(a, work):
    """Portico over the generated manifest folder, on the bench's ports."""
    return [a.portico, "--manifests", os.path.join(work, "manifests"),
            "--http-addr", f"127.0.0.1:{a.http_port}",
            "--https-addr", f"127.0.0.1:{a.https_port}",
            "--admin-addr", f"127.0.0.1:{a.admin_port}",
            "--default-certificate", "bench/wildcard-tls",
            "--worker-threads", str(getattr(a, "workers", 1)),
            "--runtime", getattr(a, "runtime", "work-stealing")]


def prepare(a, work, vhosts=100):
    """bench.py's defaults for what the shared helpers read, and the generated routes,
    for the scripts that measure one thing with them (instructions, system calls)."""
    a.vhosts, a.paths, a.load_cpu, a.proxy_cpu = vhosts, 4, 1, 0
    a.http_port, a.https_port, a.admin_port, a.backend_port = 18080, 18443, 18254, 19000
    a.h2_connections, a.h2_streams = 16, 8
    shutil.rmtree(work, ignore_errors=True)
    gen.cmd_load(argparse.Namespace(out=work, vhosts=a.vhosts, paths=a.paths,
                                    backend_port=a.backend_port, http_port=a.http_port,
                                    https_port=a.https_port))


def each_proxy(a, measure):
    """For the scripts that measure one thing per proxy: the generated routes in
    `a.work`, a backend answering 13 bytes, and `measure(name, a, work)` for each of
    `a.proxies` in turn. Returns {name: what measure returned}."""
    work = os.path.abspath(a.work)
    prepare(a, work)
    backend = start_backend(a, work, 13)
    try:
        return {name: measure(name, a, work) for name in a.proxies.split(",")}
    finally:
        backend.terminate()
        backend.wait()


def run_under(name, a, work, tool, settle):
    """Starts proxy `name`, warms it up, attaches `tool(pids)` (a command line, given the
    proxy's process ids), lets it settle for `settle` seconds, runs the load for
    `a.duration` seconds and stops the tool with SIGINT. The load is `a.variant`'s:
    wrk's keep-alive HTTP/1.1 ("http", the default, or "https" over TLS) or h2load's
    HTTP/2 over TLS ("h2"). Returns the load generator's result."""
    variant = getattr(a, "variant", "http")
    if variant == "h2":
        load = run_h2load
    else:
        def load(a, work, duration):
            return run_wrk(a, work, duration, scheme=variant)
    p = Proxy(name, a, work)
    p.start()
    try:
        load(a, work, 2)
        attached = subprocess.Popen(tool(sorted(tree_pids(p.proc.pid))),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(settle)
        r = load(a, work, a.duration)
        attached.send_signal(signal.SIGINT)
        attached.wait(timeout=60)
        return r
    finally:
        p.stop()


class Proxy:
    def __init__(self, name, a, work):
        self.name, self.a, self.work, self.proc = name, a, work, None

    def start(self):
        a, w = self.a, self.work
        pin = ["taskset", "-c", str(a.proxy_cpu)]
        log = open(os.path.join(w, f"{self.name}.log"), "ab")
        if self.name == "portico":
            cmd = pin + portico_cmd(a, w)
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        elif self.name == "nginx":
            cmd = pin + ["nginx", "-c", os.path.join(w, "nginx.conf"), "-g", "daemon off;"]
            env = None
        elif self.name == "tcp-relay":
            cmd = pin + ["haproxy", "-db", "-f", write_relay_cfg(a, w)]
            env = None
        else:
            # -W: master-worker, so USR2 reloads as a systemd unit would.
            cmd = pin + ["haproxy", "-W", "-db", "-f", os.path.join(w, "haproxy.cfg")]
            env = None
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        wait_port(a.http_port, proc=self.proc)
        wait_routed(a.http_port, proc=self.proc)

    def reload(self):
        """Peers re-read their config file; Portico watches its folder by itself."""
        if self.name == "nginx":
            os.kill(self.proc.pid, signal.SIGHUP)
        elif self.name == "haproxy":
            os.kill(self.proc.pid, signal.SIGUSR2)

    def rss_kib(self):
        return peak_rss_kib(self.proc.pid)

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        wait_port_free(self.a.http_port)


def write_relay_cfg(a, work):
    """HAProxy as a byte relay: one pod connection per client connection, nothing read.
    The bench's pod answers every host and path alike, so the HTTP suites' requests
    still get their 200s."""
    path = os.path.join(work, "tcp-relay.cfg")
    with open(path, "w") as f:
        f.write(f"""global
    nbthread {getattr(a, "workers", 1)}
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s

listen relay
    bind 127.0.0.1:{a.http_port}
    server pod 127.0.0.1:{a.backend_port}
""")
    return path


def start_backend(a, work, body_bytes):
    root = os.path.join(work, "backend")
    os.makedirs(root, exist_ok=True)
    for d in ["tmp-body", "tmp-proxy", "tmp-fastcgi", "tmp-uwsgi", "tmp-scgi"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "body"), "wb") as f:
        f.write(b"x" * body_bytes)
    conf = os.path.join(root, "nginx.conf")
    # Every host's own pod address (gen.pod), all served by this one process.
    pods = "".join(f"        listen {gen.pod(i)}:{a.backend_port};\n" for i in range(a.vhosts))
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
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
    open_file_cache max=16;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{a.backend_port};
        listen {gen.SECOND_POD}:{a.backend_port};
{pods}        location / {{ root {root}; try_files /body =500; }}
    }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", str(a.load_cpu), "nginx", "-c", conf, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(a.backend_port, proc=proc)
    return proc


def parse_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for q, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        r[key] = parse_ms(m.group(1), m.group(2)) if m else None
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def wrk_script(a, work):
    """The generated request script; with `--pace-ms`, a copy whose `delay()` makes each
    connection wait that long after an answer before its next request. Run closed-loop,
    a faster proxy is offered more load, and the CPU that wrk shares with the backend
    fills up first; paced, every proxy sees about the same rate, so their tails compare
    like for like."""
    script = os.path.join(work, "requests.lua")
    pace = getattr(a, "pace_ms", 0)
    if not pace:
        return script
    paced = os.path.join(work, "requests-paced.lua")
    with open(script) as f, open(paced, "w") as out:
        out.write(f.read() + f"\nfunction delay()\n  return {pace}\nend\n")
    return paced


def wrk_cmd(a, work, duration, scheme="http"):
    """wrk on the load CPU, sending the generated requests for `duration` seconds."""
    port = a.http_port if scheme == "http" else a.https_port
    return ["taskset", "-c", str(a.load_cpu), "wrk", "-t", "1", "-c", str(a.connections),
            "-d", f"{duration}s", "--latency", "-s", wrk_script(a, work),
            f"{scheme}://127.0.0.1:{port}/"]


def run_wrk(a, work, duration, scheme="http"):
    out = subprocess.run(wrk_cmd(a, work, duration, scheme), capture_output=True, text=True,
                         check=True).stdout
    return parse_wrk(out)


def run_h2load(a, work, duration):
    log = os.path.join(work, "h2load.log")
    cmd = ["taskset", "-c", str(a.load_cpu), "h2load", "-t", "1", "-c", str(a.h2_connections),
           "-m", str(a.h2_streams), "-D", str(duration), "--log-file", log,
           "-H", ":authority: vh0.bench.test",
           f"https://127.0.0.1:{a.https_port}/p0/item"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    r = {"requests": 0, "non2xx": 0, "socket_errors": 0, "p50_ms": None, "p99_ms": None}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if m:
        r["requests"] = int(m.group(2))
        r["socket_errors"] = int(m.group(5))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["non2xx"] = sum(int(x) for x in m.groups()[1:])
    lat = []
    try:
        with open(log) as f:  # start-time(us) status duration(us)
            lat = sorted(int(line.split()[2]) for line in f if len(line.split()) >= 3)
        os.remove(log)
    except OSError:
        pass
    if lat:
        r["p50_ms"] = lat[len(lat) // 2] / 1000.0
        r["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000.0
    return r


class Churn:
    """Change every proxy's config at `rate` per second: a second endpoint appears and
    disappears behind one host, and one Ingress gains and loses a path."""

    def __init__(self, a, work, proxy):
        self.a, self.work, self.proxy, self.n = a, work, proxy, 0

    def step(self):
        a = self.a
        i = self.n % a.vhosts
        flip = (self.n // a.vhosts) % 2 == 0
        man = os.path.join(self.work, "manifests")
        if self.proxy.name == "portico":
            gen.write_atomic(os.path.join(man, f"vh{i}.yaml"),
                             gen.app_file(i, a.backend_port, gen.load_paths(a.paths),
                                          second_endpoint=flip and self.n % 2 == 0,
                                          extra_path="/extra" if flip and self.n % 2 == 1 else None))
        elif self.proxy.name == "nginx":
            gen.write_atomic(os.path.join(self.work, "nginx.conf"),
                             gen.nginx_conf(a, self.work, second_endpoint_for=i if flip else None))
            self.proxy.reload()
        else:
            gen.write_atomic(os.path.join(self.work, "haproxy.cfg"),
                             gen.haproxy_cfg(a, self.work, second_endpoint_for=i if flip else None))
            self.proxy.reload()
        self.n += 1


def run_churn(a, work, proxy):
    wrk = subprocess.Popen(
        ["taskset", "-c", str(a.load_cpu), "wrk", "-t", "1", "-c", str(a.connections),
         "-d", f"{a.churn_duration}s", "--latency", "-s", os.path.join(work, "requests.lua"),
         f"http://127.0.0.1:{a.http_port}/"], stdout=subprocess.PIPE, text=True)
    churn = Churn(a, work, proxy)
    period = 1.0 / a.churn_rate
    t0 = time.time()
    nxt = t0 + period
    while wrk.poll() is None and time.time() - t0 < a.churn_duration - 0.5:
        churn.step()
        time.sleep(max(0.0, nxt - time.time()))
        nxt += period
    out, _ = wrk.communicate()
    r = parse_wrk(out)
    r["changes"] = churn.n
    return r


def fmt_spread(vals, unit="", prec=0):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    f = f"{{:.{prec}f}}"
    return f"{f.format(statistics.median(vals))}{unit} [{f.format(min(vals))}-{f.format(max(vals))}]"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def report(variant, results, a):
    paced = f", paced {a.pace_ms} ms" if a.pace_ms and variant != "h2" else ""
    lines = [f"\n== {variant}: {a.rounds} rounds x {a.duration}s{paced}, median [min-max] ==",
             f"{'proxy':<9} {'req/s':>24} {'p50 ms':>22} {'p99 ms':>22} {'peak RSS MiB':>22} "
             f"{'CPU µs/request':>20} {'kernel µs/request':>20} {'run-queue ms':>20} {'errors':>8}"]
    for p in results:
        rs = results[p]
        errs = sum(x["non2xx"] + x["socket_errors"] for x in rs)
        lines.append(f"{p:<9} {fmt_spread([x['rps'] for x in rs]):>24} "
                     f"{fmt_spread([x['p50_ms'] for x in rs], prec=3):>22} "
                     f"{fmt_spread([x['p99_ms'] for x in rs], prec=3):>22} "
                     f"{fmt_spread([x['rss_kib'] / 1024 for x in rs], prec=1):>22} "
                     f"{fmt_spread([x.get('cpu_us_per_req') for x in rs], prec=1):>20} "
                     f"{fmt_spread([x.get('sys_us_per_req') for x in rs], prec=1):>20} "
                     f"{fmt_spread([x.get('runq_wait_ms') for x in rs], prec=1):>20} {errs:>8}")
    # The kernel's share (the sockets' work, on loopback the peers' receiving too) is
    # much the same for every proxy; the user share is where they differ. Both from the
    # process's utime and stime, which the kernel splits by tick samples.
    for rs in results.values():
        for x in rs:
            if x.get("cpu_us_per_req") is not None and x.get("sys_us_per_req") is not None:
                x["user_us_per_req"] = x["cpu_us_per_req"] - x["sys_us_per_req"]
    if "portico" in results:
        po = results["portico"]
        for peer in (p for p in results if p != "portico"):
            # Ratios per round (same moment, same noise), then the median of those.
            def ratio(key):
                rs = [x[key] / y[key] for x, y in zip(po, results[peer]) if x.get(key) and y.get(key)]
                return f"{med(rs):.2f}x [{min(rs):.2f}-{max(rs):.2f}]" if rs else "n/a"
            lines.append(f"portico/{peer}: req/s {ratio('rps')}, p99 {ratio('p99_ms')}, "
                         f"peak RSS {ratio('rss_kib')}, CPU per request {ratio('cpu_us_per_req')} "
                         f"(user {ratio('user_us_per_req')}, kernel {ratio('sys_us_per_req')})")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def report_churn(results, a):
    lines = [f"\n== churn: {a.churn_rate} changes/s for {a.churn_duration}s under wrk, per round ==",
             f"{'proxy':<9} {'changes':>8} {'requests':>10} {'non-2xx':>8} {'sock err':>9} {'req/s':>10} {'p99 ms':>9}"]
    for p, rs in results.items():
        for x in rs:
            lines.append(f"{p:<9} {x['changes']:>8} {x['requests']:>10} {x['non2xx']:>8} "
                         f"{x['socket_errors']:>9} {x['rps']:>10.0f} {x['p99_ms'] or 0:>9.3f}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portico", required=True, help="path to the ingress-controller binary")
    ap.add_argument("--variants", default="http,https,h2,body16k,churn")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--pace-ms", type=int, default=0,
                    help="wrk suites: each connection waits this many ms after an answer "
                         "before its next request, for tails at about equal load (0: as fast "
                         "as answers come)")
    ap.add_argument("--h2-connections", type=int, default=16)
    ap.add_argument("--h2-streams", type=int, default=8)
    ap.add_argument("--churn-rate", type=float, default=10.0)
    ap.add_argument("--churn-duration", type=int, default=30)
    ap.add_argument("--churn-rounds", type=int, default=1)
    ap.add_argument("--vhosts", type=int, default=100)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--proxy-cpu", default="0",
                    help="CPU list for the proxy (taskset -c), e.g. 0 or 0,1")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker threads/processes each proxy runs (Portico --worker-threads, "
                         "nginx worker_processes, HAProxy nbthread)")
    ap.add_argument("--runtime", choices=["work-stealing", "per-core"], default="work-stealing",
                    help="Portico's --runtime: how its worker threads share the work")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk and the backend")
    ap.add_argument("--http-port", type=int, default=18080)
    ap.add_argument("--https-port", type=int, default=18443)
    ap.add_argument("--admin-port", type=int, default=18254)
    ap.add_argument("--backend-port", type=int, default=19000)
    ap.add_argument("--work", default="/tmp/portico-bench-load")
    ap.add_argument("--json", help="also write raw per-round results here")
    a = ap.parse_args()

    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    proxies = a.proxies.split(",")
    texts, raw = [], {}
    for variant in a.variants.split(","):
        body = 16384 if variant == "body16k" else 13
        gen.cmd_load(argparse.Namespace(out=work, vhosts=a.vhosts, paths=a.paths,
                                        backend_port=a.backend_port, http_port=a.http_port,
                                        https_port=a.https_port, workers=a.workers))
        backend = start_backend(a, work, body)
        results = {p: [] for p in proxies}
        rounds = a.churn_rounds if variant == "churn" else a.rounds
        try:
            for rnd in range(rounds):
                for name in proxies:
                    if variant == "churn":  # each starts from the generated config
                        gen.cmd_load(argparse.Namespace(out=work, vhosts=a.vhosts, paths=a.paths,
                                                        backend_port=a.backend_port, http_port=a.http_port,
                                                        https_port=a.https_port, workers=a.workers))
                    px = Proxy(name, a, work)
                    try:
                        px.start()
                        if variant == "churn":
                            run_wrk(a, work, a.warmup)
                            r = run_churn(a, work, px)
                        else:
                            scheme = "https" if variant == "https" else "http"
                            if variant == "h2":
                                run_h2load(a, work, a.warmup)
                            else:
                                run_wrk(a, work, a.warmup, scheme)
                            cpu0 = cpu_seconds(px.proc.pid)
                            sys0 = cpu_seconds(px.proc.pid, (12,))
                            sched0 = schedstats(px.proc.pid)
                            if variant == "h2":
                                r = run_h2load(a, work, a.duration)
                            else:
                                r = run_wrk(a, work, a.duration, scheme)
                            # CPU spent per request: unlike req/s, barely moved by
                            # other work on the machine.
                            if r.get("requests"):
                                r["cpu_us_per_req"] = round(
                                    (cpu_seconds(px.proc.pid) - cpu0) * 1e6 / r["requests"], 1)
                                r["sys_us_per_req"] = round(
                                    (cpu_seconds(px.proc.pid, (12,)) - sys0) * 1e6 / r["requests"], 1)
                            r["runq_wait_ms"] = round(run_queue_ms(sched0, schedstats(px.proc.pid)), 1)
                        r["rss_kib"] = px.rss_kib()
                    finally:
                        px.stop()
                    results[name].append(r)
                    print(f"[{variant} round {rnd + 1}/{rounds}] {name}: {json.dumps(r)}", flush=True)
        finally:
            backend.terminate()
            backend.wait()
        raw[variant] = results
        texts.append(report_churn(results, a) if variant == "churn" else report(variant, results, a))
    print("\n\n#### summary" + "".join(texts))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "results": raw}, f, indent=1)


if __name__ == "__main__":
    main()
