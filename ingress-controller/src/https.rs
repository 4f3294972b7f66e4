//! The HTTPS listener: TLS termination with certificates chosen by SNI from the compiled
//! Secrets, then the same proxy as plain HTTP, marked `https`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxy_core::http::{ConnInfo, ConnPermit, Proxied, Proxy, Scheme, Shutdown};
use std::net::SocketAddr;
use tls::{CertResolver, SwappableAcceptor, TlsPolicy};

use tokio::net::TcpStream;

use crate::compile::Compiled;
use crate::passthrough::{self, PassthroughMetrics, Step};

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
    passthrough: PassthroughMetrics,
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
        self.passthrough.register(registry);
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
/// the rustls configuration around it. Cheap to share; [`Https::published`] swaps in the
/// store each compile built.
pub struct Https {
    resolver: Arc<CertResolver>,
    acceptor: SwappableAcceptor,
    /// The policy `acceptor` was built for (`ssl-protocols`, `ssl-ciphers`).
    policy: std::sync::Mutex<TlsPolicy>,
    /// The client-certificate hosts the acceptor's per-host configurations were built for.
    client_auth: std::sync::Mutex<Vec<(tls::HostPattern, Arc<tls::ClientAuth>)>>,
    metrics: Arc<TlsMetrics>,
}

impl Https {
    /// Generates the self-signed fallback certificate and the server configuration.
    pub fn new(metrics: Arc<TlsMetrics>) -> Result<Self, tls::TlsError> {
        let fallback = tls::generate_self_signed()?;
        let resolver = Arc::new(CertResolver::new(&fallback));
        let acceptor = SwappableAcceptor::new(tls::server_config(resolver.clone())?);
        Ok(Https {
            resolver,
            acceptor,
            policy: std::sync::Mutex::new(TlsPolicy::default()),
            client_auth: std::sync::Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// Follows a publish: swaps in the certificate store the compile built. New
    /// handshakes use it at once, open connections are untouched. What the store found
    /// is among the compile's diagnostics, logged and counted by the publish loop.
    pub fn published(&self, compiled: &Compiled) {
        self.resolver.swap(compiled.cert_store.clone());
        let wanted = &compiled.settings.tls;
        let mut policy = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        // Rebuilt when a host's CA or settings (or the policy) changed, so a rotated
        // Secret reaches new handshakes while an unrelated publish keeps the hosts'
        // configurations (and their session resumption).
        let mut applied = self.client_auth.lock().unwrap_or_else(|e| e.into_inner());
        let same = *policy == *wanted
            && applied.len() == compiled.client_auth.len()
            && applied
                .iter()
                .zip(&compiled.client_auth)
                .all(|((h1, a1), (h2, a2))| h1 == h2 && a1.same_as(a2));
        if !same {
            let client_auth = tls::client_auth_hosts(&compiled.client_auth, |verifier| {
                tls::server_config_for(self.resolver.clone(), wanted, Some(verifier))
            });
            match client_auth {
                Ok(hosts) => {
                    tracing::info!(hosts = hosts.len(), "client certificate settings applied");
                    self.acceptor.swap_client_auth(hosts);
                    applied.clone_from(&compiled.client_auth);
                }
                Err(e) => {
                    // No way to ask for certificates: new handshakes of those hosts get
                    // none, and their routes refuse what has none (400 or 421).
                    tracing::error!(error = %e, "client certificate settings not applied");
                    self.acceptor
                        .swap_client_auth(tls::ClientAuthHosts::default());
                    applied.clear();
                }
            }
        }
        drop(applied);
        if *policy != *wanted {
            match tls::server_config_with(self.resolver.clone(), wanted) {
                Ok(config) => {
                    self.acceptor.swap(config);
                    *policy = wanted.clone();
                    tracing::info!(
                        tls12 = wanted.tls12,
                        tls13 = wanted.tls13,
                        tls12_suites = wanted.tls12_suites.as_ref().map(Vec::len),
                        "TLS policy changed; new handshakes use it"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS policy not applied; the previous one stays")
                }
            }
        }
        self.metrics.certificates(&compiled.cert_store);
        tracing::debug!(
            certificates = compiled.certs.len(),
            default = compiled.default_cert.is_some(),
            "certificate store swapped in"
        );
    }

    /// The rustls configuration (certificates by SNI), for the QUIC endpoint.
    pub fn server_config(&self) -> Arc<tls::ServerConfig> {
        self.acceptor.config()
    }

    /// The resolver, for tests and metrics.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// Accepts TLS connections from `listener` until `shutdown`, handing each to `proxy`.
    pub async fn serve(
        &self,
        listener: impl Into<proxy_core::http::shard::Incoming>,
        proxy: Arc<Proxy>,
        handshake_timeout: Duration,
        shutdown: Shutdown,
    ) {
        let stop = async move { shutdown.triggered().await };
        let metrics = self.metrics.clone();
        let prelude_metrics = self.metrics.clone();
        let prelude_proxy = proxy.clone();
        tls::serve_observed(
            listener,
            self.acceptor.clone(),
            handshake_timeout,
            stop,
            move |conn: tls::TlsConnection<(Option<Box<Proxied>>, ConnPermit)>| {
                let proxy = proxy.clone();
                async move {
                    let (proxied, _permit) = conn.admitted;
                    let info = ConnInfo {
                        remote: conn.remote,
                        local: conn.local,
                        scheme: Scheme::Https,
                        sni: conn.info.sni,
                        alpn_h2: conn.info.alpn_h2,
                        proxied,
                        client_cert: conn.info.client_cert,
                    };
                    proxy.serve_connection(conn.stream, info).await
                }
            },
            move |e: &tls::TlsError| metrics.handshake_failed(e),
            // Over the connection caps: closed before the handshake costs anything.
            move |tcp: TcpStream, remote: SocketAddr| {
                let proxy = prelude_proxy.clone();
                let metrics = prelude_metrics.clone();
                async move {
                    let permit = proxy.admit(remote)?;
                    let (tcp, proxied) = proxy.proxy_protocol(tcp, remote).await?;
                    let client = proxied.as_ref().map_or(remote, |p| p.source);
                    let permit = proxy.admit_client(permit, client)?;
                    // ssl-passthrough hosts leave here, holding the permit meanwhile.
                    match passthrough::step(
                        &proxy,
                        tcp,
                        client,
                        handshake_timeout,
                        &metrics.passthrough,
                    )
                    .await
                    {
                        Step::Terminate(tcp) => Some((tcp, (proxied, permit))),
                        Step::Done => None,
                    }
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, CompileOptions};
    use crate::store::Store;

    #[test]
    fn published_swaps_the_compiled_store_and_tracks_expiry_series() {
        let c = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let source = tls::CertSource::from_pem(
            "shop/good",
            vec![tls::HostPattern::parse("b.test").unwrap()],
            c.cert.pem().as_bytes(),
            c.signing_key.serialize_pem().as_bytes(),
        );
        let (store, _) = tls::CertStore::build(std::slice::from_ref(&source), None);
        let compiled = Compiled {
            certs: vec![source],
            cert_store: Arc::new(store),
            ..Default::default()
        };
        let metrics = Arc::new(TlsMetrics::default());
        let https = Https::new(metrics.clone()).unwrap();
        https.published(&compiled);
        assert!(Arc::ptr_eq(&https.resolver().store(), &compiled.cert_store));
        assert_eq!(
            https.resolver().store().source_for("b.test"),
            Some("shop/good")
        );

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
        https.published(&compile(&Store::default(), &CompileOptions::default()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("secret=\"shop/good\""), "{text}");
    }
}
