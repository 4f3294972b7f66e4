//! TLS to pods through the real binary over a manifest folder: `backend-protocol:
//! HTTPS` (HTTP/2 or HTTP/1.1 as the pod's ALPN answer says), `AUTO_HTTP`, a Service
//! port's `appProtocol`, and `proxy-ssl-*` (verification against a CA, the name and
//! SNI, a wrong CA, a missing Secret, and a client certificate for a pod that asks
//! for one).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use common::*;

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf for `names` issued by `ca`: (certificate PEM, key PEM, DER, key DER).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String, CertificateDer<'static>, Vec<u8>) {
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().clone(),
        key.serialize_der(),
    )
}

/// A pod serving TLS with `alpn`; it answers with the HTTP version it was spoken to
/// in, the SNI it got, and whether a client certificate came.
async fn tls_pod(ca: &Ca, alpn: &[&[u8]], require_client_cert: bool) -> SocketAddr {
    tls_pod_counted(ca, alpn, require_client_cert).await.0
}

/// [`tls_pod`], and the count of connections it accepted.
async fn tls_pod_counted(
    ca: &Ca,
    alpn: &[&[u8]],
    require_client_cert: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let (_, _, der, key) = leaf(ca, &["pod.internal"]);
    let builder = rustls::ServerConfig::builder();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap(),
        )
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(vec![der], PrivateKeyDer::Pkcs8(key.into()))
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().unwrap_or("-").to_owned();
                let client_cert = conn.peer_certificates().is_some();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let body = format!(
                        "version={:?} sni={sni} client-cert={client_cert}",
                        req.version()
                    );
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn annotated(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::new();
    for (k, v) in annotations {
        lines.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
    }
    ingress_yaml(name, host, "/", service).replacen(
        &format!("metadata:\n  name: {name}\n"),
        &format!("metadata:\n  name: {name}\n  annotations:\n{lines}"),
        1,
    )
}

fn opaque_secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\ndata:\n"
    );
    for (k, v) in data {
        out.push_str(&format!("  {k}: {}\n", b64(v.as_bytes())));
    }
    out
}

