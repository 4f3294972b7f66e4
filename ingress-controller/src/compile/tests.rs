//! Compiler tests from YAML fixtures in `tests/fixtures/compile/`.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use proxy_core::balance::{AffinityMode, CookieAffinity, SameSite};
use proxy_core::config::{BackendId, BackendKind, Endpoint, Timeouts};
use proxy_core::pipeline::{RequestFilter, RoutePolicy};
use proxy_core::routes::{HostMatch, PathType, RouteRule};
use serde::Deserialize;

use super::*;
use crate::store::{Object, Store};

/// Parses a multi-document manifest into a store; namespaced objects without a namespace
/// land in `default`, as `kubectl apply` would put them.
pub(super) fn store_from_yaml(text: &str) -> Store {
    let mut store = Store::default();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_owned();
        let cluster_scoped =
            kind == "IngressClass" || kind == "GatewayClass" || kind == "Namespace";
        if !cluster_scoped && value["metadata"].get("namespace").is_none() {
            value["metadata"]["namespace"] = "default".into();
        }
        let obj = match kind.as_str() {
            "Ingress" => Object::Ingress(serde_yaml_ng::from_value(value).unwrap()),
            "IngressClass" => Object::IngressClass(serde_yaml_ng::from_value(value).unwrap()),
            "Service" => Object::Service(serde_yaml_ng::from_value(value).unwrap()),
            "EndpointSlice" => Object::EndpointSlice(serde_yaml_ng::from_value(value).unwrap()),
            "Endpoints" => Object::Endpoints(serde_yaml_ng::from_value(value).unwrap()),
            "Secret" => Object::Secret(serde_yaml_ng::from_value(value).unwrap()),
            "ConfigMap" => Object::ConfigMap(serde_yaml_ng::from_value(value).unwrap()),
            "GatewayClass" => Object::GatewayClass(serde_yaml_ng::from_value(value).unwrap()),
            "Gateway" => Object::Gateway(serde_yaml_ng::from_value(value).unwrap()),
            "HTTPRoute" => Object::HTTPRoute(serde_yaml_ng::from_value(value).unwrap()),
            "GRPCRoute" => Object::GRPCRoute(serde_yaml_ng::from_value(value).unwrap()),
            "ReferenceGrant" => Object::ReferenceGrant(serde_yaml_ng::from_value(value).unwrap()),
            "BackendTLSPolicy" => {
                Object::BackendTLSPolicy(serde_yaml_ng::from_value(value).unwrap())
            }
            "Namespace" => Object::Namespace(serde_yaml_ng::from_value(value).unwrap()),
            other => panic!("fixture has unexpected kind {other}"),
        };
        store.apply(obj);
    }
    store
}

pub(super) fn fixture(name: &str) -> Store {
    let path = format!(
        "{}/tests/fixtures/compile/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    store_from_yaml(&std::fs::read_to_string(&path).unwrap())
}

/// The compile and its rules, by host then in the order they were claimed.
fn compile_rules(store: &Store) -> (Compiled, Vec<RouteRule>) {
    let c = compile(store, &CompileOptions::default());
    let rules = c.config.routes.rules().into_iter().cloned().collect();
    (c, rules)
}

fn ep(
    addr: &str,
    ready: bool,
    terminating: bool,
    node: Option<&str>,
    pod: Option<&str>,
) -> Endpoint {
    Endpoint {
        addr: addr.parse::<SocketAddr>().unwrap(),
        ready,
        terminating,
        node_name: node.map(Into::into),
        pod: pod.map(Into::into),
    }
}

fn endpoints_of(c: &Compiled, id: &BackendId) -> Vec<Endpoint> {
    match &c
        .config
        .backends
        .get(id)
        .unwrap_or_else(|| panic!("no backend {id}"))
        .kind
    {
        BackendKind::Endpoints(e) => e.clone(),
        BackendKind::Unresolved(_) => Vec::new(),
        other => panic!("{id} is {other:?}"),
    }
}

/// `(field, reason)` of every diagnostic on one object, in order.
fn diags_on(c: &Compiled, kind: Kind, ns: &str, name: &str) -> Vec<(String, DiagnosticReason)> {
    c.diagnostics
        .iter()
        .filter(|d| d.kind == kind && d.object == ObjectKey::new(ns, name))
        .map(|d| (d.field.clone(), d.reason))
        .collect()
}

fn rule_summary(rules: &[RouteRule]) -> Vec<(HostMatch, String, PathType, String)> {
    rules
        .iter()
        .map(|r| {
            (
                r.host.clone(),
                r.path.clone(),
                r.path_type,
                r.target.backend.to_string(),
            )
        })
        .collect()
}

/// The backend `compile`'s route table picks for a request, as `ns/svc:port`.
fn route(c: &Compiled, host: &str, path: &str) -> Option<String> {
    c.config
        .routes
        .lookup(host, path)
        .map(|t| t.backend.to_string())
}

fn host(h: &str) -> tls::HostPattern {
    tls::HostPattern::parse(h).unwrap()
}

fn exact(h: &str) -> HostMatch {
    HostMatch::parse(Some(h)).unwrap()
}

#[test]
fn kubia_named_ports_resolve_to_slice_ports() {
    let store = fixture("kubia.yaml");
    let (c, rules) = compile_rules(&store);
    assert_eq!(c.owned_ingresses, vec![ObjectKey::new("default", "kubia")]);

    let wild = HostMatch::parse(Some("*.kubia.example.com")).unwrap();
    assert_eq!(
        rule_summary(&rules),
        vec![
            (
                exact("kubia.example.com"),
                "/".into(),
                PathType::Prefix,
                "default/kubia:http".into()
            ),
            (
                exact("kubia.example.com"),
                "/secure".into(),
                PathType::Exact,
                "default/kubia:443".into()
            ),
            (
                exact("kubia.example.com"),
                "/gone".into(),
                PathType::Prefix,
                "default/missing:80".into()
            ),
            (
                exact("kubia.example.com"),
                "/noport".into(),
                PathType::Prefix,
                "default/kubia:grpc".into()
            ),
            (
                exact("kubia.example.com"),
                "/impl".into(),
                PathType::Prefix,
                "default/kubia:80".into()
            ),
            (
                wild,
                "/".into(),
                PathType::Prefix,
                "default/kubia:http".into()
            ),
        ]
    );
    assert!(rules
        .iter()
        .all(|r| &*r.target.source == "default/kubia" && !redirects(&r.target.policy)));

    // Two slices merged, deduplicated by address (the ready copy wins), sorted; the bad
    // address is skipped; the other Service's slice stays out.
    let http = vec![
        ep(
            "10.1.0.1:8080",
            true,
            false,
            Some("node-a"),
            Some("kubia-1"),
        ),
        ep(
            "10.1.0.2:8080",
            true,
            false,
            Some("node-b"),
            Some("kubia-2"),
        ),
        ep("10.1.0.3:8080", false, true, None, Some("kubia-3")),
        ep("[fd00::4]:8080", true, false, None, Some("kubia-4")),
    ];
    assert_eq!(
        endpoints_of(&c, &BackendId::new("default", "kubia", "http")),
        http
    );
    // Port 80 by number is the same Service port as "http".
    assert_eq!(
        endpoints_of(&c, &BackendId::new("default", "kubia", "80")),
        http
    );
    let https: Vec<u16> = endpoints_of(&c, &BackendId::new("default", "kubia", "443"))
        .iter()
        .map(|e| e.addr.port())
        .collect();
    assert_eq!(https, vec![8443; 4]);
    // Missing Service and missing port still route, to nothing: 503.
    assert_eq!(
        endpoints_of(&c, &BackendId::new("default", "missing", "80")),
        vec![]
    );
    assert_eq!(
        endpoints_of(&c, &BackendId::new("default", "kubia", "grpc")),
        vec![]
    );
    // ...and say what is missing, for each failed request's log line.
    let grpc = &c.config.backends[&BackendId::new("default", "kubia", "grpc")];
    assert!(
        matches!(&grpc.kind, BackendKind::Unresolved(why) if why.starts_with("service \"kubia\" has no port named \"grpc\"")),
        "{:?}",
        grpc.kind
    );
    assert_eq!(c.config.backends.len(), 5);

    let p = "spec.rules[0].http.paths";
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "kubia"),
        vec![
            (
                format!("{p}[2].backend.service.name"),
                DiagnosticReason::ServiceNotFound
            ),
            (
                format!("{p}[3].backend.service.port.name"),
                DiagnosticReason::ServicePortNotFound
            ),
            (
                format!("{p}[4].backend.resource"),
                DiagnosticReason::UnsupportedBackend
            ),
            (
                format!("{p}[5].pathType"),
                DiagnosticReason::InvalidPathType
            ),
            (format!("{p}[6].path"), DiagnosticReason::InvalidPath),
            ("spec.rules[1].host".into(), DiagnosticReason::InvalidHost),
        ]
    );
    assert_eq!(
        diags_on(&c, Kind::EndpointSlice, "default", "kubia-def34"),
        vec![(
            "endpoints[2].addresses[0]".into(),
            DiagnosticReason::InvalidEndpoint
        )]
    );
    let port_msg = c
        .diagnostics
        .iter()
        .find(|d| d.reason == DiagnosticReason::ServicePortNotFound)
        .unwrap()
        .to_string();
    assert_eq!(
        port_msg,
        "Ingress default/kubia: spec.rules[0].http.paths[3].backend.service.port.name: \
         service \"kubia\" has no port named \"grpc\" (its ports: 80 (\"http\", targetPort \
         \"http\"), 443 (\"https\", targetPort \"https\")); requests get 503"
    );
    assert_eq!(c.diagnostics.len(), 7);

    let c = compile(&store, &CompileOptions::default());
    let kubia = |port: &str| Some(format!("default/kubia:{port}"));
    assert_eq!(route(&c, "kubia.example.com", "/"), kubia("http"));
    assert_eq!(route(&c, "kubia.example.com", "/secure"), kubia("443"));
    assert_eq!(route(&c, "kubia.example.com", "/secure/x"), kubia("http"));
    assert_eq!(route(&c, "kubia.example.com", "/impl/x"), kubia("80"));
    assert_eq!(
        route(&c, "kubia.example.com", "/gone/x"),
        Some("default/missing:80".into())
    );
    assert_eq!(route(&c, "pod.kubia.example.com", "/x"), kubia("http"));
    assert_eq!(route(&c, "a.pod.kubia.example.com", "/"), None);
    assert_eq!(route(&c, "bad_host.example.com", "/"), None);
    assert_eq!(route(&c, "kubia.example.com", "/bucket"), kubia("http"));
    assert!(c.config.default_backend.is_none());
}

