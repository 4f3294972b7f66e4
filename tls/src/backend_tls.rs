//! Client configurations for Gateway API BackendTLSPolicy: the pod's certificate must
//! chain to the policy's CA certificates and carry the policy's `hostname`, or, when
//! the policy lists `subjectAltNames`, one of those instead (the hostname then only
//! goes out as SNI).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::UpstreamTlsError;

/// The CA certificates a pod's certificate must chain to.
#[derive(Clone, Copy, Debug)]
pub enum BackendCa<'a> {
    /// A PEM bundle (a ConfigMap's `ca.crt`).
    Pem(&'a [u8]),
    /// The system's (`wellKnownCACertificates: System`), loaded once per process.
    System,
}

/// The client configuration for a policy's CA certificates and its `subjectAltNames`
/// of type Hostname (empty: the name verified is the one dialled, the policy's
/// hostname). ALPN is left to the caller.
pub fn backend_tls_config(
    ca: BackendCa<'_>,
    san_hostnames: &[String],
) -> Result<ClientConfig, UpstreamTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| UpstreamTlsError::Ca(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if san_hostnames.is_empty() {
        webpki
    } else {
        let names = san_hostnames
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|_| UpstreamTlsError::Ca(format!("{n:?} is not a DNS name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Arc::new(AnyOf {
            inner: webpki,
            names,
        })
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// webpki's verification against each of `names` in turn, instead of the name dialled:
/// the certificate is accepted when it chains to a trusted CA and carries one of them.
#[derive(Debug)]
struct AnyOf {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
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
