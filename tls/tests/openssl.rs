//! Certificates made the way operators make them (`openssl req -x509 ... -subj /CN=...`,
//! then `kubectl create secret tls`), served by SNI over real handshakes.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use tls::{generate_self_signed, CertProblem, CertResolver, CertStore};

/// Builds a store from the sources, requiring no diagnostics but the warning about
/// CN-only certificates (which most of these are, as operators make them), and serves it.
async fn serve(sources: &[tls::CertSource]) -> (std::net::SocketAddr, Vec<u8>) {
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let (store, diags) = CertStore::build(sources, None);
    let unexpected: Vec<_> = diags
        .iter()
        .filter(|d| !matches!(d.problem, CertProblem::NoSubjectAltName { .. }))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected diagnostics: {unexpected:?}"
    );
    resolver.swap(store);
    (spawn_server(resolver).await, fallback.cert_der().to_vec())
}

fn key_kind(dir: &Path, key: &str) -> String {
    let pem = std::fs::read_to_string(dir.join(key)).unwrap();
    pem.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn kubectl_workflow_rsa_pkcs8_cn_only() {
    if !have_openssl("kubectl_workflow_rsa_pkcs8_cn_only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The command from the Kubernetes docs; the cert has only a CN, no subjectAltName.
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-keyout",
            "tls.key",
            "-out",
            "tls.crt",
            "-subj",
            "/CN=kubia.example.com",
        ],
    );
    assert_eq!(
        key_kind(dir.path(), "tls.key"),
        "-----BEGIN PRIVATE KEY-----"
    );
    let pem = read_pem(dir.path(), "tls.crt", "tls.key");
    let (addr, self_signed) =
        serve(&[pem.source("default/kubia-tls", &["kubia.example.com"])]).await;
    assert_eq!(
        presented(addr, Some("kubia.example.com")).await,
        pem.leaf_der
    );
    assert_eq!(
        presented(addr, Some("other.example.com")).await,
        self_signed
    );
    assert_eq!(presented(addr, None).await, self_signed);

    // Served, with a warning that says why clients will still refuse it and how to fix it.
    let (_, diags) = CertStore::build(&[pem.source("default/kubia-tls", &[])], None);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(
        diags[0].problem,
        CertProblem::NoSubjectAltName {
            common_name: "kubia.example.com".into()
        }
    );
    let message = diags[0].to_string();
    assert!(
        message.contains("browsers and Go clients reject CN-only certificates"),
        "{message}"
    );
    // The fix the warning gives, run as printed, makes a certificate it has nothing to say
    // about.
    let (_, fix) = message
        .split_once("Make it with a subjectAltName: ")
        .expect("the warning gives a command");
    assert!(fix.starts_with("openssl req -x509 "), "{fix}");
    let fixed = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(fix)
        .current_dir(fixed.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{fix}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = read_pem(fixed.path(), "tls.crt", "tls.key");
    let source = pem.source("default/kubia-tls", &["kubia.example.com"]);
    let (store, diags) = CertStore::build(std::slice::from_ref(&source), None);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(
        store.source_for("kubia.example.com"),
        Some("default/kubia-tls")
    );
}

#[tokio::test]
async fn rsa_pkcs1_ec_sec1_p384_p521_and_ed25519_keys() {
    if !have_openssl("rsa_pkcs1_ec_sec1_p384_p521_and_ed25519_keys") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "p384.key",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "secp521r1",
            "-genkey",
            "-noout",
            "-out",
            "p521.key",
        ],
    );
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec8.key",
        ],
    );
    assert_eq!(key_kind(d, "rsa1.key"), "-----BEGIN RSA PRIVATE KEY-----");
    assert_eq!(key_kind(d, "ec.key"), "-----BEGIN EC PRIVATE KEY-----");
    assert_eq!(key_kind(d, "ec8.key"), "-----BEGIN PRIVATE KEY-----");

    let cases = [
        ("rsa1.key", "rsa.example.com"),
        ("ec.key", "ec.example.com"),
        ("p384.key", "p384.example.com"),
        ("p521.key", "p521.example.com"),
        ("ed.key", "ed.example.com"),
        ("ec8.key", "ec8.example.com"),
    ];
    let mut sources = Vec::new();
    let mut pems = Vec::new();
    for (key, host) in cases {
        let crt = format!("{host}.crt");
        openssl_self_signed(d, key, host, &crt);
        let pem = read_pem(d, &crt, key);
        sources.push(pem.source(&format!("ns/{host}"), &[host]));
        pems.push((host, pem));
    }
    let (addr, _) = serve(&sources).await;
    for (host, pem) in pems {
        assert_eq!(presented(addr, Some(host)).await, pem.leaf_der, "{host}");
    }
}

