//! L4 Service dataplane: clusterIP/nodePort TCP and UDP forwarding with ClientIP affinity.
//!
//! The controller compiles each Service port into an [`L4Service`]; [`L4Proxy::reconcile`]
//! turns the list into listeners, keyed by (protocol, listen address). Choices made here:
//!
//! - A listen address is "local" when it can be bound. `EADDRNOTAVAIL` means it is not
//!   ours: no listener, a debug log, and another try at the next reconcile.
//! - A Service port with no usable endpoint keeps its listener: TCP connections are
//!   accepted and reset at once (`SO_LINGER 0`), so clients fail fast the way kube-proxy's
//!   REJECT rule makes them; UDP datagrams are dropped. Keeping the listener avoids
//!   rebinding churn while endpoints flap.
//! - `externalTrafficPolicy: Local` applies to node-port listeners only; the clusterIP
//!   listener always uses every ready endpoint (internal traffic policy `Cluster`).
//! - Connections to an endpoint that leaves the Service get [`L4Options::drain_timeout`]
//!   (default 30 s, the default pod `terminationGracePeriodSeconds`) before they are cut;
//!   connections to endpoints that stay are never touched.
//! - UDP flows to an endpoint that left the Service close at once (kube-proxy deletes
//!   such conntrack entries too), so the client's next datagram is re-balanced. A UDP
//!   listener that is removed drops its flows with it.

mod affinity;
mod drain;
mod reconcile;
#[cfg(target_os = "linux")]
mod splice;
mod tcp;
mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Endpoint;

pub use reconcile::{L4Error, L4Proxy, ReconcileSummary};

/// Identity of one Service port: `namespace/name:port-name-or-number`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortId {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub port: Arc<str>,
}

impl ServicePortId {
    pub fn new(namespace: &str, name: &str, port: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
        }
    }
}

impl fmt::Display for ServicePortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower-case name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One Service port to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Service {
    pub id: ServicePortId,
    pub protocol: Protocol,
    /// `clusterIP:port`; listened on only when the address is local to this machine.
    pub cluster_addr: Option<SocketAddr>,
    /// `nodeAddress:nodePort` for each node address (NodePort / LoadBalancer).
    pub node_addrs: Vec<SocketAddr>,
    /// Endpoints at the resolved targetPort.
    pub endpoints: Vec<Endpoint>,
    /// `externalTrafficPolicy: Local`: node-port traffic uses only endpoints on our node.
    pub external_traffic_local: bool,
    /// `sessionAffinity: ClientIP` with its timeout.
    pub client_ip_affinity: Option<Duration>,
}

/// Which way bytes went, as seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to endpoint.
    Inbound,
    /// Endpoint to client.
    Outbound,
}

impl Direction {
    /// Lower-case name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        }
    }
}

/// Metrics hook, implemented by the binary (Prometheus). A "flow" is a TCP connection or
/// a UDP flow (one client address); every opened flow is closed exactly once.
pub trait L4Observer: Send + Sync + 'static {
    fn flow_opened(&self, _id: &ServicePortId, _protocol: Protocol) {}
    fn flow_closed(&self, _id: &ServicePortId, _protocol: Protocol) {}
    /// A connection reset or a datagram dropped because no endpoint could take it.
    fn refused(&self, _id: &ServicePortId, _protocol: Protocol) {}
    fn bytes(&self, _id: &ServicePortId, _protocol: Protocol, _direction: Direction, _n: u64) {}
}

/// Reports a flow open now and closed when dropped, so a flow whose task is aborted
/// (its listener removed) is still counted closed.
pub(crate) struct FlowGuard {
    observer: Arc<dyn L4Observer>,
    id: ServicePortId,
    protocol: Protocol,
}

impl FlowGuard {
    pub(crate) fn open(
        observer: &Arc<dyn L4Observer>,
        id: &ServicePortId,
        protocol: Protocol,
    ) -> Self {
        observer.flow_opened(id, protocol);
        Self {
            observer: observer.clone(),
            id: id.clone(),
            protocol,
        }
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.observer.flow_closed(&self.id, self.protocol);
    }
}

/// An observer that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl L4Observer for NoopObserver {}

/// Runtime knobs of the L4 dataplane.
#[derive(Clone, Debug)]
pub struct L4Options {
    /// How long connections to an endpoint that left the Service may go on.
    pub drain_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// TCP connect to an endpoint.
    pub connect_timeout: Duration,
    /// Upper bound on UDP flows per listener; datagrams from new clients beyond it are
    /// dropped.
    pub max_udp_flows: usize,
    /// Use splice(2) for TCP where the platform has it.
    pub zero_copy: bool,
}

impl Default for L4Options {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            udp_idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_udp_flows: 65_536,
            zero_copy: true,
        }
    }
}
