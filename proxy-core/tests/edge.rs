//! What a hostile client tries at the edge, through the real proxy on raw sockets: one
//! host per request, methods a reverse proxy does not serve, and framing tricks.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

async fn two_hosts() -> (TestBackend, TestBackend, TestProxy) {
    let t = TestBackend::start("t").await;
    let o = TestBackend::start("o").await;
    let px = TestProxy::start(config(
        vec![rule("t.test", "t"), rule("other.test", "o")],
        vec![backend("t", &[t.addr]), backend("o", &[o.addr])],
    ))
    .await;
    (t, o, px)
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

fn echoed<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("echo-{name}: ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

#[tokio::test]
async fn an_absolute_form_target_is_the_host_the_backend_sees() {
    let (t, o, px) = two_hosts().await;
    let (answer, _) = raw_exchange(
        px.addr,
        b"GET http://other.test/x HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert_eq!(echoed(&answer, "host"), Some("other.test"), "{answer}");
    assert!(
        answer.ends_with('o'),
        "routed to the wrong backend: {answer}"
    );
    assert_eq!((t.hits(), o.hits()), (0, 1));
}

#[tokio::test]
async fn host_headers_must_be_exactly_one() {
    let (t, o, px) = two_hosts().await;
    for (req, want) in [
        (
            &b"GET / HTTP/1.1\r\nHost: t.test\r\nHost: other.test\r\nConnection: close\r\n\r\n"[..],
            "400",
        ),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "400"),
        // HTTP/1.0 may leave Host out: only host-less rules match, and there are none.
        (b"GET / HTTP/1.0\r\n\r\n", "404"),
    ] {
        let (answer, _) = raw_exchange(px.addr, req).await;
        assert_eq!(status(&answer), want, "{answer}");
    }
    assert_eq!((t.hits(), o.hits()), (0, 0));
}

#[tokio::test]
async fn connection_cannot_strip_host_or_the_body_length() {
    let (_t, _o, px) = two_hosts().await;
    let (answer, _) = raw_exchange(
        px.addr,
        b"POST /echo HTTP/1.1\r\nHost: t.test\r\nConnection: close, Host, Content-Length\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert!(answer.ends_with("abc"), "{answer}");
}

#[tokio::test]
async fn connect_and_trace_are_405() {
    let (t, o, px) = two_hosts().await;
    for req in [
        &b"CONNECT t.test:443 HTTP/1.1\r\nHost: t.test:443\r\n\r\n"[..],
        b"TRACE / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
    ] {
        let (answer, _) = raw_exchange(px.addr, req).await;
        assert_eq!(status(&answer), "405", "{answer}");
    }
    assert_eq!((t.hits(), o.hits()), (0, 0));
}

#[tokio::test]
async fn an_h2_host_header_that_disagrees_with_authority_is_400() {
    let (t, o, px) = two_hosts().await;
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let send = |host: &'static str| {
        Request::get("http://other.test/x")
            .version(http::Version::HTTP_2)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let r = Reply::read(sender.send_request(send("t.test")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = Reply::read(sender.send_request(send("Other.Test")).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("echo-host"), Some("other.test"));
    assert_eq!((t.hits(), o.hits()), (0, 1));
}

#[tokio::test]
async fn the_framing_guard_holds_after_bare_lf_and_lone_upgrade_headers() {
    let (t, _o, px) = two_hosts().await;
    let smuggle = "GET / HTTP/1.1\r\nHost: t.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for first in [
        "GET / HTTP/1.1\nHost: t.test\n\n",
        "GET / HTTP/1.1\r\nHost: t.test\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let (answer, closed) = raw_exchange(px.addr, format!("{first}{smuggle}").as_bytes()).await;
        assert!(closed);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("HTTP/1.1 400"),
            "the second request was not refused: {answer}"
        );
    }
    assert_eq!(t.hits(), 2);
}

#[tokio::test]
async fn a_malformed_chunk_is_the_clients_fault() {
    let (_t, _o, px) = two_hosts().await;
    for body in ["12345678901234567\r\nx\r\n0\r\n\r\n", "zz\r\n"] {
        let req = format!(
            "POST /slow/200 HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let (answer, _) = raw_exchange(px.addr, req.as_bytes()).await;
        assert_eq!(status(&answer), "400", "{answer}");
    }
}

use std::time::{Duration, Instant};

use proxy_core::config::Timeouts;
use proxy_core::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn quick_timers(mut cfg: Config) -> Config {
    cfg.settings.keep_alive = Duration::from_secs(1);
    cfg.settings.send_timeout = Duration::from_secs(1);
    cfg
}

/// Reads until the peer closes; how long that took, or `None` past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let b = TestBackend::start("one").await;
    let px = TestProxy::start(quick_timers(config(
        vec![rule("t.test", "one")],
        vec![backend("one", &[b.addr])],
    )))
    .await;
    // An h2c connection that opens no stream, and one that did one request.
    let mut silent = TcpStream::connect(px.addr).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(took.is_some(), "an idle h2c connection stayed open");
    let stream = TcpStream::connect(px.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("http://t.test/")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = Reply::read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    // The server's GOAWAY ends the client's connection task.
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the used h2 connection was not closed once idle")
        .unwrap()
        .ok();
}

/// A backend that answers with an endless body and counts the connections it still
/// holds open.
async fn firehose() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("{:x}\r\n{}\r\n", 16384, "x".repeat(16384));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_the_backend() {
    use std::sync::atomic::Ordering;
    let (addr, open) = firehose().await;
    let px = TestProxy::start(quick_timers(config(
        vec![rule("t.test", "fire")],
        vec![backend("fire", &[addr])],
    )))
    .await;
    let mut client = TcpStream::connect(px.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n")
        .await
        .unwrap();
    // Read the head, then nothing more.
    let mut head = [0u8; 64];
    let _ = client.read(&mut head).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(open.load(Ordering::SeqCst), 1);
    while open.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the backend connection is still held for a client that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_idle_websocket_closes_after_the_read_timeout() {
    let b = TestBackend::start("ws").await;
    let r = with_policy(rule("t.test", "ws"), |p| {
        p.timeouts = Timeouts {
            read: Duration::from_secs(1),
            ..Timeouts::default()
        }
    });
    let px = TestProxy::start(config(vec![r], vec![backend("ws", &[b.addr])])).await;
    let mut tunnel = open_tunnel(px.addr, "t.test").await;
    // Traffic keeps it open past the timeout...
    for _ in 0..3 {
        echo(&mut tunnel, b"ping").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ...silence ends it.
    let took = closed_within(&mut tunnel, Duration::from_secs(10)).await;
    assert!(took.is_some(), "an idle tunnel stayed open");
}
