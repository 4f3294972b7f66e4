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

mod support;

use support::{endpoint_slice, ingress, store, PATHS};

// The allocator the binary ships with: a compile is allocation-heavy, so timing it under
// another allocator would measure a different program.
#[global_allocator]
static ALLOC: ingress_controller::alloc::MiMalloc = ingress_controller::alloc::MiMalloc;

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