#[test]
fn same_store_same_output() {
    let store = fixture("kubia.yaml");
    let (a, ra) = compile_rules(&store);
    let (b, rb) = compile_rules(&store);
    assert_eq!(ra, rb);
    assert_eq!(a.diagnostics, b.diagnostics);
    let mut ka: Vec<_> = a.config.backends.iter().collect();
    let mut kb: Vec<_> = b.config.backends.iter().collect();
    ka.sort_by(|x, y| x.0.cmp(y.0));
    kb.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(ka, kb);
}

#[test]
fn ingress_class_ownership() {
    let mut store = fixture("class.yaml");
    let (c, rules) = compile_rules(&store);
    let owned: Vec<String> = c.owned_ingresses.iter().map(ToString::to_string).collect();
    assert_eq!(
        owned,
        [
            "default/by-class-name",
            "default/by-other-class-of-ours",
            "default/legacy",
            "default/no-class"
        ]
    );
    let hosts: Vec<HostMatch> = rules.iter().map(|r| r.host.clone()).collect();
    assert_eq!(
        hosts,
        [
            exact("internal.example.com"),
            exact("legacy.example.com"),
            exact("no-class.example.com")
        ]
    );
    // The Ingress naming a missing class gets no diagnostic: it is simply not ours.
    assert!(diags_on(&c, Kind::Ingress, "default", "test-ingress-class").is_empty());

    // Without the default-class annotation on our class, class-less Ingresses are not ours.
    let key = ObjectKey::new("", "portico");
    let mut class = (*store.ingress_classes[&key]).clone();
    class.metadata.annotations = None;
    store.apply(Object::IngressClass(class));
    let (c, _) = compile_rules(&store);
    assert!(!c
        .owned_ingresses
        .contains(&ObjectKey::new("default", "no-class")));
    assert_eq!(c.owned_ingresses.len(), 3);

    // Another --ingress-class name: the legacy annotation no longer matches.
    let opts = CompileOptions {
        ingress_class: "other".into(),
        ..CompileOptions::default()
    };
    let c = compile(&store, &opts);
    assert!(!c
        .owned_ingresses
        .contains(&ObjectKey::new("default", "legacy")));
}

#[test]
fn selectorless_and_external_name_services() {
    let store = fixture("external.yaml");
    let (c, rules) = compile_rules(&store);
    assert_eq!(rules.len(), 7, "every path routes, broken ones to 503");

    let id = |svc: &str, port: &str| BackendId::new("default", svc, port);
    // The seeds' external-service: Service port 80, Endpoints port 80.
    assert_eq!(
        endpoints_of(&c, &id("external-service", "80")),
        vec![
            ep("11.11.11.11:80", true, false, None, None),
            ep("22.22.22.22:80", true, false, None, None),
        ]
    );
    // A single differently named port pairs with the single Service port; a subset with
    // other ports is skipped; a subset without ports takes the numeric targetPort.
    assert_eq!(
        endpoints_of(&c, &id("legacy-db", "5432")),
        vec![
            ep("10.0.0.1:15432", true, false, Some("node-a"), None),
            ep("10.0.0.2:15432", false, false, None, None),
            ep("10.0.0.4:15432", true, false, None, None),
        ]
    );
    // Hand-written slice without ports: targetPort; the Endpoints object is ignored.
    assert_eq!(
        endpoints_of(&c, &id("sliced", "web")),
        vec![ep("10.2.0.1:8081", true, false, None, None)]
    );
    assert_eq!(endpoints_of(&c, &id("lonely", "80")), vec![]);
    assert_eq!(endpoints_of(&c, &id("broken-alias", "80")), vec![]);
    let ext = |port: &str| c.config.backends[&id("someapi", port)].kind.clone();
    assert_eq!(
        ext("https"),
        BackendKind::ExternalName {
            host: "someapi.somecompany.com".into(),
            port: 443
        }
    );
    assert_eq!(
        ext("8443"),
        BackendKind::ExternalName {
            host: "someapi.somecompany.com".into(),
            port: 8443
        }
    );

    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "external"),
        vec![(
            "spec.rules[0].http.paths[3].backend.service.name".into(),
            DiagnosticReason::InvalidExternalName
        )]
    );
    assert_eq!(
        diags_on(&c, Kind::Service, "default", "lonely"),
        vec![(String::new(), DiagnosticReason::NoEndpoints)]
    );
    assert_eq!(c.diagnostics.len(), 2);
}

#[test]
fn conflicts_go_to_the_oldest_ingress() {
    let store = fixture("conflicts.yaml");
    let (c, rules) = compile_rules(&store);
    let shop = || exact("shop.example.com");
    let summary: Vec<_> = rules
        .iter()
        .map(|r| {
            (
                r.host.clone(),
                r.path.clone(),
                r.path_type,
                r.target.source.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        // By host, then in the order the paths were claimed: oldest Ingress first.
        vec![
            (shop(), "/cart".into(), PathType::Prefix, "b/older".into()),
            (shop(), "/twin".into(), PathType::Prefix, "b/twin".into()),
            (shop(), "/cart".into(), PathType::Exact, "a/newer".into()),
            (shop(), "/a-only".into(), PathType::Prefix, "a/newer".into()),
            (
                HostMatch::Any,
                "/".into(),
                PathType::Prefix,
                "b/older".into()
            ),
        ]
    );
    let default = c.config.default_backend.as_ref().unwrap();
    assert_eq!(&*default.source, "b/older");
    assert_eq!(default.backend, BackendId::new("b", "app", "80"));

    assert_eq!(
        diags_on(&c, Kind::Ingress, "b", "older"),
        vec![(
            "spec.rules[0].http.paths[1]".into(),
            DiagnosticReason::DuplicatePath
        )]
    );
    assert_eq!(
        diags_on(&c, Kind::Ingress, "b", "twin"),
        vec![(
            "spec.rules[0].http.paths[0]".into(),
            DiagnosticReason::DuplicatePath
        ),]
    );
    assert_eq!(
        diags_on(&c, Kind::Ingress, "a", "newer"),
        vec![
            (
                "spec.defaultBackend".into(),
                DiagnosticReason::DuplicateDefaultBackend
            ),
            (
                "spec.rules[0].http.paths[0]".into(),
                DiagnosticReason::DuplicatePath
            ),
        ]
    );
    let severity = |ns: &str, name: &str| {
        c.diagnostics
            .iter()
            .find(|d| {
                d.object == ObjectKey::new(ns, name) && d.reason == DiagnosticReason::DuplicatePath
            })
            .unwrap()
            .severity
    };
    // Within one Ingress the first wins quietly-ish; across Ingresses the loser is an error.
    assert_eq!(severity("b", "older"), Severity::Warning);
    assert_eq!(severity("a", "newer"), Severity::Error);
    let msg = c
        .diagnostics
        .iter()
        .find(|d| {
            d.object == ObjectKey::new("a", "newer") && d.reason == DiagnosticReason::DuplicatePath
        })
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "Ingress a/newer: spec.rules[0].http.paths[0]: host \"shop.example.com\" path \"/cart/\" \
         (Prefix) is already claimed by the older Ingress b/older; path ignored"
    );
    let c = compile(&store, &CompileOptions::default());
    let src = |host: &str, path: &str| {
        c.config
            .routes
            .lookup(host, path)
            .map(|t| t.source.to_string())
    };
    assert_eq!(
        src("shop.example.com", "/cart"),
        Some("a/newer".into()),
        "Exact beats Prefix"
    );
    assert_eq!(src("shop.example.com", "/cart/x"), Some("b/older".into()));
    assert_eq!(src("shop.example.com", "/twin"), Some("b/twin".into()));
    assert_eq!(
        src("elsewhere.example.com", "/cart"),
        Some("b/older".into())
    );

    // Affinity is the route's: b/twin's paths to b/app:80 are sticky, b/older's paths to
    // the same backend are not, and a/newer's are.
    let affinity = |host: &str, path: &str| {
        c.config
            .routes
            .lookup(host, path)
            .and_then(|t| t.policy.affinity.clone())
    };
    assert_eq!(affinity("shop.example.com", "/cart/x"), None);
    assert_eq!(
        affinity("shop.example.com", "/twin"),
        Some(CookieAffinity {
            path: Some("/twin".into()),
            ..CookieAffinity::default()
        })
    );
    assert_eq!(
        affinity("shop.example.com", "/a-only").map(|a| a.mode),
        Some(AffinityMode::Balanced)
    );
}

/// Whether a route answers plain HTTP with a redirect.
fn redirects(policy: &RoutePolicy) -> bool {
    policy
        .request
        .iter()
        .any(|f| matches!(f, RequestFilter::SslRedirect(_)))
}

#[test]
fn annotations_configure_backends_and_report_problems() {
    let store = fixture("annotations.yaml");
    let (c, rules) = compile_rules(&store);
    // The policy of the first path routed to `svc`.
    let backend = |svc: &str| {
        rules
            .iter()
            .find(|r| r.target.backend == BackendId::new("default", svc, "80"))
            .map(|r| (*r.target.policy).clone())
            .unwrap()
    };

    let sticky = backend("sticky");
    assert_eq!(
        sticky.affinity,
        Some(CookieAffinity {
            mode: AffinityMode::Persistent,
            name: "route".into(),
            path: Some("/app".into()),
            max_age: Some(Duration::from_secs(3600)),
            expires: Some(Duration::from_secs(7200)),
            secure: true,
            samesite: Some(SameSite::Strict),
            change_on_failure: true,
        })
    );
    assert_eq!(
        sticky.timeouts,
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(120),
            send: Duration::from_secs(60),
        }
    );
    assert!(diags_on(&c, Kind::Ingress, "default", "sticky").is_empty());

    assert_eq!(
        backend("migrated").affinity,
        Some(CookieAffinity {
            samesite: Some(SameSite::Lax),
            path: Some("/".into()),
            ..CookieAffinity::default()
        })
    );
    // One diagnostic for the snippet, one listing every other key not honoured.
    let whole = |reason| ("metadata.annotations".to_owned(), reason);
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "migrated"),
        vec![
            whole(DiagnosticReason::UnsupportedAnnotation),
            whole(DiagnosticReason::SnippetNotExecuted),
        ]
    );
    let said = |reason| {
        c.diagnostics
            .iter()
            .find(|d| d.object == ObjectKey::new("default", "migrated") && d.reason == reason)
            .unwrap()
    };
    let unsupported = said(DiagnosticReason::UnsupportedAnnotation);
    assert_eq!(unsupported.severity, Severity::Warning);
    assert_eq!(
        unsupported.message,
        "annotations nginx.ingress.kubernetes.io/enable-opentelemetry, \
         nginx.ingress.kubernetes.io/relative-redirects are not supported by Portico, ignored"
    );
    let snippet = said(DiagnosticReason::SnippetNotExecuted);
    assert_eq!(snippet.severity, Severity::Error);
    assert!(
        snippet.to_string().starts_with(
            "Ingress default/migrated: metadata.annotations: snippet annotation \
             nginx.ingress.kubernetes.io/configuration-snippet is never executed"
        ),
        "{snippet}"
    );

    // Every malformed value is reported and ignored; the Ingress still routes.
    let sloppy = backend("sloppy");
    // The cookie's path defaults to the rule's path, as ingress-nginx's location path.
    assert_eq!(
        sloppy.affinity,
        Some(CookieAffinity {
            path: Some("/".into()),
            ..CookieAffinity::default()
        })
    );
    assert_eq!(sloppy.timeouts, Timeouts::default());
    let ann = |key: &str, reason| {
        (
            format!("metadata.annotations[\"portico.dev/{key}\"]"),
            reason,
        )
    };
    use DiagnosticReason::InvalidAnnotation as Bad;
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "sloppy"),
        // Diagnostics come sorted by object, then field.
        vec![
            whole(DiagnosticReason::SnippetNotExecuted),
            ann("affinity-mode", Bad),
            ann("proxy-read-timeout", Bad),
            ann("session-cookie-max-age", Bad),
            ann("session-cookie-name", Bad),
            ann("session-cookie-samesite", Bad),
            ann("session-cookie-secure", Bad),
            ann("ssl-redirect", Bad),
        ]
    );
    let msg = c
        .diagnostics
        .iter()
        .find(|d| d.field.contains("affinity-mode"))
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "Ingress default/sloppy: metadata.annotations[\"portico.dev/affinity-mode\"]: annotation \
         portico.dev/affinity-mode has invalid value \"sticky\" (expected balanced or persistent), ignored"
    );
    let sloppy_rule = rules
        .iter()
        .find(|r| &*r.target.source == "default/sloppy")
        .unwrap();
    assert_eq!(sloppy_rule.host, exact("sloppy.example.com"));

    // An affinity other than cookie: reported, and no affinity at all.
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "bad-affinity"),
        vec![
            (
                "metadata.annotations[\"nginx.ingress.kubernetes.io/affinity\"]".into(),
                Bad
            ),
            (
                "spec.rules[0].http.paths[0].backend.service.port.number".into(),
                DiagnosticReason::ServicePortNotFound
            ),
        ]
    );
    let bad_affinity = rules
        .iter()
        .find(|r| &*r.target.source == "default/bad-affinity")
        .unwrap();
    assert_eq!(bad_affinity.target.policy.affinity, None);
    // Bad annotations never cost an Ingress its routes.
    assert_eq!(rules.len(), 4);
}

