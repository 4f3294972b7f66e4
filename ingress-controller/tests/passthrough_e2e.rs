//! `ssl-passthrough` through the binary: a pod that terminates TLS itself, reached with
//! curl and `openssl s_client` by SNI on the HTTPS port; another host on the same port
//! terminated by Portico; the annotation without `--enable-ssl-passthrough`; PROXY
//! protocol in front; and a change of the annotation taking effect without a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PASS_HOST: &str = "pass.example.com";
const TERM_HOST: &str = "term.example.com";
/// The Common Name of the pod's own certificate.
const POD_CN: &str = "passthrough pod";
/// The Common Name of the certificate Portico serves for `TERM_HOST`.
const TERM_CN: &str = "portico terminated";

/// A pod that terminates TLS itself with its own certificate and answers every request
/// with `hello from the passthrough pod, sni=<the SNI it saw>`.
struct TlsPod {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsPod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn certificate(host: &str, cn: &str) -> (Vec<u8>, Vec<u8>, rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
        cert,
        key,
    )
}

async fn tls_pod() -> TlsPod {
    let (_, _, cert, key) = certificate(PASS_HOST, POD_CN);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("hello from the passthrough pod, sni={sni}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsPod { addr, task }
}

/// A passthrough host whose Service does not exist: no endpoint to go to.
const DOWN_HOST: &str = "down.example.com";

fn passthrough_ingress(annotation: Option<&str>) -> String {
    let annotations = match annotation {
        Some(key) => format!("  annotations:\n    {key}: \"true\"\n"),
        None => String::new(),
    };
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: pass
{annotations}spec:
  ingressClassName: portico
  rules:
  - host: {PASS_HOST}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: tlsapp
            port:
              number: 80
"
    )
}

/// The manifests: the passthrough Ingress (annotated with `annotation`), and a host
/// Portico terminates with a certificate of its own, on an echo backend.
fn write_manifests(dir: &Path, pod: &TlsPod, web: &Backend, annotation: Option<&str>) {
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("tlsapp", &[pod.addr]));
    text.push_str(&passthrough_ingress(annotation));
    text.push_str(
        &passthrough_ingress(annotation)
            .replace("name: pass\n", "name: down\n")
            .replace(PASS_HOST, DOWN_HOST)
            .replace("name: tlsapp", "name: gone"),
    );
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  ingressClassName: portico
  tls:
  - hosts: [{TERM_HOST}]
    secretName: term-tls
  rules:
  - host: {TERM_HOST}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
"
    ));
    write_atomic(dir, "apps.yaml", &text);
}

fn write_secret(dir: &Path) {
    let (cert, key, _, _) = certificate(TERM_HOST, TERM_CN);
    std::fs::write(
        dir.join("secret.yaml"),
        secret_yaml("term-tls", &cert, &key),
    )
    .unwrap();
}

/// Runs a client tool; `None` when it is not installed.
async fn run(tool: &'static str, args: Vec<String>) -> Option<(bool, String, String)> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    })
    .await
    .unwrap()
}

/// `curl -k https://host:port/` at `addr` by SNI `host`: the body, or the error.
async fn curl(addr: SocketAddr, host: &str, extra: &[&str]) -> Option<Result<String, String>> {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-k".into(),
        "--max-time".into(),
        "10".into(),
        "--resolve".into(),
        format!("{host}:{}:{}", addr.port(), addr.ip()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("https://{host}:{}/", addr.port()));
    let (ok, out, err) = run("curl", args).await?;
    Some(if ok { Ok(out) } else { Err(err) })
}

/// The subject of the certificate served at `addr` for SNI `host` (`None` for no SNI),
/// as `openssl s_client` prints it.
async fn served_subject(addr: SocketAddr, host: Option<&str>) -> Option<String> {
    let mut args: Vec<String> = vec!["s_client".into(), "-connect".into(), addr.to_string()];
    match host {
        Some(h) => args.extend(["-servername".to_owned(), h.to_owned()]),
        None => args.push("-noservername".into()),
    }
    let (_, out, _) = run("openssl", args).await?;
    Some(
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or("no certificate")
            .to_owned(),
    )
}

/// Whether curl and openssl are both here; says "skipped" when not.
async fn tools_present() -> bool {
    let curl = run("curl", vec!["--version".into()]).await.is_some();
    let openssl = run("openssl", vec!["version".into()]).await.is_some();
    if !(curl && openssl) {
        println!(
            "skipped: curl and openssl s_client are needed (curl: {curl}, openssl: {openssl})"
        );
    }
    curl && openssl
}

