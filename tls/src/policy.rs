//! The global TLS policy (`ssl-protocols`, `ssl-ciphers`): which protocol versions and
//! TLS 1.2 cipher suites the HTTPS listener offers, and a server configuration that can
//! be swapped when the policy changes without touching open connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::ResolvesServerCert;
use rustls::{CipherSuite, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::client_auth::ClientAuthHosts;
use crate::TlsError;

/// What the listener offers. Only TLS 1.2 and 1.3 exist here: rustls implements nothing
/// older, and nothing older is safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    pub tls12: bool,
    pub tls13: bool,
    /// The TLS 1.2 suites, in the server's order of preference; `None` offers every
    /// suite the provider has. TLS 1.3 suites are always all offered, as nginx's
    /// `ssl_ciphers` leaves them alone.
    pub tls12_suites: Option<Vec<CipherSuite>>,
}

impl Default for TlsPolicy {
    /// ingress-nginx's default: `TLSv1.2 TLSv1.3`, with every AEAD suite.
    fn default() -> Self {
        Self {
            tls12: true,
            tls13: true,
            tls12_suites: None,
        }
    }
}

/// OpenSSL's names of the TLS 1.2 suites the ring provider has.
const OPENSSL_NAMES: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The TLS 1.2 suite OpenSSL calls `name`, if Portico can offer it.
pub fn cipher_suite(name: &str) -> Option<CipherSuite> {
    OPENSSL_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, s)| *s)
}

/// A server configuration for `policy`: ALPN `h2` then `http/1.1`, `resolver` picking
/// the certificate per handshake.
pub fn server_config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    policy: &TlsPolicy,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(resolver, policy, None)
}

/// [`server_config_with`], asking clients for a certificate through `client_auth` when
/// there is one (a host with `auth-tls-*`).
pub fn server_config_for(
    resolver: Arc<dyn ResolvesServerCert>,
    policy: &TlsPolicy,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = proxy_core::crypto_provider();
    if let Some(wanted) = &policy.tls12_suites {
        let mut kept = Vec::new();
        // TLS 1.3 suites first, then the TLS 1.2 ones in the order asked for.
        kept.extend(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied(),
        );
        for want in wanted {
            if let Some(s) = provider.cipher_suites.iter().find(|s| s.suite() == *want) {
                kept.push(*s);
            }
        }
        provider.cipher_suites = kept;
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if policy.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if policy.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        versions = vec![&rustls::version::TLS13, &rustls::version::TLS12];
    }
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec(), crate::ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Where the accept loop takes its acceptor from, per connection.
pub trait AcceptorSource: Clone + Send + Sync + 'static {
    fn current(&self) -> TlsAcceptor;

    /// The hosts that ask for client certificates; `None` or empty: none does, and
    /// handshakes skip reading the SNI first.
    fn client_auth(&self) -> Option<Arc<ClientAuthHosts>> {
        None
    }
}

impl AcceptorSource for TlsAcceptor {
    fn current(&self) -> TlsAcceptor {
        self.clone()
    }
}

/// An acceptor whose configuration can be replaced: new handshakes take the new one,
/// open connections keep theirs. The hosts that ask for client certificates have
/// configurations of their own, swapped the same way.
#[derive(Clone)]
pub struct SwappableAcceptor(Arc<ArcSwap<ServerConfig>>, Arc<ArcSwap<ClientAuthHosts>>);

impl SwappableAcceptor {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(
            Arc::new(ArcSwap::new(config)),
            Arc::new(ArcSwap::from_pointee(ClientAuthHosts::default())),
        )
    }

    /// The configuration new handshakes get now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.0.load_full()
    }

    pub fn swap(&self, config: Arc<ServerConfig>) {
        self.0.store(config);
    }

    /// Replaces the hosts that ask for client certificates, for new handshakes.
    pub fn swap_client_auth(&self, hosts: ClientAuthHosts) {
        self.1.store(Arc::new(hosts));
    }
}

impl AcceptorSource for SwappableAcceptor {
    fn current(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.load_full())
    }

    fn client_auth(&self) -> Option<Arc<ClientAuthHosts>> {
        let hosts = self.1.load_full();
        (!hosts.is_empty()).then_some(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_names_map_to_the_suites_rustls_has() {
        assert_eq!(
            cipher_suite("ECDHE-RSA-AES128-GCM-SHA256"),
            Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
        );
        assert_eq!(cipher_suite("DHE-RSA-AES128-GCM-SHA256"), None);
        assert_eq!(cipher_suite("AES128-SHA"), None);
    }

    #[test]
    fn the_policy_shapes_versions_and_suites() {
        let fallback = crate::generate_self_signed().unwrap();
        let resolver = Arc::new(crate::CertResolver::new(&fallback));
        let only13 = TlsPolicy {
            tls12: false,
            ..TlsPolicy::default()
        };
        let c = server_config_with(resolver.clone(), &only13).unwrap();
        assert!(c
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS12));
        let one = TlsPolicy {
            tls12_suites: Some(vec![CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]),
            ..TlsPolicy::default()
        };
        let c = server_config_with(resolver, &one).unwrap();
        let tls12: Vec<CipherSuite> = c
            .crypto_provider()
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| s.suite())
            .collect();
        assert_eq!(tls12, [CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]);
    }
}
