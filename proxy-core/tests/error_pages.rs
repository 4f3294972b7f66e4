//! Error pages and default backends through a real proxy listener: `custom-http-errors`
//! interception, a route's own `default-backend`, and the global default backend.

mod common;

use common::*;
use hyper::StatusCode;
use proxy_core::pipeline::ErrorPages;
use proxy_core::{BackendKind, Config};

/// `app.test` to backend `app`, intercepting `codes`, with `own` as its default backend.
fn app_rule(codes: &[u16], own: Option<&str>) -> proxy_core::routes::RouteRule {
    with_policy(rule("app.test", "app"), |p| {
        p.errors = Some(ErrorPages::new(codes.iter().copied(), own.map(backend_id)));
    })
}

fn not_ready(mut b: proxy_core::config::Backend) -> proxy_core::config::Backend {
    if let BackendKind::Endpoints(eps) = &mut b.kind {
        for e in eps {
            e.ready = false;
        }
    }
    b
}

fn global(cfg: &mut Config, name: &str) {
    let mut t = target(name);
    t.source = "".into();
    cfg.default_service = Some(t);
}

#[tokio::test]
async fn an_intercepted_code_is_answered_by_the_routes_default_backend() {
    let app = TestBackend::start("app").await;
    let errors = TestBackend::start("errors-own").await;
    let other = TestBackend::start("errors-global").await;
    let mut cfg = config(
        vec![app_rule(&[404, 500], Some("errors-own"))],
        vec![
            backend("app", &[app.addr]),
            backend("errors-own", &[errors.addr]),
            backend("errors-global", &[other.addr]),
        ],
    );
    global(&mut cfg, "errors-global");
    let px = TestProxy::start(cfg).await;
    let r = get_with(
        px.addr,
        "app.test",
        "/status/500/page?x=1",
        &[
            ("accept", "application/json"),
            ("x-request-id", "something-unique"),
            ("x-code", "200"),
        ],
    )
    .await;
    // The error backend's answer, status included, not the app's.
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.text(), "errors-own");
    assert_eq!((app.hits(), errors.hits(), other.hits()), (1, 1, 0));
    assert_eq!(r.header("echo-method"), Some("GET"));
    assert_eq!(r.header("echo-uri"), Some("/?x=1"));
    assert_eq!(r.header("echo-host"), Some("app.test"));
    assert_eq!(r.header("echo-x-code"), Some("500"));
    assert_eq!(r.header("echo-x-format"), Some("application/json"));
    assert_eq!(
        r.header("echo-x-original-uri"),
        Some("/status/500/page?x=1")
    );
    assert_eq!(r.header("echo-x-namespace"), Some("default"));
    assert_eq!(r.header("echo-x-ingress-name"), Some("test"));
    assert_eq!(r.header("echo-x-service-name"), Some("app"));
    assert_eq!(r.header("echo-x-service-port"), Some("80"));
    assert_eq!(r.header("echo-x-request-id"), Some("something-unique"));

    // A code not listed passes as the app sent it.
    let r = get(px.addr, "app.test", "/status/503").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "app");
    let r = get(px.addr, "app.test", "/fine").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "app"));
    assert_eq!(errors.hits(), 1);
}

#[tokio::test]
async fn without_a_default_backend_of_its_own_the_global_one_answers() {
    let app = TestBackend::start("app").await;
    let errors = TestBackend::start("errors-global").await;
    let mut cfg = config(
        vec![app_rule(&[404], None)],
        vec![
            backend("app", &[app.addr]),
            backend("errors-global", &[errors.addr]),
        ],
    );
    global(&mut cfg, "errors-global");
    let px = TestProxy::start(cfg).await;
    let r = get(px.addr, "app.test", "/status/404").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "errors-global");
    assert_eq!(r.header("echo-x-code"), Some("404"));
    // A request id is made when the client sent none.
    let id = r.header("echo-x-request-id").expect("request id");
    assert_eq!(id.len(), 32);

    // The route's own default backend without a ready endpoint: the global one.
    let own = TestBackend::start("errors-own").await;
    let mut cfg = config(
        vec![app_rule(&[404], Some("errors-own"))],
        vec![
            backend("app", &[app.addr]),
            not_ready(backend("errors-own", &[own.addr])),
            backend("errors-global", &[errors.addr]),
        ],
    );
    global(&mut cfg, "errors-global");
    let px = TestProxy::start(cfg).await;
    let r = get(px.addr, "app.test", "/status/404").await;
    assert_eq!(r.text(), "errors-global");
    assert_eq!(own.hits(), 0);
}

