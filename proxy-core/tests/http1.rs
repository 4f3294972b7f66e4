//! The HTTP/1 server on raw sockets: what a client sees of `100 Continue`, unread
//! bodies, HTTP/1.0, chunked answers and closing.

mod common;

use std::time::Duration;

use common::*;
use proxy_core::http::ProxyOptions;
use proxy_core::pipeline::{BodyLimit, RequestFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn app() -> (TestBackend, TestProxy) {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    (b, px)
}

/// Reads until `needle` has arrived; panics after the test deadline.
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(got).contains(needle) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {:?}",
                String::from_utf8_lossy(got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(got)));
}

#[tokio::test]
async fn a_client_that_expects_100_continue_gets_it_before_sending_its_body() {
    let (_b, px) = app().await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "HTTP/1.1 100 Continue\r\n\r\n").await;
    s.write_all(b"hello").await.unwrap();
    read_until(&mut s, &mut got, "hello").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("HTTP/1.1 200 OK\r\n"), "{text}");
}

#[tokio::test]
async fn a_body_the_answer_did_not_need_is_read_and_the_connection_kept() {
    let (b, px) = app().await;
    // No rule for this host: 404 without reading the body, then the next request on the
    // same connection must be read from after that body, not from inside it.
    let body = "GET /inside-the-body HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: {}\r\n\r\n{body}\
GET /after HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (answer, closed) = raw_exchange(px.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
    assert!(answer.contains("echo-uri: /after"), "{answer}");
    assert!(closed);
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn an_upload_refused_midway_still_reads_as_an_answer_not_a_reset() {
    let b = TestBackend::start("one").await;
    let mut r = rule("app.test", "one");
    let mut policy = (*r.target.policy).clone();
    policy.request.push(RequestFilter::BodyLimit(BodyLimit(16)));
    r.target.policy = policy.into();
    let px = TestProxy::start(config(vec![r], vec![backend("one", &[b.addr])])).await;
    let s = TcpStream::connect(px.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let size = 8 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head =
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\n\r\n");
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{read:?}: {text}");
    writer.abort();
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn http10_clients_keep_the_connection_only_when_they_ask() {
    let (_b, px) = app().await;
    let (answer, closed) = raw_exchange(px.addr, b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(closed);

    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "one").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    // Still open: a second request is answered.
    s.write_all(b"GET /again HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, &mut got, "echo-uri: /again").await;
}

#[tokio::test]
async fn an_answer_of_unknown_length_is_chunked_and_streams() {
    let (_b, px) = app().await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "5\r\nfirst\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout() {
    let b = TestBackend::start("one").await;
    let mut cfg = config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    cfg.settings.keep_alive = Duration::from_millis(300);
    let px = TestProxy::start(cfg).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "one").await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}

/// A proxy whose idle connections park after 50 ms.
async fn parking(keep_alive: Duration) -> (TestBackend, TestProxy) {
    let b = TestBackend::start("one").await;
    let mut cfg = config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    cfg.settings.keep_alive = keep_alive;
    let opts = ProxyOptions {
        park_idle_after: Some(Duration::from_millis(50)),
        ..ProxyOptions::default()
    };
    let px = TestProxy::start_with(cfg, opts).await;
    (b, px)
}

async fn get_on(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(s, &mut got, "one").await;
}

async fn parked_count(px: &TestProxy, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while px.proxy.parked_connections() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "parked connections: {} (want {want})",
            px.proxy.parked_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_parks_and_serves_its_next_requests() {
    let (b, px) = parking(Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    get_on(&mut s).await;
    parked_count(&px, 1).await;
    // Woken by its socket: served in a task again, on the same connection.
    get_on(&mut s).await;
    assert_eq!(px.proxy.parked_connections(), 0);
    // Parks again, and again comes back.
    parked_count(&px, 1).await;
    get_on(&mut s).await;
    get_on(&mut s).await;
    assert_eq!(b.hits(), 4);
    drop(s);
    // A parked connection whose client leaves is woken by the close and let go.
    let mut t = TcpStream::connect(px.addr).await.unwrap();
    get_on(&mut t).await;
    parked_count(&px, 1).await;
    drop(t);
    parked_count(&px, 0).await;
}

#[tokio::test]
async fn a_parked_connection_closes_at_its_keep_alive_deadline() {
    let (_b, px) = parking(Duration::from_millis(400)).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    get_on(&mut s).await;
    let idle = std::time::Instant::now();
    parked_count(&px, 1).await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    assert_eq!(px.proxy.parked_connections(), 0);
}

#[tokio::test]
async fn shutdown_closes_parked_connections_and_drains() {
    let (_b, px) = parking(Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    get_on(&mut s).await;
    parked_count(&px, 1).await;
    let drained = px.shutdown.drain(Duration::from_secs(5)).await;
    assert!(drained, "drain waited on a parked connection");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

#[tokio::test]
async fn a_parked_connection_keeps_its_place_under_the_connection_cap() {
    let b = TestBackend::start("one").await;
    let cfg = config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    );
    let opts = ProxyOptions {
        park_idle_after: Some(Duration::from_millis(50)),
        max_connections: 1,
        ..ProxyOptions::default()
    };
    let px = TestProxy::start_with(cfg, opts).await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    get_on(&mut s).await;
    parked_count(&px, 1).await;
    // Over the cap while the first is parked: closed without an answer.
    let mut t = TcpStream::connect(px.addr).await.unwrap();
    let _ = t
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let refused = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf)).await;
    assert!(matches!(refused, Ok(Ok(0)) | Ok(Err(_))), "{refused:?}");
    get_on(&mut s).await;
}

/// What a raw client sending `request` reads, through a proxy to a pod that answers
/// `answer` on every connection.
async fn through_raw_pod(answer: &'static [u8], request: &[u8]) -> String {
    let pod = silent_backend(answer).await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "pod")],
        vec![backend("pod", &[pod])],
    ))
    .await;
    raw_exchange(px.addr, request).await.0
}

