//! CertStore::build diagnostics: what is rejected, what is served with a warning, and that a
//! broken source never takes a good one down with it.

mod common;

use std::sync::Arc;

use common::*;
use rcgen::{CertificateParams, KeyPair};
use tls::{generate_self_signed, CertProblem, CertResolver, CertSource, CertStore, Severity};

fn problems(sources: &[CertSource]) -> Vec<(String, CertProblem)> {
    let (_, diags) = CertStore::build(sources, None);
    diags.into_iter().map(|d| (d.source, d.problem)).collect()
}

#[test]
fn key_that_does_not_match_is_rejected() {
    let a = rcgen_p256(&["a.test"]);
    let b = rcgen_p256(&["a.test"]);
    let src = a.source_with_key("ns/a", &["a.test"], &b.key_pem);
    let (store, diags) = CertStore::build(&[src], None);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].problem, CertProblem::KeyMismatch);
    assert_eq!(diags[0].severity(), Severity::Error);
    assert_eq!(
        diags[0].to_string(),
        "TLS Secret ns/a: tls.key does not match the certificate in tls.crt"
    );
    assert_eq!(store.source_for("a.test"), None);
}

#[test]
fn unparsable_material_names_the_secret_and_field() {
    let good = rcgen_p256(&["a.test"]);
    type Check = fn(&CertProblem) -> bool;
    let cases: Vec<(CertSource, Check)> = vec![
        (
            pem_source("ns/nocert", &["a.test"], b"not pem at all", &good.key_pem),
            |p| *p == CertProblem::NoCertificate,
        ),
        (
            pem_source("ns/truncated", &["a.test"], b"-----BEGIN CERTIFICATE-----\nAAAA\n", &good.key_pem),
            |p| matches!(p, CertProblem::CertificatePem(m) if m == "the CERTIFICATE section has no END line"),
        ),
        (
            pem_source(
                "ns/badder",
                &["a.test"],
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &good.key_pem,
            ),
            |p| matches!(p, CertProblem::CertificateParse { index: 0, .. }),
        ),
        (good.source_with_key("ns/nokey", &["a.test"], b""), |p| *p == CertProblem::NoKey),
        (
            good.source_with_key("ns/enc", &["a.test"], b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            ),
            |p| *p == CertProblem::EncryptedKey,
        ),
        (
            good.source_with_key("ns/junkkey", &["a.test"], b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            |p| matches!(p, CertProblem::UnsupportedKey(_)),
        ),
    ];
    for (src, want) in cases {
        let name = src.name.clone();
        let got = problems(&[src]);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].0, name);
        assert!(want(&got[0].1), "{name}: {:?}", got[0].1);
        assert_eq!(got[0].1.severity(), Severity::Error, "{name}");
    }
}

#[test]
fn expired_and_not_yet_valid_are_served_with_a_warning() {
    let pem = rcgen_p256(&["a.test"]);
    let src = pem.source("ns/a", &["a.test"]);
    // rcgen's default validity is 1975..4096.
    let far_future = 420_000_000_000;
    let (store, diags) = CertStore::build_at(std::slice::from_ref(&src), None, far_future);
    assert_eq!(diags.len(), 1);
    assert!(matches!(diags[0].problem, CertProblem::Expired { .. }));
    assert_eq!(diags[0].severity(), Severity::Warning);
    assert_eq!(store.source_for("a.test"), Some("ns/a"));

    let (store, diags) = CertStore::build_at(std::slice::from_ref(&src), None, 0);
    assert_eq!(diags.len(), 1);
    assert!(matches!(diags[0].problem, CertProblem::NotYetValid { .. }));
    assert_eq!(store.source_for("a.test"), Some("ns/a"));

    let (_, diags) = CertStore::build(&[src], None);
    assert!(diags.is_empty(), "{diags:?}");
}

#[test]
fn expired_openssl_style_certificate_still_serves() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["old.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let src = pem_source(
        "ns/old",
        &["old.test"],
        &cert.pem().into_bytes(),
        &key.serialize_pem().into_bytes(),
    );
    let (store, diags) = CertStore::build(&[src], None);
    assert_eq!(diags.len(), 1);
    assert!(
        matches!(diags[0].problem, CertProblem::Expired { not_after } if not_after == 1_609_459_200)
    );
    assert_eq!(store.source_for("old.test"), Some("ns/old"));
}

#[test]
fn host_checks_warn_but_serve() {
    let pem = rcgen_p256(&["a.test"]);
    let got = problems(&[pem.source("ns/a", &["a.test", "b.test", "*.test"])]);
    assert_eq!(
        got,
        vec![
            (
                "ns/a".into(),
                CertProblem::HostNotCovered {
                    host: "b.test".into()
                }
            ),
            (
                "ns/a".into(),
                CertProblem::HostNotCovered {
                    host: "*.test".into()
                }
            ),
        ]
    );
    let (store, _) = CertStore::build(&[pem.source("ns/a", &["a.test", "b.test"])], None);
    assert_eq!(store.source_for("b.test"), Some("ns/a"));
}

