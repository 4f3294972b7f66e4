//! `custom-headers` and the ConfigMap's `proxy-set-headers` through the binary over a
//! manifest folder, as ingress-nginx's documentation describes them, following edits.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hyper::header::HeaderMap;

const FOLLOW: Duration = Duration::from_secs(20);

async fn fetch(addr: SocketAddr, host: &str, path: &str) -> (u16, HeaderMap) {
    let (status, headers, _) = fetch_with(addr, host, path, &[]).await;
    (status, headers)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn settings(allowed: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: portico-settings, namespace: portico}}
data:
  global-allowed-response-headers: \"{allowed}\"
  proxy-set-headers: portico/request-headers
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: request-headers, namespace: portico}}
data:
  X-Different-Name: \"true\"
  X-Using-Portico: \"yes\"
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_configmaps_reach_requests_and_answers() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    let custom = ingress_yaml("custom", "custom.example.com", "/", "web").replace(
        "  name: custom\n",
        "  name: custom\n  annotations:\n    nginx.ingress.kubernetes.io/custom-headers: default/custom-headers\n",
    );
    text.push_str(&custom);
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "web"));
    text.push_str(
        "---
apiVersion: v1
kind: ConfigMap
metadata: {name: custom-headers, namespace: default}
data:
  X-Frame-Options: DENY
",
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        settings("X-Frame-Options"),
    )
    .unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "portico/portico-settings"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "plain.example.com", "/", FOLLOW, |s, _| s == 200).await;

    // proxy-set-headers: on every request, whatever the route.
    let (status, h) = fetch(ctl.http, "plain.example.com", "/").await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "echo-x-different-name"), Some("true"));
    assert_eq!(header(&h, "echo-x-using-portico"), Some("yes"));
    assert_eq!(header(&h, "x-frame-options"), None);
    // custom-headers: on the answers of the Ingress that names the ConfigMap.
    let (status, h) = fetch(ctl.http, "custom.example.com", "/").await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&h, "echo-x-different-name"), Some("true"));

    // Off the allow-list: refused (and reported), the Ingress still served.
    std::fs::write(dir.path().join("settings.yaml"), settings("X-Other")).unwrap();
    let deadline = tokio::time::Instant::now() + FOLLOW;
    loop {
        let (status, h) = fetch(ctl.http, "custom.example.com", "/").await;
        assert_eq!(status, 200);
        if header(&h, "x-frame-options").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctl.wait_log("the refusal", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/custom") && line.contains("global-allowed-response-headers")
        })
    })
    .await;
}
