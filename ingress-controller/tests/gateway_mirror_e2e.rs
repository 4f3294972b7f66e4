//! HTTPRoute RequestMirror through the binary: the mirror gets a copy of each request
//! (path, query, headers as the backend gets them, and a small body), the client gets
//! the backend's answer, and a mirror that is down or slow changes nothing for it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const FOLLOW: Duration = Duration::from_secs(20);
const NS: &str = "gateway-conformance-infra";

/// One request a [`Recorder`] saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A backend that keeps every request it gets and answers 200 after `delay`.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(delay: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let kept = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            kept.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_owned())
                                    })
                                    .collect(),
                                body,
                            });
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"mirror",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for a request whose target is `uri`.
    async fn wait_for(&self, uri: &str) -> Seen {
        let deadline = Instant::now() + FOLLOW;
        loop {
            if let Some(s) = self.seen().into_iter().find(|s| s.uri == uri) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no mirrored {uri}: {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn service(name: &str, backend: SocketAddr) -> String {
    namespaced_service_yaml(NS, name, ("http", 8080), backend)
}

/// A rule on `path` to `infra-backend-v1` that mirrors to `mirror` (with `extra` in
/// the filter's settings).
fn rule(path: &str, mirror: &str, extra: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Header-Set, value: set-overwrites-values}}]}}
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: {mirror}, namespace: {NS}, port: 8080}}{extra}}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"
    )
}

async fn send(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{uri}"))
        .header("host", "mirror.example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mirror_copies_requests_and_never_affects_them() {
    let v1 = Backend::start("v1").await;
    let shadow = Recorder::start(Duration::ZERO).await;
    let slow = Recorder::start(Duration::from_secs(5)).await;
    // A Service whose only endpoint refuses connections.
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  gatewayClassName: portico
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: request-mirror, namespace: {NS}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [mirror.example.com]
  rules:
"
    );
    text.push_str(&rule("/mirror", "infra-backend-v2", ""));
    text.push_str(&rule("/slow", "slow-mirror", ""));
    text.push_str(&rule("/down", "down-mirror", ""));
    text.push_str(&rule("/never", "infra-backend-v2", ", percent: 0"));
    text.push_str(&rule("/missing", "no-such-service", ""));
    text.push_str(&service("infra-backend-v1", v1.addr));
    text.push_str(&service("infra-backend-v2", shadow.addr));
    text.push_str(&service("slow-mirror", slow.addr));
    text.push_str(&service("down-mirror", down));
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(
        ctl.http,
        "mirror.example.com",
        "/mirror/ready",
        FOLLOW,
        |s, _| s == 200,
    )
    .await;
    let http = ctl.http;

    // The mirror sees the request as the backend does: path, query, headers (the
    // header modifier applied) and a small body.
    let got = send(
        http,
        "POST",
        "/mirror/post?q=1",
        &[("x-test", "abc"), ("x-header-set", "client")],
        "hello",
    )
    .await;
    assert_eq!(got, (200, "v1 /mirror/post".to_owned()));
    let seen = shadow.wait_for("/mirror/post?q=1").await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("x-test"), Some("abc"));
    assert_eq!(seen.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(seen.header("host"), Some("mirror.example.com"));
    assert_eq!(seen.body, b"hello");
    let seen = {
        send(http, "GET", "/mirror/get", &[], "").await;
        shadow.wait_for("/mirror/get").await
    };
    assert_eq!((seen.method.as_str(), seen.body.len()), ("GET", 0));

    // A slow mirror does not slow the answer; one that is down does not fail it.
    let start = Instant::now();
    assert_eq!(
        send(http, "GET", "/slow", &[], "").await,
        (200, "v1 /slow".to_owned())
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    slow.wait_for("/slow").await;
    for _ in 0..3 {
        assert_eq!(
            send(http, "GET", "/down", &[], "").await,
            (200, "v1 /down".to_owned())
        );
    }
    // An unusable mirror is reported and the rule serves as before.
    assert_eq!(
        send(http, "GET", "/missing", &[], "").await,
        (200, "v1 /missing".to_owned())
    );
    ctl.wait_log("the route's status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("request-mirror") && l.contains("ResolvedRefs=False (BackendNotFound")
        })
    })
    .await;

    // percent 0: never mirrored.
    for _ in 0..5 {
        send(http, "GET", "/never", &[], "").await;
    }
    send(http, "GET", "/mirror/last", &[], "").await;
    shadow.wait_for("/mirror/last").await;
    assert!(
        !shadow.seen().iter().any(|s| s.uri.starts_with("/never")),
        "{:?}",
        shadow.seen()
    );
}
