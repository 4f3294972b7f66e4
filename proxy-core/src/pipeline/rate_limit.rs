//! `limit-rps`, `limit-rpm` and `limit-connections`, as ingress-nginx configures nginx's
//! `limit_req` and `limit_conn`: one zone per Ingress, keyed by the client address
//! [`ClientAddressPolicy`](super::ClientAddressPolicy) decided; clients in
//! `limit-allowlist` are not counted.
//!
//! - Requests: a leaky bucket per client and rate, `burst = rate x limit-burst-multiplier`,
//!   `nodelay` (excess requests within the burst are served at once, beyond it refused).
//!   As nginx counts it: a client's first request leaves the bucket empty, each later one
//!   adds one request to what has not drained yet at the rate, and a request that would
//!   take it past the burst is refused (and not counted).
//! - Connections: requests of a client in progress at once (until the answer's body is
//!   done), as `limit_conn` counts them.
//!
//! Each replica enforces its share of every limit: the limit divided by the replicas
//! ([`Config::replicas`](crate::config::Config)), rounded up, at least 1.
//!
//! The state lives in [`Limiter`], which outlives configuration swaps: a zone is kept
//! while some route names it (dropped at publish otherwise), and holds at most
//! [`ZONE_CLIENTS`] client addresses: when full, clients whose buckets have drained go
//! first, then the least recently seen, as nginx frees a full zone's oldest states.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use http::request::Parts;
use http::StatusCode;
use ipnet::IpNet;
use tokio::time::Instant;

use super::{plain_answer, Flow, RequestCtx, RequestFilter};
use crate::config::{Config, Runtime};
use crate::http::ProxyError;

/// Most client addresses one zone remembers: 96 bytes each, in a hash table of 65,536
/// slots at most (about 6.4 MB).
pub const ZONE_CLIENTS: usize = 50_000;

/// A request rate and its burst, before it is shared among replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per [`Rate::period`].
    pub limit: u32,
    /// `limit-burst-multiplier`: the burst is this many periods' worth of requests.
    pub burst_multiplier: u32,
}

/// What one replica allows of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Share {
    /// Requests per period.
    limit: u64,
    period: Duration,
    /// In requests.
    burst: u64,
}

impl Rate {
    fn share(self, replicas: u32, period: Duration) -> Share {
        let limit = u64::from(per_replica(self.limit, replicas));
        Share {
            limit,
            period,
            burst: limit.saturating_mul(u64::from(self.burst_multiplier)),
        }
    }
}

/// `limit` divided among `replicas`, rounded up, at least 1.
pub fn per_replica(limit: u32, replicas: u32) -> u32 {
    limit.div_ceil(replicas.max(1)).max(1)
}

/// The limits of the paths of one Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The zone: the Ingress's `namespace/name`, shared by all of its paths.
    pub zone: Arc<str>,
    /// `limit-rps`.
    pub rps: Option<Rate>,
    /// `limit-rpm`.
    pub rpm: Option<Rate>,
    /// `limit-connections`.
    pub connections: Option<u32>,
    /// `limit-allowlist`: clients never limited.
    pub allow: Vec<IpNet>,
    /// `limit-req-status-code`.
    pub req_status: StatusCode,
    /// `limit-conn-status-code`.
    pub conn_status: StatusCode,
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

impl RateLimit {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let client = super::client::canonical(ctx.client);
        if self.allow.iter().any(|n| n.contains(&client)) {
            return Ok(Flow::Continue);
        }
        let replicas = ctx.replicas;
        let verdict = ctx.limiter.zone(&self.zone).admit(
            client,
            Instant::now(),
            [
                self.rps.map(|r| r.share(replicas, SECOND)),
                self.rpm.map(|r| r.share(replicas, MINUTE)),
            ],
            self.connections.map(|c| per_replica(c, replicas)),
        );
        match verdict {
            Admit::Yes(slot) => {
                ctx.conn_slot = slot;
                Ok(Flow::Continue)
            }
            Admit::OverRate => {
                tracing::debug!(zone = %self.zone, %client, "request rate over the limit");
                Ok(Flow::Answer(Box::new(plain_answer(self.req_status))))
            }
            Admit::OverConnections => {
                tracing::debug!(zone = %self.zone, %client, "concurrent requests over the limit");
                Ok(Flow::Answer(Box::new(plain_answer(self.conn_status))))
            }
        }
    }
}

