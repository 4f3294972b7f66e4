//! Plain data shared by the dataplane's modules: the identities and endpoints the route
//! table, the balancer, the L4 forwarder and the config snapshot all name. It depends on
//! none of them, so they can share it without depending on each other.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

/// Stable identity of an HTTP backend: `namespace/service:port`. Runtime state that must
/// outlive a swap (pools, affinity, ejections, counters) is keyed by it. Made by
/// [`BackendId::new`] only, and not changed after: it carries a hash of its fields.
#[derive(Clone)]
pub struct BackendId {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// The Service port as the Ingress named it: a number or a port name.
    pub port: Arc<str>,
    /// A hash of the three, made once: every request looks its backend up by id twice
    /// (the configuration's backends, the balancer's state), and hashing three strings
    /// each time cost more than the rest of both lookups.
    digest: u64,
}

impl BackendId {
    pub fn new(namespace: &str, service: &str, port: &str) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        (namespace, service, port).hash(&mut h);
        Self {
            namespace: namespace.into(),
            service: service.into(),
            port: port.into(),
            digest: h.finish(),
        }
    }

    fn parts(&self) -> (&str, &str, &str) {
        (&self.namespace, &self.service, &self.port)
    }
}

impl PartialEq for BackendId {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.parts() == other.parts()
    }
}

impl Eq for BackendId {}

impl Hash for BackendId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl PartialOrd for BackendId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BackendId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendId")
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .field("port", &self.port)
            .finish()
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
