//! Helpers for end-to-end tests that run the real `ingress-controller` binary on
//! 127.0.0.1: free ports, spawning the binary and waiting until it is ready, a tiny HTTP
//! backend that names itself, and a small HTTP client.
//!
//! Use from a test file with `mod common;`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Generous: the machine may be busy compiling or running other tests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that was free a moment ago, for the binary to bind.
///
/// Picked below the kernel's ephemeral range: a port the kernel just handed out can be
/// handed out again as the source port of some outgoing connection before the binary
/// binds it. A process-wide counter keeps concurrent tests from picking the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u32, ephemeral_start.max(10_001));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = (low + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 below the ephemeral range");
}

/// The flags that serve a manifest folder, then `extra`.
pub fn folder_args(manifests: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--manifests".into(), manifests.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The running binary. Killed on drop; its stderr (the logs) goes to a file.
pub struct Controller {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Controller {
    /// Start the binary on free ports over a manifest folder, with extra flags.
    pub fn start(manifests: &Path, extra: &[&str]) -> Controller {
        Controller::start_with(&folder_args(manifests, extra), &[])
    }

    /// Start the binary on free ports with these flags and environment variables.
    pub fn start_with(args: &[String], env: &[(&str, &str)]) -> Controller {
        Controller::start_bound(args, env, false)
    }

    /// [`Controller::start_with`], the proxy listeners bound to every local address
    /// (`0.0.0.0`) on the ports of [`Controller::http`] and [`Controller::https`] when
    /// `all_addresses`.
    pub fn start_bound(args: &[String], env: &[(&str, &str)], all_addresses: bool) -> Controller {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let bound = |addr: SocketAddr| match all_addresses {
            true => SocketAddr::from(([0, 0, 0, 0], addr.port())),
            false => addr,
        };
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("controller.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingress-controller"));
        cmd.arg("--http-addr")
            .arg(bound(http).to_string())
            .arg("--https-addr")
            .arg(bound(https).to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(args)
            // Access logs would drown what the tests look for.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,portico::access=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ingress-controller");
        Controller {
            child,
            http,
            https,
            admin,
            log,
            _logdir: logdir,
        }
    }

    /// Poll `/readyz` until it answers 200; panics with the logs after the deadline.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("controller exited with {status}:\n{}", self.logs());
            }
            if let Ok((200, _)) = get(self.admin, "admin", "/readyz").await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "controller not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the binary has logged so far.
    /// Waits until the HTTP listener refuses connections (the binary is draining).
    pub async fn wait_not_accepting(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while tokio::net::TcpStream::connect(self.http).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "still accepting after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The binary's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll the logs until `pred` holds; panics with the logs after `timeout`.
    pub async fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if pred(&logs) {
                return;
            }
            if Instant::now() > deadline {
                panic!("never logged {what}:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        match get(self.admin, "admin", "/metrics").await {
            Ok((200, body)) => body,
            other => panic!("/metrics: {other:?}"),
        }
    }

    /// Send a signal (e.g. `"TERM"`) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "controller did not exit within {timeout:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let logs = self.logs();
            if let Ok(keep) = std::env::var("PORTICO_TEST_KEEP_LOGS") {
                let _ = std::fs::write(keep, &logs);
            }
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- controller logs (last {}) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A tiny HTTP/1.1 backend: answers every request with `200` (the code a `/status/NNN`
/// path names; a backend named `errors...` answers with its request's `X-Code`), the
/// body `<name> <path>`, the header `x-backend: <name>`, the method as `echo-method`, and
/// the `Host`, every `X-` and `ssl-client-` header it was sent as `echo-<name>`
/// (`echo-host`, `echo-x-real-ip`, `echo-x-code`, ...).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_slow(name, Duration::ZERO).await
    }

    /// Like [`Backend::start`], on a loopback address of its own (as pods have their own
    /// IPs): `127.0.0.<last>`.
    pub async fn start_on(name: &str, last: u8) -> Backend {
        Backend::start_at(name, &format!("127.0.0.{last}:0"), Duration::ZERO).await
    }

    /// Like [`Backend::start`], answering each request after `delay`.
    pub async fn start_slow(name: &str, delay: Duration) -> Backend {
        Backend::start_at(name, "127.0.0.1:0", delay).await
    }

    /// Like [`Backend::start_slow`], listening on `bind` (e.g. a pod address made local
    /// in a private network namespace).
    pub async fn start_at(name: &str, bind: &str, delay: Duration) -> Backend {
        let listener = TcpListener::bind(bind).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let name_owned = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name_owned.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            let path = req.uri().path();
                            let body = format!("{name} {path}");
                            // `/status/NNN`: that status. A backend named `errors...`
                            // answers with the status its `X-Code` names, as
                            // ingress-nginx's custom-error-pages backend does.
                            let code = if name.starts_with("errors") {
                                req.headers().get("x-code").and_then(|v| v.to_str().ok())
                            } else {
                                path.strip_prefix("/status/").and_then(|s| s.get(..3))
                            };
                            let status = code.and_then(|c| c.parse::<u16>().ok()).unwrap_or(200);
                            let mut resp = Response::builder()
                                .status(status)
                                .header("x-backend", name.as_str())
                                .header("echo-method", req.method().as_str());
                            for (h, v) in req.headers() {
                                if h.as_str().starts_with("x-")
                                    || h.as_str().starts_with("ssl-client-")
                                    || h == "host"
                                {
                                    resp = resp.header(format!("echo-{h}"), v);
                                }
                            }
                            if let Some(q) = req.uri().query() {
                                resp = resp.header("echo-query", q);
                            }
                            let resp = resp.body(Full::new(Bytes::from(body))).expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            task,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A keep-alive HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET with a Host header and `headers` on a fresh connection: status, response
/// headers and body. Panics after 30 s.
pub async fn fetch_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::header::HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// One GET with a Host header on a fresh connection; returns status and body.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    get_with(&client(), addr, host, path).await
}

/// One GET through `client`; returns status and body. Times out after 30 s.
pub async fn get_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Poll `GET host/path` until `pred(status, body)` holds; panics after `timeout`.
pub async fn wait_for(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    let mut last: Result<(u16, String), String> = Err("no request yet".to_owned());
    loop {
        if let Ok((status, body)) = &last {
            if pred(*status, body) {
                return (*status, body.clone());
            }
        }
        if Instant::now() > deadline {
            panic!("GET {host}{path}: condition never held; last answer {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = get(addr, host, path).await;
    }
}

/// Manifests for a Service named `name` (port 80, named `http`) whose EndpointSlice
/// points at `backends`, plus an Ingress routing `host` `path` (Prefix) to it.
pub fn app_yaml(name: &str, host: &str, path: &str, backends: &[SocketAddr]) -> String {
    let mut out = service_yaml(name, backends);
    out.push_str(&ingress_yaml(name, host, path, name));
    out
}

/// A Service `name` (port 80 named `http`) with one EndpointSlice per backend (each
/// backend listens on its own port, and a slice carries one port list).
pub fn service_yaml(name: &str, backends: &[SocketAddr]) -> String {
    let mut out = format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
"
    );
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
ports:
- name: http
  port: {port}
",
            ip = b.ip(),
            port = b.port()
        ));
    }
    out
}

/// A Service `namespace`/`name` with one port (`port_name`, `port`) and an EndpointSlice
/// pointing it at `backend`, for the Gateway API tests (whose backendRefs name the
/// Service's own port).
pub fn namespaced_service_yaml(
    namespace: &str,
    name: &str,
    (port_name, port): (&str, u16),
    backend: SocketAddr,
) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: {port_name}, port: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]
ports: [{{name: {port_name}, port: {pod_port}}}]
",
        ip = backend.ip(),
        pod_port = backend.port()
    )
}

