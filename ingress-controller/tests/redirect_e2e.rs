//! ingress-nginx's redirect annotations through the binary over a manifest folder:
//! `permanent-redirect`, `temporal-redirect` and their codes, `app-root`,
//! `from-to-www-redirect`, and the HTTPS redirect's `preserve-trailing-slash` and
//! `use-port-in-redirects`, with the expectations of ingress-nginx's documentation and
//! end-to-end tests.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

const FOLLOW: Duration = Duration::from_secs(20);

/// One GET, redirects not followed: status, `Location`, body.
async fn fetch(addr: SocketAddr, host: &str, path: &str) -> (u16, Option<String>, String) {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// An Ingress `name` for `host` `/` to Service `web`, with these annotations.
fn annotated(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut meta = format!("  name: {name}\n  annotations:\n");
    for (k, v) in annotations {
        meta.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    ingress_yaml(name, host, "/", "web").replace(&format!("  name: {name}\n"), &meta)
}

const NGINX: &str = "nginx.ingress.kubernetes.io";

/// An Ingress's name, host and annotations.
type Case<'a> = (&'a str, &'a str, Vec<(String, &'a str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_annotations_answer_as_ingress_nginx() {
    let b = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[b.addr]));
    let k = |key: &str| format!("{NGINX}/{key}");
    let ings: Vec<Case> = vec![
        (
            "permanent",
            "permanent.example.com",
            vec![(k("permanent-redirect"), "http://redirect.example.com")],
        ),
        (
            "permanent-code",
            "permanent-code.example.com",
            vec![
                (k("permanent-redirect"), "http://redirect.example.com"),
                (k("permanent-redirect-code"), "308"),
            ],
        ),
        (
            "bad-code",
            "bad-code.example.com",
            vec![
                (k("permanent-redirect"), "http://redirect.example.com"),
                (k("permanent-redirect-code"), "moved"),
            ],
        ),
        (
            "temporal",
            "temporal.example.com",
            vec![
                (k("permanent-redirect"), "http://permanent.example.com"),
                (k("temporal-redirect"), "https://www.google.com"),
                (k("temporal-redirect-code"), "307"),
            ],
        ),
        (
            "approot",
            "approot.bar.com",
            vec![("portico.dev/app-root".to_owned(), "/app1")],
        ),
        (
            "www",
            "fromtowwwredirect.bar.com",
            vec![(k("from-to-www-redirect"), "true")],
        ),
        (
            "https-only",
            "secure.example.com",
            vec![(k("force-ssl-redirect"), "true")],
        ),
        (
            "https-slash",
            "slash.example.com",
            vec![
                (k("force-ssl-redirect"), "true"),
                (k("preserve-trailing-slash"), "true"),
                (k("use-port-in-redirects"), "false"),
            ],
        ),
    ];
    for (name, host, anns) in &ings {
        let anns: Vec<(&str, &str)> = anns.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        text.push_str(&annotated(name, host, &anns));
    }
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "apiVersion: v1
kind: ConfigMap
metadata: {name: portico-settings, namespace: portico}
data:
  use-port-in-redirects: \"true\"
",
    )
    .unwrap();
    let mut ctl = Controller::start(
        dir.path(),
        &[
            "--configmap",
            "portico/portico-settings",
            "--http-redirect-port",
            "80",
            "--https-redirect-port",
            "443",
        ],
    );
    ctl.wait_ready().await;
    wait_for(ctl.http, "approot.bar.com", "/app1", FOLLOW, |s, _| {
        s == 200
    })
    .await;
    let http = ctl.http;

    // permanent-redirect: 301 to the URL alone, whatever the request's path and query.
    let (status, location, _) = fetch(http, "permanent.example.com", "/a/b?c=d").await;
    assert_eq!(
        (status, location.as_deref()),
        (301, Some("http://redirect.example.com"))
    );
    let (status, location, _) = fetch(http, "permanent-code.example.com", "/").await;
    assert_eq!(
        (status, location.as_deref()),
        (308, Some("http://redirect.example.com"))
    );
    // A code that is no integer: the default code, and a diagnostic naming both.
    let (status, _, _) = fetch(http, "bad-code.example.com", "/").await;
    assert_eq!(status, 301);
    ctl.wait_log("the bad code", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/bad-code")
                && line.contains("nginx.ingress.kubernetes.io/permanent-redirect-code")
        })
    })
    .await;
    // temporal-redirect wins over permanent-redirect.
    let (status, location, _) = fetch(http, "temporal.example.com", "/x").await;
    assert_eq!(
        (status, location.as_deref()),
        (307, Some("https://www.google.com"))
    );

    // app-root: exactly `/` goes to the root, with 302; the rest is proxied.
    let (status, location, _) = fetch(http, "approot.bar.com", "/").await;
    assert_eq!(
        (status, location.as_deref()),
        (302, Some("http://approot.bar.com/app1"))
    );
    let (status, _, body) = fetch(http, "approot.bar.com", "/app1").await;
    assert_eq!((status, body.as_str()), (200, "web /app1"));

    // from-to-www-redirect: www. redirects to the named host, port named, 308.
    let (status, location, _) = fetch(http, "www.fromtowwwredirect.bar.com", "/foo").await;
    assert_eq!(
        (status, location.as_deref()),
        (308, Some("http://fromtowwwredirect.bar.com:80/foo"))
    );
    let (status, _, body) = fetch(http, "fromtowwwredirect.bar.com", "/foo").await;
    assert_eq!((status, body.as_str()), (200, "web /foo"));

    // HTTPS redirects: the ConfigMap names the port even when 443; the trailing slash
    // goes unless preserved; an annotation overrides the ConfigMap for its Ingress.
    let (status, location, _) = fetch(http, "secure.example.com", "/app/").await;
    assert_eq!(
        (status, location.as_deref()),
        (308, Some("https://secure.example.com:443/app"))
    );
    let (_, location, _) = fetch(http, "slash.example.com", "/app/").await;
    assert_eq!(location.as_deref(), Some("https://slash.example.com/app/"));
}
