//! gRPC through the real binary over a manifest folder (`backend-protocol: GRPC` and
//! `GRPCS`), with tonic on both sides: the four call kinds stream without buffering,
//! statuses and trailers reach the client, `grpc-timeout` is honoured, and what Portico
//! fails itself is answered as a gRPC status. Clients come over h2c on the plain port
//! and over TLS (ALPN h2).

mod common;
mod grpc_raw;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::server::{
    ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use common::*;
use grpc_raw::Raw;

type BoxFut<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// `Unary`: echoes the message with the server's name; `sleep:MS` answers after MS
/// milliseconds; `status:N` fails with code N and an `x-why` trailer.
#[derive(Clone)]
struct Echo {
    name: &'static str,
    /// The request's `te` field, which tonic keeps from its metadata.
    te: Option<String>,
}

impl UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = BoxFut<Result<Response<Bytes>, Status>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (name, te) = (self.name, self.te.clone());
        Box::pin(async move {
            let msg = String::from_utf8_lossy(req.get_ref()).into_owned();
            if let Some(ms) = msg.strip_prefix("sleep:") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            }
            if let Some(code) = msg.strip_prefix("status:") {
                let mut status =
                    Status::new(Code::from(code.parse::<i32>().unwrap()), "asked to fail");
                status
                    .metadata_mut()
                    .insert("x-why", "because".parse().unwrap());
                return Err(status);
            }
            Ok(Response::new(Bytes::from(format!(
                "{name}:{msg}:te={te:?}"
            ))))
        })
    }
}

/// `ServerStream`: N messages, then an ABORTED status with an `x-why` trailer when the
/// request says `N!`.
impl ServerStreamingService<Bytes> for Echo {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFut<Result<Response<BoxStream>, Status>>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let msg = String::from_utf8_lossy(req.get_ref()).into_owned();
            let abort = msg.ends_with('!');
            let n: usize = msg.trim_end_matches('!').parse().unwrap();
            let items = (0..n).map(|i| Ok(Bytes::from(format!("item-{i}"))));
            let tail = abort.then(|| {
                let mut status = Status::aborted("stopped on purpose");
                status
                    .metadata_mut()
                    .insert("x-why", "because".parse().unwrap());
                Err(status)
            });
            let stream: BoxStream = Box::pin(futures::stream::iter(items.chain(tail)));
            Ok(Response::new(stream))
        })
    }
}

/// `ClientStream`: the messages joined with `+`.
impl ClientStreamingService<Bytes> for Echo {
    type Response = Bytes;
    type Future = BoxFut<Result<Response<Bytes>, Status>>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut parts = Vec::new();
            while let Some(m) = stream.next().await {
                parts.push(String::from_utf8_lossy(&m?).into_owned());
            }
            Ok(Response::new(Bytes::from(parts.join("+"))))
        })
    }
}

/// `Bidi`: each message back at once, upper-cased.
impl StreamingService<Bytes> for Echo {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFut<Result<Response<BoxStream>, Status>>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let stream = req
                .into_inner()
                .map(|m| m.map(|b| Bytes::from(String::from_utf8_lossy(&b).to_uppercase())));
            let stream: BoxStream = Box::pin(stream);
            Ok(Response::new(stream))
        })
    }
}

type HttpResponse = http::Response<tonic::body::Body>;

async fn route(name: &'static str, req: http::Request<hyper::body::Incoming>) -> HttpResponse {
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap().to_owned());
    let echo = Echo { name, te };
    let mut grpc = Grpc::new(Raw);
    match req.uri().path() {
        "/echo.Echo/Unary" => grpc.unary(echo, req).await,
        "/echo.Echo/ServerStream" => grpc.server_streaming(echo, req).await,
        "/echo.Echo/ClientStream" => grpc.client_streaming(echo, req).await,
        "/echo.Echo/Bidi" => grpc.streaming(echo, req).await,
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// A tonic gRPC server on h2c, or over TLS when given a certificate.
async fn grpc_backend(name: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(route(name, req).await)
                });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    addr
}

fn grpc_ingress(name: &str, host: &str, service: &str, protocol: &str, tls: bool) -> String {
    let mut text = ingress_yaml(name, host, "/", service).replacen(
        &format!("metadata:\n  name: {name}\n"),
        &format!(
            "metadata:\n  name: {name}\n  annotations:\n    nginx.ingress.kubernetes.io/backend-protocol: {protocol}\n"
        ),
        1,
    );
    if tls {
        text = text.replace(
            "spec:\n  ingressClassName: portico\n",
            &format!("spec:\n  ingressClassName: portico\n  tls:\n  - hosts: [{host}]\n    secretName: grpc-tls\n"),
        );
    }
    text
}

struct Setup {
    controller: Controller,
    /// The certificate Portico serves for the TLS host, to trust it.
    portico_cert: String,
    dir: tempfile::TempDir,
}

const TLS_HOST: &str = "grpcs.example.com";

