//! Endpoint picking, cookie affinity and passive health.
//!
//! [`Registry`] holds the runtime state that must outlive a [`Config`] swap: round-robin
//! counters and ejected endpoints, keyed by [`BackendId`] and endpoint address, brought
//! to each published configuration once, when it is published.

mod affinity;
mod ewma;
mod hash;
mod next_upstream;

pub use affinity::{AffinityKey, AffinityMode, CookieAffinity, CookieValue, SameSite};
pub use hash::{HashBy, HashKey, HashKeyError, KeyVars, Ring, RingKey, POINTS_PER_NODE};
pub use next_upstream::{Condition, NextUpstream, UnknownCondition};

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{Backend, BackendId, BackendKind, Config, Runtime};

/// Maps consulted on every request, keyed by values only the configuration supplies, so
/// the faster non-keyed hash is safe (no client-chosen keys to collide).
type FastMap<K, V> = foldhash::HashMap<K, V>;

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A pod (or hand-written) endpoint.
    Addr(SocketAddr),
    /// An `ExternalName` Service, resolved at connect time.
    Name { host: Arc<str>, port: u16 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// How a route picks among its backend's ready endpoints when no cookie affinity
/// decides (`load-balance`, `upstream-hash-by`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Peak EWMA of response times, the lower of two random picks.
    Ewma,
    /// Consistent hashing of a request key.
    Hash(Arc<HashBy>),
}

/// The backend has no endpoint that may take a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("backend {0} has no ready endpoint")]
pub struct NoReadyEndpoint(pub BackendId);

/// A pick: the target and, under cookie affinity, the cookie value to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub target: Target,
    /// A new affinity cookie value for the response, if the session (re)starts here.
    pub set_cookie: Option<String>,
    /// The request carried no usable session: whatever endpoint serves it owns the cookie.
    new_session: bool,
}

/// Passive health tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Ejection after the first refused connect; doubles with each further failure.
    pub base: Duration,
    pub max: Duration,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl EjectionPolicy {
    /// How long an endpoint stays out after its `failures`-th consecutive failure.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[derive(Clone, Copy, Debug)]
struct Ejection {
    failures: u32,
    until: Instant,
}

#[derive(Default)]
struct BackendState {
    rr: AtomicUsize,
    /// Endpoints in `ejections`, read without the lock on every pick.
    ejected: AtomicUsize,
    ejections: Mutex<FastMap<SocketAddr, Ejection>>,
    /// EWMA scores, for routes with `load-balance: ewma` (empty for every other).
    ewma: Mutex<FastMap<SocketAddr, ewma::Score>>,
}

impl BackendState {
    fn ejections(&self) -> MutexGuard<'_, FastMap<SocketAddr, Ejection>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-written.
        self.ejections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scores(&self) -> MutexGuard<'_, FastMap<SocketAddr, ewma::Score>> {
        self.ewma.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn any_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed) != 0
    }

    fn next(&self, len: usize) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed) % len
    }
}

type States = FastMap<BackendId, Arc<BackendState>>;

/// Long-lived balancing state shared by every request and every config snapshot.
///
/// Each published configuration is applied once ([`Runtime::apply`]): backends it adds
/// get fresh state, backends it drops lose theirs, and every other backend keeps its
/// round-robin position and ejections (minus endpoints that left). Requests only read.
pub struct Registry {
    /// Used when the configuration carries no shared key.
    key: AffinityKey,
    ejection: EjectionPolicy,
    states: ArcSwap<States>,
    /// Consistent-hash rings, for the backends routes hash to ([`Config::hash_rings`]).
    rings: ArcSwap<FastMap<RingKey, Arc<Ring>>>,
}

impl Runtime for Registry {
    fn apply(&self, next: &Config) {
        let current = self.states.load();
        let mut states = States::default();
        states.reserve(next.backends.len());
        for (id, backend) in &next.backends {
            let state = match current.get(id) {
                Some(state) => {
                    if state.any_ejected() {
                        let mut ejections = state.ejections();
                        ejections
                            .retain(|addr, _| backend.targets().any(|t| t == Target::Addr(*addr)));
                        state.ejected.store(ejections.len(), Ordering::Relaxed);
                    }
                    let mut scores = state.scores();
                    if !scores.is_empty() {
                        scores
                            .retain(|addr, _| backend.targets().any(|t| t == Target::Addr(*addr)));
                    }
                    drop(scores);
                    state.clone()
                }
                None => Arc::default(),
            };
            states.insert(id.clone(), state);
        }
        self.states.store(Arc::new(states));
        self.apply_rings(next);
    }
}

