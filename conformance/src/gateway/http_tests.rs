//! The GATEWAY-HTTP profile's tests of v1.6.1: for each, what the upstream Go test
//! checks, written again here against the binary's answers and its logged status.
//! Requests go to Portico's own listeners: every Gateway of a test shares them (see
//! the README's deliberate differences), where upstream gives each Gateway an address.

use http::Method;

use super::exchange::{get, Exchange, Redirect};
use super::world::{Check, Ctx, UNUSABLE_ADDRESS, USABLE_ADDRESS};
use super::{Case, Plan, TestFuture};

const APP_NS: &str = "gateway-conformance-app-backend";
const WEB_NS: &str = "gateway-conformance-web-backend";
const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";
const SAME_NS: &str = "same-namespace";

const CORE: &[&str] = &["Gateway", "HTTPRoute"];
const CORE_GRANT: &[&str] = &["Gateway", "HTTPRoute", "ReferenceGrant"];

/// `fn name(c) -> TestFuture` from an async body.
macro_rules! test_fn {
    ($name:ident, |$c:ident| $body:block) => {
        fn $name($c: &mut Ctx) -> TestFuture<'_> {
            Box::pin(async move { $body })
        }
    };
}

/// The common opening of the upstream tests: the Gateway and the routes accepted, and
/// each route's references resolved.
async fn accepted_and_resolved(c: &mut Ctx, gateway: &str, routes: &[&str]) -> Check {
    c.accepted(gateway, routes).await?;
    for r in routes {
        c.resolved(r, gateway).await?;
    }
    Ok(())
}

test_fn!(simple_same_namespace, |c| {
    accepted_and_resolved(c, SAME_NS, &["gateway-conformance-infra-test"]).await?;
    c.expect(&get("/").to(V1)).await
});

test_fn!(cross_namespace, |c| {
    let route = "gateway-conformance-web-backend/cross-namespace";
    accepted_and_resolved(c, "backend-namespaces", &[route]).await?;
    c.expect(&get("/").to("web-backend").ns(WEB_NS)).await
});

test_fn!(exact_path_matching, |c| {
    accepted_and_resolved(c, SAME_NS, &["exact-matching"]).await?;
    c.expect_all(&[
        get("/one").to(V1),
        get("/two").to(V2),
        get("/").status(404),
        get("/one/example").status(404),
        get("/two/").status(404),
        get("/Two").status(404),
    ])
    .await
});

test_fn!(header_matching, |c| {
    accepted_and_resolved(c, SAME_NS, &["header-matching"]).await?;
    c.expect_all(&[
        get("/").header("Version", "one").to(V1),
        get("/").header("Version", "two").to(V2),
        get("/")
            .header("Version", "two")
            .header("Color", "orange")
            .to(V1),
        get("/")
            .header("Version", "two")
            .header("Color", "blue")
            .to(V2),
        get("/").header("Color", "orange").status(404),
        get("/").header("Some-Other-Header", "one").status(404),
        get("/").header("Color", "blue").to(V1),
        get("/").header("Color", "green").to(V1),
        get("/").header("Color", "red").to(V2),
        get("/").header("Color", "yellow").to(V2),
        get("/").header("Color", "purple").status(404),
    ])
    .await
});

test_fn!(hostname_intersection, |c| {
    let gw = "httproute-hostname-intersection";
    let routes = [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
    ];
    accepted_and_resolved(c, gw, &routes).await?;
    c.expect_all(&[
        get("/s1").host("very.specific.com").to(V1),
        get("/s1").host("very.specific.com:1234").to(V1),
        get("/s1").host("non.matching.com").status(404),
        get("/s1").host("foo.nonmatchingwildcard.io").status(404),
        get("/s1").host("foo.wildcard.io").status(404),
        get("/non-matching-prefix")
            .host("very.specific.com")
            .status(404),
        get("/s2").host("foo.wildcard.io").to(V2),
        get("/s2").host("bar.wildcard.io").to(V2),
        get("/s2").host("foo.bar.wildcard.io").to(V2),
        get("/s2").host("non.matching.com").status(404),
        get("/s2").host("wildcard.io").status(404),
        get("/s2").host("very.specific.com").status(404),
        get("/non-matching-prefix")
            .host("foo.wildcard.io")
            .status(404),
        get("/s3").host("very.specific.com").to(V3),
        get("/s3").host("non.matching.com").status(404),
        get("/s3").host("foo.specific.com").status(404),
        get("/s3").host("foo.wildcard.io").status(404),
        get("/non-matching-prefix")
            .host("very.specific.com")
            .status(404),
        get("/s4").host("foo.anotherwildcard.io").to(V1),
        get("/s4").host("bar.anotherwildcard.io").to(V1),
        get("/s4").host("foo.bar.anotherwildcard.io").to(V1),
        get("/s4").host("anotherwildcard.io").status(404),
        get("/s4").host("foo.wildcard.io").status(404),
        get("/s4").host("very.specific.com").status(404),
        get("/non-matching-prefix")
            .host("foo.anotherwildcard.io")
            .status(404),
    ])
    .await?;
    // A route whose hostnames meet no listener's is not accepted, and serves nothing.
    c.route_condition(
        "no-intersecting-hosts",
        gw,
        None,
        "Accepted",
        false,
        Some("NoMatchingListenerHostname"),
    )
    .await?;
    c.expect_all(&[
        get("/s5").host("specific.but.wrong.com").status(404),
        get("/s5").host("wildcard.io").status(404),
    ])
    .await?;
    // Only accepted routes count in attachedRoutes.
    let ok = [("Accepted", true, None), ("ResolvedRefs", true, None)];
    c.listener(gw, "listener-1", Some(2), &ok).await?;
    c.listener(gw, "listener-2", Some(1), &ok).await?;
    c.listener(gw, "listener-3", Some(1), &ok).await?;
    for listener in ["listener-1", "listener-2", "listener-3"] {
        c.supported_kinds(gw, listener, &["HTTPRoute"]).await?;
    }
    let all = "httproute-hostname-intersection-all";
    accepted_and_resolved(c, all, &[all]).await?;
    c.expect_all(&[
        get("/").host("first.com").to(V2),
        get("/").host("sub.first.com").to(V2),
        get("/").host("second.com").to(V2),
        get("/").host("sub.second.com").to(V2),
        get("/").host("third.com").status(404),
        get("/").host("sub.third.com").status(404),
    ])
    .await
});

test_fn!(listener_hostname_matching, |c| {
    let gw = "httproute-listener-hostname-matching";
    accepted_and_resolved(c, gw, &["backend-v1", "backend-v2", "backend-v3"]).await?;
    c.expect_all(&[
        get("/").host("bar.com").to(V1),
        get("/").host("foo.bar.com").to(V2),
        get("/").host("baz.bar.com").to(V3),
        get("/").host("boo.bar.com").to(V3),
        get("/").host("multiple.prefixes.bar.com").to(V3),
        get("/").host("multiple.prefixes.foo.com").to(V3),
        get("/").host("foo.com").status(404),
        get("/").host("no.matching.host").status(404),
    ])
    .await
});

test_fn!(listener_port_matching, |c| {
    let gw = "httproute-listener-port-matching";
    accepted_and_resolved(c, gw, &["backend-v1", "backend-v2", "backend-v3"]).await?;
    // Upstream sends each request to the Gateway's port named in the Host; every
    // port here is Portico's one HTTP listener, and the Host carries the port.
    c.expect_all(&[
        get("/").host("foo.com").to(V1),
        get("/").host("foo.com:8080").to(V2),
        get("/").host("bar.com:8080").to(V2),
        get("/").host("foo.com:8090").to(V3),
        get("/").host("bar.com:8090").status(404),
    ])
    .await
});

test_fn!(matching_across_routes, |c| {
    accepted_and_resolved(c, SAME_NS, &["matching-part1", "matching-part2"]).await?;
    c.expect_all(&[
        get("/").host("example.com").to(V1),
        get("/example").host("example.com").to(V1),
        get("/example").host("example.net").to(V1),
        get("/example")
            .host("example.com")
            .header("Version", "one")
            .to(V1),
        get("/v2").host("example.com").to(V2),
        get("/v2").host("example.net").to(V1),
        get("/v2/example").host("example.com").to(V2),
        get("/").host("example.com").header("Version", "two").to(V2),
    ])
    .await
});

test_fn!(matching, |c| {
    accepted_and_resolved(c, SAME_NS, &["matching"]).await?;
    c.expect_all(&[
        get("/").to(V1),
        get("/example").to(V1),
        get("/").header("Version", "one").to(V1),
        get("/v2").to(V2),
        get("/v2/example").to(V2),
        get("/").header("Version", "two").to(V2),
        get("/v2/").to(V2),
        get("/v2example").to(V1),
        get("/foo/v2/example").to(V1),
    ])
    .await
});

test_fn!(method_matching, |c| {
    accepted_and_resolved(c, SAME_NS, &["method-matching"]).await?;
    c.expect_all(&[
        get("/").method(Method::POST).to(V1),
        get("/").method(Method::GET).to(V2),
        get("/").method(Method::HEAD).status(404),
        get("/path1").method(Method::GET).to(V1),
        get("/").method(Method::PUT).header("version", "one").to(V2),
        get("/path2")
            .method(Method::POST)
            .header("version", "two")
            .to(V3),
        get("/path3").method(Method::PATCH).to(V1),
        get("/path4")
            .method(Method::DELETE)
            .header("version", "three")
            .to(V1),
        get("/").method(Method::PUT).status(404),
        get("/path4").method(Method::DELETE).status(404),
        get("/path5").method(Method::PATCH).to(V1),
        get("/")
            .method(Method::PATCH)
            .header("version", "four")
            .to(V2),
    ])
    .await
});

test_fn!(path_match_order, |c| {
    accepted_and_resolved(c, SAME_NS, &["path-matching-order"]).await?;
    c.expect_all(&[
        get("/match/exact/one").to(V3),
        get("/match/exact").to(V2),
        get("/match").to(V1),
        get("/match/prefix/one/any").to(V2),
        get("/match/prefix/any").to(V1),
        get("/match/any").to(V3),
    ])
    .await
});

test_fn!(query_param_matching, |c| {
    accepted_and_resolved(c, SAME_NS, &["query-param-matching"]).await?;
    c.expect_all(&[
        get("/?animal=whale").to(V1),
        get("/?animal=dolphin").to(V2),
        get("/?animal=dolphin&color=blue").to(V3),
        get("/?ANIMAL=Whale").to(V3),
        get("/?animal=whale&otherparam=irrelevant").to(V1),
        get("/?animal=dolphin&color=yellow").to(V2),
        get("/?color=blue").status(404),
        get("/?animal=dog").status(404),
        get("/?animal=whaledolphin").status(404),
        get("/").status(404),
        get("/path1?animal=whale").to(V1),
        get("/?animal=whale").header("version", "one").to(V2),
        get("/path2?animal=whale").header("version", "two").to(V3),
        get("/path3?animal=shark").to(V1),
        get("/path4?animal=kraken")
            .header("version", "three")
            .to(V1),
        get("/?animal=shark").status(404),
        get("/path4?animal=kraken").status(404),
        get("/path5?animal=hydra").to(V1),
        get("/?animal=hydra").header("version", "four").to(V3),
    ])
    .await
});

test_fn!(invalid_backendref_unknown_kind, |c| {
    let route = "invalid-backend-ref-unknown-kind";
    c.accepted(SAME_NS, &[route]).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "ResolvedRefs",
        false,
        Some("InvalidKind"),
    )
    .await?;
    c.expect(&get("/v2").status(500)).await
});

