//! Client configurations for TLS to pods (`proxy-ssl-secret` and its companions): the
//! trusted CAs, verification on or off, its depth, the protocol versions, and an
//! optional client certificate for mutual TLS.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// TLS versions a pod connection may use; rustls speaks no older ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What a route asks of TLS to its pods.
pub struct UpstreamTlsSettings<'a> {
    /// `ca.crt`: the CAs the pod's certificate must chain to when verifying.
    pub ca_pem: &'a [u8],
    /// `tls.crt` and `tls.key`: presented when the pod asks for a client certificate.
    pub client: Option<(&'a [u8], &'a [u8])>,
    pub verify: bool,
    /// Certificates allowed between the pod's and a trusted CA, plus one (nginx's
    /// `proxy_ssl_verify_depth`: 1 is a certificate issued by a trusted CA itself).
    pub depth: u32,
    pub versions: &'a [TlsVersion],
}

/// Why a route's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("ca.crt holds no PEM certificate")]
    NoCa,
    #[error("ca.crt: {0}")]
    Ca(String),
    #[error("tls.crt holds no PEM certificate")]
    NoClientCert,
    #[error("tls.key holds no usable private key: {0}")]
    ClientKey(String),
    #[error("no TLS version Portico speaks (TLSv1.2, TLSv1.3) is allowed")]
    NoVersion,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration for `settings` (ALPN is left to the caller).
pub fn upstream_client_config(
    settings: &UpstreamTlsSettings<'_>,
) -> Result<ClientConfig, UpstreamTlsError> {
    let provider = Arc::new(proxy_core::crypto_provider());
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if settings.versions.contains(&TlsVersion::Tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if settings.versions.contains(&TlsVersion::Tls12) {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(UpstreamTlsError::NoVersion);
    }
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(settings.ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
    if cas.is_empty() {
        return Err(UpstreamTlsError::NoCa);
    }
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.verify {
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
        Arc::new(Depth {
            inner: webpki,
            trusted: cas,
            depth: settings.depth,
        })
    } else {
        proxy_core::http::upstream_tls::UpstreamTls::accept_any()
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match settings.client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let (chain, key) = client_key_pair(cert_pem, key_pem)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(config)
}

/// The certificate chain (`tls.crt`) and private key (`tls.key`) Portico presents to
/// pods that ask for a client certificate: `proxy-ssl-secret`'s, and a Gateway's
/// `spec.tls.backend.clientCertificateRef`.
pub fn client_key_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), UpstreamTlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| UpstreamTlsError::NoClientCert)?;
    if chain.is_empty() {
        return Err(UpstreamTlsError::NoClientCert);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| UpstreamTlsError::ClientKey(e.to_string()))?;
    // A key that is not the certificate's would only fail at the pod's handshake.
    let signing = proxy_core::crypto_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| UpstreamTlsError::ClientKey(e.to_string()))?;
    let checked = rustls::sign::CertifiedKey::new(chain.clone(), signing).keys_match();
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = checked {
        return Err(UpstreamTlsError::ClientKey(
            "it is not the key of the certificate in tls.crt".into(),
        ));
    }
    Ok((chain, key))
}

/// webpki's verification, then nginx's depth limit: the certificates the pod sent
/// besides its own, not counting the trusted CAs themselves, must fit within the
/// depth. webpki builds the chain but does not report its length, so what the pod sent
/// stands in for it.
#[derive(Debug)]
struct Depth {
    inner: Arc<WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    depth: u32,
}

impl ServerCertVerifier for Depth {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let between = intermediates
            .iter()
            .filter(|c| !self.trusted.iter().any(|t| t.as_ref() == c.as_ref()))
            .count();
        if u32::try_from(between).unwrap_or(u32::MAX) >= self.depth.max(1) {
            return Err(rustls::Error::General(format!(
                "certificate chain longer than proxy-ssl-verify-depth {}",
                self.depth
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
