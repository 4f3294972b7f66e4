//! BackendTLSPolicy through the binary over a manifest folder: HTTPRoutes to Services
//! whose pods serve TLS with a certificate of a generated CA, verified against the
//! policy's CA ConfigMap and hostname (or subjectAltNames), and failing closed when
//! the name does not match or the CA reference is broken.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;

use common::*;

const NS: &str = "gateway-conformance-infra";
const FOLLOW: Duration = Duration::from_secs(20);

/// A CA (its PEM) and a pod serving TLS with a certificate it issued for `names` and
/// the URI `uri`; the pod answers with the SNI it got.
async fn tls_pod(names: &[&str], uri: &str) -> (String, SocketAddr) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "backend CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.subject_alt_names
        .push(rcgen::SanType::URI(uri.try_into().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let body = format!("tls sni={sni} path={}", req.uri().path());
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
    (ca_cert.pem(), addr)
}

fn service(name: &str, pod: SocketAddr) -> String {
    namespaced_service_yaml(NS, name, ("https", 443), pod)
}

fn policy(name: &str, service: &str, ca: &str, hostname: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: {NS}}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]
    hostname: {hostname}
{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_policies_verify_the_pods_certificate() {
    let spiffe = "spiffe://cluster.local/ns/infra/sa/backend";
    let (ca_pem, pod) = tls_pod(&["backend.example.internal"], spiffe).await;
    let dir = tempfile::tempdir().unwrap();
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    let mut text = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  gatewayClassName: portico
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: {NS}}}
data:
  ca.crt: |
{indented}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: tls, namespace: {NS}}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [tls.example.com]
  rules:
"
    );
    let names = [
        "verified",
        "wrong-name",
        "bad-ca",
        "san",
        "uri",
        "wrong-uri",
    ];
    for name in names {
        text.push_str(&format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n    backendRefs: [{{name: {name}, port: 443}}]\n"
        ));
    }
    for name in names {
        text.push_str(&service(name, pod));
    }
    text.push_str(&policy(
        "verified",
        "verified",
        "backend-ca",
        "backend.example.internal",
        "",
    ));
    text.push_str(&policy(
        "wrong-name",
        "wrong-name",
        "backend-ca",
        "other.example.internal",
        "",
    ));
    text.push_str(&policy(
        "bad-ca",
        "bad-ca",
        "no-such-configmap",
        "backend.example.internal",
        "",
    ));
    text.push_str(&policy(
        "san",
        "san",
        "backend-ca",
        "sni.example.internal",
        "    subjectAltNames: [{type: Hostname, hostname: backend.example.internal}]\n",
    ));
    for (name, uri) in [
        ("uri", spiffe),
        ("wrong-uri", "spiffe://cluster.local/ns/x/sa/y"),
    ] {
        text.push_str(&policy(
            name,
            name,
            "backend-ca",
            "sni.example.internal",
            &format!("    subjectAltNames: [{{type: URI, uri: \"{uri}\"}}]\n"),
        ));
    }
    std::fs::write(dir.path().join("all.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let host = "tls.example.com";
    wait_for(ctl.http, host, "/verified", FOLLOW, |s, _| s == 200).await;

    // Verified against the CA and the hostname, which went out as SNI.
    let got = get(ctl.http, host, "/verified/x").await.unwrap();
    assert_eq!(
        got,
        (
            200,
            "tls sni=backend.example.internal path=/verified/x".to_owned()
        )
    );
    // subjectAltNames verify instead of the hostname, which is still the SNI.
    let got = get(ctl.http, host, "/san").await.unwrap();
    assert_eq!(
        got,
        (200, "tls sni=sni.example.internal path=/san".to_owned()),
        "{}",
        ctl.logs()
    );
    // A URI subjectAltName (a SPIFFE id) the certificate carries, and one it does not.
    let got = get(ctl.http, host, "/uri").await.unwrap();
    assert_eq!(
        got,
        (200, "tls sni=sni.example.internal path=/uri".to_owned())
    );
    let (status, body) = get(ctl.http, host, "/wrong-uri").await.unwrap();
    assert!(status >= 500, "{status} {body}");
    // The pod's certificate does not carry the hostname: refused, never served.
    let (status, body) = get(ctl.http, host, "/wrong-name").await.unwrap();
    assert!(status >= 500, "{status} {body}");
    assert!(!body.contains("tls sni"), "{body}");
    // A CA reference that cannot be resolved: fails closed, not plaintext or unverified.
    let (status, body) = get(ctl.http, host, "/bad-ca").await.unwrap();
    assert!(status >= 500, "{status} {body}");
    assert!(!body.contains("tls sni"), "{body}");
    ctl.wait_log("the policy's status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("bad-ca")
                && l.contains("ResolvedRefs=False (InvalidCACertificateRef")
                && l.contains("Accepted=False (NoValidCACertificate")
        })
    })
    .await;
    ctl.wait_log("the accepted policy's status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("verified")
                && l.contains("Accepted=True (Accepted")
                && l.contains(&format!("parent {NS}/gw"))
        })
    })
    .await;
}
