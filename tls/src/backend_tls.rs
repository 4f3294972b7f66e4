//! Client configurations for Gateway API BackendTLSPolicy: the pod's certificate must
//! chain to the policy's CA certificates and carry the policy's `hostname`, or, when
//! the policy lists `subjectAltNames`, one of those instead (the hostname then only
//! goes out as SNI): a DNS name, or a URI (a SPIFFE id) compared exactly.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

use crate::UpstreamTlsError;

/// The CA certificates a pod's certificate must chain to.
#[derive(Clone, Copy, Debug)]
pub enum BackendCa<'a> {
    /// A PEM bundle (a ConfigMap's `ca.crt`).
    Pem(&'a [u8]),
    /// The system's (`wellKnownCACertificates: System`), loaded once per process.
    System,
}

/// A `subjectAltNames` entry the pod's certificate may carry instead of the hostname.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    Hostname(String),
    Uri(String),
}

/// The client configuration for a policy's CA certificates and its `subjectAltNames`
/// (empty: the name verified is the one dialled, the policy's hostname), presenting
/// `client` (`tls.crt`, `tls.key`: a Gateway's backend client certificate) when the
/// pod asks for one. ALPN is left to the caller.
pub fn backend_tls_config(
    ca: BackendCa<'_>,
    sans: &[SubjectAltName],
    client: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, UpstreamTlsError> {
    let provider = Arc::new(proxy_core::crypto_provider());
    let roots = match ca {
        BackendCa::System => system_roots()?,
        BackendCa::Pem(pem) => {
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
            if cas.is_empty() {
                return Err(UpstreamTlsError::NoCa);
            }
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
            }
            Arc::new(roots)
        }
    };
    let anchors = roots.roots.clone();
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if sans.is_empty() {
        webpki
    } else {
        let mut names = Vec::new();
        let mut uris = Vec::new();
        for san in sans {
            match san {
                SubjectAltName::Hostname(n) => names.push(
                    ServerName::try_from(n.clone())
                        .map_err(|_| UpstreamTlsError::Ca(format!("{n:?} is not a DNS name")))?,
                ),
                SubjectAltName::Uri(u) => uris.push(u.clone()),
            }
        }
        Arc::new(AnyOf {
            inner: webpki,
            names,
            uris,
            anchors,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let (chain, key) = crate::upstream::client_key_pair(cert_pem, key_pem)?;
            builder.with_client_auth_cert(chain, key)?
        }
    })
}

/// webpki's verification against each of `names` in turn, instead of the name dialled,
/// then (for `uris`) the chain alone and the certificate's URI subjectAltNames: the
/// certificate is accepted when it chains to a trusted CA and carries one of them.
#[derive(Debug)]
struct AnyOf {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
    uris: Vec<String>,
    anchors: Vec<TrustAnchor<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyOf {
    /// The chain to a trusted CA for server authentication, no name checked; then one
    /// of `uris` among the certificate's URI subjectAltNames.
    fn verify_uri(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("pod certificate: {e}")))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::General(format!("pod certificate: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|e| rustls::Error::General(format!("pod certificate: {e}")))?;
        let carried = match parsed.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::URI(u) if self.uris.iter().any(|w| w == u))),
            _ => false,
        };
        if carried {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "pod certificate carries none of the subjectAltNames".into(),
            ))
        }
    }
}

impl ServerCertVerifier for AnyOf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subjectAltName to check".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        if !self.uris.is_empty() {
            return self.verify_uri(end_entity, intermediates, now);
        }
        Err(last)
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

/// The system's CA certificates, read on first use and kept: a restart picks up changes.
fn system_roots() -> Result<Arc<RootCertStore>, UpstreamTlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's CA certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates loaded");
            if added == 0 {
                Err("no system CA certificate could be loaded".to_owned())
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
        .map_err(UpstreamTlsError::Ca)
}
