//! [`L4Proxy`]: turns the compiled [`L4Service`] list into listeners, on every config swap.
//!
//! Listeners are keyed by (protocol, listen address). A key that stays keeps its socket
//! and gets its new endpoint set through an `ArcSwap`; a key that goes has its listener
//! closed; a new key is bound. Connections already forwarded are separate tasks and live
//! on; only the drain registry ends them, and only for endpoints that left their Service.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::affinity::Balancer;
use super::drain::Drains;
use super::{tcp, udp, L4Observer, L4Options, L4Service, Protocol, ServicePortId};

/// Which endpoints a listener may use: all ready ones, or (node ports of a Service with
/// `externalTrafficPolicy: Local`) only the ready ones on this node. Affinity and
/// round-robin state is kept per scope, as kube-proxy keeps separate chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Cluster,
    Local,
}

type ListenKey = (Protocol, SocketAddr);

/// What a listener forwards to; swapped in place on reconcile.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) id: ServicePortId,
    /// Endpoints eligible for new connections (ready, and local when the scope says so).
    pub(crate) endpoints: Vec<SocketAddr>,
    pub(crate) affinity: Option<Duration>,
    pub(crate) balancer: Arc<Balancer>,
}

impl Target {
    pub(crate) fn pick(&self, client: IpAddr) -> Option<SocketAddr> {
        self.balancer
            .pick(client, &self.endpoints, self.affinity, Instant::now())
    }

    pub(crate) fn pick_other(&self, client: IpAddr, failed: SocketAddr) -> Option<SocketAddr> {
        self.balancer.pick_other(
            client,
            &self.endpoints,
            failed,
            self.affinity,
            Instant::now(),
        )
    }
}

/// State every listener and connection task shares.
pub(crate) struct Shared {
    pub(crate) observer: Arc<dyn L4Observer>,
    pub(crate) options: L4Options,
    pub(crate) drains: Drains,
}

struct Listener {
    target: Arc<ArcSwap<Target>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Closes the socket; connections already accepted are their own tasks.
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    listeners: HashMap<ListenKey, Listener>,
    /// Addresses we could not bind, with the last error, so each is logged once.
    unbound: HashMap<ListenKey, io::ErrorKind>,
    /// Listen-address clashes already reported.
    conflicts: HashSet<(ListenKey, ServicePortId)>,
    balancers: HashMap<(ServicePortId, Scope), Arc<Balancer>>,
}

/// Failure of [`L4Proxy::reconcile`] as a whole (single listeners never fail it).
#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    #[error("the L4 proxy must be reconciled from inside a tokio runtime")]
    NoRuntime,
}

/// What one reconcile did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    /// Listeners open after the reconcile.
    pub listening: usize,
    pub added: usize,
    pub removed: usize,
    /// Wanted addresses that are not local to this machine (`EADDRNOTAVAIL`).
    pub not_local: usize,
    /// Wanted addresses that failed to bind for another reason (in use, permission).
    pub failed: usize,
    /// (Service port, endpoint) groups whose connections started their drain deadline.
    pub draining: usize,
}

/// The L4 Service dataplane. Cheap to share behind an `Arc`; dropping it closes every
/// listener (connections in flight finish on their own).
pub struct L4Proxy {
    node_name: Option<Arc<str>>,
    shared: Arc<Shared>,
    state: Mutex<State>,
}

impl L4Proxy {
    /// `node_name` is this node's name (`--node-name`), matched against endpoints'
    /// `nodeName` for `externalTrafficPolicy: Local`; without it no endpoint is local.
    pub fn new(node_name: Option<String>, observer: Arc<dyn L4Observer>) -> Self {
        Self::with_options(node_name, observer, L4Options::default())
    }

