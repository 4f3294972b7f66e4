//! End to end: the real binary on a manifest folder holding `kubernetes.io/tls` Secrets as
//! `kubectl create secret tls NAME --cert --key --dry-run=client -o yaml` prints them,
//! checked with real TLS clients by SNI over 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

mod common;

use common::{secret_yaml, AnyCert, Controller};

const DEADLINE: Duration = Duration::from_secs(60);
const DEFAULT_CN: &[u8] = b"Portico Default Certificate";

/// PEM pair plus the leaf's DER, to compare with what the server presents.
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    der: Vec<u8>,
}

/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=HOST`, the documented workflow;
/// rcgen when the openssl CLI is missing.
fn make_cert(dir: &Path, host: &str) -> Pem {
    let (crt, key) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", &format!("/CN={host}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        let cert = std::fs::read(&crt).unwrap();
        return Pem {
            der: leaf_der(&cert),
            key: std::fs::read(&key).unwrap(),
            cert,
        };
    }
    eprintln!("openssl CLI not available: making the {host} certificate with rcgen");
    let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    Pem {
        cert: c.cert.pem().into_bytes(),
        key: c.signing_key.serialize_pem().into_bytes(),
        der: c.cert.der().to_vec(),
    }
}

fn leaf_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

/// The IngressClass, a Service whose EndpointSlice points at `backend`, and an Ingress
/// for kubia.example.com with three TLS entries: a good Secret, a broken one and a
/// missing one.
fn routes_yaml(backend: SocketAddr) -> String {
    let mut out = String::from(common::INGRESS_CLASS_YAML);
    out.push_str(&common::service_yaml("kubia", &[backend]));
    out.push_str(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: kubia
spec:
  ingressClassName: portico
  tls:
  - hosts: [kubia.example.com]
    secretName: kubia-tls
  - hosts: [broken.example.com]
    secretName: broken-tls
  - hosts: [missing.example.com]
    secretName: no-such-secret
  rules:
  - host: kubia.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: no-redirect
  annotations:
    nginx.ingress.kubernetes.io/ssl-redirect: \"false\"
spec:
  ingressClassName: portico
  tls:
  - hosts: [plain.example.com]
    secretName: kubia-tls
  rules:
  - host: plain.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: forced
  annotations:
    portico.dev/force-ssl-redirect: \"true\"
spec:
  ingressClassName: portico
  rules:
  - host: forced.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
",
    );
    out
}

/// A backend that answers every request with the X-Forwarded-Proto it received.
async fn spawn_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        format!("proto={proto}"),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn client(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(addr: SocketAddr, sni: Option<&str>, alpn: &[&[u8]]) -> std::io::Result<Tls> {
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(Duration::from_secs(20), client(alpn).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

async fn presented(addr: SocketAddr, sni: Option<&str>) -> std::io::Result<Vec<u8>> {
    let tls = handshake(addr, sni, &[]).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// Polls until `sni` is shown `want`, returning how long that took.
async fn wait_for_cert(addr: SocketAddr, sni: Option<&str>, want: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(got) = presented(addr, sni).await {
            if got == want {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{sni:?} was not shown the expected certificate within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn get_h1(tls: Tls, host: &str, path: &str) -> (u16, String, Option<String>) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    read(send.send_request(req).await.unwrap()).await
}

async fn read(resp: Response<Incoming>) -> (u16, String, Option<String>) {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        location,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_default_rotation_and_broken_secret() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let manifests = dir.path();
    let backend = spawn_backend().await;

    let kubia = make_cert(certs.path(), "kubia.example.com");
    let broken_a = make_cert(certs.path(), "broken.example.com");
    let broken_b = make_cert(certs.path(), "wrong.example.com");
    std::fs::write(manifests.join("routes.yaml"), routes_yaml(backend)).unwrap();
    std::fs::write(
        manifests.join("kubia-tls.yaml"),
        secret_yaml("kubia-tls", &kubia.cert, &kubia.key),
    )
    .unwrap();
    // A key that does not match its certificate.
    std::fs::write(
        manifests.join("broken-tls.yaml"),
        secret_yaml("broken-tls", &broken_a.cert, &broken_b.key),
    )
    .unwrap();

    let mut ctl = Controller::start(manifests, &[]);
    ctl.wait_ready().await;
    wait_for_cert(ctl.https, Some("kubia.example.com"), &kubia.der).await;

    // Unknown SNI, no SNI, a broken Secret and a missing one all get the generated default.
    let default = presented(ctl.https, Some("unknown.example.com"))
        .await
        .unwrap();
    assert!(
        contains(&default, DEFAULT_CN),
        "not the generated default certificate"
    );
    assert_eq!(presented(ctl.https, None).await.unwrap(), default);
    assert_eq!(
        presented(ctl.https, Some("broken.example.com"))
            .await
            .unwrap(),
        default
    );
    assert_eq!(
        presented(ctl.https, Some("missing.example.com"))
            .await
            .unwrap(),
        default
    );

    // Requests over TLS route like HTTP, marked https, over HTTP/1.1 and HTTP/2.
    let tls = handshake(ctl.https, Some("kubia.example.com"), &[b"http/1.1"])
        .await
        .unwrap();
    let (status, body, _) = get_h1(tls, "kubia.example.com", "/x").await;
    assert_eq!((status, body.as_str()), (200, "proto=https"));

    let tls = handshake(ctl.https, Some("kubia.example.com"), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://kubia.example.com/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, body, _) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "proto=https"));

    // Plain HTTP to a host with a TLS entry is redirected, path and query kept.
    let tcp = TcpStream::connect(ctl.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/a/b?c=d")
        .header("host", "kubia.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, _, location) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 308);
    let want = format!("https://kubia.example.com:{}/a/b?c=d", ctl.https.port());
    assert_eq!(location.as_deref(), Some(want.as_str()));
    // ssl-redirect "false" keeps plain HTTP; force-ssl-redirect redirects without TLS.
    let (status, body) = common::get(ctl.http, "plain.example.com", "/p")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "proto=http"));
    let (status, _) = common::get(ctl.http, "forced.example.com", "/f")
        .await
        .unwrap();
    assert_eq!(status, 308);

    // An open connection survives rotation; new handshakes get the new certificate.
    let open = handshake(ctl.https, Some("kubia.example.com"), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut open_send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Handshakes keep coming while the Secret is rotated; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            let addr = ctl.https;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match presented(addr, Some("kubia.example.com")).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("handshake failed during rotation: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let rotated = make_cert(certs.path(), "kubia.example.com");
    common::write_atomic(
        manifests,
        "kubia-tls.yaml",
        &secret_yaml("kubia-tls", &rotated.cert, &rotated.key),
    );
    let took = wait_for_cert(ctl.https, Some("kubia.example.com"), &rotated.der).await;
    eprintln!("rotation visible to new handshakes after {took:?}");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "handshakes failed during rotation"
    );
    assert!(done.load(Ordering::Relaxed) > 0);
    let req = Request::get("/still-open")
        .header("host", "kubia.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, body, _) = read(open_send.send_request(req).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "proto=https"));

    // Fixing the broken Secret brings its host up; the good one is untouched.
    std::fs::write(
        manifests.join("broken-tls.yaml"),
        secret_yaml("broken-tls", &broken_a.cert, &broken_a.key),
    )
    .unwrap();
    wait_for_cert(ctl.https, Some("broken.example.com"), &broken_a.der).await;
    assert_eq!(
        presented(ctl.https, Some("kubia.example.com"))
            .await
            .unwrap(),
        rotated.der
    );
}

/// The notes' certificate: `openssl req -new -x509 -subj /CN=kubia.example.com`, with no
/// subjectAltName. Served, with a warning giving the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cn_only_certificate_is_served_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (crt, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=kubia.example.com"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !made {
        eprintln!("SKIPPED a_cn_only_certificate_is_served_with_a_warning: no openssl CLI");
        return;
    }
    let (cert, key) = (std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap());
    let backend = spawn_backend().await;
    std::fs::write(dir.path().join("routes.yaml"), routes_yaml(backend)).unwrap();
    std::fs::write(
        dir.path().join("kubia-tls.yaml"),
        secret_yaml("kubia-tls", &cert, &key),
    )
    .unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for_cert(ctl.https, Some("kubia.example.com"), &leaf_der(&cert)).await;
    let tls = handshake(ctl.https, Some("kubia.example.com"), &[b"http/1.1"])
        .await
        .unwrap();
    let (status, body, _) = get_h1(tls, "kubia.example.com", "/x").await;
    assert_eq!((status, body.as_str()), (200, "proto=https"));

    let logs = ctl.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("certificate_without_san"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    for want in [
        "default/kubia-tls",
        "only the Common Name \"kubia.example.com\"",
        "browsers and Go clients reject CN-only certificates",
        "-addext \"subjectAltName=DNS:kubia.example.com\"",
    ] {
        assert!(line.contains(want), "missing {want} in {line}");
    }
    let metrics = ctl.metrics().await;
    assert!(
        metrics
            .contains(r#"portico_diagnostics{reason="certificate_without_san",kind="Secret"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_flag_names_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let backend = spawn_backend().await;
    let fallback = make_cert(certs.path(), "fallback.example.com");
    let kubia = make_cert(certs.path(), "kubia.example.com");
    std::fs::write(dir.path().join("routes.yaml"), routes_yaml(backend)).unwrap();
    std::fs::write(
        dir.path().join("kubia-tls.yaml"),
        secret_yaml("kubia-tls", &kubia.cert, &kubia.key),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("default-cert.yaml"),
        secret_yaml("default-cert", &fallback.cert, &fallback.key),
    )
    .unwrap();

    let mut ctl = Controller::start(
        dir.path(),
        &["--default-certificate", "default/default-cert"],
    );
    ctl.wait_ready().await;
    wait_for_cert(ctl.https, Some("unknown.example.com"), &fallback.der).await;
    assert_eq!(presented(ctl.https, None).await.unwrap(), fallback.der);
    assert_eq!(
        presented(ctl.https, Some("kubia.example.com"))
            .await
            .unwrap(),
        kubia.der
    );
}
