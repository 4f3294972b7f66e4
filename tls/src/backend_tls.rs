//! Client configurations for Gateway API BackendTLSPolicy: the pod's certificate must
//! chain to the policy's CA certificates and carry the policy's `hostname`, or, when
//! the policy lists `subjectAltNames`, one of those instead (the hostname then only
//! goes out as SNI).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::UpstreamTlsError;

/// The client configuration for a policy's `ca.crt` PEM bundle and its `subjectAltNames`
/// of type Hostname (empty: the name verified is the one dialled, the policy's
/// hostname). ALPN is left to the caller.
pub fn backend_tls_config(
    ca_pem: &[u8],
    san_hostnames: &[String],
) -> Result<ClientConfig, UpstreamTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
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
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
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
