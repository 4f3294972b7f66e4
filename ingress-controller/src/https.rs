//! The HTTPS listener: TLS termination with certificates chosen by SNI from the compiled
//! Secrets, then the same proxy as plain HTTP, marked `https`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxy_core::http::{ConnInfo, Proxy, Scheme, Shutdown};
use std::net::SocketAddr;
use tls::{CertDiagnostic, CertProblem, CertResolver, TlsAcceptor};

use tokio::net::{TcpListener, TcpStream};

use crate::compile::{Compiled, Diagnostic, DiagnosticReason, Severity};
use crate::store::{Kind, ObjectKey};

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    /// `namespace/name` of the Secret.
    secret: String,
    /// `"true"` for `--default-certificate`.
    default: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// The HTTPS listener's metrics. Label values stay bounded: one series per loaded
/// Secret, and a fixed set of failure reasons.
#[derive(Debug, Default)]
pub struct TlsMetrics {
    expiry: Family<CertLabels, Gauge>,
    handshake_failures: Family<FailureLabels, Counter>,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "End of validity (unix time) of each certificate served, by Secret",
            self.expiry.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by reason",
            self.handshake_failures.clone(),
        );
    }

    fn certificates(&self, store: &tls::CertStore) {
        // Secrets that went away must not linger as series.
        self.expiry.clear();
        for cert in store.certificates() {
            let labels = CertLabels {
                secret: cert.source.clone(),
                default: if cert.default { "true" } else { "false" },
            };
            self.expiry.get_or_create(&labels).set(cert.not_after);
        }
    }

    fn handshake_failed(&self, e: &tls::TlsError) {
        self.handshake_failures
            .get_or_create(&FailureLabels { reason: e.reason() })
            .inc();
    }
}

/// The certificate side of the HTTPS listener: the resolver every handshake asks, and
/// the rustls configuration around it. Cheap to share; [`Https::update`] swaps the store.
pub struct Https {
    resolver: Arc<CertResolver>,
    acceptor: TlsAcceptor,
    metrics: Arc<TlsMetrics>,
    /// Findings of the last update, so each is logged once and again when resolved.
    seen: Mutex<HashSet<Diagnostic>>,
}

