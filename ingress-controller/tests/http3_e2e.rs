//! HTTP/3 through the real binary (`--http3`): a QUIC client (quinn + h3) gets the same
//! answers as an HTTP/1.1 client, request bodies reach the pod, the certificate is the
//! one SNI selects, and answers over TCP HTTPS advertise HTTP/3 with `Alt-Svc`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

use common::*;

const HOST: &str = "h3.example.com";

/// A pod that answers `METHOD PATH BYTES:<body length>` and names the protocol the
/// proxy used.
async fn echo_pod() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let method = req.method().clone();
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let text = format!("{method} {path} bytes:{}", body.len());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn client_tls(cert: &[u8], alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert.to_vec())).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// One HTTP/3 request: status, headers and body.
async fn h3_request(
    portico: SocketAddr,
    cert: &[u8],
    method: &str,
    path: &str,
    body: Option<Bytes>,
) -> (u16, http::HeaderMap, String) {
    let tls = client_tls(cert, b"h3");
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(portico, HOST).unwrap(),
    )
    .await
    .expect("QUIC handshake in time")
    .unwrap();
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://{HOST}{path}"));
    if let Some(b) = &body {
        req = req.header("content-length", b.len());
    }
    let mut stream = sender.send_request(req.body(()).unwrap()).await.unwrap();
    // A body the proxy refuses part-way is stopped (STOP_SENDING): the answer still comes.
    let sent = match body {
        Some(b) => stream.send_data(b).await,
        None => Ok(()),
    };
    if sent.is_ok() {
        let _ = stream.finish().await;
    }
    let resp = stream.recv_response().await.unwrap();
    let mut out = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap_or_else(|e| {
        panic!(
            "{method} {path}: body of the {:?} answer: {e}",
            resp.status()
        )
    }) {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (
        resp.status().as_u16(),
        resp.headers().clone(),
        String::from_utf8(out).unwrap(),
    )
}

/// One HTTP/1.1 GET over TCP TLS: status, headers and body.
async fn https_get(portico: SocketAddr, cert: &[u8], path: &str) -> (u16, http::HeaderMap, String) {
    let tls = client_tls(cert, b"http/1.1");
    let tcp = TcpStream::connect(portico).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(HOST.try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The manifests of an Ingress for [`HOST`]'s `path` to `pod`, over TLS with a fresh
/// self-signed certificate (Secret `h3-tls`), and that certificate.
fn tls_ingress(pod: SocketAddr, path: &str) -> (rcgen::CertifiedKey<rcgen::KeyPair>, String) {
    let cert = rcgen::generate_simple_self_signed(vec![HOST.into()]).unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("echo", &[pod]));
    text.push_str(&ingress_yaml("echo", HOST, path, "echo").replacen(
        "spec:\n  ingressClassName: portico\n",
        &format!("spec:\n  ingressClassName: portico\n  tls:\n  - hosts: [{HOST}]\n    secretName: h3-tls\n"),
        1,
    ));
    text.push_str("---\n");
    text.push_str(&secret_yaml(
        "h3-tls",
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    ));
    (cert, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_answers_as_http1_does() {
    let pod = echo_pod().await;
    let (cert, text) = tls_ingress(pod, "/");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h3.yaml"), text).unwrap();
    let mut c = Controller::start(dir.path(), &["--http3"]);
    c.wait_ready().await;
    let der = cert.cert.der().to_vec();

    // The same answer over HTTP/1.1 and HTTP/3; only TCP answers advertise HTTP/3.
    let (code1, headers1, body1) = https_get(c.https, &der, "/hello").await;
    assert_eq!((code1, body1.as_str()), (200, "GET /hello bytes:0"));
    assert_eq!(
        headers1.get("alt-svc").unwrap(),
        &format!("h3=\":{}\"; ma=86400", c.https.port())
    );
    let (code3, headers3, body3) = h3_request(c.https, &der, "GET", "/hello", None).await;
    assert_eq!((code3, body3.as_str()), (200, "GET /hello bytes:0"));
    assert!(headers3.get("alt-svc").is_none());
    assert_eq!(headers3.get("server").unwrap(), "portico");
    assert!(
        headers3.get("strict-transport-security").is_some(),
        "HTTPS answers carry HSTS over HTTP/3 too"
    );

    // A request body reaches the pod; one over proxy-body-size (1m) is refused.
    let body = Bytes::from(vec![b'x'; 300_000]);
    let (code, _, answer) = h3_request(c.https, &der, "POST", "/upload", Some(body)).await;
    assert_eq!((code, answer.as_str()), (200, "POST /upload bytes:300000"));
    let body = Bytes::from(vec![b'x'; 2 << 20]);
    let (code, _, _) = h3_request(c.https, &der, "POST", "/upload", Some(body)).await;
    assert_eq!(code, 413);
}

/// A Gateway at an address of its own (`--gateway-address-pool`) is isolated by address
/// over HTTP/3 as over TCP: its route answers there and the Ingress's does not, and the
/// other way round at the published address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_keeps_a_gateways_own_address_apart() {
    let pod = echo_pod().await;
    let (cert, mut text) = tls_ingress(pod, "/ingress");
    let dir = tempfile::tempdir().unwrap();
    text.push_str(GATEWAY_CLASS_YAML);
    text.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: own, namespace: default}}
spec:
  gatewayClassName: portico
  addresses: [{{type: IPAddress, value: 127.0.1.7}}]
  listeners:
  - {{name: https, port: 443, protocol: HTTPS, hostname: {HOST}, tls: {{certificateRefs: [{{name: h3-tls}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: gw, namespace: default}}
spec:
  parentRefs: [{{name: own}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /gw}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"
    ));
    std::fs::write(dir.path().join("h3.yaml"), text).unwrap();
    let args = folder_args(
        dir.path(),
        &["--http3", "--gateway-address-pool", "127.0.1.0/24"],
    );
    let mut c = Controller::start_bound(&args, &[], true);
    c.wait_ready().await;
    let der = cert.cert.der().to_vec();
    let published = c.https;
    let own = SocketAddr::from(([127, 0, 1, 7], c.https.port()));
    wait_for_status(own, &der, "/gw", 200).await;
    for (addr, path, want) in [
        (published, "/ingress", 200),
        (published, "/gw", 404),
        (own, "/gw", 200),
        (own, "/ingress", 404),
    ] {
        let (tcp, _, _) = https_get(addr, &der, path).await;
        assert_eq!(tcp, want, "TCP {addr} {path}\n{}", c.logs());
        let (quic, _, _) = h3_request(addr, &der, "GET", path, None).await;
        assert_eq!(quic, want, "HTTP/3 {addr} {path}\n{}", c.logs());
    }
}

/// Polls an HTTPS GET until it answers `want` (the folder is read a moment after start).
async fn wait_for_status(addr: SocketAddr, cert: &[u8], path: &str, want: u16) {
    for _ in 0..100 {
        if https_get(addr, cert, path).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("https://{addr}{path} never answered {want}");
}
