//! How long one full compile takes at cluster scale: every store change recompiles, so
//! this bounds how quickly a change reaches the proxy.
//!
//! The store: 1,000 or 10,000 Ingresses (5 paths each) over as many Services with one
//! 3-endpoint EndpointSlice each, in 20 namespaces; 1 in 10 Ingresses has a TLS Secret.
//! `endpointslice_change` is what the publish loop does when one pod changes: apply the
//! new EndpointSlice to the store and compile it all again, reusing what the previous
//! compile learnt (its `CompileCache`: checked TLS Secrets, Ingresses read, host tables),
//! as the loop does. `ingress_edit` is the same for one Ingress gaining or losing a path.

use criterion::{criterion_group, criterion_main, Criterion};
use ingress_controller::compile::{compile, compile_with, CompileCache, CompileOptions};
use ingress_controller::store::{Object, Store};
use serde_json::json;

// The allocator the binary ships with: a compile is allocation-heavy, so timing it under
// another allocator would measure a different program.
#[global_allocator]
static ALLOC: ingress_controller::alloc::MiMalloc = ingress_controller::alloc::MiMalloc;

const PATHS: usize = 5;
const NAMESPACES: usize = 20;
const TLS_EVERY: usize = 10;

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("bench object")
}

/// App `i`'s EndpointSlice: three pods, the third ready or not.
fn endpoint_slice(i: usize, third_ready: bool) -> Object {
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
fn ingress(i: usize, paths: usize) -> Object {
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

fn store(ingresses: usize) -> Store {
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

fn bench(c: &mut Criterion) {
    let opts = CompileOptions::default();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for (n, label) in [
        (1_000, "1k_ingresses_5k_paths"),
        (10_000, "10k_ingresses_50k_paths"),
    ] {
        let store = store(n);
        let compiled = compile(&store, &opts);
        assert_eq!(compiled.owned_ingresses.len(), n);
        assert_eq!(compiled.config.backends.len(), n);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:?}",
            compiled.diagnostics.first()
        );
        group.bench_function(label, |b| b.iter(|| compile(&store, &opts)));
        if n == 10_000 {
            // One pod of one Service flips readiness, then everything recompiles.
            let mut store = store;
            let mut ready = false;
            let mut cache = CompileCache::default();
            compile_with(&store, &opts, &mut cache);
            group.bench_function("endpointslice_change_10k_ingresses", |b| {
                b.iter(|| {
                    store.apply(endpoint_slice(n / 2, ready));
                    ready = !ready;
                    compile_with(&store, &opts, &mut cache)
                })
            });
            // One Ingress gains or loses a path, as an edit of its file does.
            let mut extra = false;
            group.bench_function("ingress_edit_10k_ingresses", |b| {
                b.iter(|| {
                    extra = !extra;
                    store.apply(ingress(n / 3, PATHS + usize::from(extra)));
                    compile_with(&store, &opts, &mut cache)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
