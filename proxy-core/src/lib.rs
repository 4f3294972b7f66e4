//! Portico's dataplane. It takes a plain [`config::Config`] value and serves it; it
//! knows nothing of Kubernetes.

pub mod balance;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod http;
pub mod l4;
pub mod model;
pub mod pipeline;
pub mod routes;

pub use config::{Backend, BackendId, BackendKind, Config, ConfigHandle, Endpoint, Timeouts};

/// The cryptography behind every TLS configuration Portico makes: client-facing, to
/// pods, HTTP/3 and the certificate checks. aws-lc-rs signs an RSA handshake in about
/// half of ring's time (see `benches/load/handshake.py`).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}
