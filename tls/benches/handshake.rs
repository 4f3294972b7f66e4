//! Full TLS handshakes per second through the listener's configuration over loopback,
//! per key type and protocol version (no resumption: every iteration is a new client).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rcgen::{CertificateParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tls::{CertResolver, CertSource, CertStore};
use tokio::io::AsyncWriteExt;

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client(version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    // No resumption: measure full handshakes.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn p256_source() -> CertSource {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["bench.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    CertSource::from_pem(
        "bench/p256",
        vec![tls::HostPattern::parse("bench.test").unwrap()],
        &cert.pem().into_bytes(),
        &key.serialize_pem().into_bytes(),
    )
}

/// RSA-2048 via the openssl CLI (rcgen cannot generate RSA keys); `None` without it.
fn rsa_source() -> Option<CertSource> {
    let dir = tempfile::tempdir().ok()?;
    let key_path = dir.path().join("rsa.key");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping RSA handshakes: the openssl CLI is not installed");
        return None;
    }
    let key_pem = std::fs::read_to_string(&key_path).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    let cert = CertificateParams::new(vec!["bench.test".to_string()])
        .ok()?
        .self_signed(&key)
        .ok()?;
    Some(CertSource::from_pem(
        "bench/rsa",
        vec![tls::HostPattern::parse("bench.test").unwrap()],
        &cert.pem().into_bytes(),
        &key_pem.into_bytes(),
    ))
}

fn handshakes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("tls_full_handshake");
    let sources: Vec<CertSource> = std::iter::once(p256_source()).chain(rsa_source()).collect();
    for source in sources {
        let addr = rt.block_on(async {
            let resolver = Arc::new(CertResolver::new(&tls::generate_self_signed().unwrap()));
            let (store, diags) = CertStore::build(std::slice::from_ref(&source), None);
            assert!(diags.is_empty(), "{diags:?}");
            resolver.swap(store);
            let acceptor = tls::TlsAcceptor::from(tls::server_config(resolver).unwrap());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(tls::serve(
                listener,
                acceptor,
                Duration::from_secs(10),
                std::future::pending(),
                |mut conn: tls::TlsConnection| async move {
                    let _ = conn.stream.shutdown().await;
                },
            ));
            addr
        });
        for (label, version) in [
            ("tls13", &rustls::version::TLS13),
            ("tls12", &rustls::version::TLS12),
        ] {
            let connector = tokio_rustls::TlsConnector::from(client(version));
            let name = format!("{}/{label}", source.name.trim_start_matches("bench/"));
            group.bench_function(name, |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let server = ServerName::try_from("bench.test").unwrap();
                        connector.connect(server, tcp).await.unwrap()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