/// The fields of `reply`'s head, after its status line.
fn fields_of(reply: &str) -> Vec<&str> {
    let Some((head, _)) = reply.split_once("\r\n\r\n") else {
        panic!("no whole head in {reply:?}");
    };
    head.split("\r\n").skip(1).collect()
}

#[tokio::test]
async fn a_pods_fields_reach_the_client_as_it_sent_them_less_its_hop_by_hop_ones() {
    let reply = through_raw_pod(
        b"HTTP/1.1 200 OK\r\nServer: pod/1\r\nX-Mixed-Case: A b\r\nSet-Cookie: a=1\r\n\
Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nSet-Cookie: b=2\r\nTE: trailers\r\n\
Trailer: X-T\r\nUpgrade: h2c\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
    // Portico's own `Server` stands in for the pod's; the rest keep the pod's spelling
    // and order, and the connection's own fields are Portico's.
    assert_eq!(
        fields_of(&reply),
        [
            "server: portico",
            "X-Mixed-Case: A b",
            "Set-Cookie: a=1",
            "Set-Cookie: b=2",
            "Date: Mon, 01 Jan 2024 00:00:00 GMT",
            "Content-Length: 2",
            "connection: close",
        ],
        "{reply}"
    );
}

#[tokio::test]
async fn a_head_answer_keeps_the_length_the_pod_stated() {
    let reply = through_raw_pod(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let fields = fields_of(&reply);
    assert!(fields.contains(&"content-length: 5"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "no body: {reply}");
    assert!(
        fields.iter().any(|f| f.starts_with("date: ")),
        "a date of Portico's where the pod gave none: {reply}"
    );
}

#[tokio::test]
async fn a_routes_answer_edits_and_affinity_cookie_apply_to_a_pods_fields() {
    use std::sync::Arc;

    use hyper::header::{HeaderName, HeaderValue};
    use proxy_core::balance::CookieAffinity;
    use proxy_core::pipeline::HeaderEdits;

    // A pod that answers once per connection: one for each request.
    let answer = b"HTTP/1.1 200 OK\r\nX-Gone: 1\r\nX-Set: pod\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\n\r\nok";
    let (pod, sticky_pod) = (silent_backend(answer).await, silent_backend(answer).await);
    let edited = with_policy(rule("app.test", "pod"), |p| {
        p.response_edits = Some(Arc::new(HeaderEdits {
            set: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("route"),
            )],
            add: vec![(
                HeaderName::from_static("x-added"),
                HeaderValue::from_static("1"),
            )],
            remove: vec![HeaderName::from_static("x-gone")],
        }));
    });
    let affinity = CookieAffinity {
        name: "route".into(),
        ..CookieAffinity::default()
    };
    let px = TestProxy::start(config(
        vec![edited, sticky(rule("sticky.test", "sticky"), affinity)],
        vec![backend("pod", &[pod]), backend("sticky", &[sticky_pod])],
    ))
    .await;
    let (reply, _) = raw_exchange(
        px.addr,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let fields: Vec<String> = fields_of(&reply)
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    assert!(!fields.iter().any(|f| f.starts_with("x-gone")), "{reply}");
    assert_eq!(
        fields
            .iter()
            .filter(|f| f.starts_with("x-set:"))
            .collect::<Vec<_>>(),
        ["x-set: route"],
        "{reply}"
    );
    assert!(fields.contains(&"x-added: 1".to_owned()), "{reply}");
    assert!(fields.contains(&"set-cookie: a=1".to_owned()), "{reply}");
    let (reply, _) = raw_exchange(
        px.addr,
        b"GET / HTTP/1.1\r\nHost: sticky.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let cookies: Vec<&str> = fields_of(&reply)
        .into_iter()
        .filter(|f| f.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect();
    assert_eq!(
        cookies.len(),
        2,
        "the pod's cookie and the affinity's: {reply}"
    );
    assert!(cookies.iter().any(|c| c.ends_with("a=1")), "{reply}");
    assert!(cookies.iter().any(|c| c.contains("route=")), "{reply}");
}
