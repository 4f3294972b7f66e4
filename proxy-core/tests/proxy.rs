//! End-to-end forwarding through a real proxy listener to real backends on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use proxy_core::http::{ProxyObserver, ProxyOptions, ResponseEvent};
use proxy_core::pipeline::{RequestFilter, SslRedirect};
use proxy_core::routes::RouteTable;
use proxy_core::{BackendKind, Config, Timeouts};
use tokio::net::TcpStream;

#[tokio::test]
async fn forwards_with_forwarded_headers_and_without_hop_by_hop() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    let r = get_with(
        px.addr,
        "App.Test:8080",
        "/some/path?q=1",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=9"),
            ("proxy-connection", "keep-alive"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "one");
    assert_eq!(r.header("echo-host"), Some("App.Test:8080"), "Host is kept");
    assert_eq!(r.header("echo-uri"), Some("/some/path?q=1"));
    // By default a client's forwarded headers are not believed: the peer is the client.
    assert_eq!(r.header("echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        r.header("echo-x-original-forwarded-for"),
        Some("203.0.113.9")
    );
    assert_eq!(r.header("echo-x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("echo-x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("echo-x-forwarded-host"), Some("app.test"));
    let port = px.addr.port().to_string();
    assert_eq!(r.header("echo-x-forwarded-port"), Some(port.as_str()));
    for hop in ["x-private", "keep-alive", "proxy-connection"] {
        assert!(
            r.header(&format!("echo-{hop}")).is_none(),
            "{hop} was forwarded"
        );
    }
}

#[tokio::test]
async fn no_route_and_no_default_backend_is_404() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(vec![], vec![backend("one", &[b.addr])])).await;
    let r = get(px.addr, "nowhere.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "404 Not Found\n");
    assert_eq!(r.header("server"), Some("portico"));
    assert!(r.header("date").is_some());
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn default_backend_catches_unrouted_requests() {
    let b = TestBackend::start("fallback").await;
    let mut cfg = config(vec![], vec![backend("fallback", &[b.addr])]);
    cfg.default_backend = Some(target("fallback"));
    let px = TestProxy::start(cfg).await;
    let r = get(px.addr, "anything.test", "/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "fallback");
}

#[tokio::test]
async fn backend_without_ready_endpoint_is_503() {
    let b = TestBackend::start("one").await;
    let mut be = backend("one", &[b.addr]);
    if let BackendKind::Endpoints(eps) = &mut be.kind {
        eps[0].ready = false;
    }
    let px = TestProxy::start(config(vec![rule("app.test", "one")], vec![be])).await;
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "503 Service Unavailable\n");
    assert_eq!(b.hits(), 0);
    // A route to a backend the config lacks is the same answer, not a panic.
    let px2 = TestProxy::start(config(vec![rule("app.test", "missing")], vec![])).await;
    assert_eq!(
        get(px2.addr, "app.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn upstream_hangup_is_502_and_refused_everywhere_is_502() {
    let (addr, _task) = hangup_backend().await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[addr])],
    ))
    .await;
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.text(), "502 Bad Gateway\n");

    let dead = dead_addr().await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[dead])],
    ))
    .await;
    assert_eq!(
        get(px.addr, "app.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let b = TestBackend::start("slow").await;
    let be = backend("slow", &[b.addr]);
    let r = with_policy(rule("app.test", "slow"), |p| {
        p.timeouts = Timeouts {
            read: Duration::from_secs(1),
            ..Timeouts::default()
        }
    });
    let px = TestProxy::start(config(vec![r], vec![be])).await;
    let r = get(px.addr, "app.test", "/slow/30000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.text(), "504 Gateway Timeout\n");
    // A fast one on the same backend still works.
    assert_eq!(
        get(px.addr, "app.test", "/slow/0").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn refused_endpoint_costs_the_client_nothing() {
    let live = TestBackend::start("live").await;
    let dead = dead_addr().await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "mixed")],
        vec![backend("mixed", &[dead, live.addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    for i in 0..50 {
        let r = conn.get("app.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.text(), "live");
    }
    assert_eq!(live.hits(), 50);
}

#[tokio::test]
async fn ejected_endpoint_comes_back_by_itself() {
    let a = TestBackend::start("a").await;
    // Reserve an address, refuse on it first, then start a backend on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = listener.local_addr().unwrap();
    drop(listener);
    let opts = ProxyOptions {
        ejection: proxy_core::balance::EjectionPolicy {
            base: Duration::from_millis(200),
            max: Duration::from_millis(200),
        },
        ..ProxyOptions::default()
    };
    let px = TestProxy::start_with(
        config(
            vec![rule("app.test", "ab")],
            vec![backend("ab", &[a.addr, b_addr])],
        ),
        opts,
    )
    .await;
    for _ in 0..4 {
        assert_eq!(get(px.addr, "app.test", "/").await.text(), "a");
    }
    // Bring b up on the reserved port and wait for it to get traffic again.
    let b_listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = b_listener.accept().await.unwrap();
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"b"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ejected endpoint never came back"
        );
        let r = get(px.addr, "app.test", "/").await;
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;

    // Response: the first chunk arrives while the upstream is still sending.
    let mut conn = Conn::open(px.addr).await;
    let req = Request::get("/stream")
        .header("host", "app.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .expect("first chunk before the upstream finished")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first"));

    // Request: a streamed upload is echoed back as it goes.
    let (mut tx, rx) = futures::channel::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >(1);
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(c);
    let req = Request::post("/echo")
        .header("host", "app.test")
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    use futures::SinkExt;
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"ping-1"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"ping-1"));
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"ping-2"))))
        .await
        .unwrap();
    let frame = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"ping-2"));
    drop(tx);
    assert!(tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn large_body_round_trips_intact() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::open(px.addr).await;
    let req = Request::post("/echo")
        .header("host", "app.test")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    let r = Reply::read(resp).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == payload, "body differs");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let b = TestBackend::start("ws").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "ws")],
        vec![backend("ws", &[b.addr])],
    ))
    .await;
    let mut tunnel = open_tunnel(px.addr, "app.test").await;
    for i in 0..20 {
        echo(&mut tunnel, format!("message {i}").as_bytes()).await;
    }
    echo(&mut tunnel, &vec![7u8; 200_000]).await;
}