#[tokio::test]
async fn openssl_chain_with_intermediate_verifies() {
    if !have_openssl("openssl_chain_with_intermediate_verifies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(d.join("leaf.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=DNS:shop.example.com\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            "root.key",
            "-out",
            "root.crt",
            "-subj",
            "/CN=Test Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "inter.key",
            "-out",
            "inter.csr",
            "-subj",
            "/CN=Test Intermediate",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.crt",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ca.ext",
            "-out",
            "inter.crt",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=shop.example.com",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "inter.crt",
            "-CAkey",
            "inter.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
    );
    let mut chain = std::fs::read(d.join("leaf.crt")).unwrap();
    chain.extend(std::fs::read(d.join("inter.crt")).unwrap());
    std::fs::write(d.join("tls.crt"), &chain).unwrap();

    let pem = read_pem(d, "tls.crt", "leaf.key");
    let (addr, _) = serve(&[pem.source("shop/shop-tls", &["shop.example.com"])]).await;
    let root = rustls::pki_types::CertificateDer::from(leaf_der(
        &std::fs::read(d.join("root.crt")).unwrap(),
    ));
    let config = client_config(&ClientOpts {
        root: Some(root),
        ..Default::default()
    });
    let (_, leaf, _) = connect(addr, Some("shop.example.com"), config)
        .await
        .unwrap();
    assert_eq!(leaf, pem.leaf_der);

    // The same files with the intermediate first are rejected with a precise reason.
    let mut reversed = std::fs::read(d.join("inter.crt")).unwrap();
    reversed.extend(std::fs::read(d.join("leaf.crt")).unwrap());
    let bad = pem_source(
        "shop/reversed",
        &["shop.example.com"],
        &reversed,
        &pem.key_pem,
    );
    let (_, diags) = CertStore::build(&[bad], None);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].problem, CertProblem::LeafNotFirst { index: 1 });
}

#[tokio::test]
async fn dsa_key_is_rejected_and_hosts_fall_back() {
    if !have_openssl("dsa_key_is_rejected_and_hosts_fall_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["dsaparam", "-out", "dsa.params", "2048"]);
    openssl(
        d,
        &["genpkey", "-paramfile", "dsa.params", "-out", "dsa.key"],
    );
    openssl_self_signed(d, "dsa.key", "dsa.example.com", "dsa.crt");
    let pem = read_pem(d, "dsa.crt", "dsa.key");
    let (store, diags) = CertStore::build(&[pem.source("ns/dsa", &["dsa.example.com"])], None);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(diags[0].is_error());
    assert!(
        matches!(diags[0].problem, CertProblem::UnsupportedKey(_)),
        "{diags:?}"
    );
    assert!(diags[0].to_string().contains("ns/dsa"));
    assert_eq!(store.source_for("dsa.example.com"), None);
}

#[tokio::test]
async fn tls11_client_is_refused() {
    if !have_openssl("tls11_client_is_refused") {
        return;
    }
    let pem = rcgen_p256(&["a.test"]);
    let (addr, _) = serve(&[pem.source("ns/a", &["a.test"])]).await;
    let port = addr.port().to_string();
    let connect_arg = format!("127.0.0.1:{port}");
    let run = |proto: &'static str| {
        let connect_arg = connect_arg.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &connect_arg,
                    "-servername",
                    "a.test",
                    proto,
                ])
                .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let tls12 = run("-tls1_2").await.unwrap();
    assert!(
        tls12.status.success(),
        "{}",
        String::from_utf8_lossy(&tls12.stderr)
    );
    for proto in ["-tls1_1", "-tls1"] {
        let out = run(proto).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{proto} handshake succeeded");
        // The server answered the old ClientHello with an alert, so the refusal is the
        // server's and not the client's own configuration.
        assert!(stderr.contains("SSL alert number"), "{proto}: {stderr}");
    }
}
