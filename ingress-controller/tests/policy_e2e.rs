//! Per-route policy and global settings through the binary over a manifest folder:
//! affinity belongs to the Ingress that asks for it, replicas agree on affinity cookies,
//! and the settings ConfigMap reaches the proxy.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hyper::header::HeaderMap;

const FOLLOW: Duration = Duration::from_secs(20);

/// One GET with extra request headers; status, response headers and body.
async fn fetch(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    fetch_with(addr, host, "/", headers).await
}

fn sticky_ingress(name: &str, host: &str, service: &str) -> String {
    ingress_yaml(name, host, "/", service).replace(
        &format!("  name: {name}\n"),
        &format!(
            "  name: {name}\n  annotations:\n    nginx.ingress.kubernetes.io/affinity: cookie\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_stays_with_the_ingress_that_asked_for_it() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("shared", &addrs));
    text.push_str(&sticky_ingress("sticky", "sticky.example.com", "shared"));
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "shared"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "plain.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let mut plain_seen = HashSet::new();
    for _ in 0..6 {
        let (status, headers, body) = fetch(ctl.http, "plain.example.com", &[]).await;
        assert_eq!(status, 200);
        assert!(
            headers.get("set-cookie").is_none(),
            "a plain Ingress on the shared Service got {:?}",
            headers.get("set-cookie")
        );
        plain_seen.insert(body);
    }
    assert_eq!(
        plain_seen.len(),
        2,
        "round robin over both pods: {plain_seen:?}"
    );
    let (_, headers, body) = fetch(ctl.http, "sticky.example.com", &[]).await;
    let cookie = headers
        .get("set-cookie")
        .expect("the sticky Ingress sets a cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("INGRESSCOOKIE="), "{cookie}");
    for _ in 0..6 {
        let (_, _, again) = fetch(ctl.http, "sticky.example.com", &[("cookie", &cookie)]).await;
        assert_eq!(again, body, "the cookie did not pin");
    }
}

const KEY_SECRET: &str = "---
apiVersion: v1
kind: Secret
metadata:
  name: portico-affinity-key
  namespace: portico
type: Opaque
stringData:
  key: 00112233445566778899aabbccddeeff
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_key_secret_agree_on_cookies() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("shared", &addrs));
    text.push_str(&sticky_ingress("sticky", "sticky.example.com", "shared"));
    text.push_str(KEY_SECRET);
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut one = Controller::start(dir.path(), &[]);
    let mut two = Controller::start(dir.path(), &[]);
    one.wait_ready().await;
    two.wait_ready().await;
    assert!(
        !one.logs().contains("no affinity key Secret"),
        "the key Secret was not picked up:\n{}",
        one.logs()
    );
    // Sessions started at one replica stay on their pod at the other, each of them.
    for _ in 0..8 {
        let (_, headers, home) = fetch(one.http, "sticky.example.com", &[]).await;
        let cookie = headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        for _ in 0..3 {
            let (status, _, there) =
                fetch(two.http, "sticky.example.com", &[("cookie", &cookie)]).await;
            assert_eq!(status, 200);
            assert_eq!(there, home, "replica two sent cookie {cookie} elsewhere");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_secret_a_replica_says_so() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("app", "app.example.com", "/", &[b.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    ctl.wait_log("the missing key warning", FOLLOW, |logs| {
        logs.contains("no affinity key Secret")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_configmap_reaches_the_proxy_and_follows_edits() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("app", "app.example.com", "/", &[b.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let settings = |trusted: &str| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: portico-settings
  namespace: portico
data:
  use-forwarded-headers: \"true\"
  proxy-real-ip-cidr: \"{trusted}\"
  server-tokens: \"true\"
"
        )
    };
    std::fs::write(dir.path().join("settings.yaml"), settings("127.0.0.0/8")).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "portico/portico-settings"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "app.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let spoof = [("x-forwarded-for", "203.0.113.50")];
    let (_, headers, _) = fetch(ctl.http, "app.example.com", &spoof).await;
    assert_eq!(headers["echo-x-real-ip"], "203.0.113.50");
    let version = format!("portico/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(headers["server"], version.as_str());

    // The test client is no longer trusted: its claim is replaced by its own address.
    write_atomic(dir.path(), "settings.yaml", &settings("10.0.0.0/8"));
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        let (_, headers, _) = fetch(ctl.http, "app.example.com", &spoof).await;
        if headers["echo-x-real-ip"] == "127.0.0.1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edit never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
