//! UDP: a flow per client address. The first datagram from a client picks an endpoint
//! and opens a connected socket to it; replies go back through the listener socket, so
//! they come from the Service address the client sent to. A flow with no traffic either
//! way for `udp_idle_timeout` is forgotten.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::drain::removed;
use super::reconcile::{Shared, Target};
use super::{Direction, FlowGuard, Protocol, ServicePortId};

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

struct Flow {
    upstream: Arc<UdpSocket>,
    last_active: Mutex<Instant>,
}

impl Flow {
    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Flow>>> {
    // One map operation per lock; a poisoned map is still consistent.
    flows.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn serve(socket: UdpSocket, target: Arc<ArcSwap<Target>>, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    // Flow tasks belong to the listener: aborting the listener aborts them too.
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, client) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "L4 UDP receive failed");
                        continue;
                    }
                };
                let data = &buf[..n];
                let existing = lock(&flows).get(&client).cloned();
                if let Some(flow) = existing {
                    flow.touch();
                    let t = target.load();
                    forward_in(&flow, data, &t.id, &shared).await;
                    continue;
                }
                let t = target.load_full();
                if lock(&flows).len() >= shared.options.max_udp_flows {
                    tracing::debug!(service = %t.id, %client, "UDP flow table full; dropping");
                    shared.observer.refused(&t.id, Protocol::Udp);
                    continue;
                }
                let Some((flow, endpoint)) = open(&t, client).await else {
                    shared.observer.refused(&t.id, Protocol::Udp);
                    continue;
                };
                lock(&flows).insert(client, flow.clone());
                let guard = FlowGuard::open(&shared.observer, &t.id, Protocol::Udp);
                forward_in(&flow, data, &t.id, &shared).await;
                tasks.spawn(replies(
                    socket.clone(), flows.clone(), flow, client, endpoint, t, shared.clone(), guard,
                ));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn forward_in(flow: &Flow, data: &[u8], id: &ServicePortId, shared: &Shared) {
    match flow.upstream.send(data).await {
        Ok(n) => shared
            .observer
            .bytes(id, Protocol::Udp, Direction::Inbound, n as u64),
        Err(e) => tracing::debug!(service = %id, error = %e, "L4 UDP send to endpoint failed"),
    }
}

async fn open(t: &Target, client: SocketAddr) -> Option<(Arc<Flow>, SocketAddr)> {
    let endpoint = t.pick(client.ip())?;
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(service = %t.id, error = %e, "cannot open UDP socket for a flow");
            return None;
        }
    };
    if let Err(e) = upstream.connect(endpoint).await {
        tracing::debug!(service = %t.id, %endpoint, error = %e, "UDP connect failed");
        return None;
    }
    let flow = Arc::new(Flow {
        upstream: Arc::new(upstream),
        last_active: Mutex::new(Instant::now()),
    });
    Some((flow, endpoint))
}

/// Carry the endpoint's replies back to the client until the flow idles out, the
/// endpoint refuses (ICMP), or the endpoint leaves the Service (at once, no drain: the
/// client's next datagram opens a flow to a current endpoint).
#[allow(clippy::too_many_arguments)]
async fn replies(
    socket: Arc<UdpSocket>,
    flows: Flows,
    flow: Arc<Flow>,
    client: SocketAddr,
    endpoint: SocketAddr,
    t: Arc<Target>,
    shared: Arc<Shared>,
    _open: FlowGuard,
) {
    let idle = shared.options.udp_idle_timeout;
    let drain = removed(shared.drains.subscribe(&t.id, endpoint));
    tokio::pin!(drain);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle_at = flow.last_active() + idle;
        tokio::select! {
            r = flow.upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    flow.touch();
                    match socket.send_to(&buf[..n], client).await {
                        Ok(n) => shared.observer.bytes(&t.id, Protocol::Udp, Direction::Outbound, n as u64),
                        Err(e) => tracing::debug!(service = %t.id, %client, error = %e, "UDP reply failed"),
                    }
                }
                Err(e) => {
                    tracing::debug!(service = %t.id, %endpoint, error = %e, "UDP endpoint error; closing flow");
                    break;
                }
            },
            () = tokio::time::sleep_until(idle_at) => {
                if flow.last_active() + idle <= Instant::now() {
                    break;
                }
            }
            () = &mut drain => {
                tracing::debug!(service = %t.id, %client, %endpoint, "UDP endpoint removed; flow closed");
                break;
            }
        }
    }
    {
        let mut map = lock(&flows);
        if map.get(&client).is_some_and(|f| Arc::ptr_eq(f, &flow)) {
            map.remove(&client);
        }
    }
}
