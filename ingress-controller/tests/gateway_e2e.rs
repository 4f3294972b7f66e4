//! Gateway API through the binary over a manifest folder: a GatewayClass of ours, a
//! Gateway with an HTTP listener, HTTPRoutes in the shapes of the upstream conformance
//! suite's manifests (matching, path match order, method, query, missing backend), and an
//! Ingress on the same listener, checked with HTTP requests to real backends.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

const FOLLOW: Duration = Duration::from_secs(20);
const NS: &str = "gateway-conformance-infra";

/// A Service `name` in [`NS`] on port 8080 whose EndpointSlice points at `backend`.
fn service(name: &str, backend: SocketAddr) -> String {
    namespaced_service_yaml(NS, name, ("http", 8080), backend)
}

const GATEWAY: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: Same}
";

const ROUTES: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [matching.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: conditions, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace, sectionName: http}]
  hostnames: [conditions.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: no-such-service, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 1}
    - {name: infra-backend-v2, port: 8080, weight: 1}
    - {name: infra-backend-v3, port: 8080, weight: 0}
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /partial}}]
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
    - {name: no-such-service, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /three}}]
    backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 1}
    - {name: infra-backend-v2, port: 8080, weight: 1}
    - {name: infra-backend-v3, port: 8080, weight: 2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catch-all, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: infra-backend-v3, port: 8080}]
";

async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{uri}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let backend = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let _ = resp.into_body().collect().await;
    (status, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproutes_and_an_ingress_share_the_listener() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let v3 = Backend::start("v3").await;
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("infra-backend-v1", v1.addr));
    text.push_str(&service("infra-backend-v2", v2.addr));
    text.push_str(&service("infra-backend-v3", v3.addr));
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
    let mut ingress = INGRESS_CLASS_YAML.to_owned();
    ingress.push_str(&app_yaml("web", "ingress.example.com", "/", &[web.addr]));
    std::fs::write(dir.path().join("ingress.yaml"), ingress).unwrap();

    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "matching.example.com", "/", FOLLOW, |s, _| {
        s == 200
    })
    .await;
    let http = ctl.http;
    let got =
        |method: &'static str,
         host: &'static str,
         uri: &'static str,
         h: &'static [(&'static str, &'static str)]| { send(http, method, host, uri, h) };

    // httproute-matching: the longer prefix and the header match beat `/`.
    let m = "matching.example.com";
    assert_eq!(got("GET", m, "/", &[]).await, (200, "v1".into()));
    assert_eq!(got("GET", m, "/example", &[]).await, (200, "v1".into()));
    assert_eq!(
        got("GET", m, "/", &[("version", "one")]).await,
        (200, "v1".into())
    );
    assert_eq!(got("GET", m, "/v2", &[]).await, (200, "v2".into()));
    assert_eq!(got("GET", m, "/v2/example", &[]).await, (200, "v2".into()));
    assert_eq!(
        got("GET", m, "/", &[("version", "two")]).await,
        (200, "v2".into())
    );
    assert_eq!(got("GET", m, "/v2example", &[]).await, (200, "v1".into()));

    // Exact path, method and query matches; a rule whose backend is missing answers 500.
    let c = "conditions.example.com";
    assert_eq!(got("GET", c, "/exact", &[]).await, (200, "v1".into()));
    assert_eq!(got("POST", c, "/exact/not", &[]).await, (200, "v2".into()));
    assert_eq!(
        got("GET", c, "/?animal=whale", &[]).await,
        (200, "v3".into())
    );
    assert_eq!(got("GET", c, "/missing/x", &[]).await.0, 500);
    // A regular expression matches the whole path.
    assert_eq!(got("GET", c, "/re/42", &[]).await, (200, "v2".into()));
    assert_eq!(got("GET", c, "/re/42/x", &[]).await, (200, "v3".into()));
    // Nothing of the host's route matches: the route without hostnames does.
    assert_eq!(got("GET", c, "/other", &[]).await, (200, "v3".into()));

    // Weights: both weighted backends get requests, the weight-0 one none.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let (status, backend) = got("GET", c, "/split", &[]).await;
        assert_eq!(status, 200);
        seen.insert(backend);
    }
    assert_eq!(seen, ["v1".to_owned(), "v2".to_owned()].into());
    // An invalid backend beside a valid one: its share answers 500.
    let mut partial = std::collections::BTreeSet::new();
    for _ in 0..60 {
        partial.insert(got("GET", c, "/partial", &[]).await);
    }
    assert_eq!(
        partial,
        [(200, "v1".to_owned()), (500, String::new())].into()
    );
    // More than two: each gets its share.
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let (status, backend) = got("GET", c, "/three", &[]).await;
        assert_eq!(status, 200);
        *counts.entry(backend).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    // v3 has half the weight: well above either other one in 200 draws.
    assert!(
        counts["v3"] > counts["v1"] && counts["v3"] > counts["v2"],
        "{counts:?}"
    );

    // The status, over a folder, is logged: the missing backend names the route's
    // ResolvedRefs condition.
    ctl.wait_log("the route status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("gateway-conformance-infra/conditions")
                && l.contains("parent gateway-conformance-infra/same-namespace/http: Accepted=True (Accepted)")
                && l.contains("ResolvedRefs=False (BackendNotFound)")
        })
    })
    .await;

    // The Gateway API manifests are taken without a word about their fields.
    let logs = ctl.logs();
    assert!(!logs.contains("unknown field"), "{logs}");

    // A route without hostnames catches the other hosts; the Ingress keeps its own.
    assert_eq!(
        got("GET", "other.test", "/x", &[]).await,
        (200, "v3".into())
    );
    let ing = "ingress.example.com";
    assert_eq!(got("GET", ing, "/x", &[]).await, (200, "web".into()));
    assert_eq!(
        got("POST", ing, "/", &[("version", "two")]).await,
        (200, "web".into())
    );

    // An edit is followed: the catch-all route goes, and its hosts with it.
    write_atomic(
        dir.path(),
        "routes.yaml",
        ROUTES.split("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: catch-all")
            .next()
            .unwrap(),
    );
    wait_for(http, "other.test", "/x", FOLLOW, |s, _| s == 404).await;
    assert_eq!(got("GET", c, "/other", &[]).await.0, 404);
    assert_eq!(got("GET", ing, "/x", &[]).await, (200, "web".into()));
    assert_eq!(got("GET", m, "/v2", &[]).await, (200, "v2".into()));
}