/// The limit zones, kept across configuration swaps.
#[derive(Debug)]
pub struct Limiter {
    zones: RwLock<HashMap<Arc<str>, Arc<Zone>>>,
    capacity: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::with_capacity(ZONE_CLIENTS)
    }
}

impl Limiter {
    /// A limiter whose zones remember at most `capacity` clients each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            zones: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn zone(&self, name: &Arc<str>) -> Arc<Zone> {
        let zones = self.zones.read().unwrap_or_else(|e| e.into_inner());
        if let Some(z) = zones.get(name) {
            return z.clone();
        }
        drop(zones);
        // Only before the first publish that names it (apply makes every named zone).
        let mut zones = self.zones.write().unwrap_or_else(|e| e.into_inner());
        zones
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Zone::new(self.capacity)))
            .clone()
    }

    /// Zones kept now.
    pub fn zones(&self) -> usize {
        self.zones.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Runtime for Limiter {
    /// Keeps the zones some route of `next` names (their clients' state with them) and
    /// drops the others.
    fn apply(&self, next: &Config) {
        let mut named: Vec<Arc<str>> = Vec::new();
        let mut add = |t: &crate::routes::RouteTarget| {
            for f in &t.policy.request {
                if let RequestFilter::RateLimit(l) = f {
                    named.push(l.zone.clone());
                }
            }
        };
        let rules = next.routes.rules();
        let regex = next.routes.regex_rules();
        rules.iter().for_each(|r| add(&r.target));
        regex.iter().for_each(|r| add(&r.target));
        next.default_backend.iter().for_each(&mut add);
        next.default_service.iter().for_each(&mut add);
        let mut zones = self.zones.write().unwrap_or_else(|e| e.into_inner());
        let mut kept = HashMap::with_capacity(named.len());
        for name in named {
            let zone = zones
                .remove(&name)
                .or_else(|| kept.remove(&name))
                .unwrap_or_else(|| Arc::new(Zone::new(self.capacity)));
            kept.insert(name, zone);
        }
        *zones = kept;
    }
}

/// One zone's clients.
#[derive(Debug)]
struct Zone {
    clients: Mutex<HashMap<IpAddr, ClientState>>,
    capacity: usize,
}

#[derive(Debug)]
struct ClientState {
    /// `limit-rps`, then `limit-rpm`; `None` until the first request counted.
    buckets: [Option<Bucket>; 2],
    /// Requests in progress.
    conns: u32,
    seen: Instant,
}

/// nginx's `limit_req` state: requests not yet drained, in thousandths.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    excess: u64,
    last: Instant,
}

impl Bucket {
    /// The excess after one more request at `now`, or `None` when that passes the burst.
    fn take(this: Option<Bucket>, now: Instant, share: Share) -> Option<u64> {
        let Some(b) = this else {
            return Some(0);
        };
        let excess = drained(b, now, share).saturating_add(1000);
        (excess <= share.burst.saturating_mul(1000)).then_some(excess)
    }
}

/// What is left of `b`'s excess at `now`.
fn drained(b: Bucket, now: Instant, share: Share) -> u64 {
    let elapsed = now.saturating_duration_since(b.last).as_nanos();
    let gone = u128::from(share.limit) * 1000 * elapsed / share.period.as_nanos().max(1);
    b.excess
        .saturating_sub(u64::try_from(gone).unwrap_or(u64::MAX))
}

enum Admit {
    /// With the connection slot to hold until the answer is done, when counted.
    Yes(Option<ConnSlot>),
    OverRate,
    OverConnections,
}

impl Zone {
    fn new(capacity: usize) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, ClientState>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(
        self: Arc<Self>,
        client: IpAddr,
        now: Instant,
        rates: [Option<Share>; 2],
        connections: Option<u32>,
    ) -> Admit {
        let mut clients = self.lock();
        if !clients.contains_key(&client) && clients.len() >= self.capacity {
            make_room(&mut clients, self.capacity, now, &rates);
        }
        let state = clients.entry(client).or_insert(ClientState {
            buckets: [None, None],
            conns: 0,
            seen: now,
        });
        state.seen = now;
        // Every rate must let the request through before any counts it.
        let mut next = [None, None];
        for (i, share) in rates.iter().enumerate() {
            if let Some(share) = share {
                match Bucket::take(state.buckets[i], now, *share) {
                    Some(excess) => next[i] = Some(Bucket { excess, last: now }),
                    None => return Admit::OverRate,
                }
            }
        }
        for (slot, b) in state.buckets.iter_mut().zip(next) {
            if b.is_some() {
                *slot = b;
            }
        }
        let Some(max) = connections else {
            return Admit::Yes(None);
        };
        if state.conns >= max {
            return Admit::OverConnections;
        }
        state.conns += 1;
        drop(clients);
        Admit::Yes(Some(ConnSlot { zone: self, client }))
    }
}

