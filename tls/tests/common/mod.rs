//! Shared test helpers: certificates from rcgen and the openssl CLI, a TLS server on
//! 127.0.0.1 built from the crate's own pieces, and a rustls client that records which
//! certificate the server presented.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    SignatureAlgorithm,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tls::{CertResolver, CertSource, TlsAcceptor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// PEM material plus the leaf DER, to compare with what the server presents.
#[derive(Clone)]
pub struct Pem {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub leaf_der: Vec<u8>,
}

impl Pem {
    pub fn source(&self, name: &str, hosts: &[&str]) -> CertSource {
        pem_source(name, hosts, &self.cert_pem, &self.key_pem)
    }

    /// This certificate with another key.
    pub fn source_with_key(&self, name: &str, hosts: &[&str], key_pem: &[u8]) -> CertSource {
        pem_source(name, hosts, &self.cert_pem, key_pem)
    }
}

/// A source from PEM, parsed as a caller of the store would.
pub fn pem_source(name: &str, hosts: &[&str], cert_pem: &[u8], key_pem: &[u8]) -> CertSource {
    CertSource::from_pem(
        name,
        hosts.iter().map(|h| host(h)).collect(),
        cert_pem,
        key_pem,
    )
}

/// A host for a test source; panics on an invalid one.
pub fn host(raw: &str) -> tls::HostPattern {
    tls::HostPattern::parse(raw).expect("test host")
}

pub fn leaf_der(cert_pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(cert_pem).unwrap().to_vec()
}

/// A self-signed certificate for `names` made with rcgen.
pub fn rcgen_cert(names: &[&str], alg: &'static SignatureAlgorithm) -> Pem {
    let key = KeyPair::generate_for(alg).unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pem {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
        leaf_der: cert.der().to_vec(),
    }
}

pub fn rcgen_p256(names: &[&str]) -> Pem {
    rcgen_cert(names, &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// Root CA -> intermediate -> leaf, made with rcgen. Returns (leaf + intermediate as
/// tls.crt, root DER for the client's trust store).
pub fn rcgen_chain(names: &[&str]) -> (Pem, CertificateDer<'static>) {
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p
    };
    let root = CertifiedIssuer::self_signed(ca("Test Root"), KeyPair::generate().unwrap()).unwrap();
    let inter =
        CertifiedIssuer::signed_by(ca("Test Intermediate"), KeyPair::generate().unwrap(), &root)
            .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &inter)
        .unwrap();
    let pem = Pem {
        cert_pem: format!("{}{}", leaf.pem(), inter.pem()).into_bytes(),
        key_pem: leaf_key.serialize_pem().into_bytes(),
        leaf_der: leaf.der().to_vec(),
    };
    (pem, root.der().clone())
}

/// Whether the openssl CLI is here; prints why a test is skipped when it is not.
pub fn have_openssl(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED {test}: the openssl CLI is not installed");
    }
    ok
}

/// Runs openssl in `dir`, failing the test with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_pem(dir: &Path, cert: &str, key: &str) -> Pem {
    let cert_pem = std::fs::read(dir.join(cert)).unwrap();
    Pem {
        leaf_der: leaf_der(&cert_pem),
        key_pem: std::fs::read(dir.join(key)).unwrap(),
        cert_pem,
    }
}

/// `openssl req -x509` for CN=`cn` with the given key file already in `dir`.
pub fn openssl_self_signed(dir: &Path, key: &str, cn: &str, out: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key,
            "-days",
            "365",
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            out,
        ],
    );
}

/// A TLS server on 127.0.0.1 using the crate's config and acceptor. Each connection gets
/// one line `sni|alpn_h2` after the handshake, then an echo of whatever it sends.
pub async fn spawn_server(resolver: Arc<CertResolver>) -> SocketAddr {
    spawn_server_with_timeout(resolver, TIMEOUT).await
}

pub async fn spawn_server_with_timeout(
    resolver: Arc<CertResolver>,
    handshake_timeout: Duration,
) -> SocketAddr {
    let config = tls::server_config(resolver).unwrap();
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls::serve(
        listener,
        acceptor,
        handshake_timeout,
        std::future::pending(),
        echo,
    ));
    addr
}

async fn echo(conn: tls::TlsConnection) {
    let (rd, mut wr) = tokio::io::split(conn.stream);
    let line = format!(
        "{}|{}\n",
        conn.info.sni.as_deref().unwrap_or("-"),
        conn.info.alpn_h2
    );
    if wr.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let mut rd = BufReader::new(rd);
    let mut buf = String::new();
    while let Ok(n) = rd.read_line(&mut buf).await {
        if n == 0 || wr.write_all(buf.as_bytes()).await.is_err() {
            return;
        }
        buf.clear();
    }
}

/// Accepts any certificate but still checks the handshake signature, so a key that does
/// not match the presented certificate fails the handshake.
#[derive(Debug)]
pub struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub struct ClientOpts<'a> {
    pub alpn: &'a [&'a [u8]],
    pub versions: &'a [&'static rustls::SupportedProtocolVersion],
    /// Trust exactly this root and verify the chain and name; otherwise accept anything.
    pub root: Option<CertificateDer<'static>>,
}

impl Default for ClientOpts<'_> {
    fn default() -> Self {
        ClientOpts {
            alpn: &[],
            versions: rustls::ALL_VERSIONS,
            root: None,
        }
    }
}

pub fn client_config(opts: &ClientOpts<'_>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(opts.versions)
        .unwrap();
    let mut config = match &opts.root {
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Handshakes with `sni` (None sends no SNI, as for an IP literal) and returns the stream,
/// the presented leaf DER, and the server's `sni|alpn_h2` line.
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<ClientConfig>,
) -> std::io::Result<(BufReader<ClientStream>, Vec<u8>, String)> {
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_owned()).unwrap(),
        // rustls sends no SNI extension for an IP address.
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(config).connect(name, tcp).await?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        Ok((stream, leaf, line.trim_end().to_owned()))
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The leaf certificate a client sending `sni` is shown.
pub async fn presented(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    connect(addr, sni, client_config(&ClientOpts::default()))
        .await
        .unwrap()
        .1
}
