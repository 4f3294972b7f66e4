//! An external scanner against the listener: sslscan (Debian package `sslscan`) must find
//! nothing below TLS 1.2 and no weak cipher. Skipped with a message when sslscan is absent;
//! CI installs it.

mod common;

use std::sync::Arc;

use common::*;
use tls::{generate_self_signed, CertResolver, CertStore};

async fn sslscan(addr: std::net::SocketAddr, sni: &str) -> String {
    let target = addr.to_string();
    let sni = format!("--sni-name={sni}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sslscan")
            .args(["--no-colour", "--timeout=10", &sni, &target])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sslscan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks one sslscan report; returns the accepted cipher names.
fn check_report(report: &str) -> Vec<String> {
    for proto in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        let line = report.lines().find(|l| l.starts_with(proto));
        assert!(
            line.is_some_and(|l| l.ends_with("disabled")),
            "{proto} not reported disabled:\n{report}"
        );
    }
    for proto in ["TLSv1.2", "TLSv1.3"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(proto) && !l.contains("heartbleed"));
        assert!(
            line.is_some_and(|l| l.ends_with("enabled")),
            "{proto} not enabled:\n{report}"
        );
    }
    assert!(
        !report.contains("Insecure session renegotiation"),
        "{report}"
    );
    assert!(!report.contains(" vulnerable to heartbleed") || report.contains("not vulnerable"));

    let mut ciphers = Vec::new();
    for line in report.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !matches!(fields.first(), Some(&"Accepted") | Some(&"Preferred")) {
            continue;
        }
        // Preferred  TLSv1.2  256 bits  ECDHE-RSA-AES256-GCM-SHA384  Curve 25519 DHE 253
        let (proto, bits, name) = (fields[1], fields[2], fields[4]);
        assert!(proto == "TLSv1.2" || proto == "TLSv1.3", "{line}");
        assert!(
            bits.parse::<u32>().unwrap() >= 128,
            "weak key length: {line}"
        );
        let aead = ["GCM", "CHACHA20-POLY1305", "CHACHA20_POLY1305"]
            .iter()
            .any(|a| name.contains(a));
        assert!(aead, "non-AEAD cipher accepted: {line}");
        for weak in [
            "CBC", "RC4", "DES", "NULL", "EXP", "MD5", "ADH", "AECDH", "anon", "PSK",
        ] {
            assert!(!name.contains(weak), "weak cipher accepted: {line}");
        }
        if proto == "TLSv1.2" {
            assert!(name.starts_with("ECDHE-"), "no forward secrecy: {line}");
        }
        ciphers.push(name.to_owned());
    }
    assert!(!ciphers.is_empty(), "no accepted ciphers parsed:\n{report}");
    ciphers
}

#[tokio::test]
async fn sslscan_finds_only_tls12_tls13_and_strong_ciphers() {
    let found = std::process::Command::new("sslscan")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        eprintln!("SKIPPED sslscan_finds_only_tls12_tls13_and_strong_ciphers: sslscan is not installed (apt-get install sslscan)");
        return;
    }
    let ec = rcgen_p256(&["ec.test"]);
    let mut sources = vec![ec.source("ns/ec", &["ec.test"])];
    let dir = tempfile::tempdir().unwrap();
    let rsa = have_openssl("sslscan RSA case").then(|| {
        openssl(dir.path(), &["genrsa", "-out", "rsa.key", "2048"]);
        openssl_self_signed(dir.path(), "rsa.key", "rsa.test", "rsa.crt");
        read_pem(dir.path(), "rsa.crt", "rsa.key")
    });
    if let Some(rsa) = &rsa {
        sources.push(rsa.source("ns/rsa", &["rsa.test"]));
    }
    let resolver = Arc::new(CertResolver::new(&generate_self_signed().unwrap()));
    let (store, diags) = CertStore::build(&sources, None);
    // The openssl certificate is CN-only: served, with a warning.
    assert!(
        diags
            .iter()
            .all(|d| matches!(d.problem, tls::CertProblem::NoSubjectAltName { .. })),
        "{diags:?}"
    );
    resolver.swap(store);
    let addr = spawn_server(resolver).await;

    let (ec_report, rsa_report) = tokio::join!(sslscan(addr, "ec.test"), async {
        match rsa {
            Some(_) => Some(sslscan(addr, "rsa.test").await),
            None => None,
        }
    });
    let ec_ciphers = check_report(&ec_report);
    assert!(
        ec_ciphers.iter().any(|c| c.starts_with("ECDHE-ECDSA-")),
        "{ec_report}"
    );
    if let Some(report) = rsa_report {
        let rsa_ciphers = check_report(&report);
        assert!(
            rsa_ciphers.iter().any(|c| c.starts_with("ECDHE-RSA-")),
            "{report}"
        );
    }
}
