//! Typed findings about configured certificates. Errors mean the source was left out (its
//! hosts get the default certificate); warnings mean it is served anyway, as nginx does.

use std::fmt;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The certificate is served, but something about it needs attention.
    Warning,
    /// The certificate was rejected; its hosts get the default certificate.
    Error,
}

/// What is wrong with one configured certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    #[error("tls.crt holds no PEM CERTIFICATE block")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("certificate #{index} in tls.crt cannot be parsed: {reason}")]
    CertificateParse { index: usize, reason: String },
    #[error("tls.key holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey,
    #[error("tls.key is encrypted; only unencrypted keys are supported")]
    EncryptedKey,
    #[error("tls.key is not valid PEM: {0}")]
    KeyPem(String),
    #[error("tls.key cannot be used: {0}")]
    UnsupportedKey(String),
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    #[error(
        "tls.key matches certificate #{index} in tls.crt, but the server certificate must come first"
    )]
    LeafNotFirst { index: usize },
    #[error("certificate expired at {not_after} (unix seconds); served anyway")]
    Expired { not_after: i64 },
    #[error("certificate is not valid before {not_before} (unix seconds); served anyway")]
    NotYetValid { not_before: i64 },
    #[error("certificate does not cover host {host:?}; clients will reject it")]
    HostNotCovered { host: String },
    #[error("host {host:?} is already served by {winner}; ignored here")]
    DuplicateHost { host: String, winner: String },
    #[error("certificate names no hosts (no subjectAltName DNS name or Common Name)")]
    NoHosts,
    #[error(
        "certificate has no subjectAltName, only the Common Name {common_name:?}; served, but \
         browsers and Go clients reject CN-only certificates. Make it with a subjectAltName: \
         openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.crt -days 365 \
         -subj \"/CN={common_name}\" -addext \"subjectAltName=DNS:{common_name}\""
    )]
    NoSubjectAltName { common_name: String },
}

impl CertProblem {
    /// Whether the certificate is still served despite this problem.
    pub fn severity(&self) -> Severity {
        match self {
            CertProblem::Expired { .. }
            | CertProblem::NotYetValid { .. }
            | CertProblem::HostNotCovered { .. }
            | CertProblem::DuplicateHost { .. }
            | CertProblem::NoHosts
            | CertProblem::NoSubjectAltName { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// One finding, naming the source (`CertSource.name`, e.g. `namespace/secret`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertDiagnostic {
    pub source: String,
    pub problem: CertProblem,
}

impl CertDiagnostic {
    pub(crate) fn new(source: &str, problem: CertProblem) -> Self {
        CertDiagnostic {
            source: source.to_owned(),
            problem,
        }
    }

    pub fn severity(&self) -> Severity {
        self.problem.severity()
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

impl fmt::Display for CertDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS Secret {}: {}", self.source, self.problem)
    }
}