/// Frees room in a full zone: clients with nothing in progress whose buckets have
/// drained go first; if that frees less than an eighth, the least recently seen of the
/// rest go until an eighth is free (so a full zone is swept once per eighth of new
/// clients, not at each).
fn make_room(
    clients: &mut HashMap<IpAddr, ClientState>,
    capacity: usize,
    now: Instant,
    rates: &[Option<Share>; 2],
) {
    let idle = |c: &ClientState| {
        c.conns == 0
            && c.buckets.iter().zip(rates).all(|(b, r)| match (b, r) {
                (Some(b), Some(r)) => drained(*b, now, *r) == 0,
                _ => true,
            })
    };
    clients.retain(|_, c| !idle(c));
    let target = capacity - capacity.div_ceil(8);
    if clients.len() <= target {
        return;
    }
    let mut seen: Vec<Instant> = clients
        .values()
        .filter(|c| c.conns == 0)
        .map(|c| c.seen)
        .collect();
    let excess = (clients.len() - target).min(seen.len());
    if excess == 0 {
        return;
    }
    let (_, cutoff, _) = seen.select_nth_unstable(excess - 1);
    let cutoff = *cutoff;
    let mut left = excess;
    clients.retain(|_, c| {
        if left > 0 && c.conns == 0 && c.seen <= cutoff {
            left -= 1;
            return false;
        }
        true
    });
}