#[tokio::test]
async fn ssl_redirect_answers_308_to_https() {
    let b = TestBackend::start("one").await;
    let r1 = with_policy(rule("app.test", "one"), |p| {
        p.request
            .push(RequestFilter::SslRedirect(SslRedirect::default()))
    });
    let cfg = config(vec![r1], vec![backend("one", &[b.addr])]);
    let px = TestProxy::start_with(
        cfg.clone(),
        ProxyOptions {
            https_port: 8443,
            ..ProxyOptions::default()
        },
    )
    .await;
    let r = get(px.addr, "app.test:8080", "/a/b?x=1&y=2").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location"),
        Some("https://app.test:8443/a/b?x=1&y=2")
    );
    let px443 = TestProxy::start(cfg).await;
    // ingress-nginx drops the request URI's trailing `/` (no `preserve-trailing-slash`),
    // so `/` leaves nothing: clients read an empty path as `/`.
    let r = get(px443.addr, "app.test", "/").await;
    assert_eq!(r.header("location"), Some("https://app.test"));
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("http://app.test/h2")
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let r = Reply::read(resp).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "one");
        assert_eq!(r.header("echo-host"), Some("app.test"));
    }
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(u16, Option<String>, String)>>,
}

impl ProxyObserver for Recorder {
    fn on_response(&self, ev: &ResponseEvent<'_>) {
        self.seen.lock().unwrap().push((
            ev.status.as_u16(),
            ev.backend.map(|b| b.to_string()),
            ev.path.to_owned(),
        ));
    }
}

#[tokio::test]
async fn observer_sees_every_response() {
    let b = TestBackend::start("one").await;
    let rec = Arc::new(Recorder::default());
    let opts = ProxyOptions {
        observer: Some(rec.clone()),
        ..ProxyOptions::default()
    };
    let px = TestProxy::start_with(
        config(
            vec![rule("app.test", "one")],
            vec![backend("one", &[b.addr])],
        ),
        opts,
    )
    .await;
    get(px.addr, "app.test", "/ok").await;
    px.handle.store(Config {
        routes: RouteTable::build(vec![]),
        ..Config::default()
    });
    get(px.addr, "app.test", "/missing").await;
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (200, Some("default/one:80".to_owned()), "/ok".to_owned()),
            (404, None, "/missing".to_owned()),
        ]
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_and_stops_accepting() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    let mut idle = Conn::open(px.addr).await;
    assert_eq!(idle.get("app.test", "/").await.status, StatusCode::OK);
    let addr = px.addr;
    let in_flight = tokio::spawn(async move { get(addr, "app.test", "/slow/700").await });
    // Wait until the slow request reached the backend.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while b.hits() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = px.shutdown.drain(DEADLINE).await;
    assert!(
        drained,
        "connections still open after the deadline: {}",
        px.shutdown.active()
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "in-flight request finished");
    tokio::time::timeout(DEADLINE, px.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still accepting"
    );
}

