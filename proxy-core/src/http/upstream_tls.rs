//! The client side of TLS to pods (`backend-protocol: HTTPS`, `GRPCS`, and the
//! `proxy-ssl-*` settings): one rustls configuration per distinct setting, shared by the
//! routes that ask for it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// ALPN identifiers offered to pods.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What a route asks of TLS to its pods. Routes with the same [`UpstreamTls::id`] share
/// pooled connections; the id says in words what was asked (verification, CA, client
/// certificate, name), so two settings that differ never share a connection.
pub struct UpstreamTls {
    id: Arc<str>,
    /// Offers `h2` and `http/1.1`: the pod chooses (`HTTPS`).
    either: Arc<ClientConfig>,
    /// Offers `h2` alone (`GRPCS`).
    h2: Arc<ClientConfig>,
    /// Offers `http/1.1` alone: WebSocket upgrades, which HTTP/2 to pods does not carry.
    http11: Arc<ClientConfig>,
    /// `proxy-ssl-name`: the name sent as SNI and checked in the pod's certificate.
    /// `None` checks (when verifying) the request's host.
    pub name: Option<ServerName<'static>>,
    /// `proxy-ssl-server-name`: send SNI. Off by default, as nginx's
    /// `proxy_ssl_server_name` is.
    pub sni: bool,
    /// The pod's certificate is checked (`proxy-ssl-verify`).
    pub verify: bool,
}

/// Which protocols a connection may speak, as ALPN offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Alpn {
    Either,
    H2,
    Http11,
}

impl UpstreamTls {
    /// From a configuration that verifies (or not) as its maker decided; ALPN is set
    /// here. `id` names the setting (see the type's documentation).
    pub fn new(
        id: impl Into<Arc<str>>,
        config: ClientConfig,
        name: Option<&str>,
        sni: bool,
        verify: bool,
    ) -> Self {
        let name = name.and_then(|n| ServerName::try_from(n.to_owned()).ok());
        let with = |alpn: &[&[u8]]| {
            let mut c = config.clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            // Without SNI, rustls sends none for an IP address either way; this also
            // stops it for a name.
            c.enable_sni = sni;
            Arc::new(c)
        };
        Self {
            id: id.into(),
            either: with(&[ALPN_H2, ALPN_HTTP11]),
            h2: with(&[ALPN_H2]),
            http11: with(&[ALPN_HTTP11]),
            name,
            sni,
            verify,
        }
    }

    /// The verifier that accepts any certificate (see [`UpstreamTls::unverified`]), for
    /// configurations made elsewhere that present a client certificate unverified.
    pub fn accept_any() -> Arc<dyn ServerCertVerifier> {
        Arc::new(AcceptAny(Arc::new(crate::crypto_provider())))
    }

    /// TLS without verifying the pod's certificate: ingress-nginx's default
    /// (`proxy-ssl-verify: off`), since pods mostly serve self-signed certificates.
    pub fn unverified() -> Arc<UpstreamTls> {
        static UNVERIFIED: OnceLock<Arc<UpstreamTls>> = OnceLock::new();
        UNVERIFIED
            .get_or_init(|| Arc::new(Self::unverified_with("unverified", false)))
            .clone()
    }

    /// [`UpstreamTls::unverified`] with SNI: what ingress-nginx's external auth
    /// location uses (`proxy_ssl_server_name on`, nothing verified).
    pub fn unverified_sni() -> Arc<UpstreamTls> {
        static UNVERIFIED_SNI: OnceLock<Arc<UpstreamTls>> = OnceLock::new();
        UNVERIFIED_SNI
            .get_or_init(|| Arc::new(Self::unverified_with("unverified-sni", true)))
            .clone()
    }

    fn unverified_with(id: &str, sni: bool) -> UpstreamTls {
        let provider = Arc::new(crate::crypto_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                    .with_no_client_auth()
            });
        let config = match config {
            Ok(c) => c,
            // The provider supports the default versions; kept total anyway.
            Err(_) => ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(Arc::new(
                    crate::crypto_provider(),
                ))))
                .with_no_client_auth(),
        };
        UpstreamTls::new(id, config, None, sni, false)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name a connection for `host` sends and checks: `proxy-ssl-name`, else the
    /// request's host when one is needed (SNI on, or verifying).
    pub(crate) fn name_for(&self, host: &str) -> Option<ServerName<'static>> {
        if let Some(name) = &self.name {
            return Some(name.clone());
        }
        if !(self.sni || self.verify) || host.is_empty() {
            return None;
        }
        ServerName::try_from(host.to_owned()).ok()
    }

    pub(crate) fn config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        match alpn {
            Alpn::Either => self.either.clone(),
            Alpn::H2 => self.h2.clone(),
            Alpn::Http11 => self.http11.clone(),
        }
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for UpstreamTls {}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls").field("id", &self.id).finish()
    }
}

/// Accepts any certificate, still checking that the pod holds its key (the handshake
/// signatures), so the session is encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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
