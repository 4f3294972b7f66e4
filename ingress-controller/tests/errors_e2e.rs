//! Error pages and default backends through the binary over a manifest folder, with the
//! expectations of ingress-nginx's documentation and end-to-end tests:
//! `--default-backend-service`, the `default-backend` and `custom-http-errors`
//! annotations, and the ConfigMap's `custom-http-errors`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hyper::header::HeaderMap;

const FOLLOW: Duration = Duration::from_secs(20);

/// One GET with extra headers: status, response headers, body.
async fn fetch(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    fetch_with(addr, host, path, headers).await
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// An Ingress `name` for `host` `/` to Service `service`, with these annotations.
fn annotated(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut meta = format!("  name: {name}\n  annotations:\n");
    for (k, v) in annotations {
        meta.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    ingress_yaml(name, host, "/", service).replace(&format!("  name: {name}\n"), &meta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_and_default_backends_as_ingress_nginx() {
    let web = Backend::start("web").await;
    let own = Backend::start("errors-own").await;
    let global = Backend::start("errors-global").await;
    let fallback = Backend::start("fallback").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&service_yaml("error-pages", &[own.addr]));
    text.push_str(&service_yaml("catch-all", &[global.addr]));
    text.push_str(&service_yaml("fallback", &[fallback.addr]));
    // A Service with no endpoints at all.
    text.push_str(&service_yaml("invalid", &[]));
    text.push_str(&annotated(
        "custom",
        "custom.example.com",
        "web",
        &[
            ("nginx.ingress.kubernetes.io/default-backend", "error-pages"),
            ("nginx.ingress.kubernetes.io/custom-http-errors", "500, 503"),
        ],
    ));
    text.push_str(&annotated("global", "global.example.com", "web", &[]));
    text.push_str(&annotated(
        "default-backend",
        "default-backend",
        "invalid",
        &[("portico.dev/default-backend", "fallback")],
    ));
    text.push_str(&annotated(
        "bad",
        "bad.example.com",
        "web",
        &[("nginx.ingress.kubernetes.io/custom-http-errors", "500,abc")],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "apiVersion: v1
kind: ConfigMap
metadata: {name: portico-settings, namespace: portico}
data:
  custom-http-errors: \"404,500\"
",
    )
    .unwrap();
    let mut ctl = Controller::start(
        dir.path(),
        &[
            "--configmap",
            "portico/portico-settings",
            "--default-backend-service",
            "default/catch-all",
        ],
    );
    ctl.wait_ready().await;
    wait_for(ctl.http, "custom.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let http = ctl.http;

    // An intercepted code: the annotation's default backend answers a GET / with the
    // X-Code family; its answer (here the code it was told) is the client's.
    let (status, h, body) = fetch(
        http,
        "custom.example.com",
        "/status/503/page?x=1",
        &[
            ("accept", "application/json"),
            ("x-request-id", "something-unique"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (503, "errors-own /"));
    assert_eq!(header(&h, "echo-method"), Some("GET"));
    assert_eq!(header(&h, "echo-host"), Some("custom.example.com"));
    assert_eq!(header(&h, "echo-x-code"), Some("503"));
    assert_eq!(header(&h, "echo-x-format"), Some("application/json"));
    assert_eq!(
        header(&h, "echo-x-original-uri"),
        Some("/status/503/page?x=1")
    );
    assert_eq!(header(&h, "echo-x-namespace"), Some("default"));
    assert_eq!(header(&h, "echo-x-ingress-name"), Some("custom"));
    assert_eq!(header(&h, "echo-x-service-name"), Some("web"));
    assert_eq!(header(&h, "echo-x-service-port"), Some("80"));
    assert_eq!(header(&h, "echo-x-request-id"), Some("something-unique"));
    assert_eq!(header(&h, "echo-query"), Some("x=1"));
    // The annotation's list replaces the ConfigMap's for its Ingress: 404 passes.
    let (status, h, body) = fetch(http, "custom.example.com", "/status/404", &[]).await;
    assert_eq!((status, body.as_str()), (404, "web /status/404"));
    assert_eq!(header(&h, "x-backend"), Some("web"));
    // Not listed at all: as the pod answered.
    let (status, _, body) = fetch(http, "custom.example.com", "/status/502", &[]).await;
    assert_eq!((status, body.as_str()), (502, "web /status/502"));

    // Without annotations: the ConfigMap's codes, for the global default backend; a
    // request id is made when the client sends none.
    let (status, h, body) = fetch(http, "global.example.com", "/status/404", &[]).await;
    assert_eq!((status, body.as_str()), (404, "errors-global /"));
    assert_eq!(header(&h, "echo-x-code"), Some("404"));
    assert_eq!(header(&h, "echo-x-ingress-name"), Some("global"));
    assert_eq!(header(&h, "echo-x-request-id").map(str::len), Some(32));

    // ingress-nginx's default-backend e2e test: the Ingress's Service has no endpoint,
    // so the annotation's Service takes the request as it is, told X-Code 503.
    let (status, h, body) = fetch(
        http,
        "default-backend",
        "/alma/armud",
        &[("x-request-id", "something-unique")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "fallback /alma/armud"));
    assert_eq!(header(&h, "echo-x-code"), Some("503"));
    assert_eq!(header(&h, "echo-x-ingress-name"), Some("default-backend"));
    assert_eq!(header(&h, "echo-x-service-name"), Some("invalid"));
    assert_eq!(header(&h, "echo-x-request-id"), Some("something-unique"));

    // --default-backend-service: what no rule matches, as a plain request.
    let (status, h, body) = fetch(http, "nowhere.example.com", "/x", &[]).await;
    assert_eq!((status, body.as_str()), (200, "errors-global /x"));
    assert_eq!(header(&h, "echo-x-code"), None);

    // A bad list costs only its key: reported, and the ConfigMap's codes apply.
    let (status, _, body) = fetch(http, "bad.example.com", "/status/500", &[]).await;
    assert_eq!((status, body.as_str()), (500, "errors-global /"));
    ctl.wait_log("the bad list", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/bad")
                && line.contains("nginx.ingress.kubernetes.io/custom-http-errors")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_backend_an_intercepted_code_and_an_unmatched_request_get_404() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "custom",
        "custom.example.com",
        "web",
        &[("nginx.ingress.kubernetes.io/custom-http-errors", "500")],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(
        dir.path(),
        &["--default-backend-service", "default/missing"],
    );
    ctl.wait_ready().await;
    wait_for(ctl.http, "custom.example.com", "/", FOLLOW, |s, _| s == 200).await;
    // ingress-nginx's internal catch-all answers 404 when no default backend can.
    let (status, _, _) = fetch(ctl.http, "custom.example.com", "/status/500", &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = fetch(ctl.http, "nowhere.example.com", "/", &[]).await;
    assert_eq!(status, 404);
    ctl.wait_log("the missing Service", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/missing") && line.contains("--default-backend-service")
        })
    })
    .await;
}