/// A request counted against `limit-connections`; given back when dropped (with the
/// answer's body).
#[derive(Debug)]
pub struct ConnSlot {
    zone: Arc<Zone>,
    client: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(c) = self.zone.lock().get_mut(&self.client) {
            c.conns = c.conns.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::Scheme;

    fn limit(rps: Option<u32>, rpm: Option<u32>, connections: Option<u32>) -> RateLimit {
        let rate = |limit| Rate {
            limit,
            burst_multiplier: 5,
        };
        RateLimit {
            zone: "default/app".into(),
            rps: rps.map(rate),
            rpm: rpm.map(rate),
            connections,
            allow: Vec::new(),
            req_status: StatusCode::SERVICE_UNAVAILABLE,
            conn_status: StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The status of one request from `client`, and its connection slot.
    fn run(
        f: &RateLimit,
        limiter: &Limiter,
        client: &str,
        replicas: u32,
    ) -> (Option<StatusCode>, Option<ConnSlot>) {
        let mut c = ctx(Scheme::Http, "a", 443);
        c.client = client.parse().unwrap();
        c.limiter = limiter;
        c.replicas = replicas;
        let status = match f.on_request(&mut c, &head("/")).unwrap() {
            Flow::Answer(r) => Some(r.status()),
            Flow::Continue => None,
        };
        (status, c.conn_slot.take())
    }

    fn passed(f: &RateLimit, limiter: &Limiter, client: &str, n: usize) -> usize {
        (0..n)
            .filter(|_| run(f, limiter, client, 1).0.is_none())
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn rps_allows_the_burst_then_the_rate() {
        let limiter = Limiter::default();
        // limit-rps 2: burst 10, nodelay; nginx serves the first request plus the burst.
        let f = limit(Some(2), None, None);
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 20), 11);
        let (status, _) = run(&f, &limiter, "192.0.2.1", 1);
        assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
        // Another client has a bucket of its own.
        assert_eq!(passed(&f, &limiter, "192.0.2.2", 3), 3);
        // Half a second drains one request at 2 r/s.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 3), 1);
        // Five seconds drain the whole burst.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 20), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_and_rps_both_apply_and_a_refusal_is_not_counted() {
        let limiter = Limiter::default();
        // 60 r/m with burst 300 and 1 r/s with burst 5: the per-second bucket refuses.
        let f = limit(Some(1), Some(60), None);
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 10), 6);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 10), 1);
        // rpm alone: 1 r/m, burst 5.
        let f = RateLimit {
            zone: "default/other".into(),
            ..limit(None, Some(1), None)
        };
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 10), 6);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 10), 0);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(passed(&f, &limiter, "192.0.2.1", 10), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_share_the_rate() {
        let limiter = Limiter::default();
        // 10 r/s over 3 replicas: 4 r/s here, burst 20.
        let f = limit(Some(10), None, None);
        let served = (0..100)
            .filter(|_| run(&f, &limiter, "192.0.2.1", 3).0.is_none())
            .count();
        assert_eq!(served, 21);
        assert_eq!(per_replica(10, 3), 4);
        assert_eq!(per_replica(1, 5), 1);
        assert_eq!(per_replica(7, 0), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn allowlist_is_never_limited() {
        let limiter = Limiter::default();
        let f = RateLimit {
            allow: vec!["192.0.2.0/30".parse().unwrap()],
            ..limit(Some(1), None, Some(1))
        };
        assert_eq!(passed(&f, &limiter, "192.0.2.3", 50), 50);
        assert_eq!(passed(&f, &limiter, "::ffff:192.0.2.2", 50), 50);
        assert_eq!(passed(&f, &limiter, "192.0.2.4", 50), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_are_counted_until_the_slot_is_dropped() {
        let limiter = Limiter::default();
        let f = limit(None, None, Some(2));
        let (s1, a) = run(&f, &limiter, "192.0.2.1", 1);
        let (s2, b) = run(&f, &limiter, "192.0.2.1", 1);
        assert_eq!((s1, s2), (None, None));
        let (s3, none) = run(&f, &limiter, "192.0.2.1", 1);
        assert_eq!(s3, Some(StatusCode::TOO_MANY_REQUESTS));
        assert!(none.is_none());
        // Another client is not affected.
        let (other, _c) = run(&f, &limiter, "192.0.2.9", 1);
        assert_eq!(other, None);
        drop(a);
        let (s4, _d) = run(&f, &limiter, "192.0.2.1", 1);
        assert_eq!(s4, None);
        drop(b);
        // Two replicas: one each.
        let f = RateLimit {
            zone: "default/two".into(),
            ..limit(None, None, Some(2))
        };
        let (first, _e) = run(&f, &limiter, "192.0.2.1", 2);
        let (second, _) = run(&f, &limiter, "192.0.2.1", 2);
        assert_eq!((first, second), (None, Some(StatusCode::TOO_MANY_REQUESTS)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_zone_forgets_idle_clients_first() {
        let limiter = Limiter::with_capacity(16);
        let f = limit(Some(1), None, Some(1));
        // A client with a request in progress, and one whose bucket has not drained.
        let (_, busy) = run(&f, &limiter, "10.0.0.1", 1);
        assert!(busy.is_some());
        assert_eq!(passed(&f, &limiter, "10.0.0.2", 3), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        // Many newer clients whose single request leaves nothing to drain.
        for i in 1..=200u8 {
            let (_, slot) = run(&f, &limiter, &format!("10.0.1.{i}"), 1);
            drop(slot);
        }
        let zone = limiter.zone(&"default/app".into());
        let len = zone.lock().len();
        assert!(len <= 16, "{len} clients kept");
        // Both older clients were kept: the in-progress request still counts, and the
        // bucket still holds one request (four more fit in the burst of five, not six).
        let (status, _) = run(&f, &limiter, "10.0.0.1", 1);
        assert_eq!(status, Some(StatusCode::TOO_MANY_REQUESTS));
        drop(busy);
        assert_eq!(passed(&f, &limiter, "10.0.0.2", 10), 4);
    }

    #[test]
    fn apply_keeps_named_zones_and_drops_the_rest() {
        use crate::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};
        let limiter = Limiter::default();
        let a: Arc<str> = "default/a".into();
        let b: Arc<str> = "default/b".into();
        let za = limiter.zone(&a);
        let _zb = limiter.zone(&b);
        assert_eq!(limiter.zones(), 2);
        let policy = crate::pipeline::RoutePolicy {
            request: vec![RequestFilter::RateLimit(Box::new(RateLimit {
                zone: a.clone(),
                ..limit(Some(1), None, None)
            }))],
            ..Default::default()
        };
        let config = Config {
            routes: RouteTable::build(vec![RouteRule {
                host: HostMatch::Any,
                path: "/".into(),
                path_type: PathType::Prefix,
                target: RouteTarget {
                    backend: crate::model::BackendId::new("default", "svc", "80"),
                    policy: Arc::new(policy),
                    source: "default/a".into(),
                },
            }]),
            ..Config::default()
        };
        limiter.apply(&config);
        assert_eq!(limiter.zones(), 1);
        assert!(Arc::ptr_eq(&za, &limiter.zone(&a)), "state kept");
    }
}
