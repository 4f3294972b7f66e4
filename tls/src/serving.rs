//! A private CA and the one serving certificate it signs, for an endpoint whose clients
//! are told the CA out of band (the API server calling an admission webhook, which reads
//! it from the webhook configuration's `caBundle`).
//!
//! The CA's key signs once and is dropped: nothing can mint another certificate under it.
//! Rotation is a new pair whose CA joins the old one in the clients' bundle until the old
//! certificate is no longer served.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::TlsError;

/// Certificates start this long before they are made, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A fresh CA certificate and a serving certificate + key it signed, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingPair {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Keeps the private key out of logs.
impl std::fmt::Debug for ServingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingPair")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Generates a CA named `ca_name` and, signed by it, a server certificate for
/// `dns_names`, both ECDSA P-256 and valid from `now_unix` (less an hour) for `valid_for`.
pub fn generate_serving_pair(
    ca_name: &str,
    dns_names: &[String],
    now_unix: u64,
    valid_for: Duration,
) -> Result<ServingPair, TlsError> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = Duration::from_secs(now_unix);
    let not_before = epoch + now.saturating_sub(BACKDATE);
    let not_after = epoch + now + valid_for;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca_name);
    dn.push(DnType::OrganizationName, "Portico");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().map(String::as_str).unwrap_or(ca_name),
    );
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(ServingPair {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParsedCert;

    #[test]
    fn the_serving_certificate_names_its_hosts_and_validity() {
        let names = vec![
            "hook.ns.svc".to_owned(),
            "hook.ns.svc.cluster.local".to_owned(),
        ];
        let now = 1_800_000_000;
        let pair =
            generate_serving_pair("test CA", &names, now, Duration::from_secs(86400)).unwrap();
        let parsed = ParsedCert::from_pem(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
            .expect("a usable pair");
        let served: Vec<String> = parsed.names().iter().map(ToString::to_string).collect();
        assert_eq!(served, names);
        assert_eq!(parsed.not_after(), now as i64 + 86400);
        assert_eq!(parsed.not_before(), now as i64 - 3600);
        assert!(pair.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
    }
}
