//! WebSocket over HTTP/2 (RFC 8441) through the real binary: an HTTP/2 client opens the
//! socket with an extended CONNECT, over TLS (ALPN h2) and over h2c, and a pod that
//! speaks WebSocket over HTTP/1.1 echoes its messages. WebSocket over HTTP/1.1 keeps
//! working beside it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use common::*;

/// A pod whose WebSocket server (HTTP/1.1 upgrade, accept key checked by tungstenite)
/// echoes text messages with a prefix.
async fn echo_pod() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        if ws.send(Message::text(format!("echo:{t}"))).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Opens a WebSocket by extended CONNECT on an HTTP/2 connection over `io`, then
/// checks a few echoes on it.
async fn h2_socket<IO>(io: IO, scheme: &str, host: &str)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("{scheme}://{host}/chat"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer to the CONNECT")
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an echo")
            .unwrap()
            .unwrap();
        assert_eq!(got, Message::text(format!("echo:hello {i}")));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_h2_reaches_an_http1_pod() {
    let pod = echo_pod().await;
    let cert = rcgen::generate_simple_self_signed(vec!["ws.example.com".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("chat", &[pod]));
    // The plain port serves the host too (no HTTPS redirect), for the h2c client.
    text.push_str(
        &ingress_yaml("chat", "ws.example.com", "/", "chat")
            .replacen(
                "spec:\n  ingressClassName: portico\n",
                "spec:\n  ingressClassName: portico\n  tls:\n  - hosts: [ws.example.com]\n    secretName: ws-tls\n",
                1,
            )
            .replacen(
                "metadata:\n  name: chat\n",
                "metadata:\n  name: chat\n  annotations:\n    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"\n",
                1,
            ),
    );
    text.push_str("---\n");
    text.push_str(&secret_yaml(
        "ws-tls",
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    ));
    std::fs::write(dir.path().join("ws.yaml"), text).unwrap();
    let mut c = Controller::start(dir.path(), &[]);
    c.wait_ready().await;

    // Over TLS, ALPN h2.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(c.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("ws.example.com".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_socket(tls, "https", "ws.example.com").await;

    // Over h2c on the plain port.
    let tcp = TcpStream::connect(c.http).await.unwrap();
    h2_socket(tcp, "http", "ws.example.com").await;

    // HTTP/1.1 WebSocket as before.
    let tcp = TcpStream::connect(c.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.example.com/chat", tcp)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("plain")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("echo:plain")
    );
}