/// Polls `check` until it holds; panics with the logs after 20 s.
async fn until<F, Fut>(ctl: &Controller, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never so; last: {last}\n{}", ctl.logs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn body_for(addr: SocketAddr, host: &str, extra: &[&str]) -> Result<String, String> {
    curl(addr, host, extra).await.expect("curl ran before")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_host_reaches_the_pod_with_its_own_certificate() {
    if !tools_present().await {
        return;
    }
    let pod = tls_pod().await;
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path());
    write_manifests(
        dir.path(),
        &pod,
        &web,
        Some("nginx.ingress.kubernetes.io/ssl-passthrough"),
    );
    let mut ctl = Controller::start(dir.path(), &["--enable-ssl-passthrough"]);
    ctl.wait_ready().await;
    let https = ctl.https;

    // The pod answers, over its own TLS, having seen the client's SNI.
    until(&ctl, "the passthrough host reaches the pod", || async {
        let body = body_for(https, PASS_HOST, &[]).await?;
        (body == format!("hello from the passthrough pod, sni={PASS_HOST}"))
            .then_some(())
            .ok_or(body)
    })
    .await;
    // The certificate is the pod's, not Portico's.
    let subject = served_subject(https, Some(PASS_HOST)).await.unwrap();
    assert!(subject.contains(POD_CN), "{subject}");
    // Uppercase SNI is the same host.
    let subject = served_subject(https, Some("PASS.Example.COM"))
        .await
        .unwrap();
    assert!(subject.contains(POD_CN), "{subject}");

    // Another host on the same port: terminated by Portico with its Secret.
    let subject = served_subject(https, Some(TERM_HOST)).await.unwrap();
    assert!(subject.contains(TERM_CN), "{subject}");
    let body = body_for(https, TERM_HOST, &[]).await.unwrap();
    assert_eq!(body, "web /");
    // No SNI: Portico's default certificate.
    let subject = served_subject(https, None).await.unwrap();
    assert!(subject.contains("Portico Default Certificate"), "{subject}");

    // A log line and a metric for each passthrough connection.
    ctl.wait_log("the passthrough log line", Duration::from_secs(10), |l| {
        l.contains("ssl-passthrough connection") && l.contains(PASS_HOST)
    })
    .await;
    let metrics = ctl.metrics().await;
    let forwarded = metrics
        .lines()
        .find(|l| {
            l.starts_with("portico_ssl_passthrough_connections_total{")
                && l.contains("host=\"pass.example.com\"")
                && l.contains("outcome=\"forwarded\"")
        })
        .unwrap_or_else(|| panic!("no passthrough series:\n{metrics}"));
    let count: f64 = forwarded.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{forwarded}");

    // A passthrough host without a ready endpoint: the connection is closed (there is
    // no TLS to answer with), counted and logged.
    assert!(body_for(https, DOWN_HOST, &[]).await.is_err());
    let c = &ctl;
    until(
        c,
        "the refused passthrough connection counted",
        || async move {
            let metrics = c.metrics().await;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("portico_ssl_passthrough_connections_total{")
                        && l.contains("host=\"down.example.com\"")
                        && l.contains("outcome=\"no_endpoint\"")
                })
                .then_some(())
                .ok_or(metrics)
        },
    )
    .await;
    assert!(ctl.logs().contains("ssl-passthrough connection closed"));

    // The annotation taken away: new connections are terminated by Portico.
    write_manifests(dir.path(), &pod, &web, None);
    until(
        &ctl,
        "the host is terminated once the annotation is gone",
        || async {
            let subject = served_subject(https, Some(PASS_HOST)).await.unwrap();
            (!subject.contains(POD_CN)).then_some(()).ok_or(subject)
        },
    )
    .await;
    // And back, under Portico's own prefix.
    write_manifests(dir.path(), &pod, &web, Some("portico.dev/ssl-passthrough"));
    until(&ctl, "the host passes through again", || async {
        let subject = served_subject(https, Some(PASS_HOST)).await.unwrap();
        subject.contains(POD_CN).then_some(()).ok_or(subject)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_the_annotation_is_reported_and_the_host_terminated() {
    if !tools_present().await {
        return;
    }
    let pod = tls_pod().await;
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path());
    write_manifests(
        dir.path(),
        &pod,
        &web,
        Some("nginx.ingress.kubernetes.io/ssl-passthrough"),
    );
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    ctl.wait_log("the diagnostic", Duration::from_secs(10), |l| {
        l.contains("default/pass") && l.contains("--enable-ssl-passthrough")
    })
    .await;
    let subject = served_subject(ctl.https, Some(PASS_HOST)).await.unwrap();
    assert!(!subject.contains(POD_CN), "{subject}");
    assert!(subject.contains("Portico Default Certificate"), "{subject}");
    let subject = served_subject(ctl.https, Some(TERM_HOST)).await.unwrap();
    assert!(subject.contains(TERM_CN), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_behind_the_proxy_protocol() {
    if !tools_present().await {
        return;
    }
    let pod = tls_pod().await;
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path());
    write_manifests(
        dir.path(),
        &pod,
        &web,
        Some("nginx.ingress.kubernetes.io/ssl-passthrough"),
    );
    std::fs::write(
        dir.path().join("settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n  use-proxy-protocol: \"true\"\n",
    )
    .unwrap();
    let mut ctl = Controller::start(
        dir.path(),
        &["--enable-ssl-passthrough", "--configmap", "default/portico"],
    );
    ctl.wait_ready().await;
    let https = ctl.https;
    // curl sends a PROXY v1 header first; the pod still gets a clean TLS stream.
    until(
        &ctl,
        "the passthrough host behind PROXY protocol",
        || async {
            let body = body_for(https, PASS_HOST, &["--haproxy-protocol"]).await?;
            body.contains("hello from the passthrough pod")
                .then_some(())
                .ok_or(body)
        },
    )
    .await;
    let body = body_for(https, TERM_HOST, &["--haproxy-protocol"])
        .await
        .unwrap();
    assert_eq!(body, "web /");
    // Without the header the connection is refused, passthrough host or not.
    assert!(body_for(https, PASS_HOST, &[]).await.is_err());
}
