//! The admission webhook end to end: the real binary against the API-server double with
//! `--webhook-addr`, its certificates read back from the Secret it created, and
//! AdmissionReviews POSTed over TLS verified against that CA.

// One copy of the double, owned by the conformance crate, which runs suites over it too.
#[path = "../../conformance/src/apiserver.rs"]
mod apiserver;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apiserver::ApiServer;
use bytes::Bytes;
use common::{free_port, Controller};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);
/// The name the API server verifies: `NAME.NAMESPACE.svc` of `--webhook-service`.
const SERVICE_NAME: &str = "portico-admission.portico.svc";
const SECRET: &str = "portico-admission-certs";
const CONFIGURATION: &str = "portico-admission";
const PATH: &str = "/validate/ingresses";

fn seed(api: &ApiServer) {
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    api.apply(ingress("old", json!({}), "taken.example.com", "/api"));
    // The configuration as installed: the shipped manifest, without a caBundle.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/50-admission.yaml"
    ))
    .unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "ValidatingWebhookConfiguration" {
            assert_eq!(v["metadata"]["name"], CONFIGURATION);
            api.apply(v);
        }
    }
}

fn ingress(name: &str, annotations: Value, host: &str, path: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                     "creationTimestamp": if name == "old" { "2024-01-01T00:00:00Z" } else { "2025-06-01T00:00:00Z" }},
        "spec": {"ingressClassName": "portico", "rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })
}

fn review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b5a4e3b1-0000-4000-8000-000000000001",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "operation": "CREATE", "namespace": "default",
            "name": object["metadata"]["name"].clone(),
            "userInfo": {"username": "kubernetes-admin"},
            "object": object, "dryRun": false
        }
    })
}

fn start(api: &ApiServer, dir: &tempfile::TempDir, webhook: SocketAddr) -> Controller {
    let kubeconfig = api.write_kubeconfig(dir.path());
    Controller::start_with(
        &[
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--webhook-addr".to_owned(),
            webhook.to_string(),
        ],
        &[("POD_NAME", "portico-test-0"), ("POD_NAMESPACE", "portico")],
    )
}

fn secret_field(api: &ApiServer, key: &str) -> Option<String> {
    let secret: Secret =
        serde_json::from_value(api.get("v1", "Secret", "portico", SECRET)?).ok()?;
    let bytes = secret.data?.remove(key)?;
    String::from_utf8(bytes.0).ok()
}

fn ca_bundle(api: &ApiServer) -> Option<String> {
    let config: ValidatingWebhookConfiguration = serde_json::from_value(api.get(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "",
        CONFIGURATION,
    )?)
    .ok()?;
    let bundle = config.webhooks?.first()?.client_config.ca_bundle.clone()?;
    String::from_utf8(bundle.0).ok()
}