const MODIFIERS: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: header-modifier, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [headers.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /response}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [X-Backend]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        statusCode: 301
        hostname: example.org
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-path, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [rewrite.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: slow, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /patient}}]
    timeouts: {request: 10s, backendRequest: 5s}
    backendRefs: [{name: slow, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: one.example.org}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_edit_requests_and_answers() {
    let v1 = Backend::start("v1").await;
    let slow = Backend::start_slow("slow", Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("infra-backend-v1", v1.addr));
    text.push_str(&service("slow", slow.addr));
    text.push_str(MODIFIERS);
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let h = "headers.example.com";
    wait_for(ctl.http, h, "/set", FOLLOW, |s, _| s == 200).await;
    let values = |headers: &hyper::HeaderMap, name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    let (_, got, _) =
        fetch_with(ctl.http, h, "/set", &[("X-Header-Set", "some-other-value")]).await;
    assert_eq!(values(&got, "echo-x-header-set"), ["set-overwrites-values"]);
    let (_, got, _) = fetch_with(ctl.http, h, "/add", &[("X-Header-Add", "some-value")]).await;
    assert_eq!(
        values(&got, "echo-x-header-add"),
        ["some-value", "add-appends-values"]
    );
    let (_, got, _) = fetch_with(ctl.http, h, "/remove", &[("X-Header-Remove", "gone")]).await;
    assert!(values(&got, "echo-x-header-remove").is_empty());
    assert_eq!(values(&got, "x-backend"), ["v1"]);
    // Without the filter, the same header reaches the backend.
    let (_, got, _) = fetch_with(ctl.http, h, "/set", &[("X-Header-Remove", "kept")]).await;
    assert_eq!(values(&got, "echo-x-header-remove"), ["kept"]);

    let (status, got, _) = fetch_with(ctl.http, h, "/response", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(values(&got, "x-header-set"), ["set-overwrites-values"]);
    assert_eq!(values(&got, "x-header-add"), ["add-appends-values"]);
    assert!(values(&got, "x-backend").is_empty());

    // RequestRedirect, without backends: the redirect answers, not a 500.
    let (status, got, _) = fetch_with(ctl.http, h, "/scheme/x?q=1", &[]).await;
    assert_eq!(status, 302);
    assert_eq!(
        values(&got, "location"),
        ["https://headers.example.com/scheme/x?q=1"]
    );
    let (status, got, _) = fetch_with(ctl.http, h, "/original-prefix/lemon", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(
        values(&got, "location"),
        ["http://example.org/replacement-prefix/lemon"]
    );

    // URLRewrite (httproute-rewrite-path, httproute-rewrite-host): the backend gets the
    // new path, the query kept, and the new Host.
    let r = "rewrite.example.com";
    for (asked, sent) in [
        ("/prefix/one/two", "/one/two"),
        ("/prefix/one", "/one"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/strip-prefix/", "/"),
        ("/full/one/two", "/one"),
        ("/full/one/two?a=b", "/one"),
    ] {
        let (status, _, body) = fetch_with(ctl.http, r, asked, &[]).await;
        assert_eq!((status, body), (200, format!("v1 {sent}")), "{asked}");
    }
    let (_, got, _) = fetch_with(ctl.http, r, "/full/one/two?a=b", &[]).await;
    assert_eq!(values(&got, "echo-query"), ["a=b"]);
    let (status, got, body) = fetch_with(ctl.http, r, "/host/x", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 /host/x"));
    assert_eq!(values(&got, "echo-host"), ["one.example.org"]);
    assert_eq!(values(&got, "echo-x-header-set"), ["set-overwrites-values"]);
    // timeouts: an answer later than the rule's request timeout is a 504.
    let started = std::time::Instant::now();
    let (status, _, _) = fetch_with(ctl.http, r, "/slow", &[]).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let (status, _, body) = fetch_with(ctl.http, r, "/patient", &[]).await;
    assert_eq!((status, body.as_str()), (200, "slow /patient"));
    // Without a rewrite, the client's host goes through.
    let (_, got, _) = fetch_with(ctl.http, h, "/set", &[]).await;
    assert_eq!(values(&got, "echo-host"), ["headers.example.com"]);
}

/// `openssl req -x509` for `host` into `dir` (`host.crt`, `host.key`): the PEM pair.
fn openssl_cert(dir: &std::path::Path, host: &str) -> (Vec<u8>, Vec<u8>) {
    let (crt, key) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    (std::fs::read(crt).unwrap(), std::fs::read(key).unwrap())
}

/// `curl --resolve HOST:PORT:IP --cacert HOST.crt https://HOST:PORT/PATH`, verifying the
/// served certificate against the one made for `host`: the status (0 when the exchange
/// failed) and the body (or what curl said).
async fn curl_https(
    addr: SocketAddr,
    dir: &std::path::Path,
    host: &str,
    path: &str,
) -> (u16, String) {
    let url = format!("https://{host}:{}{path}", addr.port());
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let ca = dir.join(format!("{host}.crt"));
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--resolve",
                &resolve,
            ])
            .arg("--cacert")
            .arg(&ca)
            .arg(&url)
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code.trim().parse().unwrap_or(0);
        if status == 0 {
            (0, String::from_utf8_lossy(&out.stderr).into_owned())
        } else {
            (status, body.to_owned())
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_terminate_tls_with_the_gateways_certificate() {
    let v1 = Backend::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let host = "secure.example.com";
    let (cert, key) = openssl_cert(certs.path(), host);
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("infra-backend-v1", v1.addr));
    text.push_str("---\n");
    text.push_str(&secret_yaml("secure-cert", &cert, &key).replace(
        "  name: secure-cert\n",
        &format!("  name: secure-cert\n  namespace: {NS}\n"),
    ));
    text.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: {NS}}}
spec:
  gatewayClassName: portico
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: {host}
    tls:
      mode: Terminate
      certificateRefs: [{{kind: Secret, name: secure-cert}}]
  - name: broken
    port: 443
    protocol: HTTPS
    hostname: broken.example.com
    tls:
      certificateRefs: [{{name: no-such-secret}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: {NS}}}
spec:
  parentRefs: [{{name: secure}}]
  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
"
    ));
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let deadline = std::time::Instant::now() + FOLLOW;
    let mut got = curl_https(ctl.https, certs.path(), host, "/hello").await;
    while got.0 != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = curl_https(ctl.https, certs.path(), host, "/hello").await;
    }
    // curl checked the certificate against the Gateway's: no -k.
    assert_eq!(got, (200, "v1 /hello".to_owned()), "{}", ctl.logs());

    // The listener whose Secret is missing: reported, and its host gets the default
    // (self-signed) certificate, which curl refuses.
    ctl.wait_log("the listener status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("listener \"broken\"")
                && l.contains("ResolvedRefs=False (InvalidCertificateRef)")
        })
    })
    .await;
    let other = tempfile::tempdir().unwrap();
    openssl_cert(other.path(), "broken.example.com");
    let (status, said) = curl_https(ctl.https, other.path(), "broken.example.com", "/").await;
    assert_eq!(status, 0, "{said}");
}