test_fn!(invalid_cross_namespace_backend_ref, |c| {
    let route = "invalid-cross-namespace-backend-ref";
    c.accepted(SAME_NS, &[route]).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "ResolvedRefs",
        false,
        Some("RefNotPermitted"),
    )
    .await?;
    c.expect(&get("/").status(500)).await
});

test_fn!(invalid_cross_namespace_parent_ref, |c| {
    let route = "gateway-conformance-web-backend/invalid-cross-namespace-parent-ref";
    c.resolved(route, SAME_NS).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "Accepted",
        false,
        Some("NotAllowedByListeners"),
    )
    .await?;
    c.no_accepted_parents(route).await?;
    c.zero_routes(SAME_NS).await
});

test_fn!(invalid_nonexistent_backendref, |c| {
    let route = "invalid-nonexistent-backend-ref";
    c.accepted(SAME_NS, &[route]).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "ResolvedRefs",
        false,
        Some("BackendNotFound"),
    )
    .await?;
    c.expect(&get("/").status(500)).await
});

test_fn!(invalid_parentref_not_matching_listener_port, |c| {
    let route = "httproute-listener-not-matching-route-port";
    c.resolved(route, SAME_NS).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "Accepted",
        false,
        Some("NoMatchingParent"),
    )
    .await?;
    c.no_accepted_parents(route).await?;
    c.zero_routes(SAME_NS).await
});

test_fn!(invalid_parentref_not_matching_section_name, |c| {
    let route = "httproute-listener-not-matching-section-name";
    c.route_condition(
        route,
        SAME_NS,
        None,
        "Accepted",
        false,
        Some("NoMatchingParent"),
    )
    .await?;
    c.no_accepted_parents(route).await?;
    c.zero_routes(SAME_NS).await
});

test_fn!(invalid_parentref_section_name_not_matching_port, |c| {
    let route = "httproute-listener-section-name-not-matching-port";
    let gw = "gateway-with-one-not-matching-port-and-section-name-route";
    c.route_condition(route, gw, None, "Accepted", false, Some("NoMatchingParent"))
        .await?;
    c.no_accepted_parents(route).await?;
    c.zero_routes(gw).await
});

test_fn!(invalid_reference_grant, |c| {
    let route = "reference-grant";
    c.accepted(SAME_NS, &[route]).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "ResolvedRefs",
        false,
        Some("RefNotPermitted"),
    )
    .await?;
    c.expect(&get("/").status(500)).await
});

test_fn!(partially_invalid_reference_grant, |c| {
    let route = "invalid-reference-grant";
    c.accepted(SAME_NS, &[route]).await?;
    c.route_condition(
        route,
        SAME_NS,
        None,
        "ResolvedRefs",
        false,
        Some("RefNotPermitted"),
    )
    .await?;
    c.expect_all(&[
        get("/v2").status(500),
        get("/").to("app-backend-v1").ns(APP_NS),
    ])
    .await
});

test_fn!(reference_grant, |c| {
    let route = "reference-grant";
    accepted_and_resolved(c, SAME_NS, &[route]).await?;
    c.expect(&get("/").to("web-backend").ns(WEB_NS)).await?;
    // Deleting the grant takes the backend away: 500.
    c.delete(
        "ReferenceGrant",
        "gateway-conformance-web-backend/reference-grant",
    )?;
    c.expect(&get("/").status(500)).await
});

test_fn!(multiple_gateways, |c| {
    let shared = "multiple-gateways-shared-route";
    // Each Gateway at its own address: the requests go to the one last accepted.
    accepted_and_resolved(c, SAME_NS, &[shared, "same-namespace-dedicated-route"]).await?;
    c.expect_all(&[get("/shared").to(V1), get("/").to(V2)])
        .await?;
    accepted_and_resolved(
        c,
        "all-namespaces",
        &[shared, "all-namespaces-dedicated-route"],
    )
    .await?;
    c.expect_all(&[get("/shared").to(V1), get("/").to(V3)])
        .await
});

test_fn!(named_rule, |c| {
    accepted_and_resolved(c, SAME_NS, &["http-named-rules"]).await?;
    c.expect_all(&[get("/named"), get("/unnamed")]).await
});

test_fn!(omitted_backendrefs, |c| {
    accepted_and_resolved(c, SAME_NS, &["omitted-backendrefs"]).await?;
    c.expect_all(&[
        get("/forward").to(V1),
        get("/omitted-no-forward").status(500),
        get("/empty-no-forward").status(500),
    ])
    .await
});

test_fn!(redirect_303, |c| {
    accepted_and_resolved(c, SAME_NS, &["303-redirect"]).await?;
    c.expect(&get("/see-other").method(Method::POST).redirect(
        303,
        Redirect {
            path: Some("/see-other".into()),
            ..Redirect::default()
        },
    ))
    .await
});

test_fn!(redirect_307, |c| {
    accepted_and_resolved(c, SAME_NS, &["307-redirect"]).await?;
    c.expect(&get("/temporary").redirect(
        307,
        Redirect {
            path: Some("/temporary".into()),
            ..Redirect::default()
        },
    ))
    .await
});

test_fn!(redirect_308, |c| {
    accepted_and_resolved(c, SAME_NS, &["308-redirect"]).await?;
    c.expect(&get("/permanent").redirect(
        308,
        Redirect {
            path: Some("/permanent".into()),
            ..Redirect::default()
        },
    ))
    .await
});

fn to(
    scheme: Option<&str>,
    host: Option<&str>,
    port: Option<&str>,
    path: Option<&str>,
) -> Redirect {
    Redirect {
        scheme: scheme.map(Into::into),
        host: host.map(Into::into),
        port: port.map(Into::into),
        path: path.map(Into::into),
    }
}

test_fn!(redirect_host_and_status, |c| {
    accepted_and_resolved(c, SAME_NS, &["redirect-host-and-status"]).await?;
    c.expect_all(&[
        get("/hostname-redirect").redirect(302, to(None, Some("example.org"), None, None)),
        get("/host-and-status").redirect(301, to(None, Some("example.org"), None, None)),
    ])
    .await
});

test_fn!(redirect_path, |c| {
    accepted_and_resolved(c, SAME_NS, &["redirect-path"]).await?;
    let org = Some("example.org");
    c.expect_all(&[
        get("/original-prefix/lemon")
            .redirect(302, to(None, None, None, Some("/replacement-prefix/lemon"))),
        get("/full/path/original")
            .redirect(302, to(None, None, None, Some("/full-path-replacement"))),
        get("/path-and-host").redirect(302, to(None, org, None, Some("/replacement-prefix"))),
        get("/path-and-status").redirect(301, to(None, None, None, Some("/replacement-prefix"))),
        get("/full-path-and-host").redirect(302, to(None, org, None, Some("/replacement-full"))),
        get("/full-path-and-status").redirect(301, to(None, None, None, Some("/replacement-full"))),
    ])
    .await
});

test_fn!(redirect_port, |c| {
    accepted_and_resolved(c, SAME_NS, &["redirect-port"]).await?;
    let (org, port) = (Some("example.org"), Some("8083"));
    c.expect_all(&[
        get("/port").redirect(302, to(None, None, port, None)),
        get("/port-and-host").redirect(302, to(None, org, port, None)),
        get("/port-and-status").redirect(301, to(None, None, port, None)),
        get("/port-and-host-and-status").redirect(302, to(None, org, port, None)),
    ])
    .await
});

test_fn!(redirect_scheme, |c| {
    accepted_and_resolved(c, SAME_NS, &["redirect-scheme"]).await?;
    let (org, https) = (Some("example.org"), Some("https"));
    c.expect_all(&[
        get("/scheme").redirect(302, to(https, None, None, None)),
        get("/scheme-and-host").redirect(302, to(https, org, None, None)),
        get("/scheme-and-status").redirect(301, to(https, None, None, None)),
        get("/scheme-and-host-and-status").redirect(302, to(https, org, None, None)),
    ])
    .await
});

test_fn!(redirect_port_and_scheme, |c| {
    let (org, http_, https) = (Some("example.org"), Some("http"), Some("https"));
    // Each group goes to its own Gateway's address, as upstream's.
    accepted_and_resolved(c, SAME_NS, &["http-route-for-listener-on-port-80"]).await?;
    c.expect_all(&[
        get("/scheme-nil-and-port-nil").redirect(302, to(http_, org, None, None)),
        get("/scheme-nil-and-port-80").redirect(302, to(http_, org, None, None)),
        get("/scheme-nil-and-port-8080").redirect(302, to(http_, org, Some("8080"), None)),
        get("/scheme-https-and-port-nil").redirect(302, to(https, org, None, None)),
        get("/scheme-https-and-port-443").redirect(302, to(https, org, None, None)),
        get("/scheme-https-and-port-8443").redirect(302, to(https, org, Some("8443"), None)),
    ])
    .await?;
    accepted_and_resolved(
        c,
        "same-namespace-with-http-listener-on-8080",
        &["http-route-for-listener-on-port-8080"],
    )
    .await?;
    c.expect_all(&[
        get("/scheme-nil-and-port-nil")
            .host("example.org:8080")
            .redirect(302, to(http_, org, Some("8080"), None)),
        get("/scheme-nil-and-port-80")
            .host("example.org:8080")
            .redirect(302, to(http_, org, None, None)),
        get("/scheme-https-and-port-nil")
            .host("example.org:8080")
            .redirect(302, to(https, org, None, None)),
    ])
    .await?;
    accepted_and_resolved(
        c,
        "same-namespace-with-https-listener",
        &["http-route-for-listener-on-port-443"],
    )
    .await?;
    c.expect_all(&[
        get("/scheme-nil-and-port-nil")
            .https()
            .host("example.org")
            .redirect(302, to(https, org, None, None)),
        get("/scheme-nil-and-port-443")
            .https()
            .host("example.org")
            .redirect(302, to(https, org, None, None)),
        get("/scheme-nil-and-port-8443")
            .https()
            .host("example.org")
            .redirect(302, to(https, org, Some("8443"), None)),
        get("/scheme-http-and-port-nil")
            .https()
            .host("example.org")
            .redirect(302, to(http_, org, None, None)),
        get("/scheme-http-and-port-80")
            .https()
            .host("example.org")
            .redirect(302, to(http_, org, None, None)),
        get("/scheme-http-and-port-8080")
            .https()
            .host("example.org")
            .redirect(302, to(http_, org, Some("8080"), None)),
    ])
    .await
});