impl Registry {
    pub fn new(key: AffinityKey, ejection: EjectionPolicy) -> Self {
        Self {
            key,
            ejection,
            states: ArcSwap::default(),
            rings: ArcSwap::default(),
        }
    }

    /// Builds the rings `next` asks for, keeping those whose endpoints did not change.
    fn apply_rings(&self, next: &Config) {
        if next.hash_rings.is_empty() && self.rings.load().is_empty() {
            return;
        }
        let current = self.rings.load();
        let mut rings = FastMap::default();
        for key in &next.hash_rings {
            let Some(backend) = next.backends.get(&key.backend) else {
                continue;
            };
            let BackendKind::Endpoints(eps) = &backend.kind else {
                continue;
            };
            let mut members: Vec<SocketAddr> = eps
                .iter()
                .filter(|e| e.ready && !e.terminating)
                .map(|e| e.addr)
                .collect();
            members.sort_unstable();
            members.dedup();
            let ring = match current.get(key) {
                Some(ring) if ring.same_members(&members) => ring.clone(),
                _ => Arc::new(Ring::new(members, key.subset)),
            };
            rings.insert(key.clone(), ring);
        }
        self.rings.store(Arc::new(rings));
    }

    /// Picks for a route that balances other than round robin (and has no cookie
    /// affinity): `key` is the request's `upstream-hash-by` key for [`Balance::Hash`].
    pub fn pick_balanced(
        &self,
        backend: &Backend,
        balance: &Balance,
        key: &[u8],
    ) -> Result<Choice, NoReadyEndpoint> {
        let BackendKind::Endpoints(eps) = &backend.kind else {
            return self.pick(backend, None, None, None);
        };
        let ready: Vec<SocketAddr> = eps
            .iter()
            .filter(|e| e.ready && !e.terminating)
            .map(|e| e.addr)
            .collect();
        if ready.is_empty() {
            return Err(NoReadyEndpoint(backend.id.clone()));
        }
        let state = self.state(&backend.id);
        let healthy = self.healthy(&state, &ready);
        match balance {
            Balance::RoundRobin => Ok(plain(healthy[state.next(healthy.len())])),
            Balance::Ewma => {
                if healthy.len() == 1 {
                    return Ok(plain(healthy[0]));
                }
                let scores = state.scores();
                let now = Instant::now();
                let addr = ewma::pick(
                    &healthy,
                    |a| scores.get(&a).map(|s| s.at(now)),
                    ewma::draw_two,
                );
                Ok(plain(addr))
            }
            Balance::Hash(by) => {
                let ring_key = RingKey {
                    backend: backend.id.clone(),
                    subset: by.subset.unwrap_or(0),
                };
                let rings = self.rings.load();
                let transient;
                let ring = match rings.get(&ring_key) {
                    Some(ring) => &**ring,
                    // A request on a configuration the registry has not seen.
                    None => {
                        transient = Ring::new(ready.clone(), ring_key.subset);
                        &transient
                    }
                };
                // The key's home, or the next node on the ring while it is ejected
                // (or not ready, for a ring older than the endpoints).
                let found = ring.walk(key).find_map(|node| {
                    let ok: Vec<SocketAddr> = node
                        .iter()
                        .copied()
                        .filter(|a| healthy.contains(a))
                        .collect();
                    match ok.len() {
                        0 => None,
                        1 => Some(ok[0]),
                        n => Some(ok[rand::random_range(0..n)]),
                    }
                });
                Ok(plain(found.unwrap_or(healthy[0])))
            }
        }
    }

    /// Folds a response time into `target`'s EWMA score.
    pub fn observe(&self, backend: &BackendId, target: &Target, rtt: Duration) {
        let Target::Addr(addr) = target else { return };
        let Some(state) = self.states.load().get(backend).cloned() else {
            return;
        };
        let mut scores = state.scores();
        let prior = scores.get(addr).copied();
        scores.insert(*addr, ewma::Score::observe(prior, rtt, Instant::now()));
    }

