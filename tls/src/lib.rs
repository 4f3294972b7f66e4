//! Certificate store and rustls server configuration (SNI). Takes PEM bytes per host set;
//! knows nothing of Kubernetes.

/// One certificate as configured: the hosts it serves and its PEM material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSource {
    /// Where it came from (`namespace/secret`), named in diagnostics.
    pub name: String,
    /// Hosts it serves: exact names or `*.` wildcards.
    pub hosts: Vec<String>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}