/// An Ingress of class `portico` routing `host` `path` (Prefix) to Service `service`:80.
pub fn ingress_yaml(name: &str, host: &str, path: &str, service: &str) -> String {
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
spec:
  ingressClassName: portico
  rules:
  - host: {host}
    http:
      paths:
      - path: {path}
        pathType: Prefix
        backend:
          service:
            name: {service}
            port:
              number: 80
"
    )
}

/// The IngressClass `portico`, marked default.
pub const INGRESS_CLASS_YAML: &str = "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations:
    ingressclass.kubernetes.io/is-default-class: \"true\"
spec:
  controller: portico.dev/ingress-controller
";

/// The GatewayClass `portico` of Portico's Gateway controller.
pub const GATEWAY_CLASS_YAML: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
";

/// Write `text` to `dir/name` atomically (temporary file, then rename), as careful
/// tools do.
pub fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

/// Base64 as the API server stores a Secret's `data` (k8s-openapi's `ByteString`).
pub fn b64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// What `kubectl create secret tls NAME --cert --key --dry-run=client -o yaml` prints.
pub fn secret_yaml(name: &str, cert: &[u8], key: &[u8]) -> String {
    format!(
        "apiVersion: v1\ndata:\n  tls.crt: {}\n  tls.key: {}\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: {name}\ntype: kubernetes.io/tls\n",
        b64(cert),
        b64(key)
    )
}

/// An answer read whole off a `Connection: close` exchange, header names lower-cased.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A TLS client's certificate check that accepts any certificate (signatures are still
/// checked): for tests that look at what is served, not at who serves it.
#[derive(Debug)]
pub struct AnyCert(pub std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Writes `method target` for `host` with `headers` and `body` (`Connection: close`) on
/// `stream` (TCP, or TLS over it) and reads the answer to its end, as raw bytes: nothing
/// a client library would add or fix on the way.
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("read timed out");
    // A TLS peer that closes without close_notify has still sent its whole answer.
    if let Err(e) = read {
        assert!(
            e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty(),
            "read: {e}"
        );
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Sends one keep-alive `GET /` for `app.example.com` on `s` and reads its whole answer (head and
/// `Content-Length` body).
pub async fn request_on(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("an answer with a content-length");
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer on the kept connection")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}