    /// The key used when the configuration carries none.
    pub fn affinity_key(&self) -> &AffinityKey {
        &self.key
    }

    /// The state of `id`; a backend the registry was not told about (a request still on
    /// an older configuration) gets a throwaway one.
    fn state(&self, id: &BackendId) -> Arc<BackendState> {
        self.states.load().get(id).cloned().unwrap_or_default()
    }

    /// Picks the endpoint for a request to `backend` under the route's `affinity`, given
    /// the request's affinity cookie. `key` is the configuration's cookie key, if any.
    pub fn pick(
        &self,
        backend: &Backend,
        affinity: Option<&CookieAffinity>,
        key: Option<&AffinityKey>,
        cookie: Option<&str>,
    ) -> Result<Choice, NoReadyEndpoint> {
        let eps = match &backend.kind {
            BackendKind::ExternalName { host, port } => {
                return Ok(Choice {
                    target: Target::Name {
                        host: host.clone(),
                        port: *port,
                    },
                    set_cookie: None,
                    new_session: false,
                })
            }
            BackendKind::Endpoints(eps) => eps,
            BackendKind::Unresolved(_) => return Err(NoReadyEndpoint(backend.id.clone())),
        };
        let usable = |e: &&crate::config::Endpoint| e.ready && !e.terminating;
        let states = self.states.load();
        let transient;
        let state = match states.get(&backend.id) {
            Some(state) => &**state,
            None => {
                transient = BackendState::default();
                &transient
            }
        };
        if affinity.is_none() && !state.any_ejected() {
            // The common case, on every request: round robin over the ready endpoints
            // without collecting them.
            let count = eps.iter().filter(usable).count();
            if count == 0 {
                return Err(NoReadyEndpoint(backend.id.clone()));
            }
            let nth = state.next(count);
            if let Some(e) = eps.iter().filter(usable).nth(nth) {
                return Ok(plain(e.addr));
            }
        }
        let ready: Vec<SocketAddr> = eps.iter().filter(usable).map(|e| e.addr).collect();
        if ready.is_empty() {
            return Err(NoReadyEndpoint(backend.id.clone()));
        }
        let healthy = self.healthy(state, &ready);

        let Some(policy) = affinity else {
            let addr = healthy[state.next(healthy.len())];
            return Ok(plain(addr));
        };
        let key = key.unwrap_or(&self.key);
        let parsed = cookie.and_then(|c| CookieValue::parse(policy.mode, c));
        let choice = match parsed {
            Some(CookieValue::Persistent { tag }) => {
                match ready.iter().copied().find(|a| key.tag(*a) == tag) {
                    Some(home) if healthy.contains(&home) => plain(home),
                    Some(_) => {
                        // The pinned endpoint is ejected: serve elsewhere, move the session
                        // only when asked to.
                        let addr = healthy[state.next(healthy.len())];
                        let set = policy
                            .change_on_failure
                            .then(|| persistent_value(key, addr));
                        Choice {
                            target: Target::Addr(addr),
                            set_cookie: set,
                            new_session: false,
                        }
                    }
                    None => new_session(key, policy.mode, state, &ready, &healthy),
                }
            }
            Some(CookieValue::Balanced { session, tag }) => {
                let home = key.rendezvous(session, &ready);
                match home {
                    Some(home) if healthy.contains(&home) => {
                        let home_tag = key.tag(home);
                        Choice {
                            target: Target::Addr(home),
                            set_cookie: (home_tag != tag).then(|| {
                                CookieValue::Balanced {
                                    session,
                                    tag: home_tag,
                                }
                                .encode()
                            }),
                            new_session: false,
                        }
                    }
                    _ => {
                        let addr = key.rendezvous(session, &healthy).unwrap_or(healthy[0]);
                        let set = policy.change_on_failure.then(|| {
                            CookieValue::Balanced {
                                session,
                                tag: key.tag(addr),
                            }
                            .encode()
                        });
                        Choice {
                            target: Target::Addr(addr),
                            set_cookie: set,
                            new_session: false,
                        }
                    }
                }
            }
            None => new_session(key, policy.mode, state, &ready, &healthy),
        };
        Ok(choice)
    }

