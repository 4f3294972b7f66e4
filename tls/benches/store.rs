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
                hosts: vec![tls::HostPattern::parse(&host).unwrap()],
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

fn rebuild_unchanged(c: &mut Criterion) {
    let srcs = sources(1000);
    let (previous, _) = CertStore::build(&srcs, None);
    c.bench_function("cert_store_rebuild_unchanged_p256/1000", |b| {
        b.iter(|| CertStore::rebuild(&srcs, None, &previous))
    });
}

/// RSA-2048 sources (the `openssl req -newkey rsa:2048` case), sharing one key made by the
/// openssl CLI since rcgen cannot generate RSA keys; parsing cost is per source either way.
fn rsa(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("rsa.key");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping RSA benches: the openssl CLI is not installed");
        return;
    }
    let key_pem = std::fs::read_to_string(&key_path).unwrap();
    let key = KeyPair::from_pem(&key_pem).unwrap();
    let srcs: Vec<CertSource> = (0..100)
        .map(|i| {
            let host = format!("rsa{i}.example.com");
            let cert = CertificateParams::new(vec![host.clone()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            CertSource {
                name: format!("ns/rsa-{i}"),
                hosts: vec![tls::HostPattern::parse(&host).unwrap()],
                cert_pem: cert.pem().into_bytes(),
                key_pem: key_pem.clone().into_bytes(),
            }
        })
        .collect();
    let mut group = c.benchmark_group("cert_store_rsa2048");
    group.sample_size(10);
    group.bench_function("build/100", |b| b.iter(|| CertStore::build(&srcs, None)));
    let (previous, _) = CertStore::build(&srcs, None);
    group.bench_function("rebuild_unchanged/100", |b| {
        b.iter(|| CertStore::rebuild(&srcs, None, &previous))
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let (store, _) = CertStore::build(&sources(100), None);
    c.bench_function("cert_store_resolve_exact", |b| {
        b.iter(|| store.resolve(Some("app42.example.com")))
    });
}

criterion_group!(benches, build, rebuild_unchanged, rsa, resolve);
criterion_main!(benches);
