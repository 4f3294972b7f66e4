//! The cluster-scale store the benches share: `n` Ingresses (5 paths each, on a host of
//! their own) over as many Services with one 3-endpoint EndpointSlice each, in 20
//! namespaces; 1 in 10 Ingresses has a TLS Secret.
#![allow(dead_code)]

use ingress_controller::store::{Object, Store};
use serde_json::json;

pub const PATHS: usize = 5;
pub const NAMESPACES: usize = 20;
pub const TLS_EVERY: usize = 10;

pub fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("bench object")
}

/// App `i`'s EndpointSlice: three pods, the third ready or not.
pub fn endpoint_slice(i: usize, third_ready: bool) -> Object {
    let (ns, svc) = (format!("ns-{}", i % NAMESPACES), format!("svc-{i}"));
    let endpoints: Vec<_> = (0..3)
        .map(|e| {
            json!({
                "addresses": [format!("10.{e}.{}.{}", i / 256, i % 256)],
                "conditions": {"ready": e < 2 || third_ready},
                "targetRef": {"kind": "Pod", "name": format!("{svc}-{e}")}
            })
        })
        .collect();
    Object::EndpointSlice(object(json!({
        "metadata": {"name": format!("{svc}-abcde"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints
    })))
}

/// App `i`'s Ingress with `paths` paths on its own host.
pub fn ingress(i: usize, paths: usize) -> Object {
    let (ns, svc) = (format!("ns-{}", i % NAMESPACES), format!("svc-{i}"));
    let host = format!("app-{i}.example.com");
    let paths: Vec<_> = (0..paths)
        .map(|p| {
            json!({
                "path": format!("/p{p}"),
                "pathType": if p % 2 == 0 { "Prefix" } else { "Exact" },
                "backend": {"service": {"name": svc, "port": {"name": "http"}}}
            })
        })
        .collect();
    let mut spec = json!({
        "ingressClassName": "portico",
        "rules": [{"host": host, "http": {"paths": paths}}]
    });
    if i.is_multiple_of(TLS_EVERY) {
        spec["tls"] = json!([{"hosts": [host], "secretName": format!("tls-{i}")}]);
    }
    Object::Ingress(object(json!({
        "metadata": {"name": format!("ing-{i}"), "namespace": ns,
                     "annotations": {"portico.dev/affinity": "cookie"}},
        "spec": spec
    })))
}

pub fn store(ingresses: usize) -> Store {
    let mut store = Store::default();
    store.apply(Object::IngressClass(object(json!({
        "metadata": {"name": "portico"},
        "spec": {"controller": "portico.dev/ingress-controller"}
    }))));
    // One key pair for every Secret keeps setup fast; each Secret is still checked.
    let ck = rcgen::generate_simple_self_signed(vec!["*.example.com".to_owned()]).expect("cert");
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    for i in 0..ingresses {
        let ns = format!("ns-{}", i % NAMESPACES);
        let svc = format!("svc-{i}");
        store.apply(Object::Service(object(json!({
            "metadata": {"name": svc, "namespace": ns},
            "spec": {"selector": {"app": svc}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))));
        store.apply(endpoint_slice(i, true));
        if i.is_multiple_of(TLS_EVERY) {
            store.apply(Object::Secret(object(json!({
                "metadata": {"name": format!("tls-{i}"), "namespace": ns},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": cert, "tls.key": key}
            }))));
        }
        store.apply(ingress(i, PATHS));
    }
    store
}
