//! Plain data shared by the dataplane's modules: the identities and endpoints the route
//! table, the balancer, the L4 forwarder and the config snapshot all name. It depends on
//! none of them, so they can share it without depending on each other.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Stable identity of an HTTP backend: `namespace/service:port`. Runtime state that must
/// outlive a swap (pools, affinity, ejections, counters) is keyed by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// The Service port as the Ingress named it: a number or a port name.
    pub port: Arc<str>,
}

impl BackendId {
    pub fn new(namespace: &str, service: &str, port: &str) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            port: port.into(),
        }
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// One pod (or hand-written) endpoint of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `conditions.ready` (absent counts as true). Only ready endpoints get new requests.
    pub ready: bool,
    /// `conditions.terminating`: finishes what it has, gets nothing new.
    pub terminating: bool,
    /// `nodeName` of the endpoint, used by `externalTrafficPolicy: Local`.
    pub node_name: Option<Arc<str>>,
    /// `targetRef` pod name, for logs.
    pub pod: Option<Arc<str>>,
}

impl Endpoint {
    pub fn ready(addr: SocketAddr) -> Self {
        Self {
            addr,
            ready: true,
            terminating: false,
            node_name: None,
            pod: None,
        }
    }
}
