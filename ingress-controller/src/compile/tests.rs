//! Compiler tests from YAML fixtures in `tests/fixtures/compile/`.

use std::net::SocketAddr;

use proxy_core::config::{BackendId, BackendKind, Endpoint};
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
        if kind != "IngressClass" && value["metadata"].get("namespace").is_none() {
            value["metadata"]["namespace"] = "default".into();
        }
        let obj = match kind.as_str() {
            "Ingress" => Object::Ingress(serde_yaml_ng::from_value(value).unwrap()),
            "IngressClass" => Object::IngressClass(serde_yaml_ng::from_value(value).unwrap()),
            "Service" => Object::Service(serde_yaml_ng::from_value(value).unwrap()),
            "EndpointSlice" => Object::EndpointSlice(serde_yaml_ng::from_value(value).unwrap()),
            "Endpoints" => Object::Endpoints(serde_yaml_ng::from_value(value).unwrap()),
            "Secret" => Object::Secret(serde_yaml_ng::from_value(value).unwrap()),
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

fn compile_rules(store: &Store) -> (Compiled, Vec<RouteRule>) {
    compile_inner(store, &CompileOptions::default())
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

fn exact(h: &str) -> HostMatch {
    HostMatch::Exact(h.into())
}

#[test]
fn kubia_named_ports_resolve_to_slice_ports() {
    let store = fixture("kubia.yaml");
    let (c, rules) = compile_rules(&store);
    assert_eq!(c.owned_ingresses, vec![ObjectKey::new("default", "kubia")]);

    let wild = HostMatch::Wildcard("kubia.example.com".into());
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
        .all(|r| &*r.target.source == "default/kubia" && !r.target.ssl_redirect));

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
         service \"kubia\" has no port named \"grpc\"; requests get 503"
    );
    assert_eq!(c.diagnostics.len(), 7);
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