test_fn!(request_header_modifier, |c| {
    accepted_and_resolved(c, SAME_NS, &["request-header-modifier"]).await?;
    c.expect_all(&[
        get("/set")
            .header("Some-Other-Header", "val")
            .got_header("Some-Other-Header", "val")
            .got_header("X-Header-Set", "set-overwrites-values")
            .to(V1),
        get("/set")
            .header("Some-Other-Header", "val")
            .header("X-Header-Set", "some-other-value")
            .got_header("Some-Other-Header", "val")
            .got_header("X-Header-Set", "set-overwrites-values")
            .to(V1),
        get("/add")
            .header("Some-Other-Header", "val")
            .got_header("Some-Other-Header", "val")
            .got_header("X-Header-Add", "add-appends-values")
            .to(V1),
        get("/add")
            .header("Some-Other-Header", "val")
            .header("X-Header-Add", "some-other-value")
            .got_header("Some-Other-Header", "val")
            .got_header("X-Header-Add", "some-other-value,add-appends-values")
            .to(V1),
        get("/remove")
            .header("X-Header-Remove", "val")
            .no_headers()
            .got_absent("X-Header-Remove")
            .to(V1),
        get("/multiple")
            .header("X-Header-Set-2", "set-val-2")
            .header("X-Header-Add-2", "add-val-2")
            .header("X-Header-Remove-2", "remove-val-2")
            .header("Another-Header", "another-header-val")
            .got_header("X-Header-Set-1", "header-set-1")
            .got_header("X-Header-Set-2", "header-set-2")
            .got_header("X-Header-Add-1", "header-add-1")
            .got_header("X-Header-Add-2", "add-val-2,header-add-2")
            .got_header("X-Header-Add-3", "header-add-3")
            .got_header("Another-Header", "another-header-val")
            .got_absent("X-Header-Remove-1")
            .got_absent("X-Header-Remove-2")
            .to(V1),
        get("/case-insensitivity")
            .header("x-header-set", "original-val-set")
            .header("x-header-add", "original-val-add")
            .header("x-header-remove", "original-val-remove")
            .header("Another-Header", "another-header-val")
            .got_header("X-Header-Set", "header-set")
            .got_header("X-Header-Add", "original-val-add,header-add")
            .got_header("Another-Header", "another-header-val")
            .got_absent("x-header-remove")
            .got_absent("X-Header-Remove")
            .to(V1),
    ])
    .await
});

test_fn!(response_header_modifier, |c| {
    accepted_and_resolved(c, SAME_NS, &["response-header-modifier"]).await?;
    c.expect_all(&[
        get("/set")
            .backend_sets("Some-Other-Header", "val")
            .resp_header("Some-Other-Header", "val")
            .resp_header("X-Header-Set", "set-overwrites-values")
            .to(V1),
        get("/set")
            .backend_sets("Some-Other-Header", "val")
            .backend_sets("X-Header-Set", "some-other-value")
            .resp_header("Some-Other-Header", "val")
            .resp_header("X-Header-Set", "set-overwrites-values")
            .to(V1),
        get("/add")
            .backend_sets("Some-Other-Header", "val")
            .resp_header("Some-Other-Header", "val")
            .resp_header("X-Header-Add", "add-appends-values")
            .to(V1),
        get("/add")
            .backend_sets("Some-Other-Header", "val")
            .backend_sets("X-Header-Add", "some-other-value")
            .resp_header("Some-Other-Header", "val")
            .resp_header("X-Header-Add", "some-other-value,add-appends-values")
            .to(V1),
        get("/remove")
            .backend_sets("X-Header-Remove", "val")
            .resp_absent("X-Header-Remove")
            .to(V1),
        get("/multiple")
            .backend_sets("X-Header-Set-2", "set-val-2")
            .backend_sets("X-Header-Add-2", "add-val-2")
            .backend_sets("X-Header-Remove-2", "remove-val-2")
            .backend_sets("Another-Header", "another-header-val")
            .backend_sets("X-Header-Remove-1", "val")
            .resp_header("X-Header-Set-1", "header-set-1")
            .resp_header("X-Header-Set-2", "header-set-2")
            .resp_header("X-Header-Add-1", "header-add-1")
            .resp_header("X-Header-Add-2", "add-val-2,header-add-2")
            .resp_header("X-Header-Add-3", "header-add-3")
            .resp_header("Another-Header", "another-header-val")
            .resp_absent("X-Header-Remove-1")
            .resp_absent("X-Header-Remove-2")
            .to(V1),
        get("/case-insensitivity")
            .backend_sets("x-header-set", "original-val-set")
            .backend_sets("x-header-add", "original-val-add")
            .backend_sets("x-header-remove", "original-val-remove")
            .backend_sets("Another-Header", "another-header-val")
            .resp_header("X-Header-Set", "header-set")
            .resp_header("X-Header-Add", "original-val-add,header-add")
            .resp_header("X-Lowercase-Add", "lowercase-add")
            .resp_header("X-Mixedcase-Add-1", "mixedcase-add-1")
            .resp_header("X-Mixedcase-Add-2", "mixedcase-add-2")
            .resp_header("X-Uppercase-Add", "uppercase-add")
            .resp_header("Another-Header", "another-header-val")
            .resp_absent("x-header-remove")
            .resp_absent("X-Header-Remove")
            .to(V1),
        get("/response-and-request-header-modifiers")
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .header("X-Header-Echo", "echo")
            .got_header("X-Header-Add", "header-val-1")
            .got_header("X-Header-Set", "set-overwrites-values")
            .got_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .got_header("X-Header-Echo", "echo")
            .got_absent("X-Header-Remove")
            .backend_sets("X-Header-Set-2", "set-val-2")
            .backend_sets("X-Header-Add-2", "add-val-2")
            .backend_sets("X-Header-Remove-2", "remove-val-2")
            .backend_sets("Another-Header", "another-header-val")
            .backend_sets("X-Header-Remove-1", "remove-val-1")
            .backend_sets("X-Header-Echo", "echo")
            .resp_header("X-Header-Set-1", "header-set-1")
            .resp_header("X-Header-Set-2", "header-set-2")
            .resp_header("X-Header-Add-1", "header-add-1")
            .resp_header("X-Header-Add-2", "add-val-2,header-add-2")
            .resp_header("Another-Header", "another-header-val")
            .resp_header("X-Header-Echo", "echo")
            .resp_absent("X-Header-Remove-1")
            .resp_absent("X-Header-Remove-2")
            .to(V1),
    ])
    .await
});

test_fn!(rewrite_host, |c| {
    accepted_and_resolved(c, SAME_NS, &["rewrite-host"]).await?;
    c.expect_all(&[
        get("/one")
            .host("rewrite.example")
            .got_host("one.example.org")
            .no_headers()
            .to(V1),
        get("/two")
            .host("rewrite.example")
            .got_host("example.org")
            .no_headers()
            .to(V2),
        get("/rewrite-host-and-modify-headers")
            .host("rewrite.example")
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .got_host("test.example.org")
            .got_header("X-Header-Add", "header-val-1")
            .got_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .got_header("X-Header-Set", "set-overwrites-values")
            .got_absent("X-Header-Remove")
            .to(V2),
    ])
    .await
});

