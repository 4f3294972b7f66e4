//! The certificate served when nothing else applies and no default is configured.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TlsError;

/// Common Name of the generated certificate, so clients and scanners can tell it apart.
pub const SELF_SIGNED_CN: &str = "Portico Default Certificate";

/// A certificate generated at start-up (ECDSA P-256), like ingress-nginx's "fake" one.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    key: Arc<CertifiedKey>,
}

impl SelfSigned {
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.key.clone()
    }

    /// The DER of the certificate, to recognise it on the wire.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.key.cert[0]
    }
}

/// Generates a fresh self-signed certificate for the default fallback.
pub fn generate_self_signed() -> Result<SelfSigned, TlsError> {
    let key_pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["ingress.local".to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SELF_SIGNED_CN);
    dn.push(DnType::OrganizationName, "Portico");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key_pair)?;

    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let provider = proxy_core::crypto_provider();
    let key = CertifiedKey::from_der(vec![cert.der().clone()], key_der, &provider)?;
    Ok(SelfSigned { key: Arc::new(key) })
}