async fn eventually<T>(c: &Controller, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS client trusting only `bundle`, for the webhook Service's name.
fn connector(bundle: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One request over a fresh TLS connection: (status, body).
async fn send(
    addr: SocketAddr,
    bundle: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(SERVICE_NAME).unwrap();
    let tls = connector(bundle)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", SERVICE_NAME)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

async fn admit(addr: SocketAddr, bundle: &str, object: Value) -> Value {
    let body = serde_json::to_vec(&review(object)).unwrap();
    let (status, body) = send(addr, bundle, "POST", PATH, "application/json", body)
        .await
        .expect("a review");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "b5a4e3b1-0000-4000-8000-000000000001");
    v["response"].clone()
}

/// Waits for the controller to store its certificates and publish its CA, and for the
/// webhook to answer with the stored certificate.
async fn wait_serving(c: &Controller, api: &ApiServer, addr: SocketAddr) -> String {
    let bundle = eventually(c, "certificates stored and caBundle set", || {
        let stored = secret_field(api, "ca.crt")?;
        (ca_bundle(api)? == stored).then_some(stored)
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ok = send(
            addr,
            &bundle,
            "POST",
            PATH,
            "application/json",
            b"{}".to_vec(),
        )
        .await;
        if matches!(ok, Ok((400, _))) {
            return bundle;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook not answering: {ok:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_denies_and_warns_over_tls_with_its_own_ca() {
    let api = ApiServer::start().await;
    seed(&api);
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut c = start(&api, &dir, addr);
    c.wait_ready().await;
    let bundle = wait_serving(&c, &api, addr).await;
    let cert = secret_field(&api, "tls.crt").unwrap();

    // A good Ingress is admitted, without warnings.
    let ok = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "new.example.com", "/"),
    )
    .await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert!(ok.get("warnings").is_none(), "{ok}");

    // A snippet is refused, naming the field; the value is not echoed.
    let snippet = admit(
        addr,
        &bundle,
        ingress(
            "new",
            json!({"nginx.ingress.kubernetes.io/configuration-snippet": "return 200 'pwned';"}),
            "new.example.com",
            "/",
        ),
    )
    .await;
    assert_eq!(snippet["allowed"], false, "{snippet}");
    let message = snippet["status"]["message"].as_str().unwrap();
    assert!(message.contains("Ingress default/new: metadata.annotations: snippet annotation nginx.ingress.kubernetes.io/configuration-snippet"), "{message}");
    assert!(!message.contains("pwned"), "{message}");

    // An annotation value that does not parse.
    let bad = admit(
        addr,
        &bundle,
        ingress(
            "new",
            json!({"nginx.ingress.kubernetes.io/proxy-read-timeout": "forever"}),
            "new.example.com",
            "/",
        ),
    )
    .await;
    assert_eq!(bad["allowed"], false, "{bad}");
    assert!(
        bad["status"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata.annotations[\"nginx.ingress.kubernetes.io/proxy-read-timeout\"]"),
        "{bad}"
    );

    // A path the older Ingress claims.
    let conflict = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "taken.example.com", "/api"),
    )
    .await;
    assert_eq!(conflict["allowed"], false, "{conflict}");
    let message = conflict["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.rules[0].http.paths[0]") && message.contains("default/old"),
        "{message}"
    );

    // A cosmetic annotation Portico does not support: admitted with a warning.
    let warned = admit(
        addr,
        &bundle,
        ingress(
            "new",
            json!({"nginx.ingress.kubernetes.io/enable-access-log": "false"}),
            "new.example.com",
            "/",
        ),
    )
    .await;
    assert_eq!(warned["allowed"], true, "{warned}");
    assert!(
        warned["warnings"][0]
            .as_str()
            .unwrap()
            .contains("enable-access-log"),
        "{warned}"
    );

    // Another kind is refused.
    let mut pod = review(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}));
    pod["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    pod["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    let (status, body) = send(
        addr,
        &bundle,
        "POST",
        PATH,
        "application/json",
        serde_json::to_vec(&pod).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{v}");

    // Not a v1 review, and its content is not echoed.
    let mut v1beta1 = review(ingress("leak-me-not", json!({}), "x.example.com", "/"));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, body) = send(
        addr,
        &bundle,
        "POST",
        PATH,
        "application/json",
        serde_json::to_vec(&v1beta1).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(!String::from_utf8_lossy(&body).contains("leak-me-not"));
    let (status, _) = send(
        addr,
        &bundle,
        "POST",
        PATH,
        "application/json",
        b"{\"a\": \"leak-me-not".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    // A body over 3 MiB, a wrong method, path or content type.
    // The webhook answers 413 without reading the body and closes the connection, so
    // the client may see that answer or only the connection closing under its write.
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    match send(addr, &bundle, "POST", PATH, "application/json", big).await {
        Ok((status, _)) => assert_eq!(status, 413),
        Err(e) => assert!(e.contains("writing a body"), "{e}"),
    }
    // ... and keeps serving.
    let ok = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "new.example.com", "/"),
    )
    .await;
    assert_eq!(ok["allowed"], true, "{ok}");
    let (status, _) = send(addr, &bundle, "GET", PATH, "application/json", Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 405);
    let (status, _) = send(addr, &bundle, "POST", "/", "application/json", Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = send(
        addr,
        &bundle,
        "POST",
        PATH,
        "application/yaml",
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 415);

    // A client that does not trust the CA gets no answer.
    let stranger = tls::generate_serving_pair(
        "stranger",
        &[SERVICE_NAME.to_owned()],
        1_700_000_000,
        Duration::from_secs(3600),
    )
    .unwrap();
    assert!(send(
        addr,
        &stranger.ca_pem,
        "POST",
        PATH,
        "application/json",
        Vec::new()
    )
    .await
    .is_err());

    // A restart reuses the stored certificates: the same CA keeps working.
    drop(c);
    let mut c = start(&api, &dir, addr);
    c.wait_ready().await;
    assert_eq!(wait_serving(&c, &api, addr).await, bundle);
    assert_eq!(secret_field(&api, "tls.crt").unwrap(), cert);
    let ok = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "new.example.com", "/"),
    )
    .await;
    assert_eq!(ok["allowed"], true, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_a_certificate_near_expiry_keeping_the_old_ca_trusted() {
    let api = ApiServer::start().await;
    seed(&api);
    // A pair that expires in a day, well inside the renewal window.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let names: Vec<String> = [
        SERVICE_NAME,
        "portico-admission.portico.svc.cluster.local",
        "portico-admission.portico",
        "portico-admission",
    ]
    .map(str::to_owned)
    .to_vec();
    let old = tls::generate_serving_pair("old", &names, now, Duration::from_secs(86400)).unwrap();
    let data = [
        ("ca.crt", &old.ca_pem),
        ("tls.crt", &old.cert_pem),
        ("tls.key", &old.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
    .collect();
    let mut secret = serde_json::to_value(Secret {
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
    .unwrap();
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    secret["metadata"] = json!({"namespace": "portico", "name": SECRET});
    api.apply(secret);
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut c = start(&api, &dir, addr);
    c.wait_ready().await;
    let bundle = wait_serving(&c, &api, addr).await;
    let cert = secret_field(&api, "tls.crt").unwrap();
    assert_ne!(cert, old.cert_pem, "a certificate near expiry was kept");
    assert!(
        bundle.starts_with("-----BEGIN CERTIFICATE-----") && bundle.contains(old.ca_pem.trim()),
        "the previous CA left the bundle"
    );
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    // Served with the new certificate, which the bundle (and not the old CA alone) trusts.
    let ok = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "new.example.com", "/"),
    )
    .await;
    assert_eq!(ok["allowed"], true, "{ok}");
    assert!(send(
        addr,
        &old.ca_pem,
        "POST",
        PATH,
        "application/json",
        Vec::new()
    )
    .await
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_the_webhook_keeps_answering() {
    use tokio::io::AsyncReadExt;
    let api = ApiServer::start().await;
    seed(&api);
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut c = start(&api, &dir, addr);
    c.wait_ready().await;
    let bundle = wait_serving(&c, &api, addr).await;
    // Idle connections that never start TLS take every slot.
    let mut held = Vec::new();
    for _ in 0..ingress_controller::admission::MAX_CONNECTIONS {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("a connection over the cap was kept open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = admit(
        addr,
        &bundle,
        ingress("new", json!({}), "new.example.com", "/"),
    )
    .await;
    assert_eq!(ok["allowed"], true, "{ok}");
}