test_fn!(rewrite_path, |c| {
    accepted_and_resolved(c, SAME_NS, &["rewrite-path"]).await?;
    let modified = |path: &str, got: &str| {
        get(path)
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .header("X-Header-Set", "set-val")
            .got_path(got)
            .got_header("X-Header-Add", "header-val-1")
            .got_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .got_header("X-Header-Set", "set-overwrites-values")
            .got_absent("X-Header-Remove")
            .to(V1)
    };
    c.expect_all(&[
        get("/prefix/one/two")
            .got_path("/one/two")
            .no_headers()
            .to(V1),
        get("/strip-prefix/three")
            .got_path("/three")
            .no_headers()
            .to(V1),
        get("/strip-prefix").got_path("/").no_headers().to(V1),
        get("/full/one/two").got_path("/one").no_headers().to(V1),
        modified("/full/rewrite-path-and-modify-headers/test", "/test"),
        modified("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ])
    .await
});

test_fn!(timeout_request, |c| {
    accepted_and_resolved(c, SAME_NS, &["request-timeout"]).await?;
    c.expect_all(&[
        get("/request-timeout"),
        get("/request-timeout?delay=1s").status(504),
        get("/disable-request-timeout?delay=1s"),
    ])
    .await
});

test_fn!(timeout_backend_request, |c| {
    accepted_and_resolved(c, SAME_NS, &["backend-request-timeout"]).await?;
    c.expect_all(&[
        get("/backend-timeout"),
        get("/backend-timeout?delay=1s").status(504),
        get("/disable-backend-timeout?delay=1s"),
    ])
    .await
});

test_fn!(backend_protocol_h2c, |c| {
    accepted_and_resolved(c, SAME_NS, &["backend-protocol-h2c"]).await?;
    c.expect(&get("/").to(V1)).await
});

test_fn!(service_types, |c| {
    accepted_and_resolved(c, SAME_NS, &["service-types"]).await?;
    // As upstream's set-up: the selector-less Services' EndpointSlices get the
    // addresses of infra-backend-v1's pods (one slice per pod here, as each echo pod
    // listens on a port of its own).
    let pods = c.slices_of(super::exchange::INFRA_NS, V1);
    for svc in ["manual-endpointslices", "headless-manual-endpointslices"] {
        for (i, slice) in pods.iter().enumerate() {
            let mut slice = slice.clone();
            let name = match i {
                0 => format!("{svc}-ip4"),
                _ => format!("{svc}-ip4-{i}"),
            };
            slice["metadata"]["name"] = name.into();
            slice["metadata"]["labels"]["kubernetes.io/service-name"] = svc.into();
            c.apply(&slice)?;
        }
    }
    c.expect_all(&[
        get("/manual-endpointslices").to(V1),
        get("/headless-manual-endpointslices").to(V1),
        get("/headless").to(V1),
    ])
    .await
});

test_fn!(https_listener, |c| {
    let gw = "same-namespace-with-https-listener";
    accepted_and_resolved(
        c,
        gw,
        &["httproute-https-test", "httproute-https-test-no-hostname"],
    )
    .await?;
    c.expect_all(&[
        get("/").https().host("example.org").to(V1),
        get("/").https().host("unknown-example.org").status(404),
        get("/").https().host("second-example.org").to(V2),
    ])
    .await
});

test_fn!(weight, |c| {
    accepted_and_resolved(c, SAME_NS, &["weighted-backends"]).await?;
    c.expect(&get("/")).await?;
    // Upstream's rule: each backend's share within a tolerance of its weight.
    c.weights(&get("/"), 500, &[(V1, 0.7), (V2, 0.3), (V3, 0.0)], 0.07)
        .await
});

// Both Gateways of the test, each with listeners for no hostname, `*.example.com`,
// `*.foo.example.com` and `abc.foo.example.com` and a route attached to each: a
// request answers only from the route of the most specific listener its host matches.
test_fn!(http_listener_isolation, |c| {
    let cases = |_: ()| {
        let ok = |host: &str, path: &str| get(path).host(host).to(V1);
        let none = |host: &str, path: &str| get(path).host(host).status(404);
        vec![
            ok("bar.com", "/empty-hostname"),
            none("bar.com", "/wildcard-example-com"),
            none("bar.com", "/wildcard-foo-example-com"),
            none("bar.com", "/abc-foo-example-com"),
            none("bar.example.com", "/empty-hostname"),
            ok("bar.example.com", "/wildcard-example-com"),
            none("bar.example.com", "/wildcard-foo-example-com"),
            none("bar.example.com", "/abc-foo-example-com"),
            none("bar.foo.example.com", "/empty-hostname"),
            none("bar.foo.example.com", "/wildcard-example-com"),
            ok("bar.foo.example.com", "/wildcard-foo-example-com"),
            none("bar.foo.example.com", "/abc-foo-example-com"),
            none("abc.foo.example.com", "/empty-hostname"),
            none("abc.foo.example.com", "/wildcard-example-com"),
            none("abc.foo.example.com", "/wildcard-foo-example-com"),
            ok("abc.foo.example.com", "/abc-foo-example-com"),
        ]
    };
    for (gw, suffix) in [
        ("http-listener-isolation", ""),
        (
            "http-listener-isolation-with-hostname-intersection",
            "-with-hostname-intersection",
        ),
    ] {
        let routes: Vec<String> = [
            "empty-hostname",
            "wildcard-example-com",
            "wildcard-foo-example-com",
            "abc-foo-example-com",
        ]
        .iter()
        .map(|r| format!("attaches-to-{r}{suffix}"))
        .collect();
        let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
        accepted_and_resolved(c, gw, &routes).await?;
    }
    // Both Gateways share Portico's listeners, and their routes answer the same way,
    // so one pass covers what upstream asks of each Gateway's address.
    c.expect_all(&cases(())).await
});

/// A path with upstream's request-id query parameter, so that the mirror's log can be
/// searched for this very request.
fn with_request_id(path: &str) -> String {
    format!(
        "{path}?gateway-api-conformance-request-id={:016x}",
        rand::random::<u64>()
    )
}

/// Upstream `ExpectMirroredRequest`: every mirror Deployment's pods answered the
/// request (`path?query`) too, within the timeout.
async fn mirrored(c: &mut Ctx, path: &str, mirrors: &[&str]) -> Check {
    let deadline = std::time::Instant::now() + super::world::CONSISTENCY_TIMEOUT;
    for m in mirrors {
        loop {
            if c.received_by(super::exchange::INFRA_NS, m)
                .iter()
                .any(|p| p == path)
            {
                c.notes.push(format!("ok: {path} mirrored to {m}"));
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{path} was not mirrored to {m}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The two upstream cases of the mirror tests: a plain mirror, and one with the rule's
/// request header filter applied to what the main backend gets.
async fn mirror_cases(c: &mut Ctx, route: &str, prefix: &str, mirrors: &[&str]) -> Check {
    c.accepted(SAME_NS, &[route]).await?;
    let plain = with_request_id(&format!("/{prefix}"));
    c.expect(&get(&plain).to(V1)).await?;
    mirrored(c, &plain, mirrors).await?;
    let modified = with_request_id(&format!("/{prefix}-and-modify-headers"));
    let modified = modified.replace(
        "multi-mirror-and-modify-headers",
        "multi-mirror-and-modify-request-headers",
    );
    c.expect(
        &get(&modified)
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .no_headers()
            .got_header("X-Header-Add", "header-val-1")
            .got_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .got_header("X-Header-Set", "set-overwrites-values")
            .got_absent("X-Header-Remove")
            .to(V1),
    )
    .await?;
    mirrored(c, &modified, mirrors).await
}

test_fn!(request_mirror, |c| {
    mirror_cases(c, "request-mirror", "mirror", &[V2]).await
});

test_fn!(request_multiple_mirrors, |c| {
    mirror_cases(c, "request-multiple-mirrors", "multi-mirror", &[V2, V3]).await
});

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`, which
/// upstream expects the gateway itself to answer with 200 or 204.
fn preflight(path: &str, origin: &str, method: &str) -> Exchange {
    get(path)
        .method(Method::OPTIONS)
        .header("Origin", origin)
        .header("access-control-request-method", method)
        .statuses(&[200, 204])
        .own_answer()
}

const ACAO: &str = "access-control-allow-origin";
const ACAC: &str = "access-control-allow-credentials";
const ACAM: &str = "access-control-allow-methods";
const ACAH: &str = "access-control-allow-headers";
const ACEH: &str = "access-control-expose-headers";
const ASKED_HEADERS: (&str, &str) = ("access-control-request-headers", "x-header-1, x-header-2");
const ALLOWED_HEADERS: &[&str] = &["x-header-1, x-header-2", "x-header-2, x-header-1"];

test_fn!(cors, |c| {
    let routes = [
        "cors-multiple-origins-methods-headers",
        "cors-wildcard-methods",
        "cors-wildcard-origin",
        "cors-wildcard-methods-headers",
    ];
    c.accepted(SAME_NS, &routes[..2]).await?;
    for r in routes {
        c.resolved(r, SAME_NS).await?;
    }
    // /cors-1: exact and `*.bar.com` origins, listed methods and headers, credentials.
    let allowed = |origin: &str| {
        preflight("/cors-1", origin, "GET")
            .header(ASKED_HEADERS.0, ASKED_HEADERS.1)
            .resp_one_of(ACAO, &[origin])
            .resp_one_of(ACAM, &["GET, OPTIONS", "OPTIONS, GET"])
            .resp_one_of(ACAH, ALLOWED_HEADERS)
            .resp_one_of(ACEH, &["x-header-3, x-header-4", "x-header-4, x-header-3"])
            .resp_one_of("access-control-max-age", &["3600"])
            .resp_one_of(ACAC, &["true"])
            .ignore_whitespace()
    };
    let simple = |origin: &str| {
        get("/cors-1")
            .header("Origin", origin)
            .header("access-control-request-method", "GET")
    };
    let wildcard_origin = |origin: &str| {
        preflight("/cors-wildcard-origin", origin, "PUT")
            .resp_one_of(ACAO, &[origin, "*"])
            .resp_one_of(ACAM, &["PUT"])
            .resp_absent(ACAC)
    };
    let put_wildcard_origin = |origin: &str| {
        get("/cors-wildcard-origin")
            .method(Method::PUT)
            .header("Origin", origin)
            .resp_one_of(ACAO, &[origin, "*"])
    };
    let other = "https://other.foo.com";
    c.expect_all(&[
        allowed("https://www.foo.com"),
        allowed("https://www.bar.com"),
        allowed("https://xpto.www.bar.com"),
        preflight("/cors-1", "https://foobar.com", "GET")
            .statuses(&[200, 204, 403])
            .resp_absent(ACAO),
        simple("https://www.foo.com")
            .header(ASKED_HEADERS.0, ASKED_HEADERS.1)
            .resp_header(ACAO, "https://www.foo.com"),
        simple("https://www.bar.com")
            .header(ASKED_HEADERS.0, ASKED_HEADERS.1)
            .resp_header(ACAO, "https://www.bar.com"),
        simple("https://foobar.com").resp_absent(ACAO),
        // /cors-2: `*` methods, no credentials.
        preflight("/cors-2", "https://www.foo.com", "POST")
            .resp_one_of(ACAM, &["POST", "*"])
            .resp_header(ACAO, "https://www.foo.com")
            .resp_absent(ACAC),
        preflight("/cors-2", "https://www.foo.com", "POST").resp_absent(ACAC),
        // `*` origins without credentials.
        wildcard_origin("https://foobar.com"),
        wildcard_origin("https://foobar.com:12345"),
        put_wildcard_origin("https://foobar.com:12345"),
        put_wildcard_origin("https://foobar.com").resp_absent(ACAC),
        // `*` everything, with and without credentials.
        preflight("/cors-wildcard-methods-headers", other, "PUT")
            .header(ASKED_HEADERS.0, ASKED_HEADERS.1)
            .resp_one_of(ACAO, &[other])
            .resp_one_of(ACAM, &["PUT"])
            .resp_one_of(ACAH, ALLOWED_HEADERS)
            .resp_one_of(ACAC, &["true"])
            .ignore_whitespace(),
        preflight("/cors-wildcard-methods-headers-unauth", other, "PUT")
            .header(ASKED_HEADERS.0, ASKED_HEADERS.1)
            .resp_one_of(ACAO, &[other, "*"])
            .resp_one_of(ACAM, &["PUT", "*"])
            .resp_one_of(ACAH, &[ALLOWED_HEADERS[0], ALLOWED_HEADERS[1], "*"])
            .resp_absent(ACAC)
            .ignore_whitespace(),
        get("/cors-wildcard-methods-headers")
            .header("Origin", other)
            .resp_one_of(ACAO, &[other])
            .resp_one_of(ACAC, &["true"]),
        get("/cors-wildcard-methods-headers-unauth")
            .header("Origin", other)
            .resp_one_of(ACAO, &[other, "*"])
            .resp_absent(ACAC),
    ])
    .await
});

// Upstream's rule: of 500 requests, the mirror gets `percent`% within three standard
// deviations of the binomial count, in one of five tries.
test_fn!(request_percentage_mirror, |c| {
    let route = "request-percentage-mirror";
    accepted_and_resolved(c, SAME_NS, &[route]).await?;
    let header_case = |path: &str| {
        get(path)
            .header("X-Header-Remove", "remove-val")
            .header("X-Header-Add-Append", "append-val-1")
            .no_headers()
            .got_header("X-Header-Add", "header-val-1")
            .got_header("X-Header-Add-Append", "append-val-1,header-val-2")
            .got_header("X-Header-Set", "set-overwrites-values")
            .got_absent("X-Header-Remove")
            .to(V1)
    };
    const TOTAL: f64 = 500.0;
    for (path, percent, modify) in [
        ("/percent-mirror", 20.0, false),
        ("/percent-mirror-fraction", 50.0, false),
        ("/percent-mirror-and-modify-headers", 35.0, true),
    ] {
        let ex = |p: &str| {
            if modify {
                header_case(p)
            } else {
                get(p).to(V1)
            }
        };
        c.expect(&ex(path)).await?;
        let p: f64 = percent / 100.0;
        let margin = 3.0 * (TOTAL * p * (1.0 - p)).sqrt();
        let (min, max) = (TOTAL * p - margin, TOTAL * p + margin);
        let mut last = String::new();
        let mut held = false;
        for _ in 0..5 {
            let with_id = with_request_id(path);
            let one = ex(&with_id);
            for _ in 0..TOTAL as usize {
                c.expect_once(&one).await?;
            }
            // Mirrors are sent aside from the answer: let the last ones land.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let got = c
                .received_by(super::exchange::INFRA_NS, V2)
                .iter()
                .filter(|r| **r == with_id)
                .count() as f64;
            if (min..=max).contains(&got) {
                c.notes
                    .push(format!("ok: {path}: {got} of {TOTAL} mirrored"));
                held = true;
                break;
            }
            last = format!("{path}: {got} of {TOTAL} mirrored, expected {min:.1}..{max:.1}");
        }
        if !held {
            return Err(last);
        }
    }
    Ok(())
});

// Each backendRef's filter sets `Backend` to its own name: of 100 requests, every one
// must reach a pod of the backend its header names.
test_fn!(request_header_modifier_backend_weights, |c| {
    let route = "request-header-modifier-backend-weights";
    accepted_and_resolved(c, SAME_NS, &[route]).await?;
    c.expect(&get("/")).await?;
    for _ in 0..100 {
        let echo = c.echo_once(&get("/")).await?;
        let backend = echo.header("Backend");
        if backend.len() != 1 {
            return Err(format!("expected one Backend header, got {backend:?}"));
        }
        if !echo.pod.starts_with(&backend[0]) {
            return Err(format!(
                "answered by pod {}, but the Backend header says {}",
                echo.pod, backend[0]
            ));
        }
    }
    Ok(())
});

/// A request the upstream `MakeRequestAndExpectFailure` expects to fail: any error
/// status (upstream takes anything but a 200, five times in a row).
fn fails(path: &str) -> super::exchange::Exchange {
    get(path)
        .host("abc.example.com")
        .statuses(&(400..600).collect::<Vec<u16>>())
}

const POLICY_ACCEPTED: (&str, bool, &str) = ("Accepted", true, "Accepted");
const POLICY_RESOLVED: (&str, bool, &str) = ("ResolvedRefs", true, "ResolvedRefs");
const POLICY_NO_VALID_CA: (&str, bool, &str) = ("Accepted", false, "NoValidCACertificate");
const POLICY_INVALID_CA_REF: (&str, bool, &str) =
    ("ResolvedRefs", false, "InvalidCACertificateRef");

async fn policy_has(c: &mut Ctx, policy: &str, gw: &str, conds: &[(&str, bool, &str)]) -> Check {
    for (t, st, r) in conds {
        c.policy_condition(policy, gw, t, *st, Some(r)).await?;
    }
    Ok(())
}

test_fn!(backend_tls_policy, |c| {
    // Re-encrypt: HTTPS in at the listener, TLS out to the backend with the
    // policy's hostname as SNI.
    let https_gw = "same-namespace-with-https-listener";
    c.accepted(https_gw, &["backendtlspolicy-reencrypt"])
        .await?;
    c.resolved("backendtlspolicy-reencrypt", https_gw).await?;
    let ok = [POLICY_ACCEPTED, POLICY_RESOLVED];
    policy_has(c, "normative-test", https_gw, &ok).await?;
    c.expect(
        &get("/backendtlspolicy")
            .https()
            .host("https-listener.org")
            .got_sni("abc.example.com")
            .to("tls-backend"),
    )
    .await?;

    c.accepted(SAME_NS, &["backendtlspolicy"]).await?;
    c.resolved("backendtlspolicy", SAME_NS).await?;
    policy_has(c, "normative-test", SAME_NS, &ok).await?;
    c.expect(
        &get("/backendtlspolicy")
            .host("abc.example.com")
            .to("tls-backend"),
    )
    .await?;
    // The backend's certificate is not for the policy's hostname.
    policy_has(c, "host-mismatch", SAME_NS, &ok).await?;
    c.expect(&fails("/backendtlspolicy-host-mismatch").host("abc.example.org"))
        .await?;
    // The backend's certificate is not from the policy's CA.
    policy_has(c, "cert-mismatch", SAME_NS, &ok).await?;
    c.expect(&fails("/backendtlspolicy-cert-mismatch")).await?;

    // The CA ConfigMap followed as it comes, changes and goes.
    let policy = "reconcile-test";
    policy_has(c, policy, SAME_NS, &ok).await?;
    let shared = c.object("ConfigMap", "tls-checks-ca-certificate")?;
    let mut doc = c.object("BackendTLSPolicy", policy)?;
    let own = "tls-checks-ca-certificate-reconcile-test";
    doc["spec"]["validation"]["caCertificateRefs"] =
        serde_json::json!([{"group": "", "kind": "ConfigMap", "name": own}]);
    c.apply(&doc)?;
    let invalid = [POLICY_NO_VALID_CA, POLICY_INVALID_CA_REF];
    policy_has(c, policy, SAME_NS, &invalid).await?;
    let mut map = shared.clone();
    map["metadata"]["name"] = own.into();
    c.apply(&map)?;
    policy_has(c, policy, SAME_NS, &ok).await?;
    map["data"]["ca.crt"] = "".into();
    c.apply(&map)?;
    policy_has(c, policy, SAME_NS, &invalid).await?;
    map["data"]["ca.crt"] = shared["data"]["ca.crt"].clone();
    c.apply(&map)?;
    policy_has(c, policy, SAME_NS, &ok).await
});

test_fn!(backend_tls_policy_san, |c| {
    let route = "backendtlspolicy-san-test";
    c.accepted(SAME_NS, &[route]).await?;
    c.resolved(route, SAME_NS).await?;
    for (policy, good) in [
        ("san-dns", true),
        ("san-dns-mismatch", false),
        ("san-uri", true),
        ("san-uri-mismatch", false),
        ("multiple-sans", true),
        ("multiple-mismatch-sans", false),
    ] {
        c.policy_condition(policy, SAME_NS, "Accepted", true, Some("Accepted"))
            .await?;
        let path = format!("/backendtlspolicy-{policy}");
        let ex = if good {
            get(&path).host("abc.example.com").to("tls-backend")
        } else {
            fails(&path)
        };
        c.expect(&ex).await?;
    }
    Ok(())
});

test_fn!(backend_tls_policy_conflict_resolution, |c| {
    let route = "backendtlspolicy-conflict-resolution";
    c.accepted(SAME_NS, &[route]).await?;
    c.resolved(route, SAME_NS).await?;
    let conflicted = ("Accepted", false, "Conflicted");
    for (first, second, path) in [
        (
            "conflicted-without-section-name-1",
            Some("conflicted-without-section-name-2"),
            "/backendtlspolicy-conflicted-without-section-name",
        ),
        (
            "conflicted-with-section-name-1",
            Some("conflicted-with-section-name-2"),
            "/backendtlspolicy-conflicted-with-section-name",
        ),
        (
            "not-conflicted-with-section-name",
            Some("not-conflicted-without-section-name"),
            "/backendtlspolicy-not-conflicted-with-section-name",
        ),
    ] {
        policy_has(c, first, SAME_NS, &[POLICY_ACCEPTED]).await?;
        if let Some(second) = second {
            let want = if first.starts_with("not-") {
                POLICY_ACCEPTED
            } else {
                conflicted
            };
            policy_has(c, second, SAME_NS, &[want]).await?;
        }
        c.expect(&get(path).host("abc.example.com")).await?;
    }
    c.expect(&get("/backendtlspolicy-not-conflicted-without-section-name").host("abc.example.com"))
        .await
});

test_fn!(backend_tls_policy_invalid_ca_ref, |c| {
    let route = "backendtlspolicy-invalid-ca-certificate-ref";
    c.accepted(SAME_NS, &[route]).await?;
    for policy in [
        "nonexistent-ca-certificate-ref",
        "malformed-ca-certificate-ref",
    ] {
        policy_has(
            c,
            policy,
            SAME_NS,
            &[POLICY_NO_VALID_CA, POLICY_INVALID_CA_REF],
        )
        .await?;
        c.expect(
            &get(&format!("/backendtlspolicy-{policy}"))
                .host("abc.example.com")
                .statuses(&[500, 502, 503]),
        )
        .await?;
    }
    Ok(())
});

test_fn!(backend_tls_policy_invalid_kind, |c| {
    c.accepted(SAME_NS, &["backendtlspolicy-invalid-kind-test"])
        .await?;
    let invalid_kind = ("ResolvedRefs", false, "InvalidKind");
    policy_has(
        c,
        "invalid-kind",
        SAME_NS,
        &[POLICY_NO_VALID_CA, invalid_kind],
    )
    .await?;
    c.expect(
        &get("/backendtlspolicy-invalid-kind")
            .host("abc.example.com")
            .statuses(&[500, 502, 503]),
    )
    .await
});

test_fn!(backend_tls_policy_observed_generation_bump, |c| {
    bump(c, "BackendTLSPolicy", "observed-generation-bump", |doc| {
        doc["spec"]["validation"]["hostname"] = "foo.example.com".into();
    })
    .await?;
    c.policy_condition("observed-generation-bump", SAME_NS, "Accepted", true, None)
        .await
});

/// Upstream's WebSocket check: dial `ws://GATEWAY/ws`, send a text and a binary
/// message, and get each back as sent.
async fn websocket_echo(c: &Ctx) -> Check {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let proxy = c.proxy().http;
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let url = format!("ws://{proxy}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .map_err(|e| format!("dialing {url}: {e}"))?;
    for msg in [
        Message::text("Websocket Support!"),
        Message::binary(vec![1u8, 2, 3, 4, 5, 6, 7]),
    ] {
        ws.send(msg.clone())
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .map_err(|_| "no reply within 5s".to_owned())?
            .ok_or("the connection closed")?
            .map_err(|e| format!("receiving: {e}"))?;
        if got != msg {
            return Err(format!("sent {msg:?}, got back {got:?}"));
        }
    }
    Ok(())
}

test_fn!(backend_protocol_websocket, |c| {
    c.accepted(SAME_NS, &["backend-protocol-ws"]).await?;
    // Upstream `AwaitConvergence`: the required successes in a row, in the time.
    let deadline = std::time::Instant::now() + super::world::CONSISTENCY_TIMEOUT;
    let mut streak = 0;
    loop {
        match websocket_echo(c).await {
            Ok(()) => {
                streak += 1;
                if streak >= super::world::REQUIRED_SUCCESSES {
                    return Ok(());
                }
            }
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => {
                streak = 0;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
});

/// Labels conditions of `all` that do not carry `generation`.
fn stale(conds: &[super::status::Cond], generation: i64, at: &str, out: &mut Vec<String>) {
    for c in conds {
        if c.generation != Some(generation) {
            out.push(format!(
                "{at} {} has observedGeneration {:?}",
                c.type_, c.generation
            ));
        }
    }
}

/// Every condition of the object (its own, its listeners', its parents') carries
/// `generation` (upstream `*MustHaveLatestConditions`).
async fn latest_conditions(c: &mut Ctx, kind: &str, object: &str, generation: i64) -> Check {
    let o = super::world::key(object);
    let kind_ = kind.to_owned();
    c.wait_status(
        &format!("{kind} {o}: every condition at observedGeneration {generation}"),
        move |all| {
            let st = super::world::object(all, &kind_, &o)?;
            let mut bad = Vec::new();
            stale(&st.conditions, generation, "", &mut bad);
            for l in &st.listeners {
                stale(
                    &l.conditions,
                    generation,
                    &format!("listener {}", l.name),
                    &mut bad,
                );
            }
            for p in &st.parents {
                stale(
                    &p.conditions,
                    generation,
                    &format!("parent {}", p.gateway),
                    &mut bad,
                );
            }
            if st.conditions.is_empty() && st.listeners.is_empty() && st.parents.is_empty() {
                bad.push("no conditions".into());
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
    )
    .await
}

/// The folder has no API server to count generations: the test sets
/// `metadata.generation` as the API server would, 1 and then 2 with the change. (An API
/// server counts them itself, and an update's own value does not count there.)
async fn bump(
    c: &mut Ctx,
    kind: &str,
    object: &str,
    change: impl Fn(&mut serde_json::Value),
) -> Check {
    let mut doc = c.object(kind, object)?;
    doc["metadata"]["generation"] = 1.into();
    c.apply(&doc)?;
    latest_conditions(c, kind, object, 1).await?;
    change(&mut doc);
    doc["metadata"]["generation"] = 2.into();
    c.apply(&doc)?;
    latest_conditions(c, kind, object, 2).await
}

test_fn!(route_observed_generation_bump, |c| {
    let route = "observed-generation-bump";
    bump(c, "HTTPRoute", route, |doc| {
        doc["spec"]["rules"][0]["backendRefs"][0]["name"] = V2.into();
    })
    .await?;
    c.route_condition(route, SAME_NS, None, "Accepted", true, None)
        .await?;
    c.resolved(route, SAME_NS).await
});

test_fn!(gateway_observed_generation_bump, |c| {
    bump(c, "Gateway", "gateway-observed-generation-bump", |doc| {
        if let Some(list) = doc["spec"]["listeners"].as_array_mut() {
            list.push(serde_json::json!({
                "name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }));
        }
    })
    .await
});

test_fn!(gatewayclass_observed_generation_bump, |c| {
    let class = "gatewayclass-observed-generation-bump";
    let mut doc = c.object("GatewayClass", &format!("default/{class}"))?;
    doc["metadata"]["generation"] = 1.into();
    c.apply(&doc)?;
    class_generation(c, class, 1).await?;
    doc["spec"]["description"] = "We've modified the description".into();
    doc["metadata"]["generation"] = 2.into();
    c.apply(&doc)?;
    class_generation(c, class, 2).await
});

async fn class_generation(c: &mut Ctx, class: &str, generation: i64) -> Check {
    let class = class.to_owned();
    c.wait_status(
        &format!("GatewayClass {class}: Accepted at observedGeneration {generation}"),
        move |all| {
            let st = all
                .get(&("GatewayClass".to_owned(), class.clone()))
                .ok_or("no status")?;
            super::world::holds(&st.conditions, "Accepted", true, None)?;
            let g = st.condition("Accepted").and_then(|c| c.generation);
            if g == Some(generation) {
                Ok(())
            } else {
                Err(format!("observedGeneration {g:?}"))
            }
        },
    )
    .await
}

test_fn!(gateway_with_attached_routes, |c| {
    let ok = [("Accepted", true, None), ("ResolvedRefs", true, None)];
    c.listener("gateway-with-one-attached-route", "http", Some(1), &ok)
        .await?;
    c.supported_kinds("gateway-with-one-attached-route", "http", &["HTTPRoute"])
        .await?;
    let two = "gateway-with-two-attached-routes";
    c.listener(two, "http", Some(2), &ok).await?;
    c.supported_kinds(two, "http", &["HTTPRoute"]).await?;
    c.route_condition(
        "http-route-not-accepted",
        two,
        None,
        "Accepted",
        false,
        Some("NoMatchingListenerHostname"),
    )
    .await?;
    let unresolved = "unresolved-gateway-with-one-attached-unresolved-route";
    c.listener(
        unresolved,
        "tls",
        Some(1),
        &[("Programmed", false, None), ("ResolvedRefs", false, None)],
    )
    .await?;
    c.supported_kinds(unresolved, "tls", &["HTTPRoute"]).await?;
    c.route_condition(
        "http-route-4",
        unresolved,
        None,
        "ResolvedRefs",
        false,
        None,
    )
    .await
});

test_fn!(gateway_with_attached_routes_8080, |c| {
    let ok = [("Accepted", true, None), ("ResolvedRefs", true, None)];
    let gw = "gateway-with-two-listeners-and-one-attached-route";
    c.listener(gw, "http-unattached", Some(0), &ok).await?;
    c.listener(gw, "http", Some(1), &ok).await?;
    c.supported_kinds(gw, "http-unattached", &["HTTPRoute"])
        .await?;
    c.supported_kinds(gw, "http", &["HTTPRoute"]).await
});

test_fn!(gateway_invalid_route_kind, |c| {
    let bad = [("ResolvedRefs", false, Some("InvalidRouteKinds"))];
    c.listener("gateway-only-invalid-route-kind", "http", Some(0), &bad)
        .await?;
    c.supported_kinds("gateway-only-invalid-route-kind", "http", &[])
        .await?;
    c.listener(
        "gateway-supported-and-invalid-route-kind",
        "http",
        Some(0),
        &bad,
    )
    .await?;
    c.supported_kinds(
        "gateway-supported-and-invalid-route-kind",
        "http",
        &["HTTPRoute"],
    )
    .await
});

test_fn!(gateway_invalid_tls_configuration, |c| {
    let bad = [("ResolvedRefs", false, Some("InvalidCertificateRef"))];
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-group",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        c.listener(gw, "https", Some(0), &bad).await?;
        c.supported_kinds(gw, "https", &["HTTPRoute"]).await?;
    }
    Ok(())
});

test_fn!(gateway_secret_invalid_reference_grant, |c| {
    let bad = [("ResolvedRefs", false, Some("RefNotPermitted"))];
    c.listener(
        "gateway-secret-invalid-reference-grant",
        "https",
        Some(0),
        &bad,
    )
    .await?;
    c.supported_kinds(
        "gateway-secret-invalid-reference-grant",
        "https",
        &["HTTPRoute"],
    )
    .await
});

test_fn!(gateway_secret_missing_reference_grant, |c| {
    let bad = [("ResolvedRefs", false, Some("RefNotPermitted"))];
    c.listener(
        "gateway-secret-missing-reference-grant",
        "https",
        Some(0),
        &bad,
    )
    .await?;
    c.supported_kinds(
        "gateway-secret-missing-reference-grant",
        "https",
        &["HTTPRoute"],
    )
    .await
});

test_fn!(gateway_secret_reference_grant_all, |c| {
    let ok = [
        ("Programmed", true, Some("Programmed")),
        ("ResolvedRefs", true, None),
    ];
    c.listener(
        "gateway-secret-reference-grant-all-in-namespace",
        "https",
        Some(0),
        &ok,
    )
    .await?;
    c.supported_kinds(
        "gateway-secret-reference-grant-all-in-namespace",
        "https",
        &["HTTPRoute"],
    )
    .await
});

test_fn!(gateway_secret_reference_grant_specific, |c| {
    let ok = [
        ("Programmed", true, Some("Programmed")),
        ("ResolvedRefs", true, None),
    ];
    c.listener(
        "gateway-secret-reference-grant-specific",
        "https",
        Some(0),
        &ok,
    )
    .await?;
    c.supported_kinds(
        "gateway-secret-reference-grant-specific",
        "https",
        &["HTTPRoute"],
    )
    .await
});

test_fn!(gateway_unsupported_protocol, |c| {
    let only = "gateway-only-unsupported-protocols";
    c.gateway_condition(only, "Accepted", false, Some("ListenersNotValid"))
        .await?;
    let unsupported = [("Accepted", false, Some("UnsupportedProtocol"))];
    c.listener(only, "invalid", Some(0), &unsupported).await?;
    c.supported_kinds(only, "invalid", &[]).await?;
    let mixed = "gateway-supported-and-unsupported-protocols";
    c.gateway_condition(mixed, "Accepted", true, Some("ListenersNotValid"))
        .await?;
    c.listener(
        mixed,
        "http",
        Some(0),
        &[("Accepted", true, Some("Accepted"))],
    )
    .await?;
    c.supported_kinds(mixed, "http", &["HTTPRoute"]).await?;
    c.listener(mixed, "invalid", Some(0), &unsupported).await?;
    c.supported_kinds(mixed, "invalid", &[]).await
});

// Upstream's `GatewayStaticAddresses`: an unknown address type refuses the Gateway;
// without it, an address outside the pool leaves it Programmed=False; without that,
// it is served at the address of the pool it asked for, and at that one only.
test_fn!(gateway_static_addresses, |c| {
    let gw = "gateway-static-addresses";
    c.gateway_condition(gw, "Accepted", false, Some("UnsupportedAddress"))
        .await?;
    let drop_address = |c: &mut Ctx, value: &str, generation: i64| {
        let mut doc = c.object("Gateway", gw)?;
        if let Some(list) = doc["spec"]["addresses"].as_array_mut() {
            list.retain(|a| a["value"] != value);
        }
        doc["metadata"]["generation"] = generation.into();
        c.apply(&doc)
    };
    drop_address(c, "fake address teehee!", 2)?;
    latest_conditions(c, "Gateway", gw, 2).await?;
    c.gateway_condition(gw, "Accepted", true, Some("Accepted"))
        .await?;
    c.gateway_condition(gw, "Programmed", false, Some("AddressNotUsable"))
        .await?;
    drop_address(c, UNUSABLE_ADDRESS, 3)?;
    latest_conditions(c, "Gateway", gw, 3).await?;
    c.gateway_condition(gw, "Accepted", true, Some("Accepted"))
        .await?;
    c.gateway_condition(gw, "Programmed", true, Some("Programmed"))
        .await?;
    listeners_exactly(c, gw, &["http"], 0).await?;
    let key = super::world::key(gw);
    c.wait_status(&format!("Gateway {key} at {USABLE_ADDRESS} alone"), |all| {
        let st = super::world::object(all, "Gateway", &key)?;
        match &st.addresses[..] {
            [one] if one == USABLE_ADDRESS => Ok(()),
            other => Err(format!("status.addresses {other:?}")),
        }
    })
    .await
});

// Upstream's `GatewayOptionalAddressValue`: an `IPAddress` entry without a value gets
// an address.
test_fn!(gateway_optional_address_value, |c| {
    let gw = "gateway-without-address-value";
    c.gateway_condition(gw, "Accepted", true, Some("Accepted"))
        .await?;
    let key = super::world::key(gw);
    c.wait_status(&format!("Gateway {key} has an IP address"), |all| {
        let st = super::world::object(all, "Gateway", &key)?;
        match &st.addresses[..] {
            [one] if one.parse::<std::net::IpAddr>().is_ok() => Ok(()),
            other => Err(format!("status.addresses {other:?}")),
        }
    })
    .await
});

test_fn!(gateway_invalid_parameters_ref, |c| {
    c.gateway_condition(
        "gateway-invalid-parameters-ref",
        "Accepted",
        false,
        Some("InvalidParameters"),
    )
    .await
});

/// The Gateway's listeners are exactly `names`, each with `attached` routes, HTTPRoute
/// among its `supportedKinds`, Accepted and ResolvedRefs (upstream
/// `GatewayStatusMustHaveListeners`).
async fn listeners_exactly(c: &mut Ctx, gateway: &str, names: &[&str], attached: u32) -> Check {
    let gw = super::world::key(gateway);
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    c.wait_status(
        &format!("Gateway {gw} listeners exactly {names:?}"),
        move |all| {
            let st = super::world::object(all, "Gateway", &gw)?;
            let got: Vec<&str> = st.listeners.iter().map(|l| l.name.as_str()).collect();
            if got.len() != names.len() || names.iter().any(|n| !got.contains(&n.as_str())) {
                return Err(format!("listeners {got:?}"));
            }
            for l in &st.listeners {
                if l.attached_routes != attached {
                    return Err(format!(
                        "listener {} attachedRoutes {}",
                        l.name, l.attached_routes
                    ));
                }
                if !l.supported_kinds.iter().any(|k| k == "HTTPRoute") {
                    return Err(format!(
                        "listener {} supportedKinds {:?}",
                        l.name, l.supported_kinds
                    ));
                }
                super::world::holds(&l.conditions, "Accepted", true, None)?;
                super::world::holds(&l.conditions, "ResolvedRefs", true, None)?;
            }
            Ok(())
        },
    )
    .await
}

test_fn!(gateway_modify_listeners, |c| {
    let add = "gateway-add-listener";
    bump(c, "Gateway", add, |doc| {
        if let Some(list) = doc["spec"]["listeners"].as_array_mut() {
            list.push(serde_json::json!({
                "name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }));
        }
    })
    .await?;
    listeners_exactly(c, add, &["https", "http"], 1).await?;
    let remove = "gateway-remove-listener";
    bump(c, "Gateway", remove, |doc| {
        if let Some(list) = doc["spec"]["listeners"].as_array_mut() {
            list.retain(|l| l["name"] == "http");
        }
    })
    .await?;
    listeners_exactly(c, remove, &["http"], 1).await
});

const fn case(
    name: &'static str,
    manifests: &'static [&'static str],
    features: &'static [&'static str],
    plan: Plan,
) -> Case {
    Case {
        name,
        manifests,
        features,
        plan,
    }
}

/// Why the tests that need a listener of their own per Gateway or per port fail: the
/// deliberate difference of one HTTP listener for every Gateway and port.
const SHARED_PORT: &str = "every HTTP listener is served on Portico's one HTTP port, \
    whatever its `port`: a request does not say which listener port it came to, so a \
    route attached to the port-8080 or port-8090 listener also answers on port 80's, and \
    the port-80 route answers for foo.com:8080";

test_fn!(https_listener_detect_misdirected_requests, |c| {
    let gw = "same-namespace-with-https-listener";
    let routes = [
        "https-listener-detect-misdirected-requests-test-1",
        "https-listener-detect-misdirected-requests-test-2",
        "https-listener-detect-misdirected-requests-test-3",
        "https-listener-detect-misdirected-requests-test-4",
    ];
    accepted_and_resolved(c, gw, &routes).await?;
    // (SNI, Host, status, backend): a Host of another listener than the SNI's is
    // misdirected; one of the SNI's listener that no route takes is not found.
    let cases = [
        ("example.org", "example.org", 200, "infra-backend-v1"),
        ("example.org", "second-example.org", 421, ""),
        ("example.org", "unknown-example.org", 404, ""),
        (
            "second-example.org",
            "second-example.org",
            200,
            "infra-backend-v2",
        ),
        ("second-example.org", "example.org", 421, ""),
        ("second-example.org", "unknown-example.org", 421, ""),
        (
            "third-example.wildcard.org",
            "third-example.wildcard.org",
            200,
            "infra-backend-v3",
        ),
        (
            "third-example.wildcard.org",
            "fith-example.wildcard.org",
            200,
            "infra-backend-v3",
        ),
        (
            "third-example.wildcard.org",
            "fourth-example.wildcard.org",
            421,
            "",
        ),
        ("third-example.wildcard.org", "second-example.org", 421, ""),
        ("third-example.wildcard.org", "unknown-example.org", 421, ""),
        (
            "fourth-example.wildcard.org",
            "fourth-example.wildcard.org",
            200,
            "infra-backend-v1",
        ),
        (
            "fourth-example.wildcard.org",
            "fith-example.wildcard.org",
            421,
            "",
        ),
        (
            "unknown-example.org",
            "example.org",
            200,
            "infra-backend-v1",
        ),
        ("unknown-example.org", "unknown-example.org", 404, ""),
    ];
    let exchanges: Vec<Exchange> = cases
        .into_iter()
        .map(|(sni, host, status, backend)| {
            get("/detect-misdirected-requests")
                .https()
                .host(host)
                .sni(sni)
                .status(status)
                .to(backend)
        })
        .collect();
    c.expect_all(&exchanges).await
});

/// The client certificates the upstream suite issues for Gateways' frontend validation,
/// signed by the default and the per-port CA.
const DEFAULT_CLIENT: &str = "tls-validity-checks-client-certificate";
const PER_PORT_CLIENT: &str = "tls-validity-checks-per-port-client-certificate";

test_fn!(frontend_client_certificate_validation, |c| {
    let gw = "client-validation-default";
    let routes = [
        "client-certificate-validation-https-test",
        "client-certificate-validation-https-test-no-hostname",
    ];
    accepted_and_resolved(c, gw, &routes).await?;
    let (default, per_port) = (c.identity(DEFAULT_CLIENT)?, c.identity(PER_PORT_CLIENT)?);
    // The listener on port 443 takes the default configuration: only its CA's
    // certificate gets through.
    let first = get("/").https().host("example.org").to("infra-backend-v1");
    c.expect_tls(&first.clone().identity(&default)).await?;
    c.expect_failure(&first.identity(&per_port)).await?;
    // The listener on port 8443 takes the perPort one.
    let second = get("/")
        .https()
        .host("second-example.org")
        .to("infra-backend-v2");
    c.expect_tls(&second.clone().identity(&per_port)).await?;
    c.expect_failure(&second.identity(&default)).await
});

test_fn!(frontend_client_certificate_insecure_fallback, |c| {
    let gw = "client-validation-insecure-fallback";
    let routes = [
        "client-cert-validation-insecure-fallback-test",
        "client-cert-validation-insecure-fallback-test-no-hostname",
    ];
    accepted_and_resolved(c, gw, &routes).await?;
    c.gateway_condition(
        gw,
        "InsecureFrontendValidationMode",
        true,
        Some("ConfigurationChanged"),
    )
    .await?;
    let (default, per_port) = (c.identity(DEFAULT_CLIENT)?, c.identity(PER_PORT_CLIENT)?);
    // Asked for, and whatever comes (a certificate of its CA, of another, none) gets
    // through.
    for (host, backend, own, other) in [
        ("example.org", "infra-backend-v1", &default, &per_port),
        (
            "second-example.org",
            "infra-backend-v2",
            &per_port,
            &default,
        ),
    ] {
        let ex = get("/").https().host(host).to(backend);
        c.expect_tls(&ex.clone().identity(own)).await?;
        c.expect_tls(&ex.clone().identity(other)).await?;
        c.expect_tls(&ex).await?;
    }
    Ok(())
});

test_fn!(frontend_invalid_default_validation, |c| {
    let gw = "invalid-default-client-validation-config";
    // The HTTP listener is untouched by the validation (its perPort entry is for
    // HTTPS listeners only).
    let ok = [
        ("ResolvedRefs", true, None),
        ("Accepted", true, None),
        ("Programmed", true, None),
    ];
    c.listener(gw, "http", None, &ok).await?;
    c.go_to(gw)?;
    c.expect(&get("/").host("example.org").to("infra-backend-v1"))
        .await?;
    // The HTTPS listener's CA does not exist: not served, and no request gets through.
    let refused = [
        ("ResolvedRefs", false, Some("InvalidCACertificateRef")),
        ("Accepted", false, Some("NoValidCACertificate")),
        ("Programmed", false, None),
    ];
    c.listener(gw, "https", None, &refused).await?;
    c.expect_failure(&get("/").https().host("example.org"))
        .await
});

test_fn!(invalid_frontend_validation, |c| {
    let gw = "gateway-with-invalid-client-cert-validation";
    let ok = [
        ("ResolvedRefs", true, None),
        ("Accepted", true, None),
        ("Programmed", true, None),
    ];
    c.listener(gw, "https", None, &ok).await?;
    for (listener, reason) in [
        ("https-unresolved", "InvalidCACertificateRef"),
        ("https-invalid-kind", "InvalidCACertificateKind"),
        ("https-grant-missing", "RefNotPermitted"),
    ] {
        let refused = [
            ("ResolvedRefs", false, Some(reason)),
            ("Accepted", false, Some("NoValidCACertificate")),
            ("Programmed", false, None),
        ];
        c.listener(gw, listener, None, &refused).await?;
    }
    Ok(())
});

test_fn!(tls_backend_client_certificate, |c| {
    let gw = "gateway-tls-backend-client-certificate";
    accepted_and_resolved(c, gw, &[gw]).await?;
    c.policy_condition(
        "gateway-tls-backend-client-certificate-test",
        gw,
        "Accepted",
        true,
        None,
    )
    .await?;
    c.gateway_condition(gw, "ResolvedRefs", true, Some("ResolvedRefs"))
        .await?;
    // The backend checks client certificates against the suite's CA and echoes them.
    let (cert, _) = c.tls_secret("tls-checks-client-certificate")?;
    c.expect(
        &get("/")
            .host("abc.example.com")
            .got_sni("abc.example.com")
            .got_client_cert(&cert),
    )
    .await
});

test_fn!(invalid_tls_backend_configuration, |c| {
    for (gw, reason) in [
        (
            "gateway-client-certificate-nonexistent-secret",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-unsupported-group",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-unsupported-kind",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-malformed-secret",
            "InvalidClientCertificateRef",
        ),
        (
            "gateway-client-certificate-missing-reference-grant",
            "RefNotPermitted",
        ),
    ] {
        c.gateway_condition(gw, "ResolvedRefs", false, Some(reason))
            .await?;
        c.gateway_condition(gw, "Accepted", true, Some("Accepted"))
            .await?;
    }
    Ok(())
});

pub const CASES: &[Case] = &[
    case("HTTPRouteSimpleSameNamespace", &["httproute-simple-same-namespace.yaml"], CORE, Plan::Run(simple_same_namespace)),
    case("HTTPRouteCrossNamespace", &["httproute-cross-namespace.yaml"], CORE, Plan::Run(cross_namespace)),
    case("HTTPRouteExactPathMatching", &["httproute-exact-path-matching.yaml"], CORE, Plan::Run(exact_path_matching)),
    case("HTTPRouteHeaderMatching", &["httproute-header-matching.yaml"], CORE, Plan::Run(header_matching)),
    case("HTTPRouteHostnameIntersection", &["httproute-hostname-intersection.yaml"], CORE, Plan::Run(hostname_intersection)),
    case("HTTPRouteListenerHostnameMatching", &["httproute-listener-hostname-matching.yaml"], CORE, Plan::Run(listener_hostname_matching)),
    case("HTTPRouteListenerPortMatching", &["httproute-listener-port-matching.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteParentRefPort"], Plan::ExpectFail(listener_port_matching, SHARED_PORT)),
    case("HTTPRouteMatchingAcrossRoutes", &["httproute-matching-across-routes.yaml"], CORE, Plan::Run(matching_across_routes)),
    case("HTTPRouteMatching", &["httproute-matching.yaml"], CORE, Plan::Run(matching)),
    case("HTTPRouteMethodMatching", &["httproute-method-matching.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteMethodMatching"], Plan::Run(method_matching)),
    case("HTTPRoutePathMatchOrder", &["httproute-path-match-order.yaml"], CORE, Plan::Run(path_match_order)),
    case("HTTPRouteQueryParamMatching", &["httproute-query-param-matching.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteQueryParamMatching"], Plan::Run(query_param_matching)),
    case("HTTPRouteInvalidBackendRefUnknownKind", &["httproute-invalid-backendref-unknown-kind.yaml"], CORE, Plan::Run(invalid_backendref_unknown_kind)),
    case("HTTPRouteInvalidCrossNamespaceBackendRef", &["httproute-invalid-cross-namespace-backend-ref.yaml"], CORE_GRANT, Plan::Run(invalid_cross_namespace_backend_ref)),
    case("HTTPRouteInvalidCrossNamespaceParentRef", &["httproute-invalid-cross-namespace-parent-ref.yaml"], CORE, Plan::Run(invalid_cross_namespace_parent_ref)),
    case("HTTPRouteInvalidNonExistentBackendRef", &["httproute-invalid-nonexistent-backendref.yaml"], CORE, Plan::Run(invalid_nonexistent_backendref)),
    case("HTTPRouteInvalidParentRefNotMatchingListenerPort", &["httproute-invalid-parentref-not-matching-listener-port.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteDestinationPortMatching"], Plan::Run(invalid_parentref_not_matching_listener_port)),
    case("HTTPRouteInvalidParentRefNotMatchingSectionName", &["httproute-invalid-parentref-not-matching-section-name.yaml"], CORE, Plan::Run(invalid_parentref_not_matching_section_name)),
    case("HTTPRouteInvalidParentRefSectionNameNotMatchingPort", &["httproute-invalid-parentref-section-name-not-matching-port.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteParentRefPort"], Plan::Run(invalid_parentref_section_name_not_matching_port)),
    case("HTTPRouteInvalidReferenceGrant", &["httproute-invalid-reference-grant.yaml"], CORE_GRANT, Plan::Run(invalid_reference_grant)),
    case("HTTPRoutePartiallyInvalidViaInvalidReferenceGrant", &["httproute-partially-invalid-via-invalid-reference-grant.yaml"], CORE_GRANT, Plan::Run(partially_invalid_reference_grant)),
    case("HTTPRouteReferenceGrant", &["httproute-reference-grant.yaml"], CORE_GRANT, Plan::Run(reference_grant)),
    case("HTTPRouteMultipleGateways", &["httproute-multiple-gateways.yaml"], CORE, Plan::Run(multiple_gateways)),
    case("HTTPRouteNamedRule", &["httproute-named-rule.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteNamedRouteRule"], Plan::Run(named_rule)),
    case("HTTPRouteNoBackendRefs", &["httproute-omitted-backendrefs.yaml"], CORE, Plan::Run(omitted_backendrefs)),
    case("HTTPRoute303Redirect", &["httproute-303-redirect.yaml"], &["Gateway", "HTTPRoute", "HTTPRoute303RedirectStatusCode"], Plan::Run(redirect_303)),
    case("HTTPRoute307Redirect", &["httproute-307-redirect.yaml"], &["Gateway", "HTTPRoute", "HTTPRoute307RedirectStatusCode"], Plan::Run(redirect_307)),
    case("HTTPRoute308Redirect", &["httproute-308-redirect.yaml"], &["Gateway", "HTTPRoute", "HTTPRoute308RedirectStatusCode"], Plan::Run(redirect_308)),
    case("HTTPRouteRedirectHostAndStatus", &["httproute-redirect-host-and-status.yaml"], CORE, Plan::Run(redirect_host_and_status)),
    case("HTTPRouteRedirectPath", &["httproute-redirect-path.yaml"], &["Gateway", "HTTPRoute", "HTTPRoutePathRedirect"], Plan::Run(redirect_path)),
    case("HTTPRouteRedirectPort", &["httproute-redirect-port.yaml"], &["Gateway", "HTTPRoute", "HTTPRoutePortRedirect"], Plan::Run(redirect_port)),
    case("HTTPRouteRedirectScheme", &["httproute-redirect-scheme.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteSchemeRedirect"], Plan::Run(redirect_scheme)),
    case("HTTPRouteRedirectPortAndScheme", &["httproute-redirect-port-and-scheme.yaml"], &["Gateway", "HTTPRoute", "HTTPRoutePortRedirect", "GatewayPort8080"], Plan::Run(redirect_port_and_scheme)),
    case("HTTPRouteRequestHeaderModifier", &["httproute-request-header-modifier.yaml"], CORE, Plan::Run(request_header_modifier)),
    case("HTTPRouteResponseHeaderModifier", &["httproute-response-header-modifier.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteResponseHeaderModification"], Plan::Run(response_header_modifier)),
    case("HTTPRouteRewriteHost", &["httproute-rewrite-host.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteHostRewrite"], Plan::Run(rewrite_host)),
    case("HTTPRouteRewritePath", &["httproute-rewrite-path.yaml"], &["Gateway", "HTTPRoute", "HTTPRoutePathRewrite"], Plan::Run(rewrite_path)),
    case("HTTPRouteTimeoutRequest", &["httproute-timeout-request.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteRequestTimeout"], Plan::Run(timeout_request)),
    case("HTTPRouteTimeoutBackendRequest", &["httproute-timeout-backend-request.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteBackendTimeout"], Plan::Run(timeout_backend_request)),
    case("HTTPRouteBackendProtocolH2C", &["httproute-backend-protocol-h2c.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteBackendProtocolH2C"], Plan::Run(backend_protocol_h2c)),
    case("HTTPRouteServiceTypes", &["httproute-service-types.yaml"], CORE, Plan::Run(service_types)),
    case("HTTPRouteHTTPSListener", &["httproute-https-listener.yaml"], CORE, Plan::Run(https_listener)),
    case("HTTPRouteWeight", &["httproute-weight.yaml"], CORE, Plan::Run(weight)),
    case("HTTPRouteObservedGenerationBump", &["httproute-observed-generation-bump.yaml"], CORE, Plan::Run(route_observed_generation_bump)),
    case("GatewayObservedGenerationBump", &["gateway-observed-generation-bump.yaml"], &["Gateway"], Plan::Run(gateway_observed_generation_bump)),
    case("GatewayClassObservedGenerationBump", &["gatewayclass-observed-generation-bump.yaml"], &["Gateway"], Plan::Run(gatewayclass_observed_generation_bump)),
    case("GatewayWithAttachedRoutes", &["gateway-with-attached-routes.yaml"], CORE, Plan::Run(gateway_with_attached_routes)),
    case("GatewayWithAttachedRoutesWithPort8080", &["gateway-with-attached-routes-with-port-8080.yaml"], &["Gateway", "GatewayPort8080", "HTTPRoute"], Plan::Run(gateway_with_attached_routes_8080)),
    case("GatewayInvalidRouteKind", &["gateway-invalid-route-kind.yaml"], &["Gateway"], Plan::Run(gateway_invalid_route_kind)),
    case("GatewayInvalidTLSConfiguration", &["gateway-invalid-tls-configuration.yaml"], &["Gateway"], Plan::Run(gateway_invalid_tls_configuration)),
    case("GatewaySecretInvalidReferenceGrant", &["gateway-secret-invalid-reference-grant.yaml"], &["Gateway", "ReferenceGrant"], Plan::Run(gateway_secret_invalid_reference_grant)),
    case("GatewaySecretMissingReferenceGrant", &["gateway-secret-missing-reference-grant.yaml"], &["Gateway", "ReferenceGrant"], Plan::Run(gateway_secret_missing_reference_grant)),
    case("GatewaySecretReferenceGrantAllInNamespace", &["gateway-secret-reference-grant-all-in-namespace.yaml"], &["Gateway", "ReferenceGrant"], Plan::Run(gateway_secret_reference_grant_all)),
    case("GatewaySecretReferenceGrantSpecific", &["gateway-secret-reference-grant-specific.yaml"], &["Gateway", "ReferenceGrant"], Plan::Run(gateway_secret_reference_grant_specific)),
    case("GatewayListenerUnsupportedProtocol", &["gateway-invalid-listeners-unsupported-protocol.yaml"], &["Gateway"], Plan::Run(gateway_unsupported_protocol)),
    case("HTTPRouteBackendRequestHeaderModifier", &["httproute-request-header-modifier-backend.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteBackendRequestHeaderModification"], Plan::Run(request_header_modifier)),
    case("GatewayInvalidParametersRef", &["gateway-invalid-parameters-ref.yaml"], &["Gateway"], Plan::Run(gateway_invalid_parameters_ref)),
    case("GatewayModifyListeners", &["gateway-modify-listeners.yaml"], &["Gateway"], Plan::Run(gateway_modify_listeners)),
    case("HTTPRouteRequestHeaderModifierBackendWeights", &["httproute-request-header-modifier-backend-weights.yaml"], &["Gateway", "HTTPRouteBackendRequestHeaderModification", "HTTPRoute"], Plan::Run(request_header_modifier_backend_weights)),
    case("HTTPRouteBackendProtocolWebSocket", &["httproute-backend-protocol-websocket.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteBackendProtocolWebSocket"], Plan::Run(backend_protocol_websocket)),
    case("HTTPRouteRequestMirror", &["httproute-request-mirror.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"], Plan::Run(request_mirror)),
    case("HTTPRouteRequestMultipleMirrors", &["httproute-request-multiple-mirrors.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors"], Plan::Run(request_multiple_mirrors)),
    case("HTTPRouteRequestPercentageMirror", &["httproute-request-percentage-mirror.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteRequestPercentageMirror"], Plan::Run(request_percentage_mirror)),
    case("HTTPRouteCORS", &["httproute-cors.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteCORS"], Plan::Run(cors)),
    case("HTTPRouteRetry", &["httproute-retry.yaml"], &["Gateway", "HTTPRoute", "HTTPRouteRetry"], Plan::Skip("feature not supported: the retry field of a rule")),
    case("HTTPRouteDisallowedKind", &["httproute-disallowed-kind.yaml"], &["Gateway", "HTTPRoute", "TLSRoute"], Plan::Skip("feature not supported: TLSRoute")),
    case("GatewayHTTPListenerIsolation", &["gateway-http-listener-isolation.yaml", "gateway-http-listener-isolation-with-hostname-intersection.yaml"], &["Gateway", "GatewayHTTPListenerIsolation", "HTTPRoute"], Plan::Run(http_listener_isolation)),
    case("HTTPRouteHTTPSListenerDetectMisdirectedRequests", &["httproute-https-listener-detect-misdirected-requests.yaml"], &["Gateway", "GatewayHTTPSListenerDetectMisdirectedRequests", "HTTPRoute"], Plan::Run(https_listener_detect_misdirected_requests)),
    case("GatewayInfrastructure", &["gateway-infrastructure.yaml"], &["Gateway", "GatewayInfrastructurePropagation"], Plan::Skip("feature not supported: spec.infrastructure (Portico provisions no resources per Gateway)")),
    case("GatewayStaticAddresses", &["gateway-static-addresses.yaml"], &["Gateway", "GatewayStaticAddresses"], Plan::Run(gateway_static_addresses)),
    case("GatewayOptionalAddressValue", &["gateway-optional-address-value.yaml"], &["Gateway", "GatewayAddressEmpty"], Plan::Run(gateway_optional_address_value)),
    case("GatewayFrontendClientCertificateValidation", &["gateway-with-clientcertificate-validation.yaml"], &["Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation"], Plan::Run(frontend_client_certificate_validation)),
    case("GatewayFrontendClientCertificateValidationInsecureFallback", &["gateway-with-clientcertificate-validation-insecure-fallback.yaml"], &["Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation", "GatewayFrontendClientCertificateValidationInsecureFallback"], Plan::Run(frontend_client_certificate_insecure_fallback)),
    case("GatewayFrontendInvalidDefaultClientCertificateValidation", &["gateway-invalid-default-frontend-client-certificate-validation.yaml"], &["Gateway", "HTTPRoute", "GatewayFrontendClientCertificateValidation"], Plan::Run(frontend_invalid_default_validation)),
    case("GatewayInvalidFrontendClientCertificateValidation", &["gateway-with-invalid-clientcertificate-validation.yaml"], &["Gateway", "HTTPRoute", "ReferenceGrant", "GatewayFrontendClientCertificateValidation"], Plan::Run(invalid_frontend_validation)),
    case("GatewayTLSBackendClientCertificate", &["gateway-tls-backend-client-certificate.yaml"], &["Gateway", "GatewayBackendClientCertificate", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(tls_backend_client_certificate)),
    case("GatewayInvalidTLSBackendConfiguration", &["gateway-invalid-tls-backend-configuration.yaml"], &["Gateway", "GatewayBackendClientCertificate", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(invalid_tls_backend_configuration)),
    case("BackendTLSPolicy", &["backendtlspolicy.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(backend_tls_policy)),
    case("BackendTLSPolicySANValidation", &["backendtlspolicy-san.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy", "BackendTLSPolicySANValidation"], Plan::Run(backend_tls_policy_san)),
    case("BackendTLSPolicyConflictResolution", &["backendtlspolicy-conflict-resolution.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(backend_tls_policy_conflict_resolution)),
    case("BackendTLSPolicyInvalidCACertificateRef", &["backendtlspolicy-invalid-ca-certificate-ref.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(backend_tls_policy_invalid_ca_ref)),
    case("BackendTLSPolicyInvalidKind", &["backendtlspolicy-invalid-kind.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(backend_tls_policy_invalid_kind)),
    case("BackendTLSPolicyObservedGenerationBump", &["backendtlspolicy-observed-generation-bump.yaml"], &["Gateway", "HTTPRoute", "BackendTLSPolicy"], Plan::Run(backend_tls_policy_observed_generation_bump)),
];
