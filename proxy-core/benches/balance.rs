//! Cost of picking an endpoint per request with cookie affinity: the returning session
//! (cookie present, endpoint still there), a new session (no cookie: pick and mint a
//! cookie), and plain round-robin for comparison, over 3 and 100 ready endpoints.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy_core::balance::{AffinityKey, AffinityMode, CookieAffinity, EjectionPolicy, Registry};
use proxy_core::config::Runtime;
use proxy_core::{Backend, BackendId, Config, Endpoint};

/// A backend, and the affinity of the route that leads to it.
fn backend(endpoints: usize, mode: Option<AffinityMode>) -> (Backend, Option<CookieAffinity>) {
    let eps = (0..endpoints)
        .map(|i| {
            let addr: SocketAddr = format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)
                .parse()
                .unwrap();
            Endpoint::ready(addr)
        })
        .collect();
    let b = Backend::new(BackendId::new("default", "app", "http"), eps);
    let affinity = mode.map(|mode| CookieAffinity {
        mode,
        ..CookieAffinity::default()
    });
    (b, affinity)
}

/// Tells the registry about `b`, as publishing a configuration does.
fn applied(registry: &Registry, b: &Backend) {
    let mut config = Config::default();
    config.backends.insert(b.id.clone(), Arc::new(b.clone()));
    registry.apply(&config);
}

fn bench(c: &mut Criterion) {
    let registry = Registry::new(AffinityKey::new([7; 16]), EjectionPolicy::default());
    let mut group = c.benchmark_group("affinity_pick");
    for n in [3usize, 100] {
        let (plain, _) = backend(n, None);
        applied(&registry, &plain);
        group.bench_with_input(BenchmarkId::new("round_robin", n), &plain, |b, be| {
            b.iter(|| registry.pick(black_box(be), None, None, None).unwrap())
        });
        for (label, mode) in [
            ("balanced", AffinityMode::Balanced),
            ("persistent", AffinityMode::Persistent),
        ] {
            let (be, affinity) = backend(n, Some(mode));
            applied(&registry, &be);
            let aff = affinity.as_ref();
            let cookie = registry
                .pick(&be, aff, None, None)
                .unwrap()
                .set_cookie
                .expect("a new session gets a cookie");
            // The cookie must bring the session home without minting a new one.
            assert!(registry
                .pick(&be, aff, None, Some(&cookie))
                .unwrap()
                .set_cookie
                .is_none());
            group.bench_with_input(
                BenchmarkId::new(format!("{label}_returning"), n),
                &be,
                |b, be| {
                    b.iter(|| {
                        registry
                            .pick(black_box(be), aff, None, Some(black_box(&cookie)))
                            .unwrap()
                    })
                },
            );
            group.bench_with_input(BenchmarkId::new(format!("{label}_new"), n), &be, |b, be| {
                b.iter(|| registry.pick(black_box(be), aff, None, None).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