#[test]
fn first_source_wins_a_shared_host_and_same_secret_is_no_conflict() {
    let a = rcgen_p256(&["x.test"]);
    let b = rcgen_p256(&["x.test"]);
    let (store, diags) = CertStore::build(
        &[
            a.source("ns/a", &["x.test"]),
            a.source("ns/a", &["x.test"]),
            b.source("ns/b", &["x.test"]),
        ],
        None,
    );
    assert_eq!(store.source_for("x.test"), Some("ns/a"));
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(
        diags[0].problem,
        CertProblem::DuplicateHost {
            host: "x.test".into(),
            winner: "ns/a".into()
        }
    );
    assert_eq!(diags[0].source, "ns/b");
}

#[test]
fn empty_hosts_use_the_names_in_the_certificate() {
    let pem = rcgen_p256(&["one.test", "*.two.test"]);
    let (store, diags) = CertStore::build(&[pem.source("ns/auto", &[])], None);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(store.source_for("one.test"), Some("ns/auto"));
    assert_eq!(store.source_for("x.two.test"), Some("ns/auto"));
    assert_eq!(store.host_count(), 2);
}

#[test]
fn broken_default_certificate_is_reported_and_self_signed_serves() {
    let a = rcgen_p256(&["a.test"]);
    let b = rcgen_p256(&["b.test"]);
    let broken_default = a.source_with_key("ingress/default", &[], &b.key_pem);
    let fallback = generate_self_signed().unwrap();
    let resolver = CertResolver::new(&fallback);
    let (store, diags) = CertStore::build(&[], Some(&broken_default));
    assert!(!store.has_default());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].source, "ingress/default");
    resolver.swap(store);
    assert_eq!(resolver.resolve_name(None).cert[0], *fallback.cert_der());
}

#[tokio::test]
async fn broken_secret_beside_a_good_one_leaves_the_good_one_serving() {
    let good = rcgen_p256(&["good.test"]);
    let other = rcgen_p256(&["broken.test"]);
    let broken = other.source_with_key("ns/broken", &["broken.test"], &good.key_pem);
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let (store, diags) = CertStore::build(&[broken, good.source("ns/good", &["good.test"])], None);
    assert_eq!(diags.len(), 1);
    assert!(diags[0].is_error());
    assert_eq!(diags[0].source, "ns/broken");
    resolver.swap(store);
    let addr = spawn_server(resolver).await;
    assert_eq!(presented(addr, Some("good.test")).await, good.leaf_der);
    assert_eq!(
        presented(addr, Some("broken.test")).await,
        fallback.cert_der().to_vec()
    );
}

#[test]
fn rebuild_serves_the_parsed_pair_it_is_given_and_changed_ones() {
    let a = rcgen_p256(&["a.test"]);
    let b = rcgen_p256(&["b.test"]);
    let b2 = rcgen_p256(&["b.test"]);
    let fallback = generate_self_signed().unwrap();
    let resolver = CertResolver::new(&fallback);
    // Parsed once, as the controller's compile does per Secret content.
    let a_source = a.source("ns/a", &["a.test"]);
    let diags = resolver.rebuild(&[a_source.clone(), b.source("ns/b", &["b.test"])], None);
    assert!(diags.is_empty());
    let a1 = resolver.resolve_name(Some("a.test"));
    let b1 = resolver.resolve_name(Some("b.test"));

    resolver.rebuild(&[a_source, b2.source("ns/b", &["b.test"])], None);
    let a2 = resolver.resolve_name(Some("a.test"));
    let b3 = resolver.resolve_name(Some("b.test"));
    assert!(Arc::ptr_eq(&a1, &a2), "unchanged Secret was parsed again");
    assert!(!Arc::ptr_eq(&b1, &b3));
    assert_eq!(b3.cert[0].to_vec(), b2.leaf_der);
}

#[test]
fn reused_parse_still_reports_expiry_and_errors() {
    let a = rcgen_p256(&["a.test"]);
    let other = rcgen_p256(&["x.test"]);
    let broken = other.source_with_key("ns/broken", &["x.test"], &a.key_pem);
    let sources = [a.source("ns/a", &["a.test"]), broken];
    let (_, diags) = CertStore::build(&sources, None);
    assert_eq!(diags.len(), 1);
    let (second, diags) = CertStore::build_at(&sources, None, 420_000_000_000);
    let got: Vec<_> = diags
        .iter()
        .map(|d| (d.source.as_str(), d.is_error()))
        .collect();
    assert_eq!(got, vec![("ns/a", false), ("ns/broken", true)]);
    assert!(matches!(diags[0].problem, CertProblem::Expired { .. }));
    assert_eq!(second.source_for("a.test"), Some("ns/a"));
}

#[test]
fn certificates_lists_each_loaded_source_once_with_its_expiry() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["old.test".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let dated = pem_source(
        "ns/dated",
        &["old.test"],
        &cert.pem().into_bytes(),
        &key.serialize_pem().into_bytes(),
    );
    let a = rcgen_p256(&["a.test"]);
    let broken = a.source_with_key("ns/broken", &["b.test"], &rcgen_p256(&["x"]).key_pem);
    let (store, _) = CertStore::build(
        &[dated.clone(), dated, broken, a.source("ns/a", &["a.test"])],
        Some(&a.source("ingress/default", &[])),
    );
    let got: Vec<_> = store
        .certificates()
        .iter()
        .map(|c| (c.source.as_str(), c.default))
        .collect();
    assert_eq!(
        got,
        vec![
            ("ingress/default", true),
            ("ns/dated", false),
            ("ns/a", false)
        ]
    );
    assert_eq!(store.certificates()[1].not_after, 1_924_992_000);
}
