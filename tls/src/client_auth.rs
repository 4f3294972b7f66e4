//! Client certificates per host (`auth-tls-*`), the way nginx's `ssl_verify_client`
//! works: the handshake asks for a certificate (naming the CA) but never fails because
//! of what the client sends; the certificate is judged against the host's CA once the
//! handshake is done, and the verdict ([`ClientCert`]) travels with the connection so
//! that the request path answers 400 at HTTP level, as nginx does.
//!
//! Hosts are chosen by SNI before the handshake ([`ClientAuthHosts`]); hosts without
//! client certificates get a configuration that sends no CertificateRequest at all.
//!
//! A Gateway's `tls.frontend` validation (`AllowValidOnly`) is stricter: the spec has
//! the Gateway accept a connection only with a valid certificate, so such a host's
//! handshake requires one and fails on one its CA refuses
//! ([`ClientAuth::refusing_in_handshake`]), judged by the same checks.

use std::sync::Arc;

use proxy_core::host::HostPattern;
use proxy_core::pipeline::{ByHost, CertVerify, ClientCert, VerifyClient};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateRevocationListDer, TrustAnchor};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

/// Why a CA bundle or CRL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("ca.crt holds no PEM certificate")]
    NoCa,
    #[error("ca.crt is not valid PEM: {0}")]
    CaPem(String),
    #[error("ca.crt certificate {index} cannot be a trust anchor: {why}")]
    CaCert { index: usize, why: webpki::Error },
    #[error("ca.crl is not valid PEM: {0}")]
    CrlPem(String),
    #[error("ca.crl holds no PEM CRL")]
    NoCrl,
    #[error("ca.crl CRL {index} cannot be read: {why}")]
    Crl { index: usize, why: webpki::Error },
}

/// One host's CA, CRLs and verification settings, parsed once per Secret version.
#[derive(Debug)]
pub struct ClientAuth {
    mode: VerifyClient,
    /// `auth-tls-verify-depth`: intermediates allowed between the client's certificate
    /// and a CA, as OpenSSL counts them.
    depth: u32,
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    /// The CA subjects the CertificateRequest names, as nginx's `ssl_client_certificate`.
    hints: Arc<[DistinguishedName]>,
    algorithms: WebPkiSupportedAlgorithms,
    /// The handshake requires a certificate and fails on one the CA refuses, instead
    /// of leaving the verdict to the HTTP level.
    refuse_in_handshake: bool,
    /// What it was read from, to tell a rotation from a compile that changed nothing.
    source: (Vec<u8>, Option<Vec<u8>>),
}

impl ClientAuth {
    /// Whether `other` was read from the same bundle with the same settings.
    pub fn same_as(&self, other: &ClientAuth) -> bool {
        self.mode == other.mode
            && self.depth == other.depth
            && self.refuse_in_handshake == other.refuse_in_handshake
            && self.source == other.source
    }

    /// The same CA, with handshakes that require a certificate and fail on one the CA
    /// refuses (a Gateway's `AllowValidOnly`).
    pub fn refusing_in_handshake(mut self) -> Self {
        self.refuse_in_handshake = true;
        self
    }

    /// Handshakes that no certificate can pass: for a host whose CA was asked for but
    /// cannot be used, which must not be served without client verification.
    pub fn refusing_all() -> Self {
        Self {
            mode: VerifyClient::On,
            depth: 0,
            anchors: Vec::new(),
            crls: Vec::new(),
            hints: Arc::from([]),
            algorithms: proxy_core::crypto_provider().signature_verification_algorithms,
            refuse_in_handshake: true,
            source: (Vec::new(), None),
        }
    }

    /// Whether the handshake itself refuses what the CA refuses.
    pub fn refuses_in_handshake(&self) -> bool {
        self.refuse_in_handshake
    }