    /// Whether affinity cookie `cookie` was issued for an endpoint of `backend` (ready or
    /// not): the session belongs to that backend. Decides between a route's main and
    /// canary backends, as ingress-nginx's `is_affinitized`.
    pub fn owns_session(
        &self,
        backend: &Backend,
        affinity: &CookieAffinity,
        key: Option<&AffinityKey>,
        cookie: &str,
    ) -> bool {
        let (BackendKind::Endpoints(eps), Some(value)) =
            (&backend.kind, CookieValue::parse(affinity.mode, cookie))
        else {
            return false;
        };
        let key = key.unwrap_or(&self.key);
        let tag = value.tag();
        eps.iter().any(|e| key.tag(e.addr) == tag)
    }

    /// After a failed try, picks another endpoint for the same request, none of those in
    /// `tried`. `None` when there is no other.
    pub fn pick_retry(
        &self,
        backend: &Backend,
        affinity: Option<&CookieAffinity>,
        key: Option<&AffinityKey>,
        tried: &[Target],
        first: &Choice,
    ) -> Option<Choice> {
        let BackendKind::Endpoints(eps) = &backend.kind else {
            return None;
        };
        let ready: Vec<SocketAddr> = eps
            .iter()
            .filter(|e| e.ready && !e.terminating && !tried.contains(&Target::Addr(e.addr)))
            .map(|e| e.addr)
            .collect();
        if ready.is_empty() {
            return None;
        }
        let state = self.state(&backend.id);
        let healthy = self.healthy(&state, &ready);
        let addr = healthy[state.next(healthy.len())];
        let Some(policy) = affinity else {
            return Some(plain(addr));
        };
        let key = key.unwrap_or(&self.key);
        let set_cookie = if first.new_session || policy.change_on_failure {
            Some(match policy.mode {
                AffinityMode::Persistent => persistent_value(key, addr),
                AffinityMode::Balanced => balanced_value(key, addr, &ready),
            })
        } else {
            first.set_cookie.clone()
        };
        Some(Choice {
            target: Target::Addr(addr),
            set_cookie,
            new_session: first.new_session,
        })
    }

    /// Records a refused or timed-out connect: ejects the endpoint for a growing backoff.
    /// Returns the backoff, for the caller's log line.
    pub fn connect_failed(&self, backend: &BackendId, target: &Target) -> Option<Duration> {
        let Target::Addr(addr) = target else {
            return None;
        };
        let state = self.state(backend);
        let mut ejections = state.ejections();
        let now = Instant::now();
        let entry = ejections.entry(*addr).or_insert(Ejection {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let backoff = self.ejection.backoff(entry.failures);
        entry.until = now + backoff;
        let failures = entry.failures;
        state.ejected.store(ejections.len(), Ordering::Relaxed);
        tracing::debug!(backend = %backend, endpoint = %addr, failures,
            backoff_ms = backoff.as_millis() as u64, "endpoint ejected after a failed connect");
        Some(backoff)
    }

    /// A connect to `target` is taking long: keep new requests off it for the base
    /// backoff while it goes on, so that a dead endpoint whose packets are dropped costs
    /// one request the connect timeout, not every request picked meanwhile. A success
    /// clears it; a failure ejects it properly.
    pub fn connect_slow(&self, backend: &BackendId, target: &Target) {
        let Target::Addr(addr) = target else { return };
        let state = self.state(backend);
        let mut ejections = state.ejections();
        let until = Instant::now() + self.ejection.base;
        ejections
            .entry(*addr)
            .and_modify(|e| e.until = e.until.max(until))
            .or_insert(Ejection { failures: 0, until });
        state.ejected.store(ejections.len(), Ordering::Relaxed);
    }

    /// Records a successful connect: the endpoint's backoff starts over.
    pub fn connect_succeeded(&self, backend: &BackendId, target: &Target) {
        let Target::Addr(addr) = target else { return };
        let Some(state) = self.states.load().get(backend).cloned() else {
            return;
        };
        if !state.any_ejected() {
            return;
        }
        let mut ejections = state.ejections();
        if ejections.remove(addr).is_some() {
            tracing::debug!(backend = %backend, endpoint = %addr, "endpoint back in rotation");
        }
        state.ejected.store(ejections.len(), Ordering::Relaxed);
    }

    /// `ready` minus ejected endpoints; all of `ready` when every one is ejected, since
    /// trying a possibly-recovered endpoint beats refusing the request.
    fn healthy<'a>(&self, state: &BackendState, ready: &'a [SocketAddr]) -> Cow<'a, [SocketAddr]> {
        if !state.any_ejected() {
            return Cow::Borrowed(ready);
        }
        let ejections = state.ejections();
        let now = Instant::now();
        let healthy: Vec<SocketAddr> = ready
            .iter()
            .copied()
            .filter(|a| ejections.get(a).is_none_or(|e| e.until <= now))
            .collect();
        if healthy.is_empty() {
            Cow::Borrowed(ready)
        } else {
            Cow::Owned(healthy)
        }
    }
}

