//! HTTP/2 to pods (`backend-protocol: H2C`): requests share a connection, and a pod
//! that closes its connections with GOAWAY fails none of the requests it had not taken.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_core::config::BackendProtocol;
use tokio::net::TcpListener;

use common::*;

/// An h2c pod answering each request after `delay`; every connection is told to go
/// away (GOAWAY) once it has taken `per_conn` requests. Counts the connections it
/// accepted, and those still open.
async fn h2c_pod(delay: Duration, per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, accepted, _) = h2c_pod_counting_open(delay, per_conn).await;
    (addr, accepted)
}

async fn h2c_pod_counting_open(
    delay: Duration,
    per_conn: usize,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counted, still_open) = (conns.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            still_open.fetch_add(1, Ordering::SeqCst);
            let closed = OnDrop(still_open.clone());
            tokio::spawn(async move {
                let _closed = closed;
                let taken = Arc::new(AtomicUsize::new(0));
                let enough = Arc::new(tokio::sync::Notify::new());
                let svc = {
                    let (taken, enough) = (taken.clone(), enough.clone());
                    service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n = taken.fetch_add(1, Ordering::SeqCst) + 1;
                        if n == per_conn {
                            enough.notify_one();
                        }
                        async move {
                            tokio::time::sleep(delay).await;
                            // With how many forwarding fields it came: one each.
                            let forwarded = ["x-forwarded-for", "x-real-ip", "x-forwarded-proto"]
                                .map(|name| req.headers().get_all(name).iter().count());
                            let body =
                                format!("{:?} {} {forwarded:?}", req.version(), req.uri().path());
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    })
                };
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    (addr, conns, open)
}

/// Counts a connection closed when the task serving it ends, however it ends.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn h2c_config(pod: SocketAddr) -> proxy_core::Config {
    let rule = with_policy(rule("h2.test", "pod"), |p| {
        p.protocol = Some(BackendProtocol::H2c)
    });
    config(vec![rule], vec![backend("pod", &[pod])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_http2_connection() {
    let (pod, conns) = h2c_pod(Duration::from_millis(200), usize::MAX).await;
    let proxy = TestProxy::start(h2c_config(pod)).await;
    let calls = (0..20).map(|i| {
        let addr = proxy.addr;
        tokio::spawn(async move { get(addr, "h2.test", &format!("/{i}")).await })
    });
    for (i, call) in calls.enumerate() {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("HTTP/2.0 /{i} [1, 1, 1]"));
    }
    // Twenty requests in flight at once, one connection to the pod.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_fails_no_request_the_pod_had_not_taken() {
    // Each connection goes away after 3 requests; 40 requests, 4 at a time.
    let (pod, conns) = h2c_pod(Duration::from_millis(5), 3).await;
    let proxy = TestProxy::start(h2c_config(pod)).await;
    for batch in 0..10 {
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let addr = proxy.addr;
                tokio::spawn(async move { get(addr, "h2.test", &format!("/{batch}-{i}")).await })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    // The pod did close connections, and the proxy went on with new ones.
    assert!(conns.load(Ordering::SeqCst) >= 10, "{conns:?}");
}

/// Waits until `open` falls to `want`.
async fn until_open(open: &AtomicUsize, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections to the pod open, expected {want}",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_requests_and_time_retire_http2_connections() {
    let (pod, accepted, open) = h2c_pod_counting_open(Duration::ZERO, usize::MAX).await;
    // upstream-keepalive-requests: three streams a connection.
    let mut cfg = h2c_config(pod);
    cfg.settings.upstream_keepalive.requests = 3;
    let proxy = TestProxy::start(cfg.clone()).await;
    for i in 0..7 {
        let reply = get(proxy.addr, "h2.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "7 requests, 3 a connection"
    );
    // The two that carried their three are closed once their streams are done.
    until_open(&open, 1).await;

    // upstream-keepalive-time: the request that finds a connection that old still
    // rides it; the next one opens another, and the old one closes.
    cfg.generation += 1;
    cfg.settings.upstream_keepalive = Default::default();
    cfg.settings.upstream_keepalive.time = Duration::from_millis(300);
    proxy.handle.store(cfg);
    let reply = get(proxy.addr, "h2.test", "/fresh").await;
    assert_eq!(reply.status, 200);
    let before = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(proxy.addr, "h2.test", "/old").await.status, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "reused once past its time"
    );
    assert_eq!(get(proxy.addr, "h2.test", "/new").await.status, 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before + 1,
        "then another opened"
    );
    until_open(&open, 1).await;
}
