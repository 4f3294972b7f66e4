//! ingress-nginx's annotations through the binary over a manifest folder: the redirects
//! (`permanent-redirect`, `temporal-redirect` and their codes, `app-root`,
//! `from-to-www-redirect`, and the HTTPS redirect's `preserve-trailing-slash` and
//! `use-port-in-redirects`) with the expectations of ingress-nginx's documentation and
//! end-to-end tests; `use-regex` and `rewrite-target`; and the annotations Portico does
//! not honour, snippets first.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hyper::header::HeaderMap;

const FOLLOW: Duration = Duration::from_secs(20);

/// One GET, redirects not followed: status, `Location`, body.
async fn fetch(addr: SocketAddr, host: &str, path: &str) -> (u16, Option<String>, String) {
    let (status, headers, body) = fetch_head(addr, host, path).await;
    let location = headers
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, body)
}

/// One GET: status, response headers, body.
async fn fetch_head(addr: SocketAddr, host: &str, path: &str) -> (u16, HeaderMap, String) {
    fetch_with(addr, host, path, &[]).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippets_are_never_run_and_unhonoured_keys_are_reported_once() {
    let b = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[b.addr]));
    // Two hosts with two paths each: still one diagnostic of each kind.
    let ingress = annotated(
        "legacy",
        "legacy.example.com",
        &[
            (
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers X-Snippet:ran;",
            ),
            ("nginx.ingress.kubernetes.io/server-snippet", "return 418;"),
            ("nginx.ingress.kubernetes.io/relative-redirects", "true"),
            ("nginx.ingress.kubernetes.io/enable-opentelemetry", "true"),
        ],
    )
    .replace(
        "      paths:\n",
        "      paths:\n      - {path: /b, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
    )
    .replace(
        "  rules:\n",
        "  rules:\n  - host: other.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n      - {path: /c, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}\n",
    );
    text.push_str(&ingress);
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "other.example.com", "/c", FOLLOW, |s, _| s == 200).await;

    // Served, and the snippets did nothing: no 418, no header.
    for (host, path) in [("legacy.example.com", "/"), ("legacy.example.com", "/b")] {
        let (status, headers, body) = fetch_head(ctl.http, host, path).await;
        assert_eq!((status, body), (200, format!("web {path}")));
        assert!(headers.get("x-snippet").is_none());
    }
    let metrics = ctl.metrics().await;
    for line in [
        r#"portico_diagnostics{reason="snippet_not_executed",kind="Ingress"} 1"#,
        r#"portico_diagnostics{reason="unsupported_annotation",kind="Ingress"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let logs = ctl.logs();
    let lines = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("snippet_not_executed"), 1, "{logs}");
    assert_eq!(lines("unsupported_annotation"), 1, "{logs}");
    let snippet = logs
        .lines()
        .find(|l| l.contains("snippet_not_executed"))
        .unwrap();
    for part in [
        "default/legacy",
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/server-snippet",
        "never executed",
    ] {
        assert!(snippet.contains(part), "{part} not in {snippet}");
    }
    let unsupported = logs
        .lines()
        .find(|l| l.contains("unsupported_annotation"))
        .unwrap();
    for part in [
        "nginx.ingress.kubernetes.io/relative-redirects",
        "nginx.ingress.kubernetes.io/enable-opentelemetry",
    ] {
        assert!(unsupported.contains(part), "{part} not in {unsupported}");
    }
}