async fn setup() -> Setup {
    // gRPC pods: one plain (h2c), one over TLS with a self-signed certificate.
    let plain = grpc_backend("plain", None).await;
    let pod_cert = rcgen::generate_simple_self_signed(vec!["pod.internal".into()]).unwrap();
    let mut pod_tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![pod_cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pod_cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    pod_tls.alpn_protocols = vec![b"h2".to_vec()];
    let secure = grpc_backend("secure", Some(Arc::new(pod_tls))).await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };

    let portico = rcgen::generate_simple_self_signed(vec![TLS_HOST.into()]).unwrap();
    let portico_cert = portico.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("plain", &[plain]));
    text.push_str(&service_yaml("secure", &[secure]));
    text.push_str(&service_yaml("refused", &[refused]));
    text.push_str(&service_yaml("empty", &[]));
    text.push_str(&grpc_ingress(
        "plain",
        "grpc.example.com",
        "plain",
        "GRPC",
        false,
    ));
    text.push_str(&grpc_ingress("secure", TLS_HOST, "secure", "GRPCS", true));
    text.push_str(&grpc_ingress(
        "refused",
        "refused.example.com",
        "refused",
        "GRPC",
        false,
    ));
    text.push_str(&grpc_ingress(
        "empty",
        "empty.example.com",
        "empty",
        "grpc",
        false,
    ));
    text.push_str("---\n");
    text.push_str(&secret_yaml(
        "grpc-tls",
        portico_cert.as_bytes(),
        portico.signing_key.serialize_pem().as_bytes(),
    ));
    std::fs::write(dir.path().join("grpc.yaml"), text).unwrap();
    let mut controller = Controller::start(dir.path(), &[]);
    controller.wait_ready().await;
    Setup {
        controller,
        portico_cert,
        dir,
    }
}

