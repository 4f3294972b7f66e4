//! `proxy-set-headers` and `custom-headers` through a real proxy listener.

mod common;

use std::sync::Arc;

use common::*;
use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use proxy_core::pipeline::SetHeaders;

fn set(pairs: &[(&'static str, &'static str)]) -> SetHeaders {
    SetHeaders(
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect(),
    )
}

#[tokio::test]
async fn global_request_fields_and_a_routes_answer_fields() {
    let app = TestBackend::start("app").await;
    let other = TestBackend::start("other").await;
    let with_headers = with_policy(rule("app.test", "app"), |p| {
        p.response_headers = Some("shop/custom".into());
    });
    let mut cfg = config(
        vec![with_headers, rule("other.test", "other")],
        vec![backend("app", &[app.addr]), backend("other", &[other.addr])],
    );
    cfg.settings.proxy_set_headers = set(&[("x-different-name", "true"), ("x-real-ip", "forged")]);
    cfg.response_headers.insert(
        "shop/custom".into(),
        Arc::new(set(&[
            ("x-frame-options", "DENY"),
            ("echo-x-different-name", "replaced"),
        ])),
    );
    let px = TestProxy::start(cfg).await;
    let r = get_with(
        px.addr,
        "other.test",
        "/",
        &[("x-different-name", "client")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Every request gets the global fields, replacing the client's and Portico's own.
    assert_eq!(r.header("echo-x-different-name"), Some("true"));
    assert_eq!(r.header("echo-x-real-ip"), Some("forged"));
    assert!(
        r.header("x-frame-options").is_none(),
        "only the route that asked"
    );
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("echo-x-different-name"), Some("replaced"));
    // Portico's own answers on the route get them too.
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    drop(app);
    let r = get(px.addr, "app.test", "/").await;
    assert!(r.status.is_server_error());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // A key the config does not hold sets nothing.
    let missing = with_policy(rule("app.test", "other"), |p| {
        p.response_headers = Some("shop/gone".into());
    });
    let px = TestProxy::start(config(vec![missing], vec![backend("other", &[other.addr])])).await;
    let r = get(px.addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-frame-options").is_none());
}