/// A generated certificate for `host`: `(cert_pem, key_pem)`.
pub(super) fn generated(host: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn secret(name: &str, type_: &str, cert: &str, key: &str) -> Object {
    let data = [("tls.crt", cert), ("tls.key", key)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Object::Secret(Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(data),
        ..Default::default()
    })
}

#[test]
fn tls_secrets_become_certificates_and_redirects() {
    let mut store = fixture("tls.yaml");
    let (shop_cert, shop_key) = generated("shop.example.com");
    let (opaque_cert, opaque_key) = generated("opaque.example.com");
    let (_, other_key) = generated("other.example.com");
    store.apply(secret(
        "shop-tls",
        "kubernetes.io/tls",
        &shop_cert,
        &shop_key,
    ));
    store.apply(secret("opaque-tls", "Opaque", &opaque_cert, &opaque_key));
    store.apply(secret(
        "mismatched",
        "kubernetes.io/tls",
        &shop_cert,
        &other_key,
    ));
    let (c, rules) = compile_rules(&store);

    assert_eq!(
        c.certs,
        vec![
            tls::CertSource::from_pem(
                "default/opaque-tls",
                vec![host("opaque.example.com")],
                opaque_cert.as_bytes(),
                opaque_key.as_bytes(),
            ),
            tls::CertSource::from_pem(
                "default/shop-tls",
                vec![host("shop.example.com"), host("*.apps.example.com")],
                shop_cert.as_bytes(),
                shop_key.as_bytes(),
            ),
        ]
    );

    let redirects: Vec<(String, bool)> = rules
        .iter()
        .map(|r| (format!("{}{}", r.host, r.path), redirects(&r.target.policy)))
        .collect();
    // By host (exact hosts sorted, then wildcards), then in claim order.
    let want = [
        ("a.apps.example.com/", true),
        ("default-cert.example.com/", true),
        ("forced.example.com/", true),
        // A broken or missing Secret still means TLS (default certificate), so redirect.
        ("missing.example.com/", true),
        ("plain.example.com/", false),
        ("shop.example.com/", true),
        ("shop.example.com/api", false),
        ("*.apps.example.com/", true),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(h, r)| (h.to_string(), *r)).collect();
    assert_eq!(redirects, want);

    use DiagnosticReason as R;
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "shop"),
        vec![
            ("spec.tls[1].secretName".into(), R::SecretNotFound),
            ("spec.tls[2].secretName".into(), R::SecretWrongType),
            ("spec.tls[3].secretName".into(), R::SecretMissingKey),
            ("spec.tls[4].secretName".into(), R::InvalidCertificate),
            ("spec.tls[6].hosts".into(), R::TlsNoHosts),
        ]
    );
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "no-redirect"),
        vec![
            ("spec.tls[0].hosts[0]".into(), R::TlsHostConflict),
            ("spec.tls[0].secretName".into(), R::SecretWrongType),
        ]
    );
    let missing = c
        .diagnostics
        .iter()
        .find(|d| d.reason == R::SecretNotFound)
        .unwrap();
    assert_eq!(
        missing.to_string(),
        "Ingress default/shop: spec.tls[1].secretName: secret \"nowhere\": not found in \
         namespace \"default\"; hosts missing.example.com fall back to the default certificate"
    );
    assert_eq!(missing.severity, Severity::Error);
    assert_eq!(
        c.diagnostics
            .iter()
            .find(|d| d.reason == R::TlsHostConflict)
            .unwrap()
            .severity,
        Severity::Warning
    );

    // --default-certificate: a good Secret becomes default_cert, a broken one a diagnostic.
    let opts = |name: &str| CompileOptions {
        default_certificate: Some(ObjectKey::new("default", name)),
        ..CompileOptions::default()
    };
    let c = compile(&store, &opts("shop-tls"));
    let default = c.default_cert.unwrap();
    assert_eq!(default.name, "default/shop-tls");
    assert!(default.hosts.is_empty());
    assert_eq!(
        default.cert,
        tls::ParsedCert::from_pem(shop_cert.as_bytes(), shop_key.as_bytes())
    );
    // The compile's certificate store serves it, with no parse of its own.
    assert!(c.cert_store.has_default());
    // Certificate findings come out as diagnostics on the Secret: this one does not
    // cover the wildcard its TLS entry lists.
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(
        diags_on(&c, Kind::Secret, "default", "shop-tls"),
        vec![("data.tls.crt".into(), R::CertificateHostMismatch)]
    );
    let c = compile(&store, &opts("mismatched"));
    assert!(c.default_cert.is_none());
    assert_eq!(
        diags_on(&c, Kind::Secret, "default", "mismatched"),
        vec![(String::new(), R::InvalidCertificate)]
    );
}

/// The shipped examples are what new users apply first: they must compile without an
/// error and every Ingress in them must be ours.
#[test]
fn shipped_examples_compile_cleanly() {
    let dir = format!("{}/../manifests/examples", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let text: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let store = store_from_yaml(&text.join("\n---\n"));
    assert!(!store.ingresses.is_empty());
    let c = compile(&store, &CompileOptions::default());
    let errors: Vec<String> = c
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let all: Vec<ObjectKey> = store.ingresses.keys().cloned().collect();
    assert_eq!(c.owned_ingresses, all);
    assert!(!c.certs.is_empty());
}

#[test]
fn a_default_backend_alone_is_resolved_and_follows_edits() {
    let yaml = |service: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: portico}}\n\
             spec: {{controller: portico.dev/ingress-controller}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata: {{name: only-default, namespace: default}}\n\
             spec:\n  ingressClassName: portico\n  defaultBackend:\n    service: {{name: {service}, port: {{number: 80}}}}\n"
        )
    };
    let mut cache = CompileCache::default();
    let opts = CompileOptions::default();
    for service in ["first", "second", "first"] {
        let store = store_from_yaml(&yaml(service));
        let c = compile_with(&store, &opts, &mut cache);
        let id = BackendId::new("default", service, "80");
        let target = c.config.default_backend.as_ref().expect("default backend");
        assert_eq!(target.backend, id);
        assert_eq!(c.config.backends.keys().collect::<Vec<_>>(), vec![&id]);
        // The Service does not exist: said once, on the Ingress's field.
        let field = "spec.defaultBackend.service.name";
        assert_eq!(
            diags_on(&c, Kind::Ingress, "default", "only-default"),
            vec![(field.to_owned(), DiagnosticReason::ServiceNotFound)]
        );
    }
}

/// One host rule for everyone: an Ingress rule host, a `spec.tls` host, the route table's
/// lookup of a request's `Host` and the certificate store's SNI lookup accept the same
/// hosts, normalise them alike and apply one wildcard rule.
#[test]
fn hosts_agree_across_rules_tls_routes_and_certificates() {
    let too_long = format!(
        "{}.{}.{}.{}.example",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(54)
    );
    assert_eq!(too_long.len(), 254);
    // (configured host, a request host it serves; `None`: refused everywhere)
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("app.example.com", Some("app.example.com")),
        ("App.Example.COM", Some("app.example.com")),
        ("app.example.com.", Some("app.example.com")),
        ("*.wild.example.com", Some("x.wild.example.com")),
        ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
        ("*.*.example.com", None),
        ("a.*.example.com", None),
        ("*", None),
        ("under_score.example.com", None),
        ("bücher.example", None),
        (&too_long, None),
        ("a..example.com", None),
        (".example.com", None),
        ("-a.example.com", None),
        ("10.0.0.1", None),
        ("[::1]", None),
    ];
    let (cert, key) = {
        let names = [
            "app.example.com",
            "*.wild.example.com",
            "xn--bcher-kva.example",
        ];
        let ck = rcgen::generate_simple_self_signed(names.map(String::from).to_vec()).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    };
    for (raw, serves) in cases {
        let mut store = store_from_yaml(&format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portico}}