/// A client of Portico's plain port speaking h2c, with `host` as the authority.
async fn h2c_client(portico: SocketAddr, host: &str) -> tonic::client::Grpc<Channel> {
    let channel = Endpoint::from_shared(format!("http://{portico}"))
        .unwrap()
        .origin(format!("http://{host}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn tls_client(portico: SocketAddr, cert: &str) -> tonic::client::Grpc<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert))
        .domain_name(TLS_HOST);
    let channel = Endpoint::from_shared(format!("https://{portico}"))
        .unwrap()
        .origin(format!("https://{TLS_HOST}").parse().unwrap())
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary(client: &mut tonic::client::Grpc<Channel>, msg: &str) -> Result<String, Status> {
    client.ready().await.unwrap();
    let req = Request::new(Bytes::from(msg.to_owned()));
    let path = PathAndQuery::from_static("/echo.Echo/Unary");
    let resp = client.unary(req, path, Raw).await?;
    Ok(String::from_utf8_lossy(resp.get_ref()).into_owned())
}

/// All four call kinds through one client.
async fn call_kinds(client: &mut tonic::client::Grpc<Channel>, pod: &str) {
    let answer = unary(client, "hello").await.unwrap();
    assert!(answer.starts_with(&format!("{pod}:hello:")), "{answer}");

    // Server streaming, ending in a status carried by real trailers.
    client.ready().await.unwrap();
    let path = PathAndQuery::from_static("/echo.Echo/ServerStream");
    let resp = client
        .server_streaming(Request::new(Bytes::from("3!")), path, Raw)
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let mut got = Vec::new();
    let status = loop {
        match stream.next().await {
            Some(Ok(m)) => got.push(String::from_utf8_lossy(&m).into_owned()),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without its status"),
        }
    };
    assert_eq!(got, ["item-0", "item-1", "item-2"]);
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "stopped on purpose");
    assert_eq!(status.metadata().get("x-why").unwrap(), "because");

    // Client streaming.
    client.ready().await.unwrap();
    let path = PathAndQuery::from_static("/echo.Echo/ClientStream");
    let parts = futures::stream::iter(
        ["a", "b", "c"].map(|s: &'static str| Bytes::from_static(s.as_bytes())),
    );
    let resp = client
        .client_streaming(Request::new(parts), path, Raw)
        .await
        .unwrap();
    assert_eq!(resp.get_ref(), "a+b+c");

    // Bidirectional: each answer arrives before the next message is sent, so nothing
    // on the way waits for the whole request.
    client.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let outgoing = tokio_stream_from(rx);
    let path = PathAndQuery::from_static("/echo.Echo/Bidi");
    tx.send(Bytes::from("one")).await.unwrap();
    let resp = client
        .streaming(Request::new(outgoing), path, Raw)
        .await
        .unwrap();
    let mut incoming = resp.into_inner();
    for (send, want) in [
        (None, "ONE"),
        (Some("two"), "TWO"),
        (Some("three"), "THREE"),
    ] {
        if let Some(m) = send {
            tx.send(Bytes::from(m)).await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .expect("an answer to a message while the stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(got, want);
    }
    drop(tx);
    assert!(incoming.next().await.is_none(), "the stream ends cleanly");
}

/// A unary call by hand over h2c, with `grpc-timeout: timeout`: the `grpc-status` (from
/// the trailers, or the head of a trailers-only answer) and the body.
async fn raw_unary(
    portico: SocketAddr,
    host: &str,
    msg: &str,
    timeout: &str,
) -> (Option<String>, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(portico).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(msg.as_bytes());
    let req = http::Request::post(format!("http://{host}/echo.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let head = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.unwrap();
    let trailer = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned());
    let status = head.or(trailer).map(|v| v.to_str().unwrap().to_owned());
    (status, collected.to_bytes().to_vec())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stream_through_over_h2c_and_tls() {
    let s = setup().await;
    let c = &s.controller;

    // h2c client, h2c pod (GRPC).
    let mut client = h2c_client(c.http, "grpc.example.com").await;
    call_kinds(&mut client, "plain").await;
    // The pod gets `te: trailers`, which gRPC servers may insist on.
    let answer = unary(&mut client, "te").await.unwrap();
    assert!(answer.ends_with("te=Some(\"trailers\")"), "{answer}");

    // A status from the pod, with its trailer.
    let status = unary(&mut client, "status:5").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "asked to fail");
    assert_eq!(status.metadata().get("x-why").unwrap(), "because");

    // TLS client (ALPN h2), TLS pod (GRPCS) with a certificate nobody verifies.
    let mut client = tls_client(c.https, &s.portico_cert).await;
    call_kinds(&mut client, "secure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_fails_grpc_calls_with_grpc_statuses() {
    let s = setup().await;
    let c = &s.controller;

    // The call's deadline: Portico gives up after it, not after proxy-read-timeout.
    // tonic's client would give up by itself, so the call is made by hand.
    let started = Instant::now();
    let (grpc_status, _) = raw_unary(c.http, "grpc.example.com", "sleep:5000", "300m").await;
    assert_eq!(grpc_status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    // A deadline long enough lets the answer through.
    let (grpc_status, body) = raw_unary(c.http, "grpc.example.com", "sleep:10", "5S").await;
    assert_eq!(grpc_status.as_deref(), Some("0"));
    assert!(
        body.ends_with(b"plain:sleep:10:te=Some(\"trailers\")"),
        "{body:?}"
    );

    // No ready endpoint, and a pod that refuses connections: UNAVAILABLE, as gRPC
    // (HTTP 200 with the status in its head; `raw_unary` checks the 200).
    for host in ["empty.example.com", "refused.example.com"] {
        let (status, _) = raw_unary(c.http, host, "hello", "10S").await;
        assert_eq!(status.as_deref(), Some("14"), "{host}: UNAVAILABLE");
    }
    // No route: UNIMPLEMENTED; tonic sees the same.
    let (status, _) = raw_unary(c.http, "nowhere.example.com", "hello", "10S").await;
    assert_eq!(status.as_deref(), Some("12"), "UNIMPLEMENTED");
    let mut client = h2c_client(c.http, "nowhere.example.com").await;
    let status = unary(&mut client, "hello").await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Plain HTTP clients still get Portico's usual pages.
    let (code, _) = get(c.http, "empty.example.com", "/").await.unwrap();
    assert_eq!(code, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_outlives_configuration_changes() {
    let s = setup().await;
    let c = &s.controller;
    let mut client = h2c_client(c.http, "grpc.example.com").await;
    client.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let path = PathAndQuery::from_static("/echo.Echo/Bidi");
    tx.send(Bytes::from("before")).await.unwrap();
    let resp = client
        .streaming(Request::new(tokio_stream_from(rx)), path, Raw)
        .await
        .unwrap();
    let mut incoming = resp.into_inner();
    assert_eq!(incoming.next().await.unwrap().unwrap(), "BEFORE");

    // Two publishes while the stream is open: a new Ingress, then the stream's own
    // Ingress changed (another timeout).
    let extra = ingress_yaml("extra", "extra.example.com", "/", "plain");
    std::fs::write(s.dir.path().join("extra.yaml"), extra).unwrap();
    wait_for(
        c.http,
        "extra.example.com",
        "/",
        Duration::from_secs(20),
        |code, _| code != 404,
    )
    .await;
    let grpc = std::fs::read_to_string(s.dir.path().join("grpc.yaml")).unwrap();
    let changed = grpc.replacen(
        "nginx.ingress.kubernetes.io/backend-protocol: GRPC\n",
        "nginx.ingress.kubernetes.io/backend-protocol: GRPC\n    nginx.ingress.kubernetes.io/proxy-read-timeout: \"120\"\n",
        1,
    );
    assert_ne!(grpc, changed);
    write_atomic(s.dir.path(), "grpc.yaml", &changed);
    c.wait_log(
        "the changed Ingress published",
        Duration::from_secs(20),
        |l| l.contains("configuration published") && l.contains("generation=3"),
    )
    .await;

    for word in ["during", "after"] {
        tx.send(Bytes::from(word)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .expect("the stream still answers")
            .unwrap()
            .unwrap();
        assert_eq!(got, word.to_uppercase());
    }
    drop(tx);
    assert!(incoming.next().await.is_none());
}