/// An Ingress `name` for `host` with `annotations` and ImplementationSpecific/Prefix
/// `paths` (path, pathType, service).
fn with_paths(
    name: &str,
    host: &str,
    annotations: &[(&str, &str)],
    paths: &[(&str, &str, &str)],
) -> String {
    let mut out = format!("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n");
    for (k, v) in annotations {
        out.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: portico\n  rules:\n  - host: {host}\n    http:\n      paths:\n"
    ));
    for (path, path_type, service) in paths {
        out.push_str(&format!(
            "      - {{path: \"{path}\", pathType: {path_type}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_target_with_captures_and_host_wide_regex_mode() {
    let web = Backend::start("web").await;
    let other = Backend::start("other").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&service_yaml("other", &[other.addr]));
    // The ingress-nginx documentation's rewrite example.
    text.push_str(&with_paths(
        "rewrite",
        "rewrite.bar.com",
        &[(&format!("{NGINX}/rewrite-target"), "/$2")],
        &[("/something(/|$)(.*)", "ImplementationSpecific", "web")],
    ));
    // A plain Ingress on the same host: its path is matched as a regex too.
    text.push_str(&with_paths(
        "plain",
        "rewrite.bar.com",
        &[],
        &[("/static", "Prefix", "other")],
    ));
    // The same plain path on another host keeps Prefix matching.
    text.push_str(&with_paths(
        "elsewhere",
        "plain.bar.com",
        &[],
        &[("/static", "Prefix", "other")],
    ));
    // A regex the engine refuses: reported, not served.
    text.push_str(&with_paths(
        "lookahead",
        "regex.bar.com",
        &[("portico.dev/use-regex", "true")],
        &[
            ("/(?!admin).*", "ImplementationSpecific", "web"),
            ("/api/v[0-9]+/", "ImplementationSpecific", "other"),
        ],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "rewrite.bar.com", "/something", FOLLOW, |s, _| {
        s == 200
    })
    .await;
    let http = ctl.http;

    for (path, want) in [
        ("/something", "web /"),
        ("/something/", "web /"),
        ("/something/new", "web /new"),
        ("/SomeThing/new/deeper", "web /new/deeper"),
        ("/STATIC/a", "other /STATIC/a"),
    ] {
        let (status, _, body) = fetch_head(http, "rewrite.bar.com", path).await;
        assert_eq!((status, body.as_str()), (200, want), "{path}");
    }
    // The query string is kept.
    let (status, headers, body) =
        fetch_head(http, "rewrite.bar.com", "/something/new?a=1&b=2").await;
    assert_eq!((status, body.as_str()), (200, "web /new"));
    assert_eq!(headers["echo-query"], "a=1&b=2");
    let (status, _, _) = fetch_head(http, "rewrite.bar.com", "/nothing").await;
    assert_eq!(status, 404);
    let (status, _, _) = fetch_head(http, "plain.bar.com", "/STATIC/a").await;
    assert_eq!(status, 404);

    let (status, _, body) = fetch_head(http, "regex.bar.com", "/API/v2/users").await;
    assert_eq!((status, body.as_str()), (200, "other /API/v2/users"));
    let (status, _, _) = fetch_head(http, "regex.bar.com", "/home").await;
    assert_eq!(status, 404);
    let metrics = ctl.metrics().await;
    let line = r#"portico_diagnostics{reason="invalid_path_regex",kind="Ingress"} 1"#;
    assert!(metrics.contains(line), "no {line} in\n{metrics}");
    ctl.wait_log("the refused regex", FOLLOW, |l| {
        l.lines()
            .any(|line| line.contains("default/lookahead") && line.contains("look-around"))
    })
    .await;
}

/// An Ingress `name` for `host` `path` (ImplementationSpecific) to Service `web`, with
/// these annotations.
fn annotated_path(name: &str, host: &str, path: &str, annotations: &[(&str, &str)]) -> String {
    annotated(name, host, annotations).replace(
        "      - path: /\n        pathType: Prefix\n",
        &format!("      - path: \"{path}\"\n        pathType: ImplementationSpecific\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vhost_and_forwarded_prefix_shape_the_upstream_request() {
    let b = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[b.addr]));
    let vhost = format!("{NGINX}/upstream-vhost");
    let prefix = format!("{NGINX}/x-forwarded-prefix");
    let rewrite = format!("{NGINX}/rewrite-target");
    text.push_str(&annotated(
        "vhost",
        "vhost.example.com",
        &[(vhost.as_str(), "internal.myservice.com")],
    ));
    text.push_str(&annotated(
        "bad-vhost",
        "bad-vhost.example.com",
        &[(vhost.as_str(), "$host")],
    ));
    text.push_str(&annotated_path(
        "prefix",
        "prefix.example.com",
        "/something(/|$)(.*)",
        &[
            (rewrite.as_str(), "/$2"),
            ("portico.dev/x-forwarded-prefix", "/something"),
        ],
    ));
    text.push_str(&annotated(
        "prefix-plain",
        "prefix-plain.example.com",
        &[(prefix.as_str(), "/something")],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "vhost.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let http = ctl.http;
    let echoed = |h: &HeaderMap, name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());

    // upstream-vhost: the pod gets that Host.
    let (status, headers, _) = fetch_head(http, "vhost.example.com", "/a").await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed(&headers, "echo-host").as_deref(),
        Some("internal.myservice.com")
    );
    // A value that is no host name is reported, and the client's Host goes on.
    let (_, headers, _) = fetch_head(http, "bad-vhost.example.com", "/").await;
    assert_eq!(
        echoed(&headers, "echo-host").as_deref(),
        Some("bad-vhost.example.com")
    );
    ctl.wait_log("the bad upstream-vhost", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/bad-vhost")
                && line.contains("nginx.ingress.kubernetes.io/upstream-vhost")
        })
    })
    .await;

    // x-forwarded-prefix beside a rewrite: the pod gets the rewritten path and the prefix.
    let (status, headers, body) = fetch_head(http, "prefix.example.com", "/something/abc").await;
    assert_eq!((status, body.as_str()), (200, "web /abc"));
    assert_eq!(
        echoed(&headers, "echo-x-forwarded-prefix").as_deref(),
        Some("/something")
    );
    assert_eq!(
        echoed(&headers, "echo-host").as_deref(),
        Some("prefix.example.com")
    );
    // Without a rewrite, ingress-nginx sets no such header.
    let (status, headers, _) = fetch_head(http, "prefix-plain.example.com", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&headers, "echo-x-forwarded-prefix"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_alias_names_route_as_their_host() {
    let web = Backend::start("web").await;
    let other = Backend::start("other").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&service_yaml("other", &[other.addr]));
    let alias = format!("{NGINX}/server-alias");
    text.push_str(&annotated(
        "aliased",
        "main.example.com",
        &[(alias.as_str(), "www.main.example.com, taken.example.com")],
    ));
    text.push_str(&ingress_yaml("taken", "taken.example.com", "/", "other"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "main.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let http = ctl.http;

    let (status, headers, body) = fetch_head(http, "www.main.example.com", "/x").await;
    assert_eq!((status, body.as_str()), (200, "web /x"));
    // The pod gets the Host the client sent.
    assert_eq!(headers["echo-host"], "www.main.example.com");
    // A name an Ingress routes keeps its own rules, and the alias is reported.
    let (_, _, body) = fetch_head(http, "taken.example.com", "/x").await;
    assert_eq!(body, "other /x");
    ctl.wait_log("the clashing alias", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/aliased")
                && line.contains("server_alias_conflict")
                && line.contains("taken.example.com")
        })
    })
    .await;
    let (status, _, _) = fetch_head(http, "nope.example.com", "/x").await;
    assert_eq!(status, 404);
}
