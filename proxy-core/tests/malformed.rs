//! Malformed requests on raw sockets: a 4xx, the connection closed, nothing reaches the
//! backend, and the proxy keeps serving.

mod common;

use common::*;
use hyper::StatusCode;

async fn expect_rejected(px: &TestProxy, name: &str, raw: &[u8], status: &str) {
    let (reply, closed) = raw_exchange(px.addr, raw).await;
    assert!(
        reply.starts_with(&format!("HTTP/1.1 {status}")),
        "{name}: expected {status}, got {reply:?}"
    );
    assert!(closed, "{name}: connection left open");
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_close() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;

    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), "400"),
        ("bad method chars", b"G(T / HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(), "400"),
        ("spaces in target", b"GET /a b c HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(), "400"),
        ("bad version", b"GET / HTTP/9.9\r\nHost: app.test\r\n\r\n".to_vec(), "400"),
        ("space in header name", b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n".to_vec(), "400"),
        (
            "content-length then transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "transfer-encoding then content-length",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "smuggling a second request",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "differing content-lengths",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            "400",
        ),
        (
            "non-chunked transfer-encoding",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(),
            "400",
        ),
        ("oversized header", huge_header.into_bytes(), "431"),
        ("too many headers", many_headers.into_bytes(), "431"),
    ];
    for (name, raw, status) in &cases {
        expect_rejected(&px, name, raw, status).await;
    }
    assert_eq!(b.hits(), 0, "a malformed request reached the backend");

    // A conflicting request after a good one on the same connection is still caught.
    let (reply, closed) = raw_exchange(
        px.addr,
        b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\nPOST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert!(closed);
    assert_eq!(
        b.hits(),
        1,
        "only the well-formed request reached the backend"
    );

    // And the proxy still serves.
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "one");
}

#[tokio::test]
async fn pipelined_requests_with_bodies_are_not_misjudged() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "one")],
        vec![backend("one", &[b.addr])],
    ))
    .await;
    // A body that looks like a conflicting request head must not be taken for one.
    let raw = b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 66\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let (reply, closed) = raw_exchange(px.addr, raw).await;
    assert!(closed);
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 3, "{reply}");
    assert!(!reply.contains("HTTP/1.1 400"), "{reply}");
    assert_eq!(b.hits(), 3);
}

#[tokio::test]
async fn slow_or_silent_clients_are_cut_off() {
    use proxy_core::http::ProxyOptions;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = TestBackend::start("one").await;
    let opts = ProxyOptions {
        header_read_timeout: Duration::from_millis(300),
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
    for partial in [&b""[..], b"GET / HTTP/1.1\r\nHost: app"] {
        let mut s = tokio::net::TcpStream::connect(px.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(DEADLINE, async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("{partial:?}: connection not closed by the header-read timeout")
        });
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn bytes_a_pod_sends_past_its_answer_never_answer_the_next_request() {
    // Response splitting: a second answer smuggled behind the first. The connection
    // it came on is not reused, so the next request gets its own answer.
    let pod = silent_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    )
    .await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "pod")],
        vec![backend("pod", &[pod])],
    ))
    .await;
    for _ in 0..3 {
        let reply = get(px.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "ok");
    }
}

#[tokio::test]
async fn ambiguous_or_broken_pod_answers_are_502() {
    for (name, answer) in [
        (
            "both Content-Length and Transfer-Encoding",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
        ),
        (
            "lengths that disagree",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        ("a status that is not one", b"HTTP/1.1 20x OK\r\n\r\n"),
        ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    ] {
        let reply = answered_by_pod(answer).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{name}");
    }
}

/// A request through a proxy to a pod that answers `answer` on every connection.
async fn answered_by_pod(answer: &'static [u8]) -> Reply {
    let pod = silent_backend(answer).await;
    let px = TestProxy::start(config(
        vec![rule("app.test", "pod")],
        vec![backend("pod", &[pod])],
    ))
    .await;
    get(px.addr, "app.test", "/").await
}

#[tokio::test]
async fn fields_a_pods_connection_names_stay_with_the_pod() {
    for (connection, private_kept) in [
        ("keep-alive, X-Pod-Private", false),
        ("X-Pod-Private", false),
        ("keep-alive", true),
        ("close", true),
    ] {
        let answer: &'static [u8] = format!(
            "HTTP/1.1 200 OK\r\nConnection: {connection}\r\nX-Pod-Private: 1\r\n\
X-Kept: 1\r\nContent-Length: 2\r\n\r\nok"
        )
        .into_bytes()
        .leak();
        let reply = answered_by_pod(answer).await;
        assert_eq!(reply.status, StatusCode::OK, "{connection}");
        assert_eq!(reply.text(), "ok", "{connection}");
        assert_eq!(reply.header("x-kept"), Some("1"), "{connection}");
        assert_eq!(
            reply.header("x-pod-private").is_some(),
            private_kept,
            "Connection: {connection}"
        );
    }
}
