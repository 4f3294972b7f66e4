//! How long a full CertStore rebuild takes, since every compile rebuilds it and rotation
//! must take effect within a second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rcgen::{CertificateParams, KeyPair};
use tls::{CertSource, CertStore};

fn sources(n: usize) -> Vec<CertSource> {
    (0..n)
        .map(|i| {
            let host = format!("app{i}.example.com");
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![host.clone()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            CertSource {
                name: format!("ns/secret-{i}"),
                hosts: vec![host],
                cert_pem: cert.pem().into_bytes(),
                key_pem: key.serialize_pem().into_bytes(),
            }
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("cert_store_build_p256");
    group.sample_size(10);
    for n in [10, 100, 1000] {
        let srcs = sources(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &srcs, |b, srcs| {
            b.iter(|| CertStore::build(srcs, None))
        });
    }
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let (store, _) = CertStore::build(&sources(100), None);
    c.bench_function("cert_store_resolve_exact", |b| {
        b.iter(|| store.resolve(Some("app42.example.com")))
    });
}

criterion_group!(benches, build, resolve);
criterion_main!(benches);
