//! ingress-nginx's canary annotations through the binary over a manifest folder, with
//! the expectations of ingress-nginx's documentation and its `canary.go` end-to-end
//! tests: by header (`always`/`never`, a value, a pattern), by cookie, by weight, their
//! precedence, a canary without a main Ingress, and canary sessions under affinity.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hyper::header::HeaderMap;

const FOLLOW: Duration = Duration::from_secs(20);
const NGINX: &str = "nginx.ingress.kubernetes.io";

/// One GET of `host` `/info` with extra headers: status, response headers, body.
async fn fetch(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    fetch_with(addr, host, "/info", headers).await
}

/// Which Service answered: `main` or `canary` (the backends answer `<name> <path>`).
async fn who(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, body) = fetch(addr, host, headers).await;
    assert_eq!(status, 200, "{host} {headers:?}: {body}");
    body.split(' ').next().unwrap_or_default().to_owned()
}

/// An Ingress `name` for `host` `/info` to `service`, with these annotations.
fn ingress(name: &str, host: &str, service: &str, annotations: &[(String, &str)]) -> String {
    let mut meta = format!("  name: {name}\n");
    if !annotations.is_empty() {
        meta.push_str("  annotations:\n");
        for (k, v) in annotations {
            meta.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    ingress_yaml(name, host, "/info", service).replace(&format!("  name: {name}\n"), &meta)
}

fn k(key: &str) -> String {
    format!("{NGINX}/{key}")
}

/// A main Ingress and a canary Ingress (canary annotations `canary`) for `host`.
fn pair(host: &str, main: &[(String, &str)], canary: &[(String, &str)]) -> String {
    let name = host.split('.').next().unwrap_or(host);
    let mut c = vec![(k("canary"), "true")];
    c.extend(canary.iter().cloned());
    let mut out = ingress(&format!("{name}-main"), host, "main", main);
    out.push_str(&ingress(&format!("{name}-canary"), host, "canary", &c));
    out
}

/// The affinity cookie `name=value` set by a response, if any.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_ingresses_route_as_ingress_nginx() {
    let main = Backend::start("main").await;
    let canary = Backend::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("main", &[main.addr]));
    text.push_str(&service_yaml("canary", &[canary.addr]));
    let affinity = [(k("affinity"), "cookie"), (k("session-cookie-name"), "aff")];
    text.push_str(&pair(
        "header.example.com",
        &[],
        &[(k("canary-by-header"), "CanaryByHeader")],
    ));
    text.push_str(&pair(
        "value.example.com",
        &[],
        &[
            (k("canary-by-header"), "CanaryByHeader"),
            (k("canary-by-header-value"), "DoCanary"),
            (k("canary-by-cookie"), "CanaryByCookie"),
        ],
    ));
    text.push_str(&pair(
        "pattern.example.com",
        &[],
        &[
            ("portico.dev/canary-by-header".to_owned(), "CanaryByHeader"),
            (k("canary-by-header-pattern"), "^Do[A-Z][a-z]+y$"),
        ],
    ));
    text.push_str(&pair(
        "broken.example.com",
        &[],
        &[
            (k("canary-by-header"), "CanaryByHeader"),
            (k("canary-by-header-pattern"), "[][**da?$&*"),
            (k("canary-by-cookie"), "CanaryByCookie"),
        ],
    ));
    text.push_str(&pair(
        "cookie.example.com",
        &[],
        &[(
            "portico.dev/canary-by-cookie".to_owned(),
            "Canary-By-Cookie",
        )],
    ));
    text.push_str(&pair(
        "weight.example.com",
        &[],
        &[(k("canary-weight"), "30")],
    ));
    text.push_str(&pair(
        "all.example.com",
        &[],
        &[(k("canary-weight"), "100")],
    ));
    text.push_str(&pair(
        "half.example.com",
        &[],
        &[
            (k("canary-weight"), "100"),
            (k("canary-weight-total"), "200"),
        ],
    ));
    text.push_str(&pair(
        "sticky.example.com",
        &affinity,
        &[
            (k("canary-by-header"), "ForceCanary"),
            (k("canary-by-header-value"), "yes"),
        ],
    ));
    text.push_str(&pair(
        "legacy.example.com",
        &affinity,
        &[
            (k("canary-by-header"), "ForceCanary"),
            (k("canary-by-header-value"), "yes"),
            (k("canary-weight"), "50"),
            (k("affinity-canary-behavior"), "legacy"),
        ],
    ));
    // A canary alone is no route.
    text.push_str(&ingress(
        "solo-canary",
        "solo.example.com",
        "canary",
        &[
            (k("canary"), "true"),
            (k("canary-by-header"), "CanaryByHeader"),
        ],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "header.example.com", "/info", FOLLOW, |s, _| {
        s == 200
    })
    .await;
    let http = ctl.http;

    // By header: always and never; anything else is ignored (weight 0: the main).
    let h = "header.example.com";
    assert_eq!(who(http, h, &[]).await, "main");
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "always")]).await,
        "canary"
    );
    assert_eq!(
        who(http, h, &[("canarybyheader", "always")]).await,
        "canary"
    );
    assert_eq!(who(http, h, &[("CanaryByHeader", "never")]).await, "main");
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "badheadervalue")]).await,
        "main"
    );

    // By header value; another value falls through to the cookie.
    let h = "value.example.com";
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "DoCanary")]).await,
        "canary"
    );
    assert_eq!(who(http, h, &[("CanaryByHeader", "always")]).await, "main");
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "otherheadervalue")]).await,
        "main"
    );
    let value_and_cookie = [
        ("CanaryByHeader", "otherheadervalue"),
        ("Cookie", "CanaryByCookie=always"),
    ];
    assert_eq!(who(http, h, &value_and_cookie).await, "canary");
    let header_over_cookie = [
        ("CanaryByHeader", "DoCanary"),
        ("Cookie", "CanaryByCookie=never"),
    ];
    assert_eq!(who(http, h, &header_over_cookie).await, "canary");

    // By header pattern.
    let h = "pattern.example.com";
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "DoCanary")]).await,
        "canary"
    );
    assert_eq!(
        who(http, h, &[("CanaryByHeader", "Docanary")]).await,
        "main"
    );

    // A pattern that cannot be matched: requests with the header go to the main, even
    // with the cookie saying always; and the Ingress is told.
    let h = "broken.example.com";
    let both = [
        ("CanaryByHeader", "DoCanary"),
        ("Cookie", "CanaryByCookie=always"),
    ];
    assert_eq!(who(http, h, &both).await, "main");
    assert_eq!(
        who(http, h, &[("Cookie", "CanaryByCookie=always")]).await,
        "canary"
    );
    ctl.wait_log("the broken pattern", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/broken-canary")
                && line.contains("nginx.ingress.kubernetes.io/canary-by-header-pattern")
        })
    })
    .await;

    // By cookie: always and never, 50 times each; anything else is ignored.
    let h = "cookie.example.com";
    for _ in 0..50 {
        assert_eq!(
            who(http, h, &[("Cookie", "Canary-By-Cookie=always")]).await,
            "canary"
        );
        assert_eq!(
            who(http, h, &[("Cookie", "Canary-By-Cookie=never")]).await,
            "main"
        );
        assert_eq!(
            who(http, h, &[("Cookie", "Canary-By-Cookie=badcookievalue")]).await,
            "main"
        );
    }

    // By weight: 30 of 100 over 1000 requests (mean 300, sd 14.5), a full weight, and
    // 100 of a total of 200.
    let mut to_canary = 0;
    for _ in 0..1000 {
        if who(http, "weight.example.com", &[]).await == "canary" {
            to_canary += 1;
        }
    }
    assert!(
        (230..=370).contains(&to_canary),
        "weight 30: {to_canary} of 1000"
    );
    for _ in 0..50 {
        assert_eq!(who(http, "all.example.com", &[]).await, "canary");
    }
    let mut half = 0;
    for _ in 0..200 {
        if who(http, "half.example.com", &[]).await == "canary" {
            half += 1;
        }
    }
    assert!((60..=140).contains(&half), "100 of 200: {half} of 200");

    // A canary without a main is not served, even when asked for, and is reported.
    let (status, _, _) = fetch(http, "solo.example.com", &[("CanaryByHeader", "always")]).await;
    assert_eq!(status, 404);
    ctl.wait_log("the lone canary", FOLLOW, |l| {
        l.lines().any(|line| {
            line.contains("default/solo-canary") && line.contains("canary_without_main")
        })
    })
    .await;

    // Sticky (the default): a session started on the canary stays there.
    let h = "sticky.example.com";
    let (status, headers, body) = fetch(http, h, &[("ForceCanary", "yes")]).await;
    assert_eq!((status, body.as_str()), (200, "canary /info"));
    let cookie = set_cookie(&headers, "aff").expect("the canary sets the main's affinity cookie");
    for _ in 0..50 {
        assert_eq!(who(http, h, &[("Cookie", &cookie)]).await, "canary");
    }
    // A session of the main stays on the main, even when the header asks for the canary,
    // as ingress-nginx's balancer checks the main's affinity first.
    let (_, headers, body) = fetch(http, h, &[]).await;
    assert_eq!(body, "main /info");
    let cookie = set_cookie(&headers, "aff").expect("the main sets its affinity cookie");
    for _ in 0..20 {
        let with = [("Cookie", cookie.as_str()), ("ForceCanary", "yes")];
        assert_eq!(who(http, h, &with).await, "main");
    }

    // Legacy: the canary has no affinity of its own, so sets no cookie, and the weight
    // splits requests without cookies.
    let h = "legacy.example.com";
    let (_, headers, body) = fetch(http, h, &[("ForceCanary", "yes")]).await;
    assert_eq!(body, "canary /info");
    assert_eq!(set_cookie(&headers, "aff"), None);
    let mut canary_count = 0;
    for _ in 0..200 {
        if who(http, h, &[]).await == "canary" {
            canary_count += 1;
        }
    }
    assert!(
        (60..=140).contains(&canary_count),
        "legacy 50: {canary_count} of 200"
    );

    // Edits apply: the canary listens for another header from then on.
    let mut text = std::fs::read_to_string(dir.path().join("apps.yaml")).unwrap();
    let before = "  name: header-canary\n  annotations:\n    nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/canary-by-header: \"CanaryByHeader\"\n";
    assert!(text.contains(before));
    text = text.replace(before, &before.replace("\"CanaryByHeader\"", "\"Other\""));
    write_atomic(dir.path(), "apps.yaml", &text);
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        if who(http, "header.example.com", &[("Other", "always")]).await == "canary" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edit never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        who(http, "header.example.com", &[("CanaryByHeader", "always")]).await,
        "main"
    );
}
