//! How long a CertStore build takes (every compile builds one, from parsed pairs) and how
//! long parsing a pair takes (once per Secret content), since rotation must take effect
//! within a second.

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
            CertSource::from_pem(
                format!("ns/secret-{i}"),
                vec![tls::HostPattern::parse(&host).unwrap()],
                &cert.pem().into_bytes(),
                &key.serialize_pem().into_bytes(),
            )
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
    let pems: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| {
            let host = format!("rsa{i}.example.com");
            let cert = CertificateParams::new(vec![host.clone()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (host, cert.pem().into_bytes())
        })
        .collect();
    let parse_all = || -> Vec<CertSource> {
        pems.iter()
            .enumerate()
            .map(|(i, (host, cert_pem))| {
                let hosts = vec![tls::HostPattern::parse(host).unwrap()];
                CertSource::from_pem(format!("ns/rsa-{i}"), hosts, cert_pem, key_pem.as_bytes())
            })
            .collect()
    };
    let srcs = parse_all();
    let mut group = c.benchmark_group("cert_store_rsa2048");
    group.sample_size(10);
    group.bench_function("parse/100", |b| b.iter(parse_all));
    group.bench_function("build/100", |b| b.iter(|| CertStore::build(&srcs, None)));
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let (store, _) = CertStore::build(&sources(100), None);
    c.bench_function("cert_store_resolve_exact", |b| {
        b.iter(|| store.resolve(Some("app42.example.com")))
    });
}

criterion_group!(benches, build, rsa, resolve);
criterion_main!(benches);