#[tokio::test]
async fn with_no_default_backend_an_intercepted_code_is_404() {
    let app = TestBackend::start("app").await;
    let px = TestProxy::start(config(
        vec![app_rule(&[500], None)],
        vec![backend("app", &[app.addr])],
    ))
    .await;
    let r = get(px.addr, "app.test", "/status/500").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "404 Not Found\n");
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn the_proxys_own_errors_for_the_upstream_are_intercepted_too() {
    let errors = TestBackend::start("errors-own").await;
    let dead = dead_addr().await;
    let px = TestProxy::start(config(
        vec![app_rule(&[502, 503], Some("errors-own"))],
        vec![
            backend("app", &[dead]),
            backend("errors-own", &[errors.addr]),
        ],
    ))
    .await;
    let r = get(px.addr, "app.test", "/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.text(), "errors-own");
    assert_eq!(r.header("echo-x-code"), Some("502"));
}

#[tokio::test]
async fn without_ready_endpoints_the_routes_default_backend_takes_the_request() {
    let app = TestBackend::start("app").await;
    let own = TestBackend::start("fallback").await;
    let px = TestProxy::start(config(
        vec![app_rule(&[], Some("fallback"))],
        vec![
            not_ready(backend("app", &[app.addr])),
            backend("fallback", &[own.addr]),
        ],
    ))
    .await;
    let r = get_with(
        px.addr,
        "app.test",
        "/alma/armud?q=2",
        &[("x-request-id", "something-unique")],
    )
    .await;
    // The request as it is, with ingress-nginx's headers, and the backend's own answer.
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "fallback");
    assert_eq!(r.header("echo-uri"), Some("/alma/armud?q=2"));
    assert_eq!(r.header("echo-x-code"), Some("503"));
    assert_eq!(r.header("echo-x-ingress-name"), Some("test"));
    assert_eq!(r.header("echo-x-service-name"), Some("app"));
    assert_eq!(r.header("echo-x-request-id"), Some("something-unique"));
    assert!(r.header("echo-x-original-uri").is_none());
    assert_eq!(app.hits(), 0);

    // Without one, 503 as before.
    let px = TestProxy::start(config(
        vec![app_rule(&[], None)],
        vec![not_ready(backend("app", &[app.addr]))],
    ))
    .await;
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_global_default_backend_catches_what_nothing_else_does() {
    let app = TestBackend::start("app").await;
    let spec = TestBackend::start("spec-default").await;
    let flag = TestBackend::start("flag-default").await;
    let mut cfg = config(
        vec![rule("app.test", "app")],
        vec![
            backend("app", &[app.addr]),
            backend("spec-default", &[spec.addr]),
            backend("flag-default", &[flag.addr]),
        ],
    );
    global(&mut cfg, "flag-default");
    let px = TestProxy::start(cfg.clone()).await;
    let r = get(px.addr, "nowhere.test", "/x").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "flag-default"));
    // No X-Code family on a plain catch-all request.
    assert!(r.header("echo-x-code").is_none());
    // An Ingress's spec.defaultBackend comes first.
    cfg.default_backend = Some(target("spec-default"));
    let px = TestProxy::start(cfg.clone()).await;
    let r = get(px.addr, "nowhere.test", "/x").await;
    assert_eq!(r.text(), "spec-default");

    // Without a ready endpoint the catch-all answers 404, not 503.
    let mut cfg = config(
        vec![],
        vec![not_ready(backend("flag-default", &[flag.addr]))],
    );
    global(&mut cfg, "flag-default");
    let px = TestProxy::start(cfg).await;
    let r = get(px.addr, "nowhere.test", "/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_global_error_page_request_names_no_ingress() {
    let errors = TestBackend::start("errors-global").await;
    let mut cfg = config(vec![], vec![backend("errors-global", &[errors.addr])]);
    global(&mut cfg, "errors-global");
    let mut t = cfg.default_service.clone().expect("set");
    t.policy = std::sync::Arc::new(proxy_core::pipeline::RoutePolicy {
        errors: Some(ErrorPages::new([200], None)),
        ..Default::default()
    });
    cfg.default_service = Some(t);
    let px = TestProxy::start(cfg).await;
    let r = get(px.addr, "nowhere.test", "/x").await;
    assert_eq!(r.header("echo-x-code"), Some("200"));
    for h in [
        "echo-x-namespace",
        "echo-x-ingress-name",
        "echo-x-service-name",
        "echo-x-service-port",
    ] {
        assert!(r.header(h).is_none(), "{h} sent");
    }
    assert_eq!(errors.hits(), 2);
}