/// Listener scoping: a route answers only on Portico's listener for the protocol of the
/// listeners it attached to, and a host reaches only the routes of the most specific
/// listener of the Gateway that matches it (the conformance test
/// `GatewayHTTPListenerIsolation`, with an HTTPS listener beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_only_on_their_listeners() {
    let v1 = Backend::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let secure = "secure.example.com";
    let (cert, key) = openssl_cert(certs.path(), secure);
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("infra-backend-v1", v1.addr));
    text.push_str("---\n");
    text.push_str(&secret_yaml("secure-cert", &cert, &key).replace(
        "  name: secure-cert\n",
        &format!("  name: secure-cert\n  namespace: {NS}\n"),
    ));
    let listeners = [
        ("empty", "HTTP", None),
        ("wide", "HTTP", Some("*.example.com")),
        ("foo", "HTTP", Some("*.foo.example.com")),
        ("abc", "HTTP", Some("abc.foo.example.com")),
        ("secure", "HTTPS", Some(secure)),
    ];
    text.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: iso, namespace: {NS}}}
spec:
  gatewayClassName: portico
  listeners:
"
    ));
    for (name, protocol, hostname) in listeners {
        let port = if protocol == "HTTPS" { 443 } else { 80 };
        text.push_str(&format!(
            "  - name: {name}\n    port: {port}\n    protocol: {protocol}\n"
        ));
        if let Some(h) = hostname {
            text.push_str(&format!("    hostname: \"{h}\"\n"));
        }
        if protocol == "HTTPS" {
            text.push_str("    tls: {certificateRefs: [{name: secure-cert}]}\n");
        }
    }
    for (name, _, _) in listeners {
        text.push_str(&format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: iso, sectionName: {name}}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"
        ));
    }
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "bar.com", "/empty", FOLLOW, |s, _| s == 200).await;

    let cases = [
        ("bar.com", "empty"),
        ("bar.example.com", "wide"),
        ("bar.foo.example.com", "foo"),
        ("x.y.foo.example.com", "foo"),
        ("abc.foo.example.com", "abc"),
        // Over plain HTTP, the HTTPS listener's host belongs to `*.example.com`.
        (secure, "wide"),
    ];
    for (host, own) in cases {
        for (path, _, _) in listeners {
            let want = if path == own { 200 } else { 404 };
            let (status, _) = send(ctl.http, "GET", host, &format!("/{path}"), &[]).await;
            assert_eq!(status, want, "http://{host}/{path}\n{}", ctl.logs());
        }
    }
    // Over HTTPS, only the HTTPS listener's route answers.
    let got = curl_https(ctl.https, certs.path(), secure, "/secure").await;
    assert_eq!(got, (200, "v1 /secure".to_owned()), "{}", ctl.logs());
    let (status, _) = curl_https(ctl.https, certs.path(), secure, "/wide").await;
    assert_eq!(status, 404);
}

