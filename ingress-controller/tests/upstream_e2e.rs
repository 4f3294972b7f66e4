//! Upstream selection through the binary over a manifest folder: `proxy-next-upstream`
//! (and `-tries`), `upstream-hash-by`, `load-balance: ewma`, `service-upstream` and
//! `disable-proxy-intercept-errors`, against endpoints that say who they are.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const FOLLOW: Duration = Duration::from_secs(20);

/// An endpoint that answers every request with `status`, names itself in `x-backend`,
/// and counts the requests it got.
struct Counting {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    async fn start(name: &'static str, last: u8, status: u16) -> Counting {
        let listener = TcpListener::bind(format!("127.0.0.{last}:0"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let resp = Response::builder()
                                .status(status)
                                .header("x-backend", name)
                                .body(Full::new(Bytes::from(format!("{name}\n"))))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Counting { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An Ingress `name` for `host` `/` to Service `service`, with these annotations.
fn annotated(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut meta = format!("  name: {name}\n  annotations:\n");
    for (k, v) in annotations {
        meta.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    ingress_yaml(name, host, "/", service).replace(&format!("  name: {name}\n"), &meta)
}

/// `curl -X POST` with a small body: status and `x-backend`, or `None` (and a
/// `skipped:` line) without curl.
async fn curl_post(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    let host = format!("Host: {host}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}"])
            .args(["-X", "POST", "--data", "order=42", "-H", &host, &url])
            .output()
    })
    .await
    .expect("curl task");
    let out = match out {
        Ok(out) => out,
        Err(_) => {
            println!("skipped: curl is not installed for the POST requests");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.lines().last()?.trim().parse().ok()?;
    let backend = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-backend:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((code, backend))
}

fn backend_of(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_next_upstream_passes_bad_answers_on_and_keeps_to_its_limits() {
    let bad502 = Counting::start("bad502", 31, 502).await;
    let bad503 = Counting::start("bad503", 32, 503).await;
    let good = Counting::start("good", 33, 200).await;
    let hits = || bad502.hits() + bad503.hits() + good.hits();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("app", &[bad502.addr, bad503.addr, good.addr]));
    let codes = (
        "nginx.ingress.kubernetes.io/proxy-next-upstream",
        "error timeout http_502 http_503",
    );
    text.push_str(&annotated("three", "three.example.com", "app", &[codes]));
    text.push_str(&annotated(
        "two",
        "two.example.com",
        "app",
        &[codes, ("portico.dev/proxy-next-upstream-tries", "2")],
    ));
    text.push_str(&annotated(
        "posts",
        "posts.example.com",
        "app",
        &[(
            "nginx.ingress.kubernetes.io/proxy-next-upstream",
            "http_502 http_503 non_idempotent",
        )],
    ));
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "app"));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "three.example.com", "/", FOLLOW, |s, _| s == 200).await;

    // Three tries over three endpoints: every request ends at the good one, and never
    // tries an endpoint twice.
    let before = hits();
    let good_before = good.hits();
    for _ in 0..30 {
        let (status, headers, _) = fetch_with(ctl.http, "three.example.com", "/", &[]).await;
        assert_eq!((status, backend_of(&headers).as_str()), (200, "good"));
    }
    assert_eq!(good.hits() - good_before, 30);
    let tries = hits() - before;
    assert!((30..=90).contains(&tries), "{tries} tries for 30 requests");
    assert!(tries > 30, "no request was passed on");

    // Two tries: a request that meets both bad endpoints gets the second one's answer.
    let before = hits();
    let mut failed = 0;
    for _ in 0..30 {
        let (status, headers, _) = fetch_with(ctl.http, "two.example.com", "/", &[]).await;
        match status {
            200 => assert_eq!(backend_of(&headers), "good"),
            502 | 503 => failed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let tries = hits() - before;
    assert!(tries <= 60, "{tries} tries for 30 requests at 2 each");
    assert!(failed > 0, "no request ran out of tries");

    // Without the annotation: failed connects only; a pod's 502 is the client's.
    let mut plain_codes = Vec::new();
    for _ in 0..6 {
        plain_codes.push(fetch_with(ctl.http, "plain.example.com", "/", &[]).await.0);
    }
    assert!(
        plain_codes.contains(&502) && plain_codes.contains(&503),
        "{plain_codes:?}"
    );

    // A POST reached its pod: passed on only with non_idempotent.
    let before = hits();
    let mut posts = Vec::new();
    for _ in 0..6 {
        let Some(answer) = curl_post(ctl.http, "three.example.com", "/order").await else {
            return;
        };
        posts.push(answer.0);
    }
    assert_eq!(hits() - before, 6, "a POST was sent twice: {posts:?}");
    assert!(posts.iter().any(|c| *c != 200), "{posts:?}");
    for _ in 0..6 {
        let Some((code, backend)) = curl_post(ctl.http, "posts.example.com", "/order").await else {
            return;
        };
        assert_eq!((code, backend.as_str()), (200, "good"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hash_by_request_uri_pins_each_uri_to_one_endpoint() {
    let a = Backend::start_on("a", 41).await;
    let b = Backend::start_on("b", 42).await;
    let c = Backend::start_on("c", 43).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("app", &[a.addr, b.addr, c.addr]));
    text.push_str(&annotated(
        "hashed",
        "hashed.example.com",
        "app",
        &[(
            "nginx.ingress.kubernetes.io/upstream-hash-by",
            "$request_uri",
        )],
    ));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "hashed.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let mut homes: HashMap<String, String> = HashMap::new();
    for round in 0..4 {
        for i in 0..24 {
            let uri = format!("/item/{i}?v=1");
            let (status, headers, _) = fetch_with(ctl.http, "hashed.example.com", &uri, &[]).await;
            assert_eq!(status, 200);
            let backend = backend_of(&headers);
            let home = homes.entry(uri.clone()).or_insert_with(|| backend.clone());
            assert_eq!(*home, backend, "{uri} moved in round {round}");
        }
    }
    let used: std::collections::HashSet<&String> = homes.values().collect();
    assert!(used.len() >= 2, "every URI went to {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_sends_most_requests_to_the_faster_endpoint() {
    let slow = Backend::start_at("slow", "127.0.0.51:0", Duration::from_millis(150)).await;
    let fast = Backend::start_on("fast", 52).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("app", &[slow.addr, fast.addr]));
    text.push_str(&annotated(
        "ewma",
        "ewma.example.com",
        "app",
        &[("nginx.ingress.kubernetes.io/load-balance", "ewma")],
    ));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "ewma.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, headers, _) = fetch_with(ctl.http, "ewma.example.com", "/", &[]).await;
        assert_eq!(status, 200);
        *counts.entry(backend_of(&headers)).or_default() += 1;
    }
    let fast_n = counts.get("fast").copied().unwrap_or(0);
    assert!(fast_n >= 25, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_upstream_sends_to_the_cluster_ip() {
    // The Service's cluster IP is a loopback address with a listener of its own (as
    // kube-proxy would answer there); its endpoint is another.
    let cluster = Backend::start_on("cluster-ip", 61).await;
    let pod = Backend::start_on("pod", 62).await;
    let port = cluster.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  clusterIP: 127.0.0.61
  ports:
  - name: http
    port: {port}
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-0
  labels:
    kubernetes.io/service-name: app
addressType: IPv4
endpoints:
- addresses: [\"127.0.0.62\"]
  conditions: {{ready: true}}
ports:
- name: http
  port: {pod_port}
",
        pod_port = pod.addr.port()
    ));
    let ingress = |name: &str, host: &str, direct: bool| {
        let text =
            ingress_yaml(name, host, "/", "app").replace("number: 80", &format!("number: {port}"));
        if direct {
            text.replace(
                &format!("  name: {name}\n"),
                &format!("  name: {name}\n  annotations:\n    nginx.ingress.kubernetes.io/service-upstream: \"true\"\n"),
            )
        } else {
            text
        }
    };
    text.push_str(&ingress("direct", "direct.example.com", true));
    text.push_str(&ingress("pods", "pods.example.com", false));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "direct.example.com", "/", FOLLOW, |s, _| s == 200).await;
    for _ in 0..5 {
        let (status, headers, _) = fetch_with(ctl.http, "direct.example.com", "/", &[]).await;
        assert_eq!((status, backend_of(&headers).as_str()), (200, "cluster-ip"));
        let (status, headers, _) = fetch_with(ctl.http, "pods.example.com", "/", &[]).await;
        assert_eq!((status, backend_of(&headers).as_str()), (200, "pod"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_proxy_intercept_errors_lets_the_pods_answer_through() {
    let web = Backend::start("web").await;
    let pages = Backend::start("errors-pages").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&service_yaml("error-pages", &[pages.addr]));
    let errors = [
        ("nginx.ingress.kubernetes.io/custom-http-errors", "503"),
        ("nginx.ingress.kubernetes.io/default-backend", "error-pages"),
    ];
    text.push_str(&annotated("caught", "caught.example.com", "web", &errors));
    let mut passing = errors.to_vec();
    passing.push((
        "nginx.ingress.kubernetes.io/disable-proxy-intercept-errors",
        "true",
    ));
    text.push_str(&annotated("passed", "passed.example.com", "web", &passing));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "passed.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let (status, headers, body) =
        fetch_with(ctl.http, "caught.example.com", "/status/503", &[]).await;
    assert_eq!(
        (status, backend_of(&headers).as_str()),
        (503, "errors-pages"),
        "{body}"
    );
    let (status, headers, body) =
        fetch_with(ctl.http, "passed.example.com", "/status/503", &[]).await;
    assert_eq!(
        (status, backend_of(&headers).as_str()),
        (503, "web"),
        "{body}"
    );
}

/// An endpoint that reads a request and closes the connection without an answer,
/// counting the requests it swallowed.
async fn closer(last: u8) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind(format!("127.0.0.{last}:0"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if let Ok(n) = stream.read(&mut buf).await {
                    if n > 0 {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Dropped: the proxy sees the connection end before any answer.
            });
        }
    });
    (addr, hits, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_after_sending_are_passed_on_only_when_asked() {
    let (broken, swallowed, task) = closer(71).await;
    let slow = Backend::start_at("slow", "127.0.0.72:0", Duration::from_secs(3)).await;
    let good = Backend::start_on("good", 73).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("broken", &[broken, good.addr]));
    text.push_str(&service_yaml("slow", &[slow.addr, good.addr]));
    text.push_str(&annotated(
        "asked",
        "asked.example.com",
        "broken",
        &[(
            "nginx.ingress.kubernetes.io/proxy-next-upstream",
            "error timeout",
        )],
    ));
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "broken"));
    text.push_str(&annotated(
        "timeout",
        "timeout.example.com",
        "slow",
        &[
            ("nginx.ingress.kubernetes.io/proxy-next-upstream", "timeout"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1"),
        ],
    ));
    write_atomic(dir.path(), "app.yaml", &text);
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "asked.example.com", "/", FOLLOW, |s, _| s == 200).await;

    // `error`: a pod that took the request and closed is passed over.
    let before = swallowed.load(Ordering::SeqCst);
    for _ in 0..6 {
        let (status, headers, _) = fetch_with(ctl.http, "asked.example.com", "/", &[]).await;
        assert_eq!((status, backend_of(&headers).as_str()), (200, "good"));
    }
    assert!(
        swallowed.load(Ordering::SeqCst) > before,
        "the broken pod was never tried"
    );
    // Without the setting, that request is not sent again: the client gets 502.
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(fetch_with(ctl.http, "plain.example.com", "/", &[]).await.0);
    }
    assert!(codes.contains(&502) && codes.contains(&200), "{codes:?}");
    // `timeout`: a pod that does not answer within proxy-read-timeout is passed over.
    for _ in 0..3 {
        let (status, headers, _) = fetch_with(ctl.http, "timeout.example.com", "/", &[]).await;
        assert_eq!((status, backend_of(&headers).as_str()), (200, "good"));
    }
    task.abort();
}
