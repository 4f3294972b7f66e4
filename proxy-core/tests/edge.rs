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
