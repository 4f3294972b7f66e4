//! L4 Service dataplane: clusterIP/nodePort TCP and UDP forwarding with ClientIP affinity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Endpoint;

/// Identity of one Service port: `namespace/name:port-name-or-number`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortId {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub port: Arc<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
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