/// With `--gateway-address-pool`, each Gateway is served at an address of its own (the
/// one it asks for, or the next free one), where only its routes answer; the Ingresses,
/// the default backend and Gateways' routes stay apart from each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_at_addresses_of_their_own_answer_only_there() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let v3 = Backend::start("v3").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for (name, b) in [("v1", &v1), ("v2", &v2), ("v3", &v3)] {
        text.push_str(&service(name, b.addr));
    }
    text.push_str(GATEWAY_CLASS_YAML);
    text.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: first, namespace: {NS}, creationTimestamp: \"2024-01-01T00:00:00Z\"}}
spec:
  gatewayClassName: portico
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: asks, namespace: {NS}, creationTimestamp: \"2024-01-02T00:00:00Z\"}}
spec:
  gatewayClassName: portico
  addresses: [{{type: IPAddress, value: 127.0.1.50}}]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: outside, namespace: {NS}, creationTimestamp: \"2024-01-03T00:00:00Z\"}}
spec:
  gatewayClassName: portico
  addresses: [{{type: IPAddress, value: 192.0.2.1}}]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"
    ));
    for (gateway, backend) in [("first", "v1"), ("asks", "v3"), ("outside", "v1")] {
        text.push_str(&format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {gateway}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {gateway}}}]
  rules: [{{backendRefs: [{{name: {backend}, port: 8080}}]}}]