async fn body_of(c: &Controller, host: &str) -> (u16, String) {
    get(c.http, host, "/").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_pods_with_and_without_verification() {
    let pod_ca = ca("pod CA");
    let other_ca = ca("someone else");
    let either = tls_pod(&pod_ca, &[b"h2", b"http/1.1"], false).await;
    let h1_only = tls_pod(&pod_ca, &[b"http/1.1"], false).await;
    let mutual = tls_pod(&pod_ca, &[b"http/1.1"], true).await;
    let plain = Backend::start("plain").await;
    let (client_cert, client_key, _, _) = leaf(&pod_ca, &["portico.client"]);

    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("either", &[either]));
    text.push_str(&service_yaml("h1-only", &[h1_only]));
    text.push_str(&service_yaml("mutual", &[mutual]));
    text.push_str(&service_yaml("plain", &[plain.addr]));
    // appProtocol says HTTPS where no annotation does.
    text.push_str(&service_yaml("by-app-protocol", &[either]).replacen(
        "    targetPort: 8080\n",
        "    targetPort: 8080\n    appProtocol: https\n",
        1,
    ));
    let https = [("backend-protocol", "HTTPS")];
    text.push_str(&annotated("either", "either.example.com", "either", &https));
    text.push_str(&annotated("h1-only", "h1.example.com", "h1-only", &https));
    text.push_str(&ingress_yaml(
        "app-protocol",
        "app.example.com",
        "/",
        "by-app-protocol",
    ));
    text.push_str(&annotated(
        "auto",
        "auto.example.com",
        "plain",
        &[("backend-protocol", "AUTO_HTTP")],
    ));
    let verify = |secret: &'static str| {
        [
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", secret),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-name", "pod.internal"),
            ("proxy-ssl-server-name", "on"),
        ]
    };
    text.push_str(&annotated(
        "verified",
        "verified.example.com",
        "either",
        &verify("default/pod-ca"),
    ));
    text.push_str(&annotated(
        "wrong-ca",
        "wrong-ca.example.com",
        "either",
        &verify("default/other-ca"),
    ));
    text.push_str(&annotated(
        "missing",
        "missing.example.com",
        "either",
        &verify("default/nothing"),
    ));
    text.push_str(&annotated(
        "mtls",
        "mtls.example.com",
        "mutual",
        &verify("default/pod-client"),
    ));
    text.push_str(&annotated(
        "no-client-cert",
        "nocert.example.com",
        "mutual",
        &https,
    ));
    text.push_str(&opaque_secret("pod-ca", &[("ca.crt", &pod_ca.cert.pem())]));
    text.push_str(&opaque_secret(
        "other-ca",
        &[("ca.crt", &other_ca.cert.pem())],
    ));
    text.push_str(&opaque_secret(
        "pod-client",
        &[
            ("ca.crt", &pod_ca.cert.pem()),
            ("tls.crt", &client_cert),
            ("tls.key", &client_key),
        ],
    ));
    std::fs::write(dir.path().join("tls.yaml"), text).unwrap();
    let mut c = Controller::start(dir.path(), &[]);
    c.wait_ready().await;

    // The pod's ALPN answer decides; no SNI unless asked for, as nginx.
    let (code, body) = body_of(&c, "either.example.com").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "version=HTTP/2.0 sni=- client-cert=false")
    );
    let (code, body) = body_of(&c, "h1.example.com").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "version=HTTP/1.1 sni=- client-cert=false")
    );
    let (code, body) = body_of(&c, "app.example.com").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "version=HTTP/2.0 sni=- client-cert=false")
    );
    // AUTO_HTTP from a plain client: plain HTTP to the pod.
    let (code, body) = body_of(&c, "auto.example.com").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("plain"), "{body}");

    // Verified against the pod's CA, by proxy-ssl-name, which is also the SNI.
    let (code, body) = body_of(&c, "verified.example.com").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "version=HTTP/2.0 sni=pod.internal client-cert=false")
    );
    // Another CA: the pod is not trusted, 502.
    let (code, _) = body_of(&c, "wrong-ca.example.com").await;
    assert_eq!(code, 502);
    // The request's log line names the Secret the pod was checked against.
    c.wait_log(
        "the failed verification",
        std::time::Duration::from_secs(10),
        |l| l.contains("TLS to") && l.contains("secret=default/other-ca"),
    )
    .await;
    // A missing Secret: the paths are refused, never sent unverified.
    let (code, _) = body_of(&c, "missing.example.com").await;
    assert_eq!(code, 503);
    let logs = c.logs();
    assert!(
        logs.contains(
            "proxy-ssl-secret default/nothing: Secret not found; the Ingress's paths answer 503"
        ),
        "{logs}"
    );
    // A client certificate for the pod that asks for one; without it the pod refuses.
    let (code, body) = body_of(&c, "mtls.example.com").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "version=HTTP/1.1 sni=pod.internal client-cert=true")
    );
    let (code, _) = body_of(&c, "nocert.example.com").await;
    assert_eq!(code, 502);
    // The other routes still answer.
    let (code, _) = body_of(&c, "either.example.com").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_requests_close_tls_pod_connections() {
    let pod_ca = ca("pod CA");
    let (h1_only, accepted) = tls_pod_counted(&pod_ca, &[b"http/1.1"], false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("h1-only", &[h1_only]));
    text.push_str(&annotated(
        "h1-only",
        "h1.example.com",
        "h1-only",
        &[("backend-protocol", "HTTPS")],
    ));
    text.push_str(
        "---
apiVersion: v1
kind: ConfigMap
metadata: {name: portico-settings, namespace: portico}
data:
  upstream-keepalive-requests: \"2\"
",
    );
    std::fs::write(dir.path().join("tls.yaml"), text).unwrap();
    let mut c = Controller::start(dir.path(), &["--configmap", "portico/portico-settings"]);
    c.wait_ready().await;
    for _ in 0..5 {
        let (code, body) = body_of(&c, "h1.example.com").await;
        assert_eq!(
            (code, body.as_str()),
            (200, "version=HTTP/1.1 sni=- client-cert=false")
        );
    }
    // Two requests a TLS connection, as on plain ones.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "5 requests, 2 a connection"
    );
}
