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
async fn trace_reaches_the_backend_only_when_allowed() {
    let t = TestBackend::start("t").await;
    let px = TestProxy::start_with(
        config(vec![rule("t.test", "t")], vec![backend("t", &[t.addr])]),
        proxy_core::http::ProxyOptions {
            allow_trace: true,
            ..proxy_core::http::ProxyOptions::default()
        },
    )
    .await;
    let (answer, _) = raw_exchange(
        px.addr,
        b"TRACE / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert_eq!(t.hits(), 1);
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

/// Raw HTTP/2 frames, for the attacks no well-behaved client library will send.
mod h2raw {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub fn settings() -> Vec<u8> {
        frame(4, 0, 0, &[])
    }

    /// `GET http://t.test/` as an HPACK block of static-table references and one literal.
    pub fn get_block() -> Vec<u8> {
        let mut b = vec![0x82, 0x86, 0x84, 0x01, 6];
        b.extend_from_slice(b"t.test");
        b
    }

    pub fn headers(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
        let flags = 0x1 | if end_headers { 0x4 } else { 0 };
        frame(1, flags, stream, block)
    }

    pub fn rst(stream: u32) -> Vec<u8> {
        frame(3, 0, stream, &8u32.to_be_bytes())
    }
}

/// Writes `bytes` (ignoring a peer that stops reading) and then reads until the peer
/// closes or `limit` passes; whether it closed.
async fn flood(addr: std::net::SocketAddr, bytes: Vec<u8>, limit: Duration) -> bool {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        // Keep the write half open: only the server may end the connection.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let closed = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    closed
}

/// The proxy still answers a fresh client.
async fn still_serving(addr: std::net::SocketAddr) {
    let r = get(addr, "t.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn rapid_reset_is_cut_off() {
    let (t, _o, px) = two_hosts().await;
    let mut bytes = h2raw::PREFACE.to_vec();
    bytes.extend(h2raw::settings());
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        bytes.extend(h2raw::headers(id, &h2raw::get_block(), true));
        bytes.extend(h2raw::rst(id));
    }
    assert!(
        flood(px.addr, bytes, Duration::from_secs(20)).await,
        "a rapid-reset connection was kept open"
    );
    assert!(t.hits() < 5_000, "every reset stream reached the backend");
    still_serving(px.addr).await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let (t, _o, px) = two_hosts().await;
    let mut bytes = h2raw::PREFACE.to_vec();
    bytes.extend(h2raw::settings());
    bytes.extend(h2raw::headers(1, &h2raw::get_block(), false));
    // Never END_HEADERS: literal headers (new name, not indexed), 4 KiB a frame.
    let mut chunk = Vec::new();
    while chunk.len() < 4096 {
        chunk.extend_from_slice(&[0x00, 3]);
        chunk.extend_from_slice(b"x-a");
        chunk.extend_from_slice(&[100]);
        chunk.extend_from_slice(&[b'v'; 100]);
    }
    for _ in 0..2_000 {
        bytes.extend(h2raw::frame(9, 0, 1, &chunk));
    }
    assert!(
        flood(px.addr, bytes, Duration::from_secs(20)).await,
        "a CONTINUATION flood was kept open"
    );
    assert_eq!(t.hits(), 0);
    still_serving(px.addr).await;
}

#[tokio::test]
async fn an_hpack_bomb_never_reaches_the_backend() {
    let (t, _o, px) = two_hosts().await;
    let mut block = h2raw::get_block();
    // One 4 KiB value into the dynamic table, then 1,000 one-byte references to it:
    // 4 MB of headers from 5 KB on the wire.
    block.extend_from_slice(&[0x40, 5]);
    block.extend_from_slice(b"x-big");
    block.extend_from_slice(&[0x7f, 0x81, 0x1f]); // 4096 = 127 + 3969 (0x81 0x1f)
    block.extend_from_slice(&[b'b'; 4096]);
    block.extend(std::iter::repeat_n(0xbe, 1_000)); // index 62: the newest entry
    let mut bytes = h2raw::PREFACE.to_vec();
    bytes.extend(h2raw::settings());
    bytes.extend(h2raw::headers(1, &block, true));
    let _ = flood(px.addr, bytes, Duration::from_secs(5)).await;
    assert_eq!(t.hits(), 0, "an oversized header list was forwarded");
    still_serving(px.addr).await;
}

#[tokio::test]
async fn settings_and_ping_floods_do_not_hurt_others() {
    let (_t, _o, px) = two_hosts().await;
    let mut bytes = h2raw::PREFACE.to_vec();
    bytes.extend(h2raw::settings());
    for i in 0..20_000u64 {
        bytes.extend(h2raw::settings());
        bytes.extend(h2raw::frame(6, 0, 0, &i.to_be_bytes()));
    }
    // The flooder may be cut off or answered; others are served meanwhile either way.
    let flooder = tokio::spawn(flood(px.addr, bytes, Duration::from_secs(10)));
    still_serving(px.addr).await;
    let _ = flooder.await;
    still_serving(px.addr).await;
}

#[tokio::test]
async fn slowloris_headers_are_dropped_at_the_header_timeout() {
    let b = TestBackend::start("t").await;
    let px = TestProxy::start_with(
        config(vec![rule("t.test", "t")], vec![backend("t", &[b.addr])]),
        proxy_core::http::ProxyOptions {
            header_read_timeout: Duration::from_millis(500),
            ..proxy_core::http::ProxyOptions::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(px.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header byte every 100 ms: never a whole head.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"X").await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn an_http2_stream_with_no_window_frees_its_backend() {
    use std::sync::atomic::Ordering;
    let (addr, open) = firehose().await;
    let px = TestProxy::start(quick_timers(config(
        vec![rule("t.test", "fire")],
        vec![backend("fire", &[addr])],
    )))
    .await;
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send no DATA on any stream, while
    // the connection itself stays healthy and its socket writable.
    let mut bytes = h2raw::PREFACE.to_vec();
    bytes.extend(h2raw::frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    bytes.extend(h2raw::headers(1, &h2raw::get_block(), true));
    let mut client = TcpStream::connect(px.addr).await.unwrap();
    client.write_all(&bytes).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while open.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while open.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the backend connection is still held for a stream that takes no data"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
}