fn new_session(
    key: &AffinityKey,
    mode: AffinityMode,
    state: &BackendState,
    ready: &[SocketAddr],
    healthy: &[SocketAddr],
) -> Choice {
    let addr = healthy[state.next(healthy.len())];
    let value = match mode {
        AffinityMode::Persistent => persistent_value(key, addr),
        AffinityMode::Balanced => balanced_value(key, addr, ready),
    };
    Choice {
        target: Target::Addr(addr),
        set_cookie: Some(value),
        new_session: true,
    }
}

fn persistent_value(key: &AffinityKey, addr: SocketAddr) -> String {
    CookieValue::Persistent { tag: key.tag(addr) }.encode()
}

/// A balanced cookie whose session key maps to `addr` among `ready`, so round-robin
/// decides where new sessions start while rendezvous hashing keeps them there.
fn balanced_value(key: &AffinityKey, addr: SocketAddr, ready: &[SocketAddr]) -> String {
    // Expected tries are ready.len(); past a few dozen endpoints a random key spreads
    // well enough on its own and the search would cost more than it is worth.
    let tries = if ready.len() <= 64 {
        ready.len() * 8
    } else {
        1
    };
    let mut session: u64 = rand::random();
    for _ in 0..tries {
        if key.rendezvous(session, ready) == Some(addr) {
            break;
        }
        session = rand::random();
    }
    let home = key.rendezvous(session, ready).unwrap_or(addr);
    CookieValue::Balanced {
        session,
        tag: key.tag(home),
    }
    .encode()
}

