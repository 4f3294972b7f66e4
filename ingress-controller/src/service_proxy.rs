//! `--service-proxy`: the L4 Service dataplane, reconciled after every publish, and its
//! Prometheus metrics.
//!
//! Metrics (labels `namespace`, `service`, `port`, `protocol`; one series per Service
//! port, so bounded by the config):
//! - `portico_l4_connections_total`: TCP connections forwarded and UDP flows opened.
//! - `portico_l4_refused_total`: connections reset / datagrams dropped for want of an
//!   endpoint.
//! - `portico_l4_bytes_total{direction="in"|"out"}`: bytes from / to clients.
//! - `portico_l4_active_flows`: open TCP connections and live UDP flows.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proxy_core::l4::{Direction, L4Observer, L4Proxy, L4Service, Protocol, ServicePortId};

use crate::publish::{PublishHook, Published};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    namespace: String,
    service: String,
    port: String,
    protocol: &'static str,
}

impl PortLabels {
    fn new(id: &ServicePortId, protocol: Protocol) -> Self {
        Self {
            namespace: id.namespace.to_string(),
            service: id.name.to_string(),
            port: id.port.to_string(),
            protocol: protocol.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByteLabels {
    namespace: String,
    service: String,
    port: String,
    protocol: &'static str,
    direction: &'static str,
}

/// The L4 dataplane's counters; an [`L4Observer`] for [`L4Proxy`].
#[derive(Default)]
pub struct L4Metrics {
    connections: Family<PortLabels, Counter>,
    refused: Family<PortLabels, Counter>,
    bytes: Family<ByteLabels, Counter>,
    active: Family<PortLabels, Gauge>,
}

impl L4Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the families to `registry` (prefixed by the registry, e.g. `portico_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "l4_connections",
            "TCP connections and UDP flows forwarded, by Service port",
            self.connections.clone(),
        );
        registry.register(
            "l4_refused",
            "TCP connections reset and UDP datagrams dropped for want of an endpoint",
            self.refused.clone(),
        );
        registry.register(
            "l4_bytes",
            "Bytes forwarded, by Service port and direction (in: from clients)",
            self.bytes.clone(),
        );
        registry.register(
            "l4_active_flows",
            "Open TCP connections and live UDP flows, by Service port",
            self.active.clone(),
        );
    }
}

impl L4Observer for L4Metrics {
    fn flow_opened(&self, id: &ServicePortId, protocol: Protocol) {
        let labels = PortLabels::new(id, protocol);
        self.connections.get_or_create(&labels).inc();
        self.active.get_or_create(&labels).inc();
    }

    fn flow_closed(&self, id: &ServicePortId, protocol: Protocol) {
        self.active
            .get_or_create(&PortLabels::new(id, protocol))
            .dec();
    }

    fn refused(&self, id: &ServicePortId, protocol: Protocol) {
        self.refused
            .get_or_create(&PortLabels::new(id, protocol))
            .inc();
    }

    fn bytes(&self, id: &ServicePortId, protocol: Protocol, direction: Direction, n: u64) {
        let labels = ByteLabels {
            namespace: id.namespace.to_string(),
            service: id.name.to_string(),
            port: id.port.to_string(),
            protocol: protocol.as_str(),
            direction: direction.as_str(),
        };
        self.bytes.get_or_create(&labels).inc_by(n);
    }
}

/// Drives an [`L4Proxy`] from published configs: add it as a publish hook.
pub struct ServiceProxy {
    proxy: L4Proxy,
}

impl ServiceProxy {
    pub fn new(node_name: Option<String>, metrics: Arc<L4Metrics>) -> Self {
        Self {
            proxy: L4Proxy::new(node_name, metrics),
        }
    }

    /// Bring the listeners in line with a freshly published config. Must run inside the
    /// tokio runtime (the publish loop does).
    pub fn apply(&self, services: &[L4Service]) {
        match self.proxy.reconcile(services) {
            Ok(s) => tracing::info!(
                services = services.len(),
                listening = s.listening,
                added = s.added,
                removed = s.removed,
                not_local = s.not_local,
                failed = s.failed,
                draining = s.draining,
                "L4 listeners reconciled"
            ),
            Err(e) => tracing::error!(error = %e, "L4 listeners not reconciled"),
        }
    }

    pub fn proxy(&self) -> &L4Proxy {
        &self.proxy
    }
}

impl PublishHook for ServiceProxy {
    fn published(&self, p: &Published<'_>) {
        self.apply(&p.compiled.config.l4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_events_show_up_in_the_exposition() {
        let metrics = L4Metrics::new();
        let mut registry = Registry::with_prefix("portico");
        metrics.register(&mut registry);
        let id = ServicePortId::new("default", "kubia", "http");
        metrics.flow_opened(&id, Protocol::Tcp);
        metrics.flow_opened(&id, Protocol::Tcp);
        metrics.flow_closed(&id, Protocol::Tcp);
        metrics.refused(&id, Protocol::Tcp);
        metrics.bytes(&id, Protocol::Tcp, Direction::Inbound, 10);
        metrics.bytes(&id, Protocol::Tcp, Direction::Inbound, 5);
        metrics.bytes(&id, Protocol::Tcp, Direction::Outbound, 7);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels = r#"namespace="default",service="kubia",port="http",protocol="tcp""#;
        for line in [
            format!("portico_l4_connections_total{{{labels}}} 2"),
            format!("portico_l4_active_flows{{{labels}}} 1"),
            format!("portico_l4_refused_total{{{labels}}} 1"),
            format!("portico_l4_bytes_total{{{labels},direction=\"in\"}} 15"),
            format!("portico_l4_bytes_total{{{labels},direction=\"out\"}} 7"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