spec: {{controller: portico.dev/ingress-controller}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web}}
spec:
  ingressClassName: portico
  tls: [{{hosts: [{raw:?}], secretName: tls}}]
  rules:
    - host: {raw:?}
      http:
        paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
"#
        ));
        store.apply(secret("tls", "kubernetes.io/tls", &cert, &key));
        let c = compile(&store, &CompileOptions::default());
        let invalid = |field: &str| {
            c.diagnostics
                .iter()
                .any(|d| d.field == field && d.reason == DiagnosticReason::InvalidHost)
        };
        assert_eq!(
            invalid("spec.rules[0].host"),
            serves.is_none(),
            "rule host {raw:?}"
        );
        assert_eq!(
            invalid("spec.tls[0].hosts[0]"),
            serves.is_none(),
            "TLS host {raw:?}"
        );
        let store = tls::CertStore::build(&c.certs, None).0;
        let Some(request) = serves else {
            assert!(c.config.routes.is_empty(), "{raw:?} routed");
            assert_eq!(store.host_count(), 0, "{raw:?} has a certificate");
            continue;
        };
        // A client may send any case, a trailing dot and a port.
        let header = format!("{}.:8443", request.to_ascii_uppercase());
        let parts = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, &header)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let routed = c.config.routes.lookup_request(&parts).unwrap();
        assert!(routed.is_some(), "{raw:?}: Host {header:?} not routed");
        assert_eq!(
            store.source_for(&header[..header.len() - 5]),
            Some("default/tls"),
            "{raw:?}: SNI {request:?}"
        );
        let covered = !c
            .diagnostics
            .iter()
            .any(|d| d.reason == DiagnosticReason::CertificateHostMismatch);
        assert!(covered, "{raw:?}: {:?}", c.diagnostics);
        // One label under a wildcard, no more, no fewer.
        if raw.starts_with("*.") {
            for other in [&request[2..], &format!("y.{request}")[..]] {
                assert_eq!(
                    c.config.routes.lookup(other, "/"),
                    None,
                    "{raw:?} routes {other:?}"
                );
                assert_eq!(store.source_for(other), None, "{raw:?} serves {other:?}");
            }
        }
    }
}

fn www_ingress(name: &str, host: &str, annotated: bool) -> String {
    let ann = if annotated {
        "\n  annotations:\n    nginx.ingress.kubernetes.io/from-to-www-redirect: \"true\""
    } else {
        ""
    };
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}{ann}
spec:
  ingressClassName: portico
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"
    )
}