    /// Reads `ca.crt` (one or more PEM certificates) and `ca.crl` (PEM CRLs), if any.
    pub fn from_pem(
        mode: VerifyClient,
        depth: u32,
        ca_pem: &[u8],
        crl_pem: Option<&[u8]>,
    ) -> Result<Self, ClientAuthError> {
        let cas = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientAuthError::CaPem(e.to_string()))?;
        if cas.is_empty() {
            return Err(ClientAuthError::NoCa);
        }
        let mut anchors = Vec::with_capacity(cas.len());
        for (index, der) in cas.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|why| ClientAuthError::CaCert { index, why })?;
            anchors.push(anchor.to_owned());
        }
        let mut crls = Vec::new();
        if let Some(pem) = crl_pem {
            let ders = CertificateRevocationListDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientAuthError::CrlPem(e.to_string()))?;
            if ders.is_empty() {
                return Err(ClientAuthError::NoCrl);
            }
            for (index, der) in ders.iter().enumerate() {
                let crl = OwnedCertRevocationList::from_der(der)
                    .map_err(|why| ClientAuthError::Crl { index, why })?;
                crls.push(CertRevocationList::from(crl));
            }
        }
        let hints = anchors
            .iter()
            // The anchor holds the Name without its outer SEQUENCE; the message needs it.
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        Ok(Self {
            mode,
            depth,
            anchors,
            crls,
            hints,
            algorithms: proxy_core::crypto_provider().signature_verification_algorithms,
            refuse_in_handshake: false,
            source: (ca_pem.to_vec(), crl_pem.map(<[u8]>::to_vec)),
        })
    }

    pub fn mode(&self) -> VerifyClient {
        self.mode
    }

    /// The verifier for the host's handshakes: asks for a certificate, accepts whatever
    /// comes (proof of the key is still checked), leaving the verdict to [`Self::judge`];
    /// or, [`Self::refusing_in_handshake`], requires one the CA accepts.
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(AskForCertificate { auth: self.clone() })
    }

    /// The verdict on the chain a client sent (leaf first), for host `server`.
    pub fn judge(&self, server: &Arc<str>, chain: Option<&[CertificateDer<'_>]>) -> ClientCert {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return ClientCert {
                server: server.clone(),
                verify: CertVerify::None,
                subject_dn: String::new(),
                issuer_dn: String::new(),
                escaped_pem: String::new(),
            };
        };
        let (subject_dn, issuer_dn) = distinguished_names(leaf);
        let verify = match self.verify(leaf, intermediates) {
            Ok(()) => CertVerify::Success,
            Err(e) => {
                let self_signed = !subject_dn.is_empty() && subject_dn == issuer_dn;
                CertVerify::Failed {
                    reason: openssl_reason(&e, self_signed).into(),
                    issuer_unknown: matches!(e, webpki::Error::UnknownIssuer),
                }
            }
        };
        ClientCert {
            server: server.clone(),
            verify,
            subject_dn,
            issuer_dn,
            escaped_pem: escaped_pem(leaf),
        }
    }

    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), webpki::Error> {
        let cert = EndEntityCert::try_from(leaf)?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        // OpenSSL with a CRL file checks every certificate of the chain and fails one
        // whose CRL is missing or expired (nginx sets CRL_CHECK and CRL_CHECK_ALL).
        let revocation = RevocationOptionsBuilder::new(&crls).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Deny)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build()
        });
        let depth = usize::try_from(self.depth).unwrap_or(usize::MAX);
        let too_deep = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > depth {
                Err(webpki::Error::MaximumPathDepthExceeded)
            } else {
                Ok(())
            }
        };
        cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            UnixTime::now(),
            KeyUsage::client_auth(),
            revocation,
            Some(&too_deep),
        )
        .map(|_| ())
    }
}

/// OpenSSL's words for a failure, as nginx puts them after `FAILED:`.
fn openssl_reason(e: &webpki::Error, self_signed: bool) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer if self_signed => "self-signed certificate".to_owned(),
        E::UnknownIssuer => "unable to get local issuer certificate".to_owned(),
        E::CertExpired { .. } => "certificate has expired".to_owned(),
        E::CertNotValidYet { .. } => "certificate is not yet valid".to_owned(),
        E::CertRevoked => "certificate revoked".to_owned(),
        E::UnknownRevocationStatus => "unable to get certificate CRL".to_owned(),
        E::CrlExpired { .. } => "CRL has expired".to_owned(),
        E::MaximumPathDepthExceeded => "certificate chain too long".to_owned(),
        E::InvalidSignatureForPublicKey => "certificate signature failure".to_owned(),
        E::RequiredEkuNotFoundContext(_) => "unsupported certificate purpose".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Subject and issuer in RFC 2253 form, as OpenSSL's `XN_FLAG_RFC2253` prints them
/// (nginx's `$ssl_client_s_dn`, `$ssl_client_i_dn`): last RDN first, `,` between RDNs,
/// `+` inside one. Empty when the certificate cannot be parsed.
fn distinguished_names(der: &CertificateDer<'_>) -> (String, String) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (rfc2253(cert.subject()), rfc2253(cert.issuer())),
        Err(_) => (String::new(), String::new()),
    }
}

fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let value = match atv.as_str() {
                        Ok(s) => escape_dn_value(s),
                        // Unknown string types: the DER in hex, as OpenSSL dumps them.
                        Err(_) => {
                            let mut hex = String::from("#");
                            for b in atv.attr_value().data {
                                hex.push_str(&format!("{b:02X}"));
                            }
                            hex
                        }
                    };
                    format!("{}={value}", short_name(&oid).unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 2253 escaping as OpenSSL does it: the special characters with `\`, bytes outside
/// printable ASCII as `\XX`.
fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.len().saturating_sub(1);
    for (i, b) in s.bytes().enumerate() {
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if i == 0 => out.push_str("\\#"),
            b' ' if i == 0 || i == last => out.push_str("\\ "),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:02X}")),
        }
    }
    out
}

/// The leaf as PEM, URL-encoded as nginx's `$ssl_client_escaped_cert` (only letters,
/// digits and `-._~` are left as they are).
fn escaped_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(&pem, KEEP).to_string()
}

/// Asks for a certificate without requiring one, and accepts any: the verdict is made
/// after the handshake, so that a bad certificate is answered at HTTP level. With
/// [`ClientAuth::refusing_in_handshake`], requires one and refuses what the CA refuses.
#[derive(Debug)]
struct AskForCertificate {
    auth: Arc<ClientAuth>,
}

impl ClientCertVerifier for AskForCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth.refuse_in_handshake
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.auth.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.auth.refuse_in_handshake {
            return Ok(ClientCertVerified::assertion());
        }
        self.auth.verify(end_entity, intermediates).map_err(|e| {
            let self_signed = {
                let (subject, issuer) = distinguished_names(end_entity);
                !subject.is_empty() && subject == issuer
            };
            let reason = openssl_reason(&e, self_signed);
            tracing::info!(%reason, "client certificate refused in the handshake");
            rustls::Error::InvalidCertificate(certificate_error(&e))
        })?;
        Ok(ClientCertVerified::assertion())
    }

    // The client must still prove it holds the certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.auth.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.auth.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.auth.algorithms.supported_schemes()
    }
}

/// The alert a refused certificate gets, the nearest rustls has to webpki's reason.
fn certificate_error(e: &webpki::Error) -> rustls::CertificateError {
    use rustls::CertificateError as C;
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => C::UnknownIssuer,
        E::CertExpired { .. } => C::Expired,
        E::CertNotValidYet { .. } => C::NotValidYet,
        E::CertRevoked => C::Revoked,
        E::UnknownRevocationStatus => C::UnknownRevocationStatus,
        E::InvalidSignatureForPublicKey => C::BadSignature,
        E::RequiredEkuNotFoundContext(_) => C::InvalidPurpose,
        _ => C::ApplicationVerificationFailure,
    }
}

/// One host's client authentication and the server configuration its handshakes use.
#[derive(Debug)]
pub struct HostClientAuth {
    pub auth: Arc<ClientAuth>,
    pub config: Arc<ServerConfig>,
}

/// The hosts that ask for client certificates, by SNI (exact, then wildcard).
pub type ClientAuthHosts = ByHost<HostClientAuth>;

/// Builds [`ClientAuthHosts`] for `hosts`, each with a server configuration made by
/// `config` (the listener's, plus the host's verifier). Hosts with `off` are left out:
/// they are asked for nothing.
pub fn client_auth_hosts(
    hosts: &[(HostPattern, Arc<ClientAuth>)],
    config: impl Fn(Arc<dyn ClientCertVerifier>) -> Result<Arc<ServerConfig>, crate::TlsError>,
) -> Result<ClientAuthHosts, crate::TlsError> {
    let mut out = ClientAuthHosts::default();
    for (host, auth) in hosts {
        if auth.mode() == VerifyClient::Off {
            continue;
        }
        let config = config(auth.verifier())?;
        out.insert(
            host,
            HostClientAuth {
                auth: auth.clone(),
                config,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA's PEM and what signs with it.
    fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, rcgen::Issuer::new(params, key))
    }

    fn leaf(
        cn: &str,
        issuer: &(String, rcgen::Issuer<'static, rcgen::KeyPair>),
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Team, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.signed_by(&key, &issuer.1).unwrap().der().clone()
    }

    #[test]
    fn judges_against_the_hosts_ca() {
        let good = ca("Good CA");
        let other = ca("Other CA");
        let auth = ClientAuth::from_pem(VerifyClient::On, 1, good.0.as_bytes(), None).unwrap();
        let server: Arc<str> = "a.test".into();
        let ok = auth.judge(&server, Some(&[leaf("client", &good)]));
        assert_eq!(ok.verify, CertVerify::Success);
        // The order is the certificate's, reversed (the end-to-end test checks it
        // against OpenSSL's).
        let mut parts: Vec<&str> = ok.subject_dn.split(',').collect();
        parts.sort_unstable();
        assert_eq!(
            parts,
            [" Inc", "CN=client", "O=Team\\"],
            "{}",
            ok.subject_dn
        );
        assert_eq!(ok.issuer_dn, "CN=Good CA");
        assert!(ok
            .escaped_pem
            .starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
        let bad = auth.judge(&server, Some(&[leaf("client", &other)]));
        assert_eq!(
            bad.verify,
            CertVerify::Failed {
                reason: "unable to get local issuer certificate".into(),
                issuer_unknown: true
            }
        );
        assert_eq!(auth.judge(&server, None).verify, CertVerify::None);
    }

    /// A CA signed by `issuer` (an intermediate).
    fn sub_ca(
        name: &str,
        issuer: &(String, rcgen::Issuer<'static, rcgen::KeyPair>),
    ) -> (
        CertificateDer<'static>,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let der = params.signed_by(&key, &issuer.1).unwrap().der().clone();
        (der, rcgen::Issuer::new(params, key))
    }

    #[test]
    fn depth_counts_intermediates_as_openssl_does() {
        let root = ca("Root");
        let (one_der, one) = sub_ca("One", &root);
        let one = (String::new(), one);
        let (two_der, two) = sub_ca("Two", &one);
        let two = (String::new(), two);
        let server: Arc<str> = "a.test".into();
        let chain = [leaf("client", &two), two_der, one_der];
        let judge = |depth| {
            ClientAuth::from_pem(VerifyClient::On, depth, root.0.as_bytes(), None)
                .unwrap()
                .judge(&server, Some(&chain))
                .verify
        };
        assert_eq!(judge(2), CertVerify::Success);
        assert_eq!(
            judge(1),
            CertVerify::Failed {
                reason: "certificate chain too long".into(),
                issuer_unknown: false
            }
        );
    }

    #[test]
    fn a_crl_revokes_and_must_cover_the_chain() {
        let root = ca("Root");
        let serial = |n: u64, issuer| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.serial_number = Some(rcgen::SerialNumber::from(n));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "client");
            params.signed_by(&key, issuer).unwrap().der().clone()
        };
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(42u64),
                revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&root.1)
        .unwrap()
        .pem()
        .unwrap();
        let auth =
            ClientAuth::from_pem(VerifyClient::On, 1, root.0.as_bytes(), Some(crl.as_bytes()))
                .unwrap();
        let server: Arc<str> = "a.test".into();
        let judge = |der| auth.judge(&server, Some(&[der])).verify;
        assert_eq!(judge(serial(43, &root.1)), CertVerify::Success);
        assert_eq!(
            judge(serial(42, &root.1)),
            CertVerify::Failed {
                reason: "certificate revoked".into(),
                issuer_unknown: false
            }
        );
        // An intermediate no CRL covers: its certificates fail, as with OpenSSL's
        // crl_check_all.
        let (inter_der, inter) = sub_ca("Inter", &root);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let under = params.signed_by(&key, &inter).unwrap().der().clone();
        assert_eq!(
            auth.judge(&server, Some(&[under, inter_der])).verify,
            CertVerify::Failed {
                reason: "unable to get certificate CRL".into(),
                issuer_unknown: false
            }
        );
    }

    #[test]
    fn a_refusing_handshake_requires_a_certificate_its_ca_accepts() {
        let good = ca("Good CA");
        let other = ca("Other CA");
        let now = UnixTime::now();
        let asking = Arc::new(
            ClientAuth::from_pem(VerifyClient::Optional, 1, good.0.as_bytes(), None).unwrap(),
        );
        let lax = asking.verifier();
        assert!(lax.offer_client_auth() && !lax.client_auth_mandatory());
        assert!(lax
            .verify_client_cert(&leaf("client", &other), &[], now)
            .is_ok());
        let strict = Arc::new(
            ClientAuth::from_pem(VerifyClient::On, 1, good.0.as_bytes(), None)
                .unwrap()
                .refusing_in_handshake(),
        );
        assert!(!strict.same_as(&asking));
        let v = strict.verifier();
        assert!(v.offer_client_auth() && v.client_auth_mandatory());
        assert!(!v.root_hint_subjects().is_empty());
        assert!(v
            .verify_client_cert(&leaf("client", &good), &[], now)
            .is_ok());
        assert!(matches!(
            v.verify_client_cert(&leaf("client", &other), &[], now),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ));
        let none = Arc::new(ClientAuth::refusing_all()).verifier();
        assert!(none.client_auth_mandatory());
        assert!(none
            .verify_client_cert(&leaf("client", &good), &[], now)
            .is_err());
    }

    #[test]
    fn bad_bundles_are_errors() {
        assert!(matches!(
            ClientAuth::from_pem(VerifyClient::On, 1, b"", None),
            Err(ClientAuthError::NoCa)
        ));
        let good = ca("Good CA");
        assert!(matches!(
            ClientAuth::from_pem(VerifyClient::On, 1, good.0.as_bytes(), Some(b"junk")),
            Err(ClientAuthError::NoCrl)
        ));
    }

    #[test]
    fn dn_values_are_escaped_as_openssl_does() {
        assert_eq!(escape_dn_value(" a+b "), "\\ a\\+b\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("é"), "\\C3\\A9");
    }
}
