//! The `ssl-passthrough` step of the HTTPS accept path: after the PROXY protocol header
//! (if any) and before the TLS handshake, look at the ClientHello's server name without
//! consuming it; a passthrough host's connection is forwarded as it is, everything else
//! goes on to be terminated as before. Costs nothing while no host is passed through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use proxy_core::http::Proxy;
use tokio::net::TcpStream;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// A configured passthrough host: bounded by the configuration, never the raw SNI.
    host: String,
    outcome: &'static str,
}

/// Passthrough connections by host and outcome, and the bytes they carried.
#[derive(Debug, Default)]
pub struct PassthroughMetrics {
    connections: Family<Labels, Counter>,
    bytes_sent: Family<Labels, Counter>,
    bytes_received: Family<Labels, Counter>,
}

impl PassthroughMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ssl_passthrough_connections",
            "TLS connections forwarded undecrypted (ssl-passthrough), by host and outcome",
            self.connections.clone(),
        );
        registry.register(
            "ssl_passthrough_sent_bytes",
            "Bytes from clients to pods over ssl-passthrough connections, by host",
            self.bytes_sent.clone(),
        );
        registry.register(
            "ssl_passthrough_received_bytes",
            "Bytes from pods to clients over ssl-passthrough connections, by host",
            self.bytes_received.clone(),
        );
    }
}

/// What became of a connection at the passthrough step.
pub enum Step {
    /// Not a passthrough connection: terminate TLS as usual.
    Terminate(TcpStream),
    /// Forwarded and done, or closed: nothing more to do.
    Done,
}

/// Runs the passthrough step on `tcp`. `client` is the client as known (the PROXY
/// protocol's, else the peer), for the log; `timeout` bounds the wait for the whole
/// ClientHello, as the handshake timeout bounds the handshake.
pub async fn step(
    proxy: &Arc<Proxy>,
    tcp: TcpStream,
    client: SocketAddr,
    timeout: Duration,
    metrics: &PassthroughMetrics,
) -> Step {
    // The configuration in force when the connection came: its hosts and backends.
    let config = proxy.config().load();
    if config.passthrough.is_empty() {
        return Step::Terminate(tcp);
    }
    let host = match tls::peek_server_name(&tcp, timeout).await {
        Ok(Some(name)) if config.passthrough.contains_key(name.as_str()) => name,
        Ok(_) => return Step::Terminate(tcp),
        Err(e) => {
            // The handshake could not have gone better: no complete ClientHello.
            tracing::debug!(%client, error = %e, reason = e.reason(), "no ClientHello read; connection closed");
            return Step::Done;
        }
    };
    let labels = |outcome| Labels {
        host: host.clone(),
        outcome,
    };
    match proxy.pass_through(&config, tcp, &host).await {
        Ok(passed) => {
            metrics
                .connections
                .get_or_create(&labels("forwarded"))
                .inc();
            metrics
                .bytes_sent
                .get_or_create(&labels("forwarded"))
                .inc_by(passed.sent);
            metrics
                .bytes_received
                .get_or_create(&labels("forwarded"))
                .inc_by(passed.received);
            tracing::info!(
                %client,
                host,
                backend = %passed.backend,
                endpoint = %passed.target,
                sent = passed.sent,
                received = passed.received,
                duration_ms = passed.duration.as_millis() as u64,
                error = passed.error.as_ref().map(tracing::field::display),
                "ssl-passthrough connection"
            );
        }
        Err(e) => {
            metrics.connections.get_or_create(&labels(e.reason())).inc();
            // Nothing to answer with: the client gets a closed connection, as from
            // ingress-nginx's TLS proxy when its dial fails.
            tracing::warn!(%client, host, error = %e, "ssl-passthrough connection closed");
        }
    }
    Step::Done
}
