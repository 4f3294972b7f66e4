//! Certificate store and rustls server configuration (SNI). Takes PEM bytes per host set;
//! knows nothing of Kubernetes.
//!
//! Flow: [`ParsedCert::from_pem`] parses and checks a PEM pair once; [`CertStore::build`]
//! indexes [`CertSource`]s by host into a store plus [`CertDiagnostic`]s; a
//! [`CertResolver`] holds the current store and is swapped on each rebuild; [`server_config`] wraps the resolver for rustls; [`accept`] runs one handshake
//! and [`serve`] runs the accept loop for a listener.

mod backend_tls;
mod client_auth;
mod client_hello;
mod diagnostic;
mod listener;
mod policy;
mod resolver;
mod self_signed;
mod server;
mod serving;
mod store;
mod upstream;

pub use backend_tls::{backend_tls_config, BackendCa, SubjectAltName};
pub use client_auth::{
    client_auth_hosts, ClientAuth, ClientAuthError, ClientAuthHosts, HostClientAuth,
};
pub use client_hello::{peek_server_name, PeekError, ServerNameSniffer, Sniffed, MAX_PEEK};
pub use diagnostic::{CertDiagnostic, CertProblem, Severity};
pub use listener::{serve, serve_observed, TlsConnection};
pub use policy::{
    cipher_suite, server_config_for, server_config_with, AcceptorSource, SwappableAcceptor,
    TlsPolicy,
};
pub use resolver::CertResolver;
pub use rustls::{CipherSuite, ServerConfig};
pub use self_signed::{generate_self_signed, SelfSigned, SELF_SIGNED_CN};
pub use server::{accept, accept_by_sni, server_config, TlsInfo, ALPN_H2, ALPN_HTTP11};
pub use serving::{generate_serving_pair, ServingPair};
pub use store::{CertStore, ParsedCert, ServedCert};
pub use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;
pub use upstream::{
    client_key_pair, upstream_client_config, TlsVersion, UpstreamTlsError, UpstreamTlsSettings,
};

use std::time::Duration;

/// The host type certificates are configured with: the one proxy-core's routes use.
pub use proxy_core::host::HostPattern;

/// One certificate as configured: the hosts it serves and its parsed key pair.
///
/// The PEM is parsed once, by [`ParsedCert::from_pem`] (a caller that rebuilds often,
/// like the controller's compile, keeps those by content); the store only indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSource {
    /// Where it came from (`namespace/secret`), named in diagnostics.
    pub name: String,
    /// Hosts it serves: exact names or `*.` wildcards. Empty means the names in the
    /// certificate itself (subjectAltName DNS entries, else Common Name).
    pub hosts: Vec<HostPattern>,
    /// The key pair, or why its PEM cannot be used: the store reports that as an error
    /// and leaves the source out.
    pub cert: Result<ParsedCert, CertProblem>,
}

impl CertSource {
    /// A source from PEM: the chain, server certificate first (`tls.crt`), and the
    /// private key, PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`tls.key`).
    pub fn from_pem(
        name: impl Into<String>,
        hosts: Vec<HostPattern>,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Self {
        CertSource {
            name: name.into(),
            hosts,
            cert: ParsedCert::from_pem(cert_pem, key_pem),
        }
    }
}

/// Errors from setting up TLS or from one handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

impl TlsError {
    /// A short stable name for the error, usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::Config(_) => "config",
            TlsError::Generate(_) => "generate",
            TlsError::HandshakeTimeout(_) => "timeout",
            TlsError::Handshake(_) => "handshake",
        }
    }
}
