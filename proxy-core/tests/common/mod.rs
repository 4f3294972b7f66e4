//! Shared fixtures: in-test backends that say which endpoint answered, a proxy on an
//! ephemeral port, and small clients. Everything listens on 127.0.0.1.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_core::balance::CookieAffinity;
use proxy_core::http::{Proxy, ProxyOptions, Shutdown};
use proxy_core::pipeline::RoutePolicy;
use proxy_core::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};
use proxy_core::{Backend, BackendId, Config, ConfigHandle, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const DEADLINE: Duration = Duration::from_secs(30);

type TestBody = Either<
    Either<Full<Bytes>, Incoming>,
    StreamBody<futures::channel::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>>,
>;

/// A backend endpoint: answers with its name and echoes the headers it received as
/// `echo-<name>` response headers.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted: shows whether the proxy reuses upstream connections.
    pub accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let name_owned = name.to_owned();
        let counter = hits.clone();
        let accepts = Arc::new(AtomicUsize::new(0));
        let accepted = accepts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let name = name_owned.clone();
                let hits = counter.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let name = name.clone();
                        hits.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(&name, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestBackend {
            name: name.to_owned(),
            addr,
            hits,
            accepts,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn answer(name: &str, mut req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    if req.headers().contains_key("upgrade") {
        // Switch protocols and echo every byte back: a stand-in for a WebSocket echo.
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("x-endpoint", name)
            .body(Either::Left(Either::Left(Full::new(Bytes::new()))))
            .unwrap();
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/echo" {
        return Response::builder()
            .header("x-endpoint", name)
            .body(Either::Left(Either::Right(req.into_body())))
            .unwrap();
    }
    if path == "/stream" {
        // One chunk now, then nothing until the client goes away: only a streaming proxy
        // lets the client see the first chunk.
        let (mut tx, rx) = futures::channel::mpsc::channel(1);
        tokio::spawn(async move {
            use futures::SinkExt;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        return Response::builder()
            .header("x-endpoint", name)
            .body(Either::Right(StreamBody::new(rx)))
            .unwrap();
    }
    // `/status/NNN...`: answers with that status, echoing as below. A backend named
    // `errors...` answers with the status its `X-Code` names, as ingress-nginx's
    // custom-error-pages backend does.
    let code = match name.starts_with("errors") {
        true => req.headers().get("x-code").and_then(|v| v.to_str().ok()),
        false => path.strip_prefix("/status/").and_then(|s| s.get(..3)),
    };
    let status = code
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut builder = Response::builder()
        .status(status)
        .header("x-endpoint", name);
    for (k, v) in req.headers() {
        builder = builder.header(format!("echo-{k}"), v);
    }
    builder = builder.header("echo-uri", req.uri().to_string());
    builder = builder.header("echo-method", req.method().as_str());
    builder
        .body(Either::Left(Either::Left(Full::new(Bytes::from(
            name.to_owned(),
        )))))
        .unwrap()
}

pub fn backend_id(name: &str) -> BackendId {
    BackendId::new("default", name, "80")
}

pub fn target(name: &str) -> RouteTarget {
    RouteTarget {
        backend: backend_id(name),
        policy: Default::default(),
        source: "default/test".into(),
    }
}

/// One Prefix `/` rule per host, each to its own backend.
pub fn rule(host: &str, backend: &str) -> RouteRule {
    RouteRule {
        host: HostMatch::parse(Some(host)).expect("test host"),
        path: "/".to_owned(),
        path_type: PathType::Prefix,
        target: target(backend),
    }
}

pub fn backend(name: &str, addrs: &[SocketAddr]) -> Backend {
    Backend::new(
        backend_id(name),
        addrs.iter().map(|a| Endpoint::ready(*a)).collect(),
    )
}

/// `rule` with its policy changed by `f`.
pub fn with_policy(mut rule: RouteRule, f: impl FnOnce(&mut RoutePolicy)) -> RouteRule {
    let mut policy = (*rule.target.policy).clone();
    f(&mut policy);
    rule.target.policy = Arc::new(policy);
    rule
}

/// `rule` with cookie affinity.
pub fn sticky(rule: RouteRule, affinity: CookieAffinity) -> RouteRule {
    with_policy(rule, |p| p.affinity = Some(affinity))
}

pub fn config(rules: Vec<RouteRule>, backends: Vec<Backend>) -> Config {
    Config {
        generation: 1,
        routes: RouteTable::build(rules),
        default_backend: None,
        backends: backends
            .into_iter()
            .map(|b| (b.id.clone(), Arc::new(b)))
            .collect(),
        l4: Vec::new(),
        ..Config::default()
    }
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub handle: ConfigHandle,
    pub shutdown: Shutdown,
    pub task: JoinHandle<()>,
}

impl TestProxy {
    pub async fn start(config: Config) -> TestProxy {
        Self::start_with(config, ProxyOptions::default()).await
    }

    pub async fn start_with(config: Config, opts: ProxyOptions) -> TestProxy {
        let handle = ConfigHandle::new(config);
        let proxy = Proxy::new(handle.clone(), opts);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = proxy.shutdown();
        let p = proxy.clone();
        let s = shutdown.clone();
        let task = tokio::spawn(async move { p.serve_listener(listener, s).await });
        TestProxy {
            addr,
            proxy,
            handle,
            shutdown,
            task,
        }
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Conn { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    /// GET `path` with `host`, returning status, headers and the whole body.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, self.send(req))
            .await
            .expect("response within deadline")
            .expect("response");
        Reply::read(resp).await
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .expect("body within deadline")
            .expect("body")
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// GET on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Conn::open(addr).await.get(host, path).await
}

/// GET with extra headers on a fresh connection.
pub async fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut conn = Conn::open(addr).await;
    let mut req = Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        DEADLINE,
        conn.send(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("response within deadline")
    .expect("response");
    Reply::read(resp).await
}

/// Writes raw bytes and reads until the server closes (or the deadline).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A backend that reads a request head and hangs up without answering.
pub async fn hangup_backend() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    (addr, task)
}

/// An address nothing listens on: bound, then released.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Opens an `Upgrade: websocket` tunnel through the proxy and returns the raw stream
/// after the 101.
pub async fn open_tunnel(addr: SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, async {
        while !got.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert_eq!(
                n,
                1,
                "proxy closed during the upgrade: {}",
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
    })
    .await
    .expect("101 within deadline");
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Sends `msg` through a tunnel and expects it back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut back))
        .await
        .expect("echo within deadline")
        .expect("echo");
    assert_eq!(back, msg);
}

pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}

/// The echoed value of request header `name` in a raw HTTP/1.1 answer of [`TestBackend`].
pub fn echoed<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("echo-{name}: ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// A backend that reads a request head, writes `answer`, then holds the connection for
/// an hour without another byte either way.
pub async fn silent_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    addr
}
