//! Proxy hot paths: picking an endpoint (round-robin and cookie affinity) and a whole
//! HTTP/1.1 request through the proxy over loopback keep-alive, next to the same request
//! sent straight to the backend. Run with `cargo bench -p proxy-core --bench proxy`; add
//! `-- --quick` for a short run.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy_core::balance::{AffinityKey, AffinityMode, CookieAffinity, EjectionPolicy, Registry};
use proxy_core::config::Runtime as _;
use proxy_core::http::{Proxy, ProxyOptions};
use proxy_core::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};
use proxy_core::{Backend, BackendId, Config, ConfigHandle, Endpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn backend(n: u8) -> Backend {
    let eps = (1..=n)
        .map(|i| Endpoint::ready(SocketAddr::from(([10, 0, 0, i], 8080))))
        .collect();
    Backend::new(BackendId::new("bench", "svc", "http"), eps)
}

fn pick(c: &mut Criterion) {
    let reg = Registry::new(AffinityKey::random(), EjectionPolicy::default());
    let plain = backend(10);
    let mut config = Config::default();
    config
        .backends
        .insert(plain.id.clone(), std::sync::Arc::new(plain.clone()));
    reg.apply(&config);
    c.bench_function("pick/round_robin_10", |b| {
        b.iter(|| black_box(reg.pick(black_box(&plain), None, None, None).ok()))
    });
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let affinity = CookieAffinity {
            mode,
            ..CookieAffinity::default()
        };
        let aff = Some(&affinity);
        let cookie = reg
            .pick(&plain, aff, None, None)
            .ok()
            .and_then(|c| c.set_cookie)
            .unwrap_or_default();
        c.bench_function(&format!("pick/{mode:?}_cookie_10"), |b| {
            b.iter(|| black_box(reg.pick(black_box(&plain), aff, None, Some(&cookie)).ok()))
        });
        c.bench_function(&format!("pick/{mode:?}_new_session_10"), |b| {
            b.iter(|| black_box(reg.pick(black_box(&plain), aff, None, None).ok()))
        });
    }
}

async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn client(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut SendRequest<Full<Bytes>>) {
    sender.ready().await.unwrap();
    let req = Request::get("/bench")
        .header("host", "bench.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    black_box(resp.into_body().collect().await.unwrap());
}

fn round_trip(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (mut direct, mut proxied) = rt.block_on(async {
        let backend_addr = start_backend().await;
        let be = Backend::new(
            BackendId::new("bench", "svc", "http"),
            vec![Endpoint::ready(backend_addr)],
        );
        let config = Config {
            routes: RouteTable::build(vec![RouteRule {
                host: HostMatch::parse(Some("bench.test")).unwrap(),
                path: "/".into(),
                path_type: PathType::Prefix,
                target: RouteTarget {
                    backend: be.id.clone(),
                    policy: Default::default(),
                    source: "bench/ingress".into(),
                },
            }]),
            backends: [(be.id.clone(), Arc::new(be))].into_iter().collect(),
            ..Config::default()
        };
        let proxy = Proxy::new(ConfigHandle::new(config), ProxyOptions::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let shutdown = proxy.shutdown();
        tokio::spawn(async move { proxy.serve_listener(listener, shutdown).await });
        (client(backend_addr).await, client(proxy_addr).await)
    });
    c.bench_function("round_trip/direct", |b| {
        b.iter(|| rt.block_on(one(&mut direct)))
    });
    c.bench_function("round_trip/proxied", |b| {
        b.iter(|| rt.block_on(one(&mut proxied)))
    });
}

criterion_group!(benches, pick, round_trip);
criterion_main!(benches);