#[tokio::test]
async fn routes_by_host_and_forwards_the_canonical_path() {
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    let px = TestProxy::start(config(
        vec![rule("one.test", "one"), rule("two.test", "two")],
        vec![backend("one", &[one.addr]), backend("two", &[two.addr])],
    ))
    .await;
    assert_eq!(get(px.addr, "one.test", "/").await.text(), "one");
    assert_eq!(get(px.addr, "TWO.test:80", "/").await.text(), "two");
    assert_eq!(
        get(px.addr, "three.test", "/").await.status,
        StatusCode::NOT_FOUND
    );

    let r = get(px.addr, "one.test", "/a/./b/../c//d?x=%2e%2e&y").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("echo-uri"), Some("/a/c/d?x=%2e%2e&y"));
    let r = get(px.addr, "one.test", "/a%00b").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(one.hits() + two.hits(), 3);

    // HTTP/2 keeps its host when the path is rewritten.
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://two.test/x/../y")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = Reply::read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.text(), "two");
    assert_eq!(r.header("echo-host"), Some("two.test"));
    assert_eq!(r.header("echo-uri"), Some("/y"));
}

#[tokio::test]
async fn external_name_backend_resolves_at_connect_time() {
    let b = TestBackend::start("external").await;
    let mut be = backend("ext", &[]);
    be.kind = BackendKind::ExternalName {
        host: "localhost".into(),
        port: b.addr.port(),
    };
    let px = TestProxy::start(config(vec![rule("app.test", "ext")], vec![be])).await;
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "external");
    assert_eq!(
        r.header("echo-host"),
        Some("app.test"),
        "Host stays the client's"
    );

    let mut gone = backend("ext", &[]);
    gone.kind = BackendKind::ExternalName {
        host: "no-such-host.invalid".into(),
        port: 80,
    };
    px.handle
        .store(config(vec![rule("app.test", "ext")], vec![gone]));
    assert_eq!(
        get(px.addr, "app.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// Reads from `stream` up to the end of a request head: `None` if it closes first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(got)
}

/// A backend that answers one request per connection, keeps the connection open as if
/// for keep-alive, then hangs up on the next request without answering: the race of an
/// upstream closing an idle connection just as the proxy reuses it.
async fn one_shot_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Wait for the next request, then drop the connection unanswered.
                let _ = stream.read(&mut [0u8; 8192]).await;
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn idempotent_request_is_replayed_when_a_reused_connection_dies() {
    let (addr, answered) = one_shot_backend().await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    for i in 0..10 {
        let r = conn.get("app.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "GET {i}");
    }
    assert_eq!(answered.load(Ordering::SeqCst), 10);
    // A request with a body cannot be replayed: the client is told.
    let req = Request::post("/")
        .header("host", "app.test")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let r = Reply::read(conn.send(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn serve_connection_takes_any_stream_and_honours_its_scheme() {
    use proxy_core::http::{ConnInfo, Scheme};
    let b = TestBackend::start("one").await;
    let r1 = with_policy(rule("app.test", "one"), |p| {
        p.request
            .push(RequestFilter::SslRedirect(SslRedirect::default()))
    });
    let px = TestProxy::start(config(vec![r1], vec![backend("one", &[b.addr])])).await;
    let info = |alpn_h2| ConnInfo {
        remote: "192.0.2.10:40000".parse().unwrap(),
        local: "127.0.0.1:8443".parse().unwrap(),
        scheme: Scheme::Https,
        sni: Some("app.test".into()),
        alpn_h2,
        proxied: None,
        client_cert: None,
    };

    // HTTP/1.1 over an in-memory stream standing in for TLS.
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let proxy = px.proxy.clone();
    let served = tokio::spawn(async move { proxy.serve_connection(server_io, info(false)).await });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/secure")
        .header("host", "app.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = Reply::read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "no redirect over HTTPS");
    assert_eq!(r.header("echo-x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("echo-x-forwarded-port"), Some("8443"));
    assert_eq!(r.header("echo-x-real-ip"), Some("192.0.2.10"));
    drop(sender);
    tokio::time::timeout(DEADLINE, served)
        .await
        .unwrap()
        .unwrap();

    // ALPN h2: HTTP/2 only.
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let proxy = px.proxy.clone();
    tokio::spawn(async move { proxy.serve_connection(server_io, info(true)).await });
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), TokioIo::new(client_io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://app.test/h2")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = Reply::read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "one");
}

#[tokio::test]
async fn upstream_connections_are_reused_sequentially_and_concurrently() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    for i in 0..50 {
        let r = conn.get("app.test", "/seq").await;
        assert_eq!(r.status, StatusCode::OK, "GET {i}");
    }
    // One request at a time: each follows the previous response, by which time its
    // connection is (nearly always) ready again.
    let sequential = b.accepts.load(Ordering::SeqCst);
    assert!(
        sequential <= 2,
        "{sequential} upstream connections for 50 requests"
    );

    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = px.addr;
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                for _ in 0..25 {
                    let r = conn.get("app.test", "/par").await;
                    assert_eq!(r.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(b.hits(), 250);
    // About one connection per concurrent client; far from one per request.
    let accepts = b.accepts.load(Ordering::SeqCst);
    assert!(
        accepts <= 12,
        "{accepts} upstream connections for 300 requests"
    );
}

#[tokio::test]
async fn backends_sharing_an_endpoint_share_its_connections() {
    let b = TestBackend::start("pod").await;
    let px = TestProxy::start(config(
        vec![rule("a.test", "svc-a"), rule("b.test", "svc-b")],
        vec![backend("svc-a", &[b.addr]), backend("svc-b", &[b.addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    for i in 0..20 {
        let host = if i % 2 == 0 { "a.test" } else { "b.test" };
        let r = conn.get(host, "/").await;
        assert_eq!(r.status, StatusCode::OK, "GET {i} via {host}");
    }
    assert_eq!(b.hits(), 20);
    // Two Services over the same pod: one connection serves both.
    let accepts = b.accepts.load(Ordering::SeqCst);
    assert!(
        accepts <= 2,
        "{accepts} upstream connections for 20 requests"
    );
}

/// A backend that sends its response head at once and the body after `delay`, and counts
/// the connections open to it.
async fn slow_counting_backend(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    let body = futures::stream::once(async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                            Bytes::from_static(b"slow"),
                        ))
                    });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::StreamBody::new(body),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn idle_upstream_connections_beyond_the_limit_are_closed() {
    let (addr, open) = slow_counting_backend(Duration::from_millis(300)).await;
    let mut cfg = config(
        vec![rule("app.test", "slow")],
        vec![backend("slow", &[addr])],
    );
    // upstream-keepalive-connections
    cfg.settings.upstream_keepalive.connections = 2;
    let px = TestProxy::start(cfg).await;
    // Six at once need six connections; as their responses end, each goes back to the
    // pool, and those beyond the limit are closed then.
    let burst: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { get(px.addr, "app.test", "/").await.status }))
        .collect();
    for r in burst {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::SeqCst) > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} upstream connections still open, limit 2",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next request reuses a pooled one.
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    assert_eq!(open.load(Ordering::SeqCst), 2);
}

/// A proxy whose pool keeps idle pod connections 300 ms (`upstream-keepalive-timeout`),
/// after four requests at once left four of them, and the count of those open.
async fn four_pooled_for_300ms() -> (TestProxy, Arc<AtomicUsize>) {
    let (addr, open) = slow_counting_backend(Duration::from_millis(200)).await;
    let mut cfg = config(
        vec![rule("app.test", "slow")],
        vec![backend("slow", &[addr])],
    );
    cfg.settings.upstream_keepalive.timeout = Duration::from_millis(300);
    let px = TestProxy::start(cfg).await;
    let burst: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { get(px.addr, "app.test", "/").await.status }))
        .collect();
    for r in burst {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(open.load(Ordering::SeqCst), 4);
    (px, open)
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_past_the_timeout_without_more_requests() {
    let (_px, open) = four_pooled_for_300ms().await;
    // No request comes again: the pool closes them on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} idle upstream connections still open",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod that counts the connections it accepts and the requests that asked it to
/// close.
async fn connection_counting_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)
{
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closes.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let close = req
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    if close {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted, closes)
}

#[tokio::test]
async fn upstream_keepalive_requests_and_connections_apply_as_configured() {
    let (addr, accepted, closes) = connection_counting_backend().await;
    let mut cfg = config(vec![rule("app.test", "b")], vec![backend("b", &[addr])]);
    // upstream-keepalive-requests: three requests a connection.
    cfg.settings.upstream_keepalive.requests = 3;
    let px = TestProxy::start(cfg.clone()).await;
    for _ in 0..7 {
        assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "7 requests, 3 a connection"
    );
    assert_eq!(closes.load(Ordering::SeqCst), 0);
    // upstream-keepalive-connections 0, from the next configuration on: nothing is kept,
    // and the pod is told so.
    cfg.generation += 1;
    cfg.settings.upstream_keepalive.connections = 0;
    px.handle.store(cfg.clone());
    for _ in 0..3 {
        assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    }
    // The connection pooled before carries the first of them, and is closed after it.
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    assert_eq!(closes.load(Ordering::SeqCst), 3);
    // upstream-keepalive-time: a connection that old is closed after the request it
    // carries.
    cfg.generation += 1;
    cfg.settings.upstream_keepalive = Default::default();
    cfg.settings.upstream_keepalive.time = Duration::from_millis(200);
    px.handle.store(cfg);
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        6,
        "reused once past its time"
    );
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 7, "then closed");
}

#[tokio::test]
async fn a_pod_that_answers_before_reading_the_body_is_heard() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The pod refuses the upload from its head alone, then drains what comes and
    // closes, as servers do: the client gets the refusal, not a 502.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                    .await;
                let drain = async { while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            });
        }
    });
    let px = TestProxy::start(config(
        vec![rule("app.test", "pod")],
        vec![backend("pod", &[addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    let req = Request::post("/upload")
        .header("host", "app.test")
        .body(Full::new(Bytes::from(vec![b'x'; 256 * 1024])))
        .unwrap();
    let r = Reply::read(conn.send(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.text(), "big!");
    // The pod's connection is not reused: the next request gets its own answer.
    let again = get(px.addr, "app.test", "/").await;
    assert_eq!(again.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_busy_pool_still_closes_connections_idle_past_the_timeout() {
    let (px, open) = four_pooled_for_300ms().await;
    // One request at a time keeps reusing the most recent; the others, idle past the
    // timeout, are closed meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::SeqCst) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} upstream connections still open",
            open.load(Ordering::SeqCst)
        );
        assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    }
}

/// A pod that keeps every request head it reads, answers `200 ok` and closes.
async fn head_keeper() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let Some(got) = read_head(&mut stream).await else {
                    return;
                };
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, heads)
}

/// The values of every `name` field in a request head, in order.
fn values_in<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn each_forwarding_field_reaches_the_pod_once() {
    let (pod, heads) = head_keeper().await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "pod")],
        vec![backend("pod", &[pod])],
    ))
    .await;
    let last_head = || {
        heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request head")
    };
    let once = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-scheme", "http"),
        ("x-forwarded-host", "app.test"),
    ];
    // Written after the client's fields (it sent none of these).
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    let head = last_head();
    for (name, value) in once {
        assert_eq!(values_in(&head, name), [value], "{name} in {head}");
    }
    assert_eq!(values_in(&head, "x-forwarded-port").len(), 1, "{head}");
    assert!(
        values_in(&head, "x-original-forwarded-for").is_empty(),
        "{head}"
    );
    // Set in the map, over the client's own.
    let r = get_with(
        px.addr,
        "app.test",
        "/",
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-real-ip", "198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let head = last_head();
    for (name, value) in once {
        assert_eq!(values_in(&head, name), [value], "{name} in {head}");
    }
    assert_eq!(
        values_in(&head, "x-original-forwarded-for"),
        ["198.51.100.1"],
        "{head}"
    );
    // A global field set over a forwarding one: the map takes them all.
    let mut cfg = config(vec![rule("app.test", "pod")], vec![backend("pod", &[pod])]);
    cfg.settings.proxy_set_headers = proxy_core::pipeline::SetHeaders(vec![(
        hyper::header::HeaderName::from_static("x-real-ip"),
        hyper::header::HeaderValue::from_static("forged"),
    )]);
    px.handle.store(cfg);
    assert_eq!(get(px.addr, "app.test", "/").await.status, StatusCode::OK);
    let head = last_head();
    assert_eq!(values_in(&head, "x-real-ip"), ["forged"], "{head}");
    assert_eq!(values_in(&head, "x-forwarded-for"), ["127.0.0.1"], "{head}");
}
