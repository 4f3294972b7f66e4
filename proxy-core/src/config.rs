//! The immutable configuration snapshot the dataplane serves, and its atomic hot swap.
//!
//! A request loads the current [`Config`] once and keeps that `Arc` until it finishes,
//! so a swap never changes the routing of a request in flight.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balance::CookieAffinity;
use crate::l4::L4Service;
use crate::routes::{RouteTable, RouteTarget};

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

/// Where a backend's traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Pod endpoints from EndpointSlices / Endpoints.
    Endpoints(Vec<Endpoint>),
    /// An `ExternalName` Service: a DNS name resolved at connect time.
    ExternalName { host: Arc<str>, port: u16 },
}

/// Per-backend timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    pub connect: Duration,
    /// From request sent to response headers received (504 when exceeded).
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
        }
    }
}

/// An HTTP backend: a Service port resolved to endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    pub kind: BackendKind,
    /// Cookie session affinity, from the Ingress annotations.
    pub affinity: Option<CookieAffinity>,
    pub timeouts: Timeouts,
}

impl Backend {
    pub fn new(id: BackendId, endpoints: Vec<Endpoint>) -> Self {
        Self {
            id,
            kind: BackendKind::Endpoints(endpoints),
            affinity: None,
            timeouts: Timeouts::default(),
        }
    }
}

/// Everything the dataplane serves, compiled from the cluster's objects.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Increases with every publish; for logs and metrics.
    pub generation: u64,
    /// Host/path rules.
    pub routes: RouteTable,
    /// What no rule matched (an Ingress `spec.defaultBackend`); `None` answers 404.
    pub default_backend: Option<RouteTarget>,
    /// Backends referenced by routes, by id.
    pub backends: HashMap<BackendId, Arc<Backend>>,
    /// L4 Service forwarding (only served with the service proxy enabled).
    pub l4: Vec<L4Service>,
}

/// The published configuration: readers load it lock-free, the controller swaps it.
#[derive(Clone, Default)]
pub struct ConfigHandle {
    inner: Arc<ArcSwap<Config>>,
}

impl ConfigHandle {
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(ArcSwap::from_pointee(config)),
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<Config> {
        self.inner.load_full()
    }

    /// Publish a new snapshot. Never blocks readers.
    pub fn store(&self, config: Config) {
        self.inner.store(Arc::new(config));
    }

    /// [`ConfigHandle::store`], handing back the previous snapshot, so that the caller
    /// chooses where a large one is freed.
    pub fn swap(&self, config: Config) -> Arc<Config> {
        self.inner.swap(Arc::new(config))
    }
}