impl Https {
    /// Generates the self-signed fallback certificate and the server configuration.
    pub fn new(metrics: Arc<TlsMetrics>) -> Result<Self, tls::TlsError> {
        let fallback = tls::generate_self_signed()?;
        let resolver = Arc::new(CertResolver::new(&fallback));
        let acceptor = TlsAcceptor::from(tls::server_config(resolver.clone())?);
        Ok(Https {
            resolver,
            acceptor,
            metrics,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Follows a publish: rebuilds the store and logs findings that are new since the
    /// previous publish (and those that went away), like the compiler's diagnostics.
    pub fn published(&self, compiled: &Compiled) {
        let current: HashSet<Diagnostic> = self.update(compiled).into_iter().collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for d in current.difference(&seen) {
            tracing::warn!(
                severity = d.severity.as_str(),
                kind = ?d.kind,
                object = %d.object,
                field = d.field,
                reason = d.reason.as_str(),
                "{}",
                d
            );
        }
        for d in seen.difference(&current) {
            tracing::info!(kind = ?d.kind, object = %d.object, reason = d.reason.as_str(), "resolved: {}", d);
        }
        *seen = current;
    }

    /// Rebuilds the certificate store from one compile's output and swaps it in: new
    /// handshakes use it at once, open connections are untouched. Unchanged Secrets are
    /// not parsed again. Returns what the store found, as controller diagnostics.
    pub fn update(&self, compiled: &Compiled) -> Vec<Diagnostic> {
        let diags = self
            .resolver
            .rebuild(&compiled.certs, compiled.default_cert.as_ref());
        self.metrics.certificates(&self.resolver.store());
        tracing::debug!(
            certificates = compiled.certs.len(),
            default = compiled.default_cert.is_some(),
            "certificate store rebuilt"
        );
        diags.iter().map(to_diagnostic).collect()
    }

    /// The resolver, for tests and metrics.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// Accepts TLS connections on `listener` until `shutdown`, handing each to `proxy`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        proxy: Arc<Proxy>,
        handshake_timeout: Duration,
        shutdown: Shutdown,
    ) {
        let stop = async move { shutdown.triggered().await };
        let metrics = self.metrics.clone();
        let prelude_proxy = proxy.clone();
        tls::serve_observed(
            listener,
            self.acceptor.clone(),
            handshake_timeout,
            stop,
            move |conn: tls::TlsConnection| {
                let proxy = proxy.clone();
                async move {
                    let info = ConnInfo {
                        remote: conn.remote,
                        local: conn.local,
                        scheme: Scheme::Https,
                        sni: conn.info.sni,
                        alpn_h2: conn.info.alpn_h2,
                        proxied: conn.proxied,
                    };
                    proxy.serve_connection(conn.stream, info).await
                }
            },
            move |e: &tls::TlsError| metrics.handshake_failed(e),
            move |tcp: TcpStream, remote: SocketAddr| {
                let proxy = prelude_proxy.clone();
                async move { proxy.proxy_protocol(tcp, remote).await }
            },
        )
        .await
    }
}

/// A certificate store finding as a diagnostic on the Secret it came from (`ns/name`).
pub fn to_diagnostic(d: &CertDiagnostic) -> Diagnostic {
    let object = match d.source.split_once('/') {
        Some((ns, name)) => ObjectKey::new(ns, name),
        None => ObjectKey::new("", &d.source),
    };
    let (reason, field) = match &d.problem {
        CertProblem::NoCertificate
        | CertProblem::CertificatePem(_)
        | CertProblem::CertificateParse { .. }
        | CertProblem::LeafNotFirst { .. } => {
            (DiagnosticReason::InvalidCertificate, "data.tls.crt")
        }
        CertProblem::NoKey
        | CertProblem::EncryptedKey
        | CertProblem::KeyPem(_)
        | CertProblem::UnsupportedKey(_) => (DiagnosticReason::InvalidCertificate, "data.tls.key"),
        CertProblem::KeyMismatch => (DiagnosticReason::InvalidCertificate, "data"),
        CertProblem::Expired { .. } | CertProblem::NotYetValid { .. } => {
            (DiagnosticReason::CertificateNotValidNow, "data.tls.crt")
        }
        CertProblem::HostNotCovered { .. } => {
            (DiagnosticReason::CertificateHostMismatch, "data.tls.crt")
        }
        CertProblem::DuplicateHost { .. } => (DiagnosticReason::TlsHostConflict, ""),
        CertProblem::NoHosts => (DiagnosticReason::TlsNoHosts, ""),
    };
    let severity = match d.severity() {
        tls::Severity::Warning => Severity::Warning,
        tls::Severity::Error => Severity::Error,
    };
    let mut message = d.problem.to_string();
    if severity == Severity::Error {
        message.push_str("; its hosts get the default certificate");
    }
    Diagnostic {
        severity,
        kind: Kind::Secret,
        object,
        field: field.to_owned(),
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls::CertSource;

    fn host(h: &str) -> tls::HostPattern {
        tls::HostPattern::parse(h).unwrap()
    }

    fn pair(host: &str) -> (Vec<u8>, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
        (
            c.cert.pem().into_bytes(),
            c.signing_key.serialize_pem().into_bytes(),
        )
    }

    #[test]
    fn store_findings_name_the_secret_field_and_reason() {
        let (cert, _) = pair("a.test");
        let (_, other_key) = pair("a.test");
        let (good_cert, good_key) = pair("b.test");
        let compiled = Compiled {
            certs: vec![
                CertSource {
                    name: "shop/mismatch".into(),
                    hosts: vec![host("a.test")],
                    cert_pem: cert,
                    key_pem: other_key,
                },
                CertSource {
                    name: "shop/good".into(),
                    hosts: vec![host("b.test"), host("c.test")],
                    cert_pem: good_cert,
                    key_pem: good_key,
                },
            ],
            ..Default::default()
        };
        let metrics = Arc::new(TlsMetrics::default());
        let https = Https::new(metrics.clone()).unwrap();
        let diags = https.update(&compiled);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert_eq!(diags[0].object, ObjectKey::new("shop", "mismatch"));
        assert_eq!(diags[0].kind, Kind::Secret);
        assert_eq!(diags[0].severity, Severity::Error);
        assert_eq!(diags[0].reason, DiagnosticReason::InvalidCertificate);
        assert!(
            diags[0].message.contains("does not match"),
            "{}",
            diags[0].message
        );
        assert_eq!(diags[1].object, ObjectKey::new("shop", "good"));
        assert_eq!(diags[1].severity, Severity::Warning);
        assert_eq!(diags[1].reason, DiagnosticReason::CertificateHostMismatch);
        assert!(diags[1].message.contains("c.test"));

        let store = https.resolver().store();
        assert_eq!(store.source_for("b.test"), Some("shop/good"));
        assert_eq!(store.source_for("a.test"), None);

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tls_certificate_expiry_timestamp_seconds{"))
            .collect();
        assert_eq!(series.len(), 1, "{text}");
        assert!(series[0].contains("secret=\"shop/good\""), "{text}");

        // A Secret that goes away takes its series with it.
        https.update(&Compiled::default());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("secret=\"shop/good\""), "{text}");
    }
}