"
        ));
    }
    text.push_str(&format!(
        "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portico}}
spec: {{controller: portico.dev/ingress-controller}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app, namespace: {NS}}}
spec:
  ingressClassName: portico
  defaultBackend: {{service: {{name: v2, port: {{number: 8080}}}}}}
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: v2, port: {{number: 8080}}}}}}}}
"
    ));
    std::fs::write(dir.path().join("all.yaml"), text).unwrap();
    let args = folder_args(dir.path(), &["--gateway-address-pool", "127.0.1.0/24"]);
    let mut ctl = Controller::start_bound(&args, &[], true);
    ctl.wait_ready().await;
    let at = |ip: [u8; 4]| SocketAddr::from((ip, ctl.http.port()));
    wait_for(at([127, 0, 1, 1]), "x.example.com", "/", FOLLOW, |s, _| {
        s == 200
    })
    .await;

    let cases = [
        // The published address: the Ingress, then its default backend; no Gateway.
        ([127, 0, 0, 1], "app.example.com", 200, "v2"),
        ([127, 0, 0, 1], "x.example.com", 200, "v2"),
        // The oldest Gateway got the pool's first address; its route alone answers.
        ([127, 0, 1, 1], "app.example.com", 200, "v1"),
        ([127, 0, 1, 1], "x.example.com", 200, "v1"),
        // The one it asked for.
        ([127, 0, 1, 50], "app.example.com", 200, "v3"),
        // A pool address no Gateway has is the published one.
        ([127, 0, 1, 2], "x.example.com", 200, "v2"),
    ];
    for (ip, host, status, body) in cases {
        let got = send(at(ip), "GET", host, "/", &[]).await;
        assert_eq!(
            got,
            (status, body.to_owned()),
            "{ip:?} {host}\n{}",
            ctl.logs()
        );
    }
    // An address outside the pool: accepted, not served, and said so.
    let logs = ctl.logs();
    let status_of = |gateway: &str| {
        logs.lines()
            .filter(|l| l.contains("status:") && l.contains("kind=\"Gateway\""))
            .rfind(|l| l.contains(&format!("object={NS}/{gateway}")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        status_of("first").contains("addresses [127.0.1.1]"),
        "{logs}"
    );
    assert!(
        status_of("asks").contains("addresses [127.0.1.50]"),
        "{logs}"
    );
    let outside = status_of("outside");
    assert!(
        outside.contains("Programmed=False (AddressNotUsable"),
        "{outside}"
    );
    assert!(outside.contains("addresses []"), "{outside}");
    // Its route is attached all the same, and answers nowhere: not at the published
    // address, where `x.example.com` got the default backend above.
    let route = logs
        .lines()
        .filter(|l| l.contains("kind=\"HTTPRoute\""))
        .rfind(|l| l.contains(&format!("object={NS}/outside")))
        .unwrap_or_default();
    assert!(route.contains("Accepted=True"), "{route}");
    assert!(outside.contains("attachedRoutes 1"), "{outside}");
}