fn plain(addr: SocketAddr) -> Choice {
    Choice {
        target: Target::Addr(addr),
        set_cookie: None,
        new_session: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use std::collections::HashMap;

    /// A backend and the affinity of the route that leads to it.
    #[derive(Clone)]
    struct Tb {
        b: Backend,
        aff: Option<CookieAffinity>,
    }

    impl Tb {
        fn pick(&self, reg: &Registry, cookie: Option<&str>) -> Result<Choice, NoReadyEndpoint> {
            reg.pick(&self.b, self.aff.as_ref(), None, cookie)
        }
    }

    fn backend(n: u8, affinity: Option<CookieAffinity>) -> Tb {
        let eps = (1..=n)
            .map(|i| Endpoint::ready(format!("10.0.0.{i}:80").parse().unwrap()))
            .collect();
        Tb {
            b: Backend::new(BackendId::new("ns", "svc", "80"), eps),
            aff: affinity,
        }
    }

    /// A registry that has been applied a configuration holding `backends`.
    fn applied(reg: &Registry, backends: &[&Backend]) {
        let config = Config {
            backends: backends
                .iter()
                .map(|b| (b.id.clone(), Arc::new((*b).clone())))
                .collect(),
            ..Config::default()
        };
        reg.apply(&config);
    }

    fn registry() -> Registry {
        Registry::new(AffinityKey::new([3; 16]), EjectionPolicy::default())
    }

    fn addr_of(c: &Choice) -> SocketAddr {
        match c.target {
            Target::Addr(a) => a,
            Target::Name { .. } => panic!("not an address"),
        }
    }

    #[test]
    fn round_robin_spreads_evenly_over_ready_endpoints() {
        let reg = registry();
        let mut b = backend(3, None);
        if let BackendKind::Endpoints(eps) = &mut b.b.kind {
            eps[1].ready = false;
        }
        applied(&reg, &[&b.b]);
        let mut counts = HashMap::new();
        for _ in 0..100 {
            *counts
                .entry(addr_of(&b.pick(&reg, None).unwrap()))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 2);
        assert!(counts.values().all(|c| *c == 50), "{counts:?}");
    }

    #[test]
    fn a_session_belongs_to_the_backend_whose_endpoint_its_cookie_names() {
        let reg = registry();
        for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
            let aff = CookieAffinity {
                mode,
                ..CookieAffinity::default()
            };
            let main = backend(2, Some(aff.clone()));
            let mut canary = backend(2, Some(aff.clone()));
            canary.b = Backend::new(
                BackendId::new("ns", "canary", "80"),
                (1..=2)
                    .map(|i| Endpoint::ready(format!("10.0.1.{i}:80").parse().unwrap()))
                    .collect(),
            );
            applied(&reg, &[&main.b, &canary.b]);
            let issued = canary.pick(&reg, None).unwrap().set_cookie.unwrap();
            assert!(reg.owns_session(&canary.b, &aff, None, &issued));
            assert!(!reg.owns_session(&main.b, &aff, None, &issued));
            // Not ready any more: still the canary's session.
            let mut gone = canary.b.clone();
            if let BackendKind::Endpoints(eps) = &mut gone.kind {
                eps.iter_mut().for_each(|e| e.ready = false);
            }
            assert!(reg.owns_session(&gone, &aff, None, &issued));
            assert!(!reg.owns_session(&canary.b, &aff, None, "garbage"));
        }
    }

    #[test]
    fn no_ready_endpoint_is_an_error() {
        let reg = registry();
        let mut b = backend(1, None);
        if let BackendKind::Endpoints(eps) = &mut b.b.kind {
            eps[0].ready = false;
        }
        assert_eq!(b.pick(&reg, None), Err(NoReadyEndpoint(b.b.id.clone())));
    }

    #[test]
    fn persistent_cookie_pins_until_the_endpoint_goes() {
        let reg = registry();
        let policy = CookieAffinity {
            mode: AffinityMode::Persistent,
            ..CookieAffinity::default()
        };
        let b = backend(3, Some(policy.clone()));
        let first = b.pick(&reg, None).unwrap();
        let cookie = first.set_cookie.clone().unwrap();
        for _ in 0..20 {
            let c = b.pick(&reg, Some(&cookie)).unwrap();
            assert_eq!(c.target, first.target);
            assert_eq!(c.set_cookie, None);
        }
        // Scale up: persistent sessions stay.
        let bigger = backend(6, Some(policy.clone()));
        assert_eq!(
            bigger.pick(&reg, Some(&cookie)).unwrap().target,
            first.target
        );
        // Pinned endpoint gone: re-balanced with a fresh cookie.
        let mut smaller = b.clone();
        if let BackendKind::Endpoints(eps) = &mut smaller.b.kind {
            eps.retain(|e| Target::Addr(e.addr) != first.target);
        }
        let moved = smaller.pick(&reg, Some(&cookie)).unwrap();
        assert_ne!(moved.target, first.target);
        let fresh = moved.set_cookie.unwrap();
        assert_ne!(fresh, cookie);
        assert_eq!(
            smaller.pick(&reg, Some(&fresh)).unwrap().target,
            moved.target
        );
    }

    #[test]
    fn balanced_sessions_spread_and_partly_move_on_scale_up() {
        let reg = registry();
        let b = backend(3, Some(CookieAffinity::default()));
        applied(&reg, &[&b.b]);
        let mut sessions = Vec::new();
        let mut counts = HashMap::new();
        for _ in 0..300 {
            let c = b.pick(&reg, None).unwrap();
            *counts.entry(addr_of(&c)).or_insert(0) += 1;
            let cookie = c.set_cookie.clone().unwrap();
            assert_eq!(b.pick(&reg, Some(&cookie)).unwrap().target, c.target);
            sessions.push((c.target, cookie));
        }
        assert!(counts.values().all(|c| *c == 100), "{counts:?}");
        let bigger = backend(4, Some(CookieAffinity::default()));
        let moved = sessions
            .iter()
            .filter(|(t, cookie)| {
                let c = bigger.pick(&reg, Some(cookie)).unwrap();
                if c.target != *t {
                    assert!(c.set_cookie.is_some());
                    assert_eq!(addr_of(&c), "10.0.0.4:80".parse().unwrap());
                }
                c.target != *t
            })
            .count();
        assert!((30..130).contains(&moved), "moved {moved}");
    }

    #[test]
    fn ejected_endpoint_is_skipped_then_returns() {
        let reg = Registry::new(
            AffinityKey::random(),
            EjectionPolicy {
                base: Duration::from_millis(300),
                max: Duration::from_millis(300),
            },
        );
        let b = backend(2, None);
        applied(&reg, &[&b.b]);
        let bad = Target::Addr("10.0.0.1:80".parse().unwrap());
        reg.connect_failed(&b.b.id, &bad);
        for _ in 0..10 {
            assert_ne!(b.pick(&reg, None).unwrap().target, bad);
        }
        std::thread::sleep(Duration::from_millis(600));
        assert!((0..10).any(|_| b.pick(&reg, None).unwrap().target == bad));
        reg.connect_succeeded(&b.b.id, &bad);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = EjectionPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let got: Vec<u64> = (1..=6).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5, 5]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(5));
        // Each failure moves the endpoint's return further out.
        let reg = Registry::new(AffinityKey::random(), policy);
        let b = backend(1, None);
        applied(&reg, &[&b.b]);
        let t = Target::Addr("10.0.0.1:80".parse().unwrap());
        let until =
            |reg: &Registry| reg.state(&b.b.id).ejections()[&"10.0.0.1:80".parse().unwrap()].until;
        reg.connect_failed(&b.b.id, &t);
        let first = until(&reg);
        reg.connect_failed(&b.b.id, &t);
        assert!(until(&reg) > first);
        reg.connect_succeeded(&b.b.id, &t);
        assert!(reg.state(&b.b.id).ejections().is_empty());
    }

    #[test]
    fn retry_avoids_the_failed_endpoint_and_moves_new_sessions() {
        let reg = registry();
        let b = backend(2, Some(CookieAffinity::default()));
        applied(&reg, &[&b.b]);
        let first = b.pick(&reg, None).unwrap();
        reg.connect_failed(&b.b.id, &first.target);
        let retry = reg
            .pick_retry(
                &b.b,
                b.aff.as_ref(),
                None,
                std::slice::from_ref(&first.target),
                &first,
            )
            .unwrap();
        assert_ne!(retry.target, first.target);
        let cookie = retry.set_cookie.clone().unwrap();
        assert_eq!(b.pick(&reg, Some(&cookie)).unwrap().target, retry.target);
        let single = backend(1, None);
        let only = single.pick(&reg, None).unwrap();
        assert_eq!(
            reg.pick_retry(
                &single.b,
                None,
                None,
                std::slice::from_ref(&only.target),
                &only
            ),
            None
        );
    }

    #[test]
    fn apply_keeps_what_stays_and_drops_what_left() {
        let reg = registry();
        let b = backend(3, None);
        let other = Backend::new(BackendId::new("ns", "other", "80"), Vec::new());
        applied(&reg, &[&b.b, &other]);
        let gone = Target::Addr("10.0.0.3:80".parse().unwrap());
        let stays = Target::Addr("10.0.0.1:80".parse().unwrap());
        reg.connect_failed(&b.b.id, &gone);
        reg.connect_failed(&b.b.id, &stays);
        let before = b.pick(&reg, None).unwrap();
        // Endpoint .3 leaves, `other` leaves: the ejection of .1 and the round-robin
        // position survive, the state of .3 and of `other` do not.
        let mut smaller = b.clone();
        if let BackendKind::Endpoints(eps) = &mut smaller.b.kind {
            eps.pop();
        }
        applied(&reg, &[&smaller.b]);
        let state = reg.state(&b.b.id);
        let ejected: Vec<SocketAddr> = state.ejections().keys().copied().collect();
        assert_eq!(ejected, vec!["10.0.0.1:80".parse().unwrap()]);
        assert_eq!(state.ejected.load(Ordering::Relaxed), 1);
        assert!(state.rr.load(Ordering::Relaxed) > 0, "{before:?}");
        assert!(reg.states.load().get(&other.id).is_none());
        // A backend the registry never saw still gets answers.
        let unknown = backend(1, None);
        let mut unknown_b = unknown.b.clone();
        unknown_b.id = BackendId::new("ns", "new", "80");
        assert!(reg.pick(&unknown_b, None, None, None).is_ok());
    }

    #[test]
    fn a_slow_connect_keeps_new_picks_away_until_it_resolves() {
        let reg = registry();
        let b = backend(2, None);
        applied(&reg, &[&b.b]);
        let slow = Target::Addr("10.0.0.1:80".parse().unwrap());
        reg.connect_slow(&b.b.id, &slow);
        for _ in 0..10 {
            assert_ne!(b.pick(&reg, None).unwrap().target, slow);
        }
        reg.connect_succeeded(&b.b.id, &slow);
        assert!((0..4).any(|_| b.pick(&reg, None).unwrap().target == slow));
    }

    #[test]
    fn ewma_prefers_the_faster_of_a_slow_fast_pair() {
        let reg = registry();
        let b = backend(2, None);
        applied(&reg, &[&b.b]);
        let slow = Target::Addr("10.0.0.1:80".parse().unwrap());
        let fast = Target::Addr("10.0.0.2:80".parse().unwrap());
        reg.observe(&b.b.id, &slow, Duration::from_millis(200));
        reg.observe(&b.b.id, &fast, Duration::from_millis(5));
        for _ in 0..50 {
            let c = reg.pick_balanced(&b.b, &Balance::Ewma, b"").unwrap();
            assert_eq!(c.target, fast);
        }
        // Of three, the slow one is never taken: it loses every draw it is in.
        let three = backend(3, None);
        applied(&reg, &[&three.b]);
        reg.observe(&three.b.id, &slow, Duration::from_millis(200));
        reg.observe(&three.b.id, &fast, Duration::from_millis(5));
        let third = Target::Addr("10.0.0.3:80".parse().unwrap());
        reg.observe(&three.b.id, &third, Duration::from_millis(5));
        assert!((0..100).all(|_| reg
            .pick_balanced(&three.b, &Balance::Ewma, b"")
            .unwrap()
            .target
            != slow));
    }

    #[test]
    fn hashing_pins_a_key_and_walks_past_an_ejected_endpoint() {
        let reg = registry();
        let b = backend(5, None);
        let by = Balance::Hash(Arc::new(HashBy {
            key: HashKey::parse("$request_uri").unwrap(),
            subset: None,
        }));
        let config = Config {
            backends: [(b.b.id.clone(), Arc::new(b.b.clone()))]
                .into_iter()
                .collect(),
            hash_rings: vec![RingKey {
                backend: b.b.id.clone(),
                subset: 0,
            }],
            ..Config::default()
        };
        reg.apply(&config);
        assert_eq!(reg.rings.load().len(), 1);
        let home = reg.pick_balanced(&b.b, &by, b"/cart").unwrap().target;
        for _ in 0..20 {
            assert_eq!(reg.pick_balanced(&b.b, &by, b"/cart").unwrap().target, home);
        }
        // Another key lands elsewhere for some key.
        assert!((0..50).any(|i| {
            let key = format!("/item/{i}");
            reg.pick_balanced(&b.b, &by, key.as_bytes()).unwrap().target != home
        }));
        reg.connect_failed(&b.b.id, &home);
        let moved = reg.pick_balanced(&b.b, &by, b"/cart").unwrap().target;
        assert_ne!(moved, home);
        reg.connect_succeeded(&b.b.id, &home);
        assert_eq!(reg.pick_balanced(&b.b, &by, b"/cart").unwrap().target, home);
        // The same endpoints on the next publish keep the same ring.
        let before = reg.rings.load().values().next().cloned().unwrap();
        reg.apply(&config);
        let after = reg.rings.load().values().next().cloned().unwrap();
        assert!(Arc::ptr_eq(&before, &after));
    }

    #[test]
    fn retries_avoid_every_endpoint_already_tried() {
        let reg = registry();
        let b = backend(3, None);
        applied(&reg, &[&b.b]);
        let first = b.pick(&reg, None).unwrap();
        let second = reg
            .pick_retry(
                &b.b,
                None,
                None,
                std::slice::from_ref(&first.target),
                &first,
            )
            .unwrap();
        let tried = [first.target.clone(), second.target.clone()];
        let third = reg.pick_retry(&b.b, None, None, &tried, &second).unwrap();
        assert!(!tried.contains(&third.target));
        let all = [tried[0].clone(), tried[1].clone(), third.target];
        assert_eq!(reg.pick_retry(&b.b, None, None, &all, &first), None);
    }
}