    pub fn with_options(
        node_name: Option<String>,
        observer: Arc<dyn L4Observer>,
        options: L4Options,
    ) -> Self {
        Self {
            node_name: node_name.map(Into::into),
            shared: Arc::new(Shared {
                observer,
                options,
                drains: Drains::default(),
            }),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Reconcile leaves the maps consistent between statements; a panic mid-way
        // (there is none on input) would at worst leave a listener for the next one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses currently listened on, sorted.
    pub fn listening(&self) -> Vec<(Protocol, SocketAddr)> {
        let mut keys: Vec<_> = self.state().listeners.keys().copied().collect();
        keys.sort();
        keys
    }

    /// Bring the listeners in line with `services`. Call on every config swap, from
    /// inside the tokio runtime that should run the listeners.
    pub fn reconcile(&self, services: &[L4Service]) -> Result<ReconcileSummary, L4Error> {
        let handle = Handle::try_current().map_err(|_| L4Error::NoRuntime)?;
        let _enter = handle.enter();
        let mut st = self.state();
        let st = &mut *st;
        let mut summary = ReconcileSummary::default();

        // What we want: one target per listen address, first Service wins a clash.
        let mut wanted: HashMap<ListenKey, Target> = HashMap::new();
        let mut order: Vec<ListenKey> = Vec::new();
        let mut used_balancers: HashSet<(ServicePortId, Scope)> = HashSet::new();
        let mut live: HashSet<(ServicePortId, SocketAddr)> = HashSet::new();
        let mut conflicts = HashSet::new();
        for svc in services {
            for ep in &svc.endpoints {
                // Any listed endpoint (ready or not) keeps its connections: not-ready
                // and terminating endpoints finish what they have.
                live.insert((svc.id.clone(), ep.addr));
            }
            let mut listen = Vec::new();
            if let Some(addr) = svc.cluster_addr {
                listen.push((addr, Scope::Cluster));
            }
            let node_scope = if svc.external_traffic_local {
                Scope::Local
            } else {
                Scope::Cluster
            };
            listen.extend(svc.node_addrs.iter().map(|a| (*a, node_scope)));
            for (addr, scope) in listen {
                let key = (svc.protocol, addr);
                if let Some(owner) = wanted.get(&key) {
                    if owner.id != svc.id {
                        let clash = (key, svc.id.clone());
                        if !st.conflicts.contains(&clash) {
                            tracing::warn!(
                                service = %svc.id, owner = %owner.id,
                                protocol = svc.protocol.as_str(), %addr,
                                "listen address already claimed by another Service port; ignored"
                            );
                        }
                        conflicts.insert(clash);
                    }
                    continue;
                }
                let balancer = st
                    .balancers
                    .entry((svc.id.clone(), scope))
                    .or_default()
                    .clone();
                used_balancers.insert((svc.id.clone(), scope));
                wanted.insert(
                    key,
                    Target {
                        id: svc.id.clone(),
                        endpoints: self.eligible(svc, scope),
                        affinity: svc.client_ip_affinity,
                        balancer,
                    },
                );
                order.push(key);
            }
        }
        st.conflicts = conflicts;

        // Close what is no longer wanted.
        let before = st.listeners.len();
        st.listeners.retain(|key, _| {
            let keep = wanted.contains_key(key);
            if !keep {
                tracing::info!(protocol = key.0.as_str(), addr = %key.1, "closing L4 listener");
            }
            keep
        });
        summary.removed = before - st.listeners.len();
        st.unbound.retain(|key, _| wanted.contains_key(key));

        // Pins to endpoints that left a scope are dropped; unused scopes are forgotten.
        for target in wanted.values() {
            target.balancer.retain_endpoints(&target.endpoints);
        }
        st.balancers.retain(|key, _| used_balancers.contains(key));

        // Update in place, or bind.
        for key in order {
            let Some(target) = wanted.remove(&key) else {
                continue;
            };
            if let Some(listener) = st.listeners.get(&key) {
                listener.target.store(Arc::new(target));
                continue;
            }
            let service = target.id.clone();
            match self.bind(key, target) {
                Ok(listener) => {
                    tracing::info!(
                        service = %listener.target.load().id,
                        protocol = key.0.as_str(), addr = %key.1,
                        "L4 listener open"
                    );
                    st.unbound.remove(&key);
                    st.listeners.insert(key, listener);
                    summary.added += 1;
                }
                Err(e) => {
                    let kind = e.kind();
                    let not_local = kind == io::ErrorKind::AddrNotAvailable;
                    if not_local {
                        summary.not_local += 1;
                    } else {
                        summary.failed += 1;
                    }
                    let first = st.unbound.insert(key, kind) != Some(kind);
                    if first && not_local {
                        // Said once per address: a clusterIP is rarely local outside a
                        // node set up for it, and the user should know why it is not served.
                        tracing::info!(
                            %service, protocol = key.0.as_str(), addr = %key.1,
                            "L4 address is not on this machine, so it is not served; add it \
                             to an interface (e.g. the loopback) to serve it"
                        );
                    } else if not_local || !first {
                        tracing::debug!(
                            protocol = key.0.as_str(), addr = %key.1, error = %e,
                            "L4 listen address not bound; will retry on next reconcile"
                        );
                    } else {
                        tracing::warn!(
                            protocol = key.0.as_str(), addr = %key.1, error = %e,
                            "cannot bind L4 listener; will retry on next reconcile"
                        );
                    }
                }
            }
        }
        summary.listening = st.listeners.len();

        let deadline = Instant::now() + self.shared.options.drain_timeout;
        summary.draining = self.shared.drains.update(&live, deadline);
        if summary.draining > 0 {
            tracing::info!(
                groups = summary.draining,
                drain_timeout_s = self.shared.options.drain_timeout.as_secs(),
                "connections to removed endpoints will be closed after the drain timeout"
            );
        }
        Ok(summary)
    }

    fn eligible(&self, svc: &L4Service, scope: Scope) -> Vec<SocketAddr> {
        svc.endpoints
            .iter()
            .filter(|e| e.ready && !e.terminating)
            .filter(|e| match scope {
                Scope::Cluster => true,
                Scope::Local => match (&self.node_name, &e.node_name) {
                    (Some(ours), Some(theirs)) => ours == theirs,
                    _ => false,
                },
            })
            .map(|e| e.addr)
            .collect()
    }

    fn bind(&self, key: ListenKey, target: Target) -> io::Result<Listener> {
        let (protocol, addr) = key;
        let target = Arc::new(ArcSwap::from_pointee(target));
        let shared = self.shared.clone();
        let task = match protocol {
            Protocol::Tcp => {
                let socket = new_socket(addr, Type::STREAM)?;
                socket.listen(1024)?;
                let listener = tokio::net::TcpListener::from_std(socket.into())?;
                tokio::spawn(tcp::serve(listener, target.clone(), shared))
            }
            Protocol::Udp => {
                let socket = new_socket(addr, Type::DGRAM)?;
                let socket = tokio::net::UdpSocket::from_std(socket.into())?;
                tokio::spawn(udp::serve(socket, target.clone(), shared))
            }
        };
        Ok(Listener { target, task })
    }
}

fn new_socket(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        // Keep `[::]:port` from also taking the IPv4 wildcard a separate entry may want.
        socket.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // Rebinding a port whose old connections sit in TIME_WAIT must work.
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}
