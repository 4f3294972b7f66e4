//! Cookie affinity through the real proxy: pinning, spreading, re-pinning.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use proxy_core::balance::{AffinityMode, CookieAffinity, SameSite};

async fn get_cookie(conn: &mut Conn, cookie: Option<&str>) -> Reply {
    let mut req = Request::get("/").header("host", "app.test");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = tokio::time::timeout(
        DEADLINE,
        conn.send(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("response within deadline")
    .expect("response");
    Reply::read(resp).await
}

/// `NAME=VALUE` from a Set-Cookie line.
fn cookie_pair(reply: &Reply) -> Option<String> {
    reply
        .header("set-cookie")
        .map(|line| line.split(';').next().unwrap().trim().to_owned())
}

async fn check_mode(mode: AffinityMode) {
    let backends = [
        TestBackend::start("e1").await,
        TestBackend::start("e2").await,
        TestBackend::start("e3").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let policy = CookieAffinity {
        mode,
        name: "route".into(),
        ..CookieAffinity::default()
    };
    let px = TestProxy::start(config(
        vec![sticky(rule("app.test", "sticky"), policy.clone())],
        vec![backend("sticky", &addrs)],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;

    // Without the cookie: spread evenly, each answer offering a cookie.
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut first_cookie = None;
    for _ in 0..1000 {
        let r = get_cookie(&mut conn, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let pair = cookie_pair(&r).expect("a new session gets a cookie");
        assert!(pair.starts_with("route="), "{pair}");
        assert!(
            !pair.contains("127.0.0.1"),
            "cookie leaks the address: {pair}"
        );
        first_cookie.get_or_insert((pair, r.text().to_owned()));
        *counts.entry(r.text().to_owned()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (endpoint, n) in &counts {
        assert!(
            (267..=400).contains(n),
            "{endpoint} got {n} of 1000: {counts:?}"
        );
    }

    // With the cookie: every request reaches the pinned endpoint, no new cookie.
    let (cookie, pinned) = first_cookie.unwrap();
    for i in 0..1000 {
        let r = get_cookie(&mut conn, Some(&cookie)).await;
        assert_eq!(r.text(), pinned, "request {i} left the pinned endpoint");
        assert!(r.header("set-cookie").is_none());
    }

    // Scale up: a persistent session stays put.
    if mode == AffinityMode::Persistent {
        let extra = TestBackend::start("e4").await;
        let mut more = addrs.clone();
        more.push(extra.addr);
        px.handle.store(config(
            vec![sticky(rule("app.test", "sticky"), policy.clone())],
            vec![backend("sticky", &more)],
        ));
        for _ in 0..50 {
            assert_eq!(get_cookie(&mut conn, Some(&cookie)).await.text(), pinned);
        }
    }

    // Remove the pinned endpoint: re-pinned elsewhere with a fresh cookie.
    let rest: Vec<_> = backends
        .iter()
        .filter(|b| b.name != pinned)
        .map(|b| b.addr)
        .collect();
    px.handle.store(config(
        vec![sticky(rule("app.test", "sticky"), policy.clone())],
        vec![backend("sticky", &rest)],
    ));
    let r = get_cookie(&mut conn, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let moved_to = r.text().to_owned();
    assert_ne!(moved_to, pinned);
    let fresh = cookie_pair(&r).expect("re-pinned session gets a new cookie");
    assert_ne!(fresh, cookie);
    for _ in 0..200 {
        let r = get_cookie(&mut conn, Some(&fresh)).await;
        assert_eq!(r.text(), moved_to);
        assert!(r.header("set-cookie").is_none());
    }
}

#[tokio::test]
async fn balanced_cookie_pins_spreads_and_repins() {
    check_mode(AffinityMode::Balanced).await;
}

#[tokio::test]
async fn persistent_cookie_pins_spreads_and_repins() {
    check_mode(AffinityMode::Persistent).await;
}

#[tokio::test]
async fn set_cookie_carries_the_configured_attributes() {
    let b = TestBackend::start("e1").await;
    let policy = CookieAffinity {
        name: "sess".into(),
        path: Some("/shop".into()),
        max_age: Some(Duration::from_secs(172800)),
        expires: Some(Duration::from_secs(3600)),
        secure: true,
        samesite: Some(SameSite::Lax),
        ..CookieAffinity::default()
    };
    let px = TestProxy::start(config(
        vec![sticky(rule("app.test", "sticky"), policy)],
        vec![backend("sticky", &[b.addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    let r = get_cookie(&mut conn, None).await;
    let line = r.header("set-cookie").unwrap();
    assert!(line.starts_with("sess="), "{line}");
    for attr in [
        "Path=/shop",
        "Max-Age=172800",
        "Expires=",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(line.contains(attr), "{attr} missing from {line}");
    }
    // A garbage cookie is a new session, not an error.
    let r = get_cookie(&mut conn, Some("sess=not-a-real-value")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("set-cookie").is_some());
}

async fn failure_case(change_on_failure: bool) {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let policy = CookieAffinity {
        mode: AffinityMode::Persistent,
        change_on_failure,
        ..CookieAffinity::default()
    };
    let px = TestProxy::start(config(
        vec![sticky(rule("app.test", "sticky"), policy)],
        vec![backend("sticky", &[a.addr, b.addr])],
    ))
    .await;
    let mut conn = Conn::open(px.addr).await;
    let first = get_cookie(&mut conn, None).await;
    let cookie = cookie_pair(&first).unwrap();
    let pinned = first.text().to_owned();
    // The pinned endpoint starts refusing connections (its listener closes).
    let (down, up) = if pinned == "a" { (&a, &b) } else { (&b, &a) };
    down.stop();
    // Give the aborted listener a moment to close; pooled connections to it die too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = Conn::open(px.addr).await;
    let r = get_cookie(&mut conn, Some(&cookie)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the failure cost the client nothing"
    );
    assert_eq!(r.text(), up.name);
    let set = cookie_pair(&r);
    if change_on_failure {
        assert!(
            set.is_some_and(|c| c != cookie),
            "change-on-failure re-pins"
        );
    } else {
        assert_eq!(
            set, None,
            "without change-on-failure the session keeps its cookie"
        );
    }
}

#[tokio::test]
async fn change_on_failure_repins_the_session() {
    failure_case(true).await;
}

#[tokio::test]
async fn without_change_on_failure_the_cookie_stays() {
    failure_case(false).await;
}