#[test]
fn from_to_www_redirects_the_twin_host_unless_an_ingress_names_it() {
    let mut text = String::from(
        "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
",
    );
    text.push_str(&www_ingress("foo", "foo.example.com", true));
    text.push_str(&www_ingress("bar", "www.bar.example.com", true));
    text.push_str(&www_ingress("baz", "baz.example.com", true));
    text.push_str(&www_ingress("www-baz", "www.baz.example.com", false));
    text.push_str(&www_ingress("plain", "plain.example.com", false));
    let store = store_from_yaml(&text);
    let c = compile(&store, &CompileOptions::default());
    let www = |host: &str| {
        c.config.routes.lookup(host, "/any").and_then(|t| {
            t.policy.request.iter().find_map(|f| match f {
                RequestFilter::WwwRedirect(w) => Some((w.to.clone(), w.code.as_u16())),
                _ => None,
            })
        })
    };
    assert_eq!(
        www("www.foo.example.com"),
        Some(("foo.example.com".into(), 308))
    );
    assert_eq!(
        www("bar.example.com"),
        Some(("www.bar.example.com".into(), 308))
    );
    // The named hosts themselves are served as usual.
    assert_eq!(www("foo.example.com"), None);
    assert_eq!(www("www.bar.example.com"), None);
    // An Ingress names the twin: it keeps it, and the annotated one hears why.
    assert_eq!(www("www.baz.example.com"), None);
    assert_eq!(
        diags_on(&c, Kind::Ingress, "default", "baz")[0],
        (
            "metadata.annotations[\"nginx.ingress.kubernetes.io/from-to-www-redirect\"]".into(),
            DiagnosticReason::WwwRedirectConflict
        )
    );
    assert_eq!(www("www.plain.example.com"), None);
    assert_eq!(c.config.routes.lookup("www.plain.example.com", "/"), None);
    // A ConfigMap's http-redirect-code reaches it.
    text.push_str(
        "---
apiVersion: v1
kind: ConfigMap
metadata: {namespace: portico, name: portico}
data: {http-redirect-code: \"301\"}
",
    );
    let opts = CompileOptions {
        configmap: Some(ObjectKey::new("portico", "portico")),
        ..CompileOptions::default()
    };
    let c = compile(&store_from_yaml(&text), &opts);
    let code = c
        .config
        .routes
        .lookup("www.foo.example.com", "/")
        .map(|t| t.policy.request.clone());
    assert_eq!(
        code,
        Some(vec![RequestFilter::WwwRedirect(
            proxy_core::pipeline::WwwRedirect {
                to: "foo.example.com".into(),
                code: http::StatusCode::MOVED_PERMANENTLY,
            }
        )])
    );
}

/// An Ingress of class portico for `host`, with `annotations` (YAML lines) and `paths`
/// as (path, pathType, service).
fn regex_ingress(
    name: &str,
    host: &str,
    annotations: &[&str],
    paths: &[(&str, &str, &str)],
) -> String {
    let mut out = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for a in annotations {
            out.push_str(&format!("    {a}\n"));
        }
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

fn regex_store(ingresses: &[String]) -> Store {
    let mut text = String::from(
        "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}\n",
    );
    for i in ingresses {
        text.push_str(i);
    }
    store_from_yaml(&text)
}

fn service_for(c: &Compiled, host: &str, path: &str) -> Option<String> {
    c.config
        .routes
        .lookup(host, path)
        .map(|t| t.backend.service.to_string())
}

#[test]
fn regex_paths_follow_ingress_nginx_path_priority() {
    // The example of ingress-nginx's "Ingress Path Matching" page: a rewrite Ingress on
    // test.com puts every path of the host in regex mode, longest first.
    let store = regex_store(&[
        regex_ingress(
            "test-ingress-1",
            "test.com",
            &[],
            &[
                ("/foo/bar", "Prefix", "service1"),
                ("/foo/bar/", "Prefix", "service2"),
            ],
        ),
        regex_ingress(
            "test-ingress-2",
            "test.com",
            &["nginx.ingress.kubernetes.io/rewrite-target: /$1"],
            &[("/foo/bar/(.+)", "ImplementationSpecific", "service3")],
        ),
        regex_ingress(
            "plain",
            "plain.com",
            &[],
            &[("/foo/bar", "Prefix", "plain")],
        ),
    ]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(
        service_for(&c, "test.com", "/foo/bar/1").as_deref(),
        Some("service3")
    );
    assert_eq!(
        service_for(&c, "test.com", "/FOO/BAR/1").as_deref(),
        Some("service3")
    );
    assert_eq!(
        service_for(&c, "test.com", "/foo/bar").as_deref(),
        Some("service1")
    );
    // `/foo/bar/` duplicates `/foo/bar` as a Prefix claim (the first wins), and in regex
    // mode a plain path is a prefix without element boundaries.
    assert_eq!(
        service_for(&c, "test.com", "/foo/bar/").as_deref(),
        Some("service1")
    );
    assert_eq!(
        service_for(&c, "test.com", "/foo/barn").as_deref(),
        Some("service1")
    );
    assert_eq!(service_for(&c, "test.com", "/foo"), None);
    // Regex mode is per host: plain.com keeps element-wise Prefix matching.
    assert_eq!(
        service_for(&c, "plain.com", "/foo/bar/x").as_deref(),
        Some("plain")
    );
    assert_eq!(service_for(&c, "plain.com", "/foo/barn"), None);
    // The rewrite belongs to the regex path's route only.
    let rewrites = |path: &str| {
        c.config.routes.lookup("test.com", path).map(|t| {
            t.policy
                .request
                .iter()
                .any(|f| matches!(f, RequestFilter::Rewrite(_)))
        })
    };
    assert_eq!(rewrites("/foo/bar/1"), Some(true));
    assert_eq!(rewrites("/foo/bar"), Some(false));
}

#[test]
fn app_root_answers_slash_on_the_whole_host() {
    // ingress-nginx writes app-root as a server-level `if ($uri = /)`: it takes `/` on
    // the host even when another Ingress routes `/`, and of two the longer path's wins.
    let store = regex_store(&[
        regex_ingress(
            "app",
            "foo.com",
            &["nginx.ingress.kubernetes.io/app-root: /app/home"],
            &[("/app", "Prefix", "app")],
        ),
        regex_ingress(
            "short",
            "foo.com",
            &["nginx.ingress.kubernetes.io/app-root: /short"],
            &[("/a", "Prefix", "short")],
        ),
        regex_ingress("rest", "foo.com", &[], &[("/", "Prefix", "rest")]),
        regex_ingress("other", "bar.com", &[], &[("/", "Prefix", "rest")]),
    ]);
    let c = compile(&store, &CompileOptions::default());
    let app_roots = |host: &str, path: &str| -> Vec<String> {
        let t = c.config.routes.lookup(host, path).unwrap();
        t.policy
            .request
            .iter()
            .filter_map(|f| match f {
                RequestFilter::AppRoot(r) => Some(r.0.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(service_for(&c, "foo.com", "/").as_deref(), Some("rest"));
    for path in ["/", "/x", "/app", "/a/b"] {
        assert_eq!(app_roots("foo.com", path), ["/app/home"], "{path}");
        let first = &c
            .config
            .routes
            .lookup("foo.com", path)
            .unwrap()
            .policy
            .request[0];
        assert!(matches!(first, RequestFilter::AppRoot(_)), "{path}");
    }
    // Other hosts are untouched.
    assert!(app_roots("bar.com", "/").is_empty());

    // A host none of whose paths matches `/` still answers it with the app-root, plain
    // or in regex mode; other paths stay unmatched.
    for regex in [
        &[][..],
        &["nginx.ingress.kubernetes.io/use-regex: \"true\""][..],
    ] {
        let store = regex_store(&[regex_ingress(
            "app",
            "foo.com",
            &[
                &["nginx.ingress.kubernetes.io/app-root: /app/home"][..],
                regex,
            ]
            .concat(),
            &[("/app", "Prefix", "app")],
        )]);
        let c = compile(&store, &CompileOptions::default());
        let t = c.config.routes.lookup("foo.com", "/").unwrap();
        assert!(matches!(&t.policy.request[0], RequestFilter::AppRoot(r) if r.0 == "/app/home"));
        assert!(
            c.config.routes.lookup("foo.com", "/x").is_none(),
            "{regex:?}"
        );
        assert!(c.config.routes.lookup("foo.com", "/app").is_some());
    }
}

#[test]
fn a_prefix_path_equal_to_its_rewrite_target_still_rewrites_under_it() {
    // ingress-nginx normalizes the Prefix location `/keep` to `/keep/` (plus an Exact
    // `/keep`), after which `/keep/` differs from the target: it is rewritten to `/keep`
    // and the host goes to regex mode.
    let store = regex_store(&[
        regex_ingress(
            "keep",
            "keep.com",
            &["nginx.ingress.kubernetes.io/rewrite-target: /keep"],
            &[("/keep", "Prefix", "keep")],
        ),
        regex_ingress("other", "keep.com", &[], &[("/other", "Exact", "other")]),
        regex_ingress(
            "slash",
            "slash.com",
            &["nginx.ingress.kubernetes.io/rewrite-target: /keep/"],
            &[("/keep/", "Prefix", "keep")],
        ),
    ]);
    let c = compile(&store, &CompileOptions::default());
    let rewrites = |host: &str, path: &str| {
        c.config.routes.lookup(host, path).map(|t| {
            t.policy
                .request
                .iter()
                .any(|f| matches!(f, RequestFilter::Rewrite(_)))
        })
    };
    assert_eq!(rewrites("keep.com", "/keep/x"), Some(true));
    assert_eq!(rewrites("keep.com", "/keep"), Some(false));
    // Regex mode: case-insensitive prefixes, for the other Ingress's path too.
    assert_eq!(
        service_for(&c, "keep.com", "/KEEPX").as_deref(),
        Some("keep")
    );
    assert_eq!(
        service_for(&c, "keep.com", "/Other/x").as_deref(),
        Some("other")
    );
    // A path that already ends in `/` is its own target: no rewrite, no regex mode.
    assert_eq!(rewrites("slash.com", "/keep/x"), Some(false));
    assert_eq!(service_for(&c, "slash.com", "/KEEP/x"), None);
}

#[test]
fn regex_locations_go_longest_first_even_over_a_literal_match() {
    // ingress-nginx's warning example: `/foo/bar/bar` is caught by the longer regex.
    let store = regex_store(&[regex_ingress(
        "test-ingress-3",
        "test.com",
        &["nginx.ingress.kubernetes.io/use-regex: \"true\""],
        &[
            ("/foo/bar/bar", "Prefix", "literal"),
            ("/foo/bar/[A-Z0-9]{3}", "ImplementationSpecific", "regex"),
        ],
    )]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(
        service_for(&c, "test.com", "/foo/bar/bar").as_deref(),
        Some("regex")
    );
    assert_eq!(service_for(&c, "test.com", "/foo/bar/ba").as_deref(), None);
    assert!(c
        .diagnostics
        .iter()
        .all(|d| d.reason != DiagnosticReason::InvalidPathRegex));
}

#[test]
fn exact_paths_and_regexes_the_engine_refuses_in_regex_mode() {
    let regex_diags = |c: &Compiled, name: &str| -> Vec<(String, DiagnosticReason)> {
        diags_on(c, Kind::Ingress, "default", name)
            .into_iter()
            .filter(|(_, r)| *r == DiagnosticReason::InvalidPathRegex)
            .collect()
    };
    let store = regex_store(&[
        regex_ingress(
            "regex",
            "r.com",
            &["portico.dev/use-regex: \"true\""],
            &[
                ("/(?!admin).*", "ImplementationSpecific", "lookahead"),
                ("/api/v[0-9]+", "ImplementationSpecific", "api"),
            ],
        ),
        regex_ingress(
            "plain",
            "r.com",
            &[],
            &[("/exact", "Exact", "exact"), ("/a(b", "Prefix", "broken")],
        ),
    ]);
    let c = compile(&store, &CompileOptions::default());
    // Look-around is refused: reported on its path, which is not served.
    assert_eq!(
        regex_diags(&c, "regex"),
        vec![(
            "spec.rules[0].http.paths[0].path".into(),
            DiagnosticReason::InvalidPathRegex
        )]
    );
    assert_eq!(
        service_for(&c, "r.com", "/api/V1/x").as_deref(),
        Some("api")
    );
    // An Exact path of another Ingress is a prefix regex there, as `~* "^/exact"`.
    assert_eq!(
        service_for(&c, "r.com", "/exactly").as_deref(),
        Some("exact")
    );
    // A plain path that is no regex is reported, and only it is left out.
    assert_eq!(
        regex_diags(&c, "plain"),
        vec![(
            "spec.rules[0].http.paths[1].path".into(),
            DiagnosticReason::InvalidPathRegex
        )]
    );
    assert_eq!(service_for(&c, "r.com", "/a(b"), None);
    let msg = c
        .diagnostics
        .iter()
        .find(|d| {
            d.object == ObjectKey::new("default", "regex")
                && d.reason == DiagnosticReason::InvalidPathRegex
        })
        .unwrap()
        .to_string();
    assert!(msg.contains("look-around"), "{msg}");
}

const CANARY: &str = "nginx.ingress.kubernetes.io/canary: \"true\"";

/// What an Ingress is told, but for its Services missing from these fixtures.
fn canary_diags(c: &Compiled, name: &str) -> Vec<(String, DiagnosticReason)> {
    let mut d = diags_on(c, Kind::Ingress, "default", name);
    d.retain(|(_, r)| *r != DiagnosticReason::ServiceNotFound);
    d
}

/// The canary of the route `compile` picks for a request, as (service, affinity cookie).
fn canary_of(c: &Compiled, host: &str, path: &str) -> Option<(String, Option<String>)> {
    let t = c.config.routes.lookup(host, path)?;
    let canary = t.policy.canary.as_ref()?;
    Some((
        canary.backend.service.to_string(),
        canary.affinity.as_ref().map(|a| a.name.to_string()),
    ))
}

#[test]
fn a_canary_ingress_joins_its_main_route_whichever_is_older() {
    for (main_name, canary_name) in [("a-main", "b-canary"), ("b-main", "a-canary")] {
        let store = regex_store(&[
            regex_ingress(
                main_name,
                "foo.com",
                &[],
                &[("/info", "Prefix", "main"), ("/other", "Prefix", "main")],
            ),
            regex_ingress(
                canary_name,
                "foo.com",
                &[
                    CANARY,
                    "nginx.ingress.kubernetes.io/canary-by-header: CanaryByHeader",
                    // The canary's other annotations are the main's business.
                    "nginx.ingress.kubernetes.io/app-root: /app1",
                ],
                &[("/info", "Prefix", "canary")],
            ),
        ]);
        let c = compile(&store, &CompileOptions::default());
        assert!(canary_diags(&c, main_name).is_empty());
        assert!(canary_diags(&c, canary_name).is_empty());
        // Never a competitor: the route is the main's, with the canary beside it.
        assert_eq!(service_for(&c, "foo.com", "/info").as_deref(), Some("main"));
        assert_eq!(
            canary_of(&c, "foo.com", "/info/x"),
            Some(("canary".to_owned(), None))
        );
        let t = c.config.routes.lookup("foo.com", "/info").unwrap();
        assert_eq!(&*t.source, format!("default/{main_name}"));
        assert!(t
            .policy
            .request
            .iter()
            .all(|f| !matches!(f, RequestFilter::AppRoot(_))));
        // Only the path the canary names.
        assert_eq!(canary_of(&c, "foo.com", "/other"), None);
        assert_eq!(
            service_for(&c, "foo.com", "/other").as_deref(),
            Some("main")
        );
        // The canary's backend is resolved like any other.
        assert!(c
            .config
            .backends
            .contains_key(&BackendId::new("default", "canary", "80")));
    }
}

#[test]
fn a_canary_without_a_main_is_reported_and_not_served() {
    let store = regex_store(&[
        regex_ingress("main", "foo.com", &[], &[("/info", "Prefix", "main")]),
        // Another host, another path, another path type: none has a main.
        regex_ingress(
            "solo",
            "solo.com",
            &[CANARY],
            &[("/info", "Prefix", "canary")],
        ),
        regex_ingress(
            "elsewhere",
            "foo.com",
            &[CANARY],
            &[
                ("/info/x", "Prefix", "canary"),
                ("/info", "Exact", "canary"),
            ],
        ),
    ]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(service_for(&c, "solo.com", "/info"), None);
    assert_eq!(
        canary_diags(&c, "solo"),
        vec![(
            "spec.rules[0].http.paths[0]".to_owned(),
            DiagnosticReason::CanaryWithoutMain
        )]
    );
    assert_eq!(
        canary_diags(&c, "elsewhere"),
        vec![
            (
                "spec.rules[0].http.paths[0]".to_owned(),
                DiagnosticReason::CanaryWithoutMain
            ),
            (
                "spec.rules[0].http.paths[1]".to_owned(),
                DiagnosticReason::CanaryWithoutMain
            ),
        ]
    );
    assert_eq!(
        service_for(&c, "foo.com", "/info/x").as_deref(),
        Some("main")
    );
    assert_eq!(canary_of(&c, "foo.com", "/info/x"), None);
    assert!(canary_diags(&c, "main").is_empty());
}

#[test]
fn one_canary_per_path_and_never_the_mains_own_backend() {
    let store = regex_store(&[
        regex_ingress("main", "foo.com", &[], &[("/info", "Prefix", "main")]),
        regex_ingress(
            "canary-1",
            "foo.com",
            &[CANARY],
            &[("/info", "Prefix", "one")],
        ),
        regex_ingress(
            "canary-2",
            "foo.com",
            &[CANARY],
            &[("/info/", "Prefix", "two")],
        ),
        regex_ingress("main-2", "bar.com", &[], &[("/", "Prefix", "main")]),
        regex_ingress("self", "bar.com", &[CANARY], &[("/", "Prefix", "main")]),
    ]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(
        canary_of(&c, "foo.com", "/info").map(|c| c.0).as_deref(),
        Some("one")
    );
    assert_eq!(
        canary_diags(&c, "canary-2"),
        vec![(
            "spec.rules[0].http.paths[0]".to_owned(),
            DiagnosticReason::CanaryConflict
        )]
    );
    assert_eq!(canary_of(&c, "bar.com", "/"), None);
    assert_eq!(
        canary_diags(&c, "self"),
        vec![(
            "spec.rules[0].http.paths[0].backend".to_owned(),
            DiagnosticReason::CanaryConflict
        )]
    );
}

#[test]
fn canary_sessions_take_the_mains_affinity_unless_legacy() {
    let main_ann = [
        "nginx.ingress.kubernetes.io/affinity: cookie",
        "nginx.ingress.kubernetes.io/session-cookie-name: aff",
    ];
    for (behaviour, own, want) in [
        (None, false, Some("aff")),
        (Some("sticky"), true, Some("aff")),
        (Some("legacy"), false, None),
        (Some("legacy"), true, Some("own")),
    ] {
        let mut ann = vec![CANARY.to_owned()];
        if let Some(b) = behaviour {
            ann.push(format!(
                "nginx.ingress.kubernetes.io/affinity-canary-behavior: {b}"
            ));
        }
        if own {
            ann.push("nginx.ingress.kubernetes.io/affinity: cookie".to_owned());
            ann.push("nginx.ingress.kubernetes.io/session-cookie-name: own".to_owned());
        }
        let ann: Vec<&str> = ann.iter().map(String::as_str).collect();
        let store = regex_store(&[
            regex_ingress("main", "foo.com", &main_ann, &[("/info", "Prefix", "main")]),
            regex_ingress("canary", "foo.com", &ann, &[("/info", "Prefix", "canary")]),
        ]);
        let c = compile(&store, &CompileOptions::default());
        assert_eq!(
            canary_of(&c, "foo.com", "/info"),
            Some(("canary".to_owned(), want.map(str::to_owned))),
            "{behaviour:?} {own}"
        );
        // The cookie's path is the rule's, as ingress-nginx's location path.
        let t = c.config.routes.lookup("foo.com", "/info").unwrap();
        if let Some(a) = &t.policy.canary.as_ref().unwrap().affinity {
            assert_eq!(a.path.as_deref(), Some("/info"));
        }
    }
}

#[test]
fn canaries_follow_a_regex_main_and_never_set_the_default_backend() {
    let mut canary = regex_ingress(
        "canary",
        "foo.com",
        &[CANARY, "nginx.ingress.kubernetes.io/canary-weight: \"50\""],
        &[("/api(/|$)(.*)", "ImplementationSpecific", "canary")],
    );
    canary.push_str("  defaultBackend: {service: {name: canary, port: {number: 80}}}\n");
    let store = regex_store(&[
        regex_ingress(
            "main",
            "foo.com",
            &["nginx.ingress.kubernetes.io/rewrite-target: /$2"],
            &[("/api(/|$)(.*)", "ImplementationSpecific", "main")],
        ),
        canary,
    ]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(
        canary_of(&c, "foo.com", "/api/x").map(|c| c.0).as_deref(),
        Some("canary")
    );
    // The main's rewrite stays in force for canary requests.
    let t = c.config.routes.lookup("foo.com", "/api/x").unwrap();
    assert!(t
        .policy
        .request
        .iter()
        .any(|f| matches!(f, RequestFilter::Rewrite(_))));
    assert!(c.config.default_backend.is_none());
    assert_eq!(
        canary_diags(&c, "canary"),
        vec![(
            "spec.defaultBackend".to_owned(),
            DiagnosticReason::CanaryDefaultBackend
        )]
    );
}

#[test]
fn server_aliases_route_as_their_host_unless_they_clash() {
    let alias = |v: &str| format!("nginx.ingress.kubernetes.io/server-alias: \"{v}\"");
    let first = alias("www.foo.com, bar.com, foo.com, *.foo.org");
    let second = alias("second.com");
    let store = regex_store(&[
        regex_ingress("a-foo", "foo.com", &[&first], &[("/", "Prefix", "foo")]),
        regex_ingress("b-foo", "foo.com", &[&second], &[("/api", "Prefix", "api")]),
        regex_ingress("bar", "bar.com", &[], &[("/", "Prefix", "bar")]),
        regex_ingress(
            "c-canary",
            "foo.com",
            &[CANARY, &alias("canary.com")],
            &[("/", "Prefix", "canary")],
        ),
    ]);
    let c = compile(&store, &CompileOptions::default());
    // Every path of the host, from every Ingress.
    for alias in ["www.foo.com", "x.foo.org"] {
        assert_eq!(
            service_for(&c, alias, "/").as_deref(),
            Some("foo"),
            "{alias}"
        );
        assert_eq!(
            service_for(&c, alias, "/api/x").as_deref(),
            Some("api"),
            "{alias}"
        );
    }
    // A host some Ingress routes keeps its own rules.
    assert_eq!(service_for(&c, "bar.com", "/").as_deref(), Some("bar"));
    // The older Ingress's aliases are the host's; a canary's play no part.
    assert_eq!(service_for(&c, "second.com", "/"), None);
    assert_eq!(service_for(&c, "canary.com", "/"), None);
    let field = "metadata.annotations[\"nginx.ingress.kubernetes.io/server-alias\"]";
    assert_eq!(
        canary_diags(&c, "a-foo"),
        vec![(field.to_owned(), DiagnosticReason::ServerAliasConflict)]
    );
    assert_eq!(
        canary_diags(&c, "b-foo"),
        vec![(field.to_owned(), DiagnosticReason::ServerAliasConflict)]
    );
    let a_foo = c
        .diagnostics
        .iter()
        .find(|d| {
            d.object == ObjectKey::new("default", "a-foo")
                && d.reason == DiagnosticReason::ServerAliasConflict
        })
        .unwrap();
    assert!(a_foo.message.contains("bar.com"), "{a_foo}");
    // A regex host's alias is in regex mode too.
    let store = regex_store(&[regex_ingress(
        "re",
        "re.com",
        &[
            "nginx.ingress.kubernetes.io/use-regex: \"true\"",
            &alias("re.net"),
        ],
        &[("/r[0-9]+", "ImplementationSpecific", "digits")],
    )]);
    let c = compile(&store, &CompileOptions::default());
    assert_eq!(service_for(&c, "re.net", "/R12").as_deref(), Some("digits"));
}

const ERRORS_YAML: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: error-pages, namespace: shop}
spec:
  ports:
  - {name: http, port: 8080, targetPort: 3000}
  - {name: other, port: 9090, targetPort: 4000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: error-pages-1
  namespace: shop
  labels: {kubernetes.io/service-name: error-pages}
addressType: IPv4
ports:
- {name: http, port: 3000}
- {name: other, port: 4000}
endpoints:
- addresses: [10.0.0.7]
---
apiVersion: v1
kind: Service
metadata: {name: catch-all, namespace: portico}
spec:
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: catch-all-1
  namespace: portico
  labels: {kubernetes.io/service-name: catch-all}
addressType: IPv4
ports:
- {port: 8080}
endpoints:
- addresses: [10.0.0.9]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: portico, namespace: portico}
data: {custom-http-errors: \"404\"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: storefront
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/default-backend: error-pages
    nginx.ingress.kubernetes.io/custom-http-errors: \"500, 503\"
spec:
  ingressClassName: portico
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: plain, namespace: shop}
spec:
  ingressClassName: portico
  rules:
  - host: plain.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
";

#[test]
fn default_backends_and_error_codes_reach_the_routes() {
    let store = store_from_yaml(ERRORS_YAML);
    let opts = CompileOptions {
        configmap: Some(ObjectKey::new("portico", "portico")),
        default_backend_service: Some(ObjectKey::new("portico", "catch-all")),
        ..CompileOptions::default()
    };
    let mut cache = CompileCache::default();
    let c = compile_with(&store, &opts, &mut cache);
    let own = BackendId::new("shop", "error-pages", "(first)");
    let global = BackendId::new("portico", "catch-all", "(first)");
    // The annotation's Service on its first port, the flag's too.
    assert_eq!(
        endpoints_of(&c, &own),
        vec![ep("10.0.0.7:3000", true, false, None, None)]
    );
    assert_eq!(
        endpoints_of(&c, &global),
        vec![ep("10.0.0.9:8080", true, false, None, None)]
    );
    let policy_of = |host: &str| {
        c.config
            .routes
            .rules()
            .into_iter()
            .find(|r| r.host.to_string() == host)
            .map(|r| r.target.policy.clone())
            .expect("route")
    };
    let shop = policy_of("shop.example.com");
    assert_eq!(
        shop.errors,
        Some(proxy_core::pipeline::ErrorPages::new(
            [500, 503],
            Some(own.clone())
        ))
    );
    // Without annotations: the ConfigMap's codes, for the global default backend.
    let plain = policy_of("plain.example.com");
    assert_eq!(
        plain.errors,
        Some(proxy_core::pipeline::ErrorPages::new([404], None))
    );
    let catch_all = c.config.default_service.as_ref().expect("global default");
    assert_eq!(catch_all.backend, global);
    assert!(c.config.default_backend.is_none());
    assert_eq!(
        catch_all.policy.errors,
        Some(proxy_core::pipeline::ErrorPages::new([404], None))
    );

    // The same from a cache as from nothing, and references follow edits: without the
    // annotation, the annotation's backend leaves the config.
    assert_eq!(
        compile(&store, &opts).config.backends.len(),
        c.config.backends.len()
    );
    let edited = ERRORS_YAML.replace(
        "    nginx.ingress.kubernetes.io/default-backend: error-pages\n",
        "",
    );
    let c = compile_with(&store_from_yaml(&edited), &opts, &mut cache);
    assert!(!c.config.backends.contains_key(&own));
    assert!(c.config.backends.contains_key(&global));
    let c = compile_with(
        &store_from_yaml(&edited),
        &CompileOptions::default(),
        &mut cache,
    );
    assert!(c.config.default_service.is_none());
    assert!(!c.config.backends.contains_key(&global));
}

#[test]
fn missing_default_backend_services_are_reported() {
    let yaml = ERRORS_YAML.replace(
        "default-backend: error-pages",
        "default-backend: no-such-service",
    );
    let opts = CompileOptions {
        default_backend_service: Some(ObjectKey::new("portico", "gone")),
        ..CompileOptions::default()
    };
    let c = compile(&store_from_yaml(&yaml), &opts);
    let on_annotations = |c: &Compiled| {
        let mut said = diags_on(c, Kind::Ingress, "shop", "storefront");
        said.retain(|(field, _)| field.starts_with("metadata."));
        said
    };
    assert_eq!(
        on_annotations(&c),
        vec![(
            "metadata.annotations[default-backend]".to_owned(),
            DiagnosticReason::ServiceNotFound
        )]
    );
    let on_flag = diags_on(&c, Kind::Service, "portico", "gone");
    assert_eq!(on_flag.len(), 1, "{on_flag:?}");
    assert_eq!(on_flag[0].1, DiagnosticReason::ServiceNotFound);
    // Still a catch-all: with no endpoint it answers 404 in the dataplane.
    assert!(c.config.default_service.is_some());
    // A bad annotation value costs only its key.
    let yaml = ERRORS_YAML.replace("\"500, 503\"", "\"500,abc\"");
    let c = compile(&store_from_yaml(&yaml), &CompileOptions::default());
    assert_eq!(
        on_annotations(&c),
        vec![(
            "metadata.annotations[\"nginx.ingress.kubernetes.io/custom-http-errors\"]".to_owned(),
            DiagnosticReason::InvalidAnnotation
        )]
    );
    assert_eq!(c.config.routes.rules().len(), 2);
}

const HEADERS_YAML: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: portico, namespace: portico}
data:
  global-allowed-response-headers: \"X-Frame-Options, X-Using-Portico, bad name\"
  proxy-set-headers: portico/request-headers
---
apiVersion: v1
kind: ConfigMap
metadata: {name: request-headers, namespace: portico}
data:
  X-Different-Name: \"true\"
  X-Request-Start: \"t=${msec}\"
  Host: evil.example.com
---
apiVersion: v1
kind: ConfigMap
metadata: {name: custom-headers, namespace: default}
data:
  X-Frame-Options: DENY
  X-Using-Portico: \"true\"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-allowed, namespace: default}
data:
  X-Frame-Options: DENY
  X-Powered-By: me
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: good
  annotations: {nginx.ingress.kubernetes.io/custom-headers: default/custom-headers}
spec:
  ingressClassName: portico
  rules:
  - host: good.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: refused
  annotations: {portico.dev/custom-headers: default/not-allowed}
spec:
  ingressClassName: portico
  rules:
  - host: refused.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
";

#[test]
fn header_configmaps_are_read_and_checked() {
    use http::header::{HeaderName, HeaderValue};
    use proxy_core::pipeline::SetHeaders;

    let opts = CompileOptions {
        configmap: Some(ObjectKey::new("portico", "portico")),
        ..CompileOptions::default()
    };
    let c = compile(&store_from_yaml(HEADERS_YAML), &opts);
    let field = |n: &'static str, v: &'static str| {
        (HeaderName::from_static(n), HeaderValue::from_static(v))
    };
    // proxy-set-headers: the fields Portico can send as written; the rest reported.
    assert_eq!(
        c.config.settings.proxy_set_headers,
        SetHeaders(vec![field("x-different-name", "true")])
    );
    let on_request_headers = diags_on(&c, Kind::ConfigMap, "portico", "request-headers");
    assert_eq!(on_request_headers.len(), 2, "{on_request_headers:?}");
    // A bad allow-list item costs only itself.
    assert_eq!(
        c.settings.allowed_response_headers,
        vec!["X-Frame-Options".to_owned(), "X-Using-Portico".to_owned()]
    );
    // custom-headers: the allowed ConfigMap is in the config, named by the route.
    let good = c.config.response_headers.get("default/custom-headers");
    assert_eq!(
        good.map(|s| (**s).clone()),
        Some(SetHeaders(vec![
            field("x-frame-options", "DENY"),
            field("x-using-portico", "true")
        ]))
    );
    let policy_of = |host: &str| {
        c.config
            .routes
            .rules()
            .into_iter()
            .find(|r| r.host.to_string() == host)
            .map(|r| r.target.policy.clone())
            .expect("route")
    };
    assert_eq!(
        policy_of("good.example.com").response_headers.as_deref(),
        Some("default/custom-headers")
    );
    // A field outside the allow-list refuses the ConfigMap; the Ingress is still served.
    assert!(!c
        .config
        .response_headers
        .contains_key("default/not-allowed"));
    let said: Vec<_> = diags_on(&c, Kind::Ingress, "default", "refused")
        .into_iter()
        .filter(|(f, _)| f.starts_with("metadata."))
        .collect();
    assert_eq!(
        said,
        vec![(
            "metadata.annotations[\"portico.dev/custom-headers\"]".to_owned(),
            DiagnosticReason::InvalidAnnotation
        )]
    );
    assert_eq!(c.config.routes.rules().len(), 2);

    // Without an allow-list nothing is allowed, as in ingress-nginx.
    let c = compile(&store_from_yaml(HEADERS_YAML), &CompileOptions::default());
    assert!(c.config.response_headers.is_empty());
    assert!(c.config.settings.proxy_set_headers.is_empty());
}

/// The messages that lead to the fix: a port that is the Service's targetPort or
/// nodePort, a Service in another namespace, endpoints that exist but none ready.
#[test]
fn backend_problems_say_what_to_change() {
    let store = store_from_yaml(
        "\
apiVersion: v1
kind: Service
metadata: {name: kubia}
spec:
  type: NodePort
  selector: {app: kubia}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30123}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-1
  labels: {kubernetes.io/service-name: kubia}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: false}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: kubia}
spec:
  rules:
  - http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: kubia, port: {number: 8080}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: kubia, port: {number: 30123}}}}
      - {path: /c, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}
      - {path: /d, pathType: Prefix, backend: {service: {name: kubia, port: {number: 80}}}}
",
    );
    let c = compile(&store, &CompileOptions::default());
    let said: Vec<String> = c.diagnostics.iter().map(ToString::to_string).collect();
    let find = |needle: &str| {
        said.iter()
            .find(|d| d.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {said:#?}"))
            .clone()
    };
    let d = find("paths[0]");
    assert!(
        d.contains("has no port 8080 (its ports: 80 (\"http\", targetPort 8080, nodePort 30123))"),
        "{d}"
    );
    assert!(
        d.contains("8080 is the targetPort (the pods' port) of Service port 80"),
        "{d}"
    );
    assert!(d.contains("use port number 80"), "{d}");
    let d = find("paths[1]");
    assert!(
        d.contains("30123 is the nodePort of Service port 80"),
        "{d}"
    );
    let d = find("paths[2]");
    assert!(
        d.contains("a Service \"other\" exists in namespace \"shop\""),
        "{d}"
    );
    let d = find("Service default/kubia:");
    assert!(
        d.contains("none of its endpoints is ready (1 listed"),
        "{d}"
    );
    assert_eq!(said.len(), 4, "{said:#?}");

    // publishNotReadyAddresses (or the older annotation): the endpoint serves, and
    // nothing is said about readiness.
    for (field, value) in [
        ("spec.publishNotReadyAddresses", "true"),
        ("annotation", "true"),
    ] {
        let mut store = store.clone();
        let key = ObjectKey::new("default", "kubia");
        let mut svc = (*store.services[&key]).clone();
        if field == "annotation" {
            svc.metadata.annotations = Some(
                [(
                    endpoints::TOLERATE_UNREADY_ANNOTATION.to_owned(),
                    value.to_owned(),
                )]
                .into(),
            );
        } else {
            svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        }
        store.apply(Object::Service(svc));
        let c = compile(&store, &CompileOptions::default());
        let id = BackendId::new("default", "kubia", "80");
        let eps = endpoints_of(&c, &id);
        assert_eq!(eps.len(), 1, "{field}");
        assert!(eps[0].ready, "{field}: not published as ready");
        assert!(
            !c.diagnostics
                .iter()
                .any(|d| d.reason == DiagnosticReason::NoReadyEndpoints),
            "{field}: {:?}",
            c.diagnostics
        );
    }
}

/// Over a folder, an Ingress that is not ours says why and how to make it ours.
#[test]
fn unowned_ingresses_are_explained_when_asked() {
    let ingress = |name: &str, class: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\n\
             spec:\n  {class}\n  defaultBackend: {{service: {{name: x, port: {{number: 80}}}}}}\n"
        )
    };
    let mut text = String::new();
    text.push_str(&ingress("none", "rules: []"));
    text.push_str(&ingress("nginx", "ingressClassName: nginx"));
    text.push_str(&ingress("portico", "ingressClassName: portico"));
    let store = store_from_yaml(&text);
    let opts = CompileOptions {
        explain_unowned: true,
        ..CompileOptions::default()
    };
    let c = compile(&store, &opts);
    let said = |name: &str| {
        c.diagnostics
            .iter()
            .find(|d| d.object.name == name)
            .map(|d| (d.reason, d.to_string()))
            .unwrap_or_else(|| panic!("nothing said about {name}: {:?}", c.diagnostics))
    };
    let (reason, m) = said("none");
    assert_eq!(reason, DiagnosticReason::NoIngressClass);
    assert!(m.contains("spec.ingressClassName: not set"), "{m}");
    assert!(m.contains("--watch-ingress-without-class"), "{m}");
    assert!(
        m.contains("ingressclass.kubernetes.io/is-default-class"),
        "{m}"
    );
    let (reason, m) = said("nginx");
    assert_eq!(reason, DiagnosticReason::IngressClassNotOurs);
    assert!(
        m.contains("asks for IngressClass \"nginx\", which does not exist"),
        "{m}"
    );
    assert!(m.contains("set spec.ingressClassName: portico"), "{m}");
    let (_, m) = said("portico");
    assert!(m.contains("manifests/20-ingressclass.yaml"), "{m}");
    // In a cluster, other controllers' Ingresses are none of ours: nothing said.
    assert!(compile(&store, &CompileOptions::default())
        .diagnostics
        .is_empty());

    // --watch-ingress-without-class: the class-less one is served.
    let opts = CompileOptions {
        watch_ingress_without_class: true,
        ..opts
    };
    let c = compile(&store, &opts);
    assert_eq!(c.owned_ingresses, vec![ObjectKey::new("default", "none")]);
}

#[test]
fn limits_compile_to_a_filter_and_replicas_from_the_publish_service() {
    let store = store_from_yaml(
        "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: portico, namespace: ingress}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: portico-1
  namespace: ingress
  labels: {kubernetes.io/service-name: portico}
addressType: IPv4
ports:
- {name: http, port: 8080}
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
- addresses: [10.0.0.3]
  conditions: {ready: false}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: portico, namespace: ingress}
data: {limit-req-status-code: \"429\"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/limit-rps: \"10\"
    nginx.ingress.kubernetes.io/limit-connections: \"4\"
    nginx.ingress.kubernetes.io/limit-allowlist: \"10.1.0.0/16\"
    nginx.ingress.kubernetes.io/whitelist-source-range: \"10.0.0.0/8\"
spec:
  ingressClassName: portico
  rules:
  - host: api.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
",
    );
    let opts = CompileOptions {
        configmap: Some(ObjectKey::new("ingress", "portico")),
        replica_service: Some(ObjectKey::new("ingress", "portico")),
        ..CompileOptions::default()
    };
    let c = compile(&store, &opts);
    // Two ready endpoints: each replica takes half of every limit.
    assert_eq!(c.config.replicas, 2);
    let route = c.config.routes.lookup("api.example.com", "/").unwrap();
    let kinds: Vec<_> = route
        .policy
        .request
        .iter()
        .map(std::mem::discriminant)
        .collect();
    let RequestFilter::RateLimit(l) = &route.policy.request[0] else {
        panic!("{:?}", route.policy.request);
    };
    assert_eq!(&*l.zone, "shop/api");
    assert_eq!(l.rps.map(|r| (r.limit, r.burst_multiplier)), Some((10, 5)));
    assert_eq!(l.connections, Some(4));
    assert_eq!(l.req_status, http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(l.conn_status, http::StatusCode::SERVICE_UNAVAILABLE);
    // nginx's preaccess phase comes before its access phase (the source ranges).
    assert!(matches!(
        route.policy.request[1],
        RequestFilter::SourceRanges(_)
    ));
    assert_eq!(kinds.len(), 3, "{:?}", route.policy.request);
    // Over a folder, or without the flag: one replica.
    assert_eq!(
        compile(&store, &CompileOptions::default()).config.replicas,
        1
    );
    let missing = CompileOptions {
        replica_service: Some(ObjectKey::new("ingress", "gone")),
        ..CompileOptions::default()
    };
    assert_eq!(compile(&store, &missing).config.replicas, 1);
}

const UPSTREAM_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  clusterIP: 10.96.0.10
  selector: {app: app}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: app}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: headless}
subsets:
- addresses: [{ip: 10.0.1.1}]
  ports: [{name: http, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: hashed
  annotations:
    nginx.ingress.kubernetes.io/upstream-hash-by: "$request_uri"
    nginx.ingress.kubernetes.io/proxy-next-upstream: "error http_502 non_idempotent"
    portico.dev/proxy-next-upstream-tries: "2"
    nginx.ingress.kubernetes.io/custom-http-errors: "503"
    nginx.ingress.kubernetes.io/disable-proxy-intercept-errors: "true"
spec:
  ingressClassName: portico
  rules:
  - host: hashed.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: direct
  annotations:
    nginx.ingress.kubernetes.io/service-upstream: "true"
    nginx.ingress.kubernetes.io/load-balance: ewma
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  ingressClassName: portico
  rules:
  - host: direct.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
      - {path: /headless, pathType: Prefix, backend: {service: {name: headless, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: odd
  annotations:
    nginx.ingress.kubernetes.io/upstream-hash-by: "$request_uri/x"
    nginx.ingress.kubernetes.io/upstream-hash-by-subset: "true"
    nginx.ingress.kubernetes.io/load-balance: chash
    nginx.ingress.kubernetes.io/proxy-next-upstream: "error, timeout"
    nginx.ingress.kubernetes.io/proxy-next-upstream-tries: "-1"
spec:
  ingressClassName: portico
  rules:
  - host: odd.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
"#;

#[test]
fn upstream_selection_annotations_reach_the_routes() {
    use proxy_core::balance::{Balance, Condition, RingKey};
    let store = store_from_yaml(UPSTREAM_YAML);
    let c = compile(&store, &CompileOptions::default());
    let target = |host: &str, path: &str| {
        c.config
            .routes
            .rules()
            .into_iter()
            .find(|r| r.host.to_string() == host && r.path == path)
            .map(|r| r.target.clone())
            .expect("route")
    };
    let hashed = target("hashed.example.com", "/");
    assert!(matches!(&hashed.policy.balance, Balance::Hash(by) if by.subset.is_none()));
    let next = hashed.policy.next_upstream.expect("proxy-next-upstream");
    assert!(next.on(Condition::Error) && next.on_status(http::StatusCode::BAD_GATEWAY));
    assert!(!next.on(Condition::Timeout) && next.non_idempotent);
    assert_eq!(next.tries, 2);
    assert!(hashed.policy.errors.as_ref().unwrap().pass_upstream);
    assert_eq!(
        c.config.hash_rings,
        vec![RingKey {
            backend: hashed.backend.clone(),
            subset: 0
        }]
    );

    // service-upstream: one endpoint, the cluster IP on the Service port, in a backend
    // of its own; a headless Service keeps its endpoints.
    let direct = target("direct.example.com", "/");
    assert_eq!(direct.policy.balance, Balance::Ewma);
    assert_eq!(direct.policy.next_upstream, None);
    assert_ne!(direct.backend, hashed.backend);
    assert_eq!(
        endpoints_of(&c, &direct.backend),
        vec![Endpoint::ready("10.96.0.10:80".parse().unwrap())]
    );
    assert_eq!(endpoints_of(&c, &hashed.backend).len(), 2);
    let headless = target("direct.example.com", "/headless");
    assert_eq!(
        endpoints_of(&c, &headless.backend),
        vec![Endpoint::ready("10.0.1.1:80".parse().unwrap())]
    );
    assert!(diags_on(&c, Kind::Service, "default", "headless")
        .iter()
        .any(|(f, r)| *r == DiagnosticReason::InvalidService && f == "spec.clusterIP"));

    // Values ingress-nginx would refuse are reported and leave the defaults.
    let odd = target("odd.example.com", "/");
    assert_eq!(odd.policy.balance, Balance::RoundRobin);
    assert_eq!(odd.policy.next_upstream, None);
    let odd_diags = diags_on(&c, Kind::Ingress, "default", "odd");
    for key in [
        "upstream-hash-by\"",
        "upstream-hash-by-subset\"",
        "load-balance",
        "proxy-next-upstream\"",
        "proxy-next-upstream-tries",
    ] {
        assert!(
            odd_diags.iter().any(|(m, _)| m.contains(key)),
            "{key}: {odd_diags:?}"
        );
    }
    // None of the keys is reported as unsupported any more.
    assert!(!c
        .diagnostics
        .iter()
        .any(|d| d.reason == DiagnosticReason::UnsupportedAnnotation));
}

#[test]
fn client_certificates_belong_to_the_host_oldest_ingress_first() {
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
        .unwrap()
        .cert
        .pem();
    let ingress = |name: &str, ts: &str, host: Option<&str>, secret: &str, path: &str| {
        let rule = match host {
            Some(h) => format!("  - host: {h}\n    http:\n"),
            None => "  - http:\n".to_owned(),
        };
        format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  creationTimestamp: \"{ts}\"
  annotations:
    nginx.ingress.kubernetes.io/auth-tls-secret: {secret}
    nginx.ingress.kubernetes.io/auth-tls-verify-client: optional
spec:
  ingressClassName: portico
  rules:
{rule}      paths:
      - path: {path}
        pathType: Prefix
        backend: {{service: {{name: web, port: {{number: 80}}}}}}
"
        )
    };
    let mut text = String::from(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
spec:
  controller: portico.dev/ingress-controller
---
apiVersion: v1
kind: Secret
metadata:
  name: ca
data:
",
    );
    let ca64 = serde_json::to_value(ByteString(ca.into_bytes())).unwrap();
    text.push_str(&format!("  ca.crt: {}\n", ca64.as_str().unwrap()));
    text.push_str(&ingress(
        "old",
        "2020-01-01T00:00:00Z",
        Some("a.test"),
        "ca",
        "/",
    ));
    text.push_str(&ingress(
        "new",
        "2021-01-01T00:00:00Z",
        Some("a.test"),
        "gone",
        "/new",
    ));
    text.push_str(&ingress(
        "broken",
        "2021-01-01T00:00:00Z",
        Some("b.test"),
        "gone",
        "/",
    ));
    text.push_str(&ingress(
        "hostless",
        "2021-01-01T00:00:00Z",
        None,
        "ca",
        "/",
    ));
    let c = compile(&store_from_yaml(&text), &CompileOptions::default());
    // The older Ingress's settings are the host's; the newer one is told so.
    let (server, policy) = c.config.client_auth.get("a.test").expect("a.test");
    assert_eq!((&**server, &*policy.source), ("a.test", "default/old"));
    assert_eq!(policy.verify, proxy_core::pipeline::VerifyClient::Optional);
    assert_eq!(c.client_auth.len(), 1, "{:?}", c.client_auth);
    assert_eq!(c.client_auth[0].0, host("a.test"));
    let reasons = |name| diags_on(&c, Kind::Ingress, "default", name);
    assert!(
        reasons("new").iter().any(
            |(f, r)| *r == DiagnosticReason::InvalidAnnotation && f.contains("auth-tls-secret")
        ),
        "{:?}",
        reasons("new")
    );
    // A missing Secret leaves its host out; a rule without a host cannot have them.
    assert!(c.config.client_auth.get("b.test").is_none());
    assert!(reasons("broken")
        .iter()
        .any(|(_, r)| *r == DiagnosticReason::AuthSecretInvalid));
    assert!(reasons("hostless")
        .iter()
        .any(|(_, r)| *r == DiagnosticReason::SecurityRefused));
    // Every path of a checked host runs the check first.
    let first = |host: &str, path: &str| {
        let (_, rules) = compile_rules(&store_from_yaml(&text));
        rules
            .iter()
            .find(|r| r.host == exact(host) && r.path == path)
            .map(|r| {
                matches!(
                    r.target.policy.request.first(),
                    Some(RequestFilter::ClientCert(_))
                )
            })
    };
    assert_eq!(first("a.test", "/"), Some(true));
    assert_eq!(first("a.test", "/new"), Some(true));
}
