//! The request pipeline through the real proxy: per-route policy, the trusted client
//! address, PROXY protocol, the Server header, idle timeouts and body limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use ipnet::IpNet;
use proxy_core::balance::CookieAffinity;
use proxy_core::config::{server_with_version, Timeouts};
use proxy_core::pipeline::{BodyLimit, ClientAddressPolicy, RequestFilter};
use proxy_core::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn affinity_is_the_routes_not_the_backends() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    // Two routes to one backend; only the first asks for cookie affinity.
    let px = TestProxy::start(config(
        vec![
            sticky(rule("sticky.test", "shared"), CookieAffinity::default()),
            rule("plain.test", "shared"),
        ],
        vec![backend("shared", &[a.addr, b.addr])],
    ))
    .await;
    for _ in 0..4 {
        let r = get(px.addr, "plain.test", "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("set-cookie"), None, "a plain route got a cookie");
    }
    let r = get(px.addr, "sticky.test", "/").await;
    let cookie = r
        .header("set-cookie")
        .expect("the sticky route sets a cookie");
    assert!(cookie.starts_with("INGRESSCOOKIE="), "{cookie}");
}

fn with_settings(
    mut cfg: Config,
    f: impl FnOnce(&mut proxy_core::config::ProxySettings),
) -> Config {
    f(&mut cfg.settings);
    cfg
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_peers() {
    let b = TestBackend::start("one").await;
    let base = config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    let trusting = |nets: &[&str]| {
        with_settings(base.clone(), |s| {
            s.client = ClientAddressPolicy {
                use_forwarded_headers: true,
                trusted: nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
                ..ClientAddressPolicy::default()
            }
        })
    };
    let spoof = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ];
    // Off (the default): replaced.
    let px = TestProxy::start(base.clone()).await;
    let r = get_with(px.addr, "app.test", "/", &spoof).await;
    assert_eq!(r.header("echo-x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("echo-x-forwarded-proto"), Some("http"));
    // On, but the peer (127.0.0.1) is outside the trusted ranges: still replaced.
    px.handle.store(trusting(&["10.0.0.0/8"]));
    let r = get_with(px.addr, "app.test", "/", &spoof).await;
    assert_eq!(r.header("echo-x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("echo-x-forwarded-proto"), Some("http"));
    // On, from a trusted peer: believed.
    px.handle.store(trusting(&["127.0.0.0/8"]));
    let r = get_with(px.addr, "app.test", "/", &spoof).await;
    assert_eq!(r.header("echo-x-real-ip"), Some("203.0.113.9"));
    assert_eq!(r.header("echo-x-forwarded-for"), Some("203.0.113.9"));
    assert_eq!(r.header("echo-x-forwarded-proto"), Some("https"));
}

/// One route to `b`, on listeners that expect a PROXY protocol header.
fn behind_proxy_protocol(b: &TestBackend) -> Config {
    with_settings(
        config(
            vec![rule("app.test", "one")],
            vec![backend("one", &[b.addr])],
        ),
        |s| s.proxy_protocol = true,
    )
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client_and_are_required() {
    let b = TestBackend::start("one").await;
    let cfg = behind_proxy_protocol(&b);
    let px = TestProxy::start(cfg).await;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

    let mut v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 80\r\n".to_vec();
    v1.extend_from_slice(request);
    let (answer, _) = raw_exchange(px.addr, &v1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(echoed(&answer, "x-real-ip"), Some("198.51.100.7"));

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]); // v2 PROXY, TCP over IPv6, 36 bytes
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0x9c, 0x40, 0, 80]);
    v2.extend_from_slice(request);
    let (answer, _) = raw_exchange(px.addr, &v2).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(echoed(&answer, "x-real-ip"), Some("2001:db8::7"));

    // Without the header: closed, unanswered, and the backend never hears of it.
    let hits = b.hits();
    let (answer, closed) = raw_exchange(px.addr, request).await;
    assert!(closed);
    assert_eq!(answer, "");
    assert_eq!(b.hits(), hits);
}

#[tokio::test]
async fn server_header_on_every_answer_replaces_the_upstreams() {
    let b = TestBackend::start("one").await;
    let cfg = config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    let px = TestProxy::start(cfg.clone()).await;
    // The test backend sends no Server of its own; hyper's would be replaced anyway.
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.header("server"), Some("portico"));
    let r = get(px.addr, "nowhere.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("server"), Some("portico"));
    px.handle
        .store(with_settings(cfg, |s| s.server = server_with_version()));
    let r = get(px.addr, "app.test", "/").await;
    let want = format!("portico/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(r.header("server"), Some(want.as_str()));
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_is_cut_after_the_read_timeout() {
    // A head and ten bytes of a 100-byte body, then silence.
    let addr = silent_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nServer: stalls\r\n\r\n0123456789",
    )
    .await;
    let r = with_policy(rule("app.test", "stall"), |p| {
        p.timeouts = Timeouts {
            read: Duration::from_secs(1),
            ..Timeouts::default()
        }
    });
    let px = TestProxy::start(config(vec![r], vec![backend("stall", &[addr])])).await;
    let started = Instant::now();
    let (answer, closed) = raw_exchange(px.addr, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(closed, "the client connection was left hanging");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    assert!(answer.contains("server: portico"), "{answer}");
}

#[tokio::test]
async fn a_client_stalling_its_body_gets_408() {
    let b = TestBackend::start("one").await;
    let cfg = with_settings(
        config(
            vec![rule("app.test", "one")],
            vec![backend("one", &[b.addr])],
        ),
        |s| s.client_body_timeout = Duration::from_millis(500),
    );
    let px = TestProxy::start(cfg).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(
        b"POST /slow/3000 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut answer))
        .await
        .expect("the proxy never answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_and_never_sent() {
    let b = TestBackend::start("one").await;
    let r = with_policy(rule("app.test", "one"), |p| {
        p.request.push(RequestFilter::BodyLimit(BodyLimit(16)))
    });
    let px = TestProxy::start(config(vec![r], vec![backend("one", &[b.addr])])).await;
    let (answer, _) = raw_exchange(
        px.addr,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 17\r\n\r\n01234567890123456",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(b.hits(), 0);
    let (answer, _) = raw_exchange(
        px.addr,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789012345",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789012345"), "{answer}");
}

#[tokio::test]
async fn an_upstream_that_stops_taking_the_body_is_cut_after_the_send_timeout() {
    // Reads a request head, then never reads again.
    let addr = silent_backend(b"").await;
    let r = with_policy(rule("app.test", "deaf"), |p| {
        p.timeouts = Timeouts {
            send: Duration::from_secs(1),
            read: Duration::from_secs(60),
            ..Timeouts::default()
        }
    });
    let px = TestProxy::start(config(vec![r], vec![backend("deaf", &[addr])])).await;
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    // Far more than the socket buffers between the proxy and the backend hold.
    let body = 64usize << 20;
    let writer = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: {body}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..body / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut answer))
        .await
        .expect("no answer: the send timeout did not fire")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    writer.abort();
}

/// A route to `b` that buffers request bodies, `memory` bytes of them in memory.
fn buffered_route(b: &TestBackend, memory: Option<usize>) -> Config {
    let r = with_policy(rule("app.test", "one"), |p| p.buffer_body = memory);
    config(vec![r], vec![backend("one", &[b.addr])])
}

#[tokio::test]
async fn a_buffered_body_takes_no_pod_connection_until_it_is_whole() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(buffered_route(&b, Some(8 << 10))).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.accepts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a pod connection was taken for a body still coming"
    );
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello world"), "{answer}");
    // The pod got a length, not chunks.
    assert_eq!(b.accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_large_buffered_body_spills_to_disk_and_arrives_whole() {
    use http_body_util::BodyExt;
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(buffered_route(&b, Some(8 << 10))).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::open(px.addr).await;
    let req = http::Request::post("/echo")
        .header("host", "app.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
        .unwrap();
    let resp = conn.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), body.len());
    assert!(
        got == body,
        "the body changed on its way through the spill file"
    );
}

#[tokio::test]
async fn an_unbuffered_route_streams_the_body_at_once() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(buffered_route(&b, None)).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(b.accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn behind_a_load_balancer_each_client_has_a_cap_of_its_own() {
    let b = TestBackend::start("one").await;
    let cfg = behind_proxy_protocol(&b);
    let px = TestProxy::start_with(
        cfg,
        proxy_core::http::ProxyOptions {
            max_connections_per_client: Some(1),
            ..proxy_core::http::ProxyOptions::default()
        },
    )
    .await;
    // Every connection comes from 127.0.0.1, the "load balancer"; the header names the
    // client. Each client may hold one connection.
    let open = |client: &'static str| async move {
        let mut s = TcpStream::connect(px.addr).await.unwrap();
        let head = format!(
            "PROXY TCP4 {client} 10.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        (s, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let (_a, first) = open("198.51.100.1").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let (_b, other) = open("198.51.100.2").await;
    assert!(
        other.starts_with("HTTP/1.1 200"),
        "another client was refused: {other}"
    );
    let (_c, again) = open("198.51.100.1").await;
    assert_eq!(again, "", "a second connection of one client was served");
}

#[tokio::test]
async fn basic_auth_consumes_authorization_and_cors_fields_reach_the_answer() {
    use http::HeaderValue;
    use proxy_core::pipeline::{BasicAuth, Cors, CorsOrigins, CorsRules, Htpasswd, OriginPattern};
    let b = TestBackend::start("one").await;
    let guarded = with_policy(rule("guarded.test", "one"), |p| {
        p.request = vec![
            RequestFilter::Cors(Box::new(Cors {
                rules: CorsRules::IngressNginx,
                origins: CorsOrigins::List(vec![OriginPattern::new("https://app.test")]),
                allow_methods: HeaderValue::from_static("GET"),
                allow_headers: HeaderValue::from_static("Authorization"),
                expose_headers: None,
                allow_credentials: true,
                max_age: HeaderValue::from_static("5"),
            })),
            RequestFilter::BasicAuth(BasicAuth::new("r", "users".into()).unwrap()),
        ];
    });
    let mut cfg = config(
        vec![guarded, rule("open.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    let (users, errors) = Htpasswd::parse("alice:{PLAIN}secret\n");
    assert!(errors.is_empty());
    cfg.credentials
        .insert("users".into(), std::sync::Arc::new(users));
    let px = TestProxy::start(cfg).await;
    // `alice:secret`.
    let auth = ("authorization", "Basic YWxpY2U6c2VjcmV0");
    let origin = ("origin", "https://app.test");
    let r = get_with(px.addr, "guarded.test", "/", &[auth, origin]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("echo-authorization"), None, "passed upstream");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    // A refusal carries the CORS fields too, as nginx's `more_set_headers` sets them.
    let r = get_with(px.addr, "guarded.test", "/", &[origin]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"r\""));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    // Without basic auth the field is the pod's business.
    let r = get_with(px.addr, "open.test", "/", &[auth]).await;
    assert_eq!(
        r.header("echo-authorization"),
        Some("Basic YWxpY2U6c2VjcmV0")
    );
    // The user list gone from the config: 503, never open.
    let mut cfg = px.handle.load().as_ref().clone();
    cfg.credentials.clear();
    px.handle.store(cfg);
    let r = get_with(px.addr, "guarded.test", "/", &[auth]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// Behind a load balancer that speaks the PROXY protocol, the address a client connected
/// to is the header's destination: a Gateway with that address of its own answers
/// there, and the shared routes answer for every other destination.
#[tokio::test]
async fn the_proxy_protocol_destination_selects_a_gateways_own_routes() {
    let (shared, own) = (
        TestBackend::start("shared").await,
        TestBackend::start("own").await,
    );
    let mut cfg = behind_proxy_protocol(&shared);
    cfg.backends.insert(
        backend_id("own"),
        std::sync::Arc::new(backend("own", &[own.addr])),
    );
    let gateway = proxy_core::routes::RouteTable::build(vec![rule("app.test", "own")]);
    cfg.routes_at.insert("192.0.2.10".parse().unwrap(), gateway);
    let px = TestProxy::start(cfg).await;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    for (destination, want) in [("192.0.2.10", "own"), ("192.0.2.11", "shared")] {
        let mut bytes = format!("PROXY TCP4 198.51.100.7 {destination} 40000 80\r\n").into_bytes();
        bytes.extend_from_slice(request);
        let (answer, _) = raw_exchange(px.addr, &bytes).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let endpoint = answer.lines().find_map(|l| l.strip_prefix("x-endpoint: "));
        assert_eq!(endpoint, Some(want), "{destination}: {answer}");
    }
}
