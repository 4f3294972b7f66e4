//! Endpoint picking, cookie affinity and passive health.
//!
//! [`Registry`] holds the runtime state that must outlive a [`Config`] swap: round-robin
//! counters and ejected endpoints, keyed by [`BackendId`] and endpoint address. Entries
//! for backends or endpoints that left the config are pruned lazily, the first time a
//! request sees a new snapshot.

mod affinity;

pub use affinity::{AffinityKey, AffinityMode, CookieAffinity, CookieValue, SameSite};

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{Backend, BackendId, BackendKind, Config};

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
    ejections: Mutex<FastMap<SocketAddr, Ejection>>,
}

impl BackendState {
    fn ejections(&self) -> MutexGuard<'_, FastMap<SocketAddr, Ejection>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-written.
        self.ejections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self, len: usize) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed) % len
    }
}

/// Long-lived balancing state shared by every request and every config snapshot.
pub struct Registry {
    key: AffinityKey,
    ejection: EjectionPolicy,
    backends: Mutex<FastMap<BackendId, Arc<BackendState>>>,
    /// Address of the last config pruned against, to prune once per snapshot.
    pruned_for: AtomicUsize,
}

impl Registry {
    pub fn new(key: AffinityKey, ejection: EjectionPolicy) -> Self {
        Self {
            key,
            ejection,
            backends: Mutex::new(FastMap::default()),
            pruned_for: AtomicUsize::new(0),
        }
    }

    pub fn affinity_key(&self) -> &AffinityKey {
        &self.key
    }

    fn backends(&self) -> MutexGuard<'_, FastMap<BackendId, Arc<BackendState>>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self, id: &BackendId) -> Arc<BackendState> {
        let mut map = self.backends();
        if let Some(state) = map.get(id) {
            return state.clone();
        }
        let state = Arc::new(BackendState::default());
        map.insert(id.clone(), state.clone());
        state
    }

    /// Drops state for backends and endpoints `config` no longer has. Cheap when `config`
    /// was already seen.
    pub fn prune(&self, config: &Arc<Config>) {
        let ptr = Arc::as_ptr(config) as usize;
        if self.pruned_for.swap(ptr, Ordering::AcqRel) == ptr {
            return;
        }
        let mut map = self.backends();
        map.retain(|id, state| {
            let Some(backend) = config.backends.get(id) else {
                return false;
            };
            if let BackendKind::Endpoints(eps) = &backend.kind {
                state
                    .ejections()
                    .retain(|addr, _| eps.iter().any(|e| e.addr == *addr));
            }
            true
        });
    }

    /// Picks the endpoint for a request to `backend`, given the request's affinity cookie.
    pub fn pick(&self, backend: &Backend, cookie: Option<&str>) -> Result<Choice, NoReadyEndpoint> {
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
        };
        let usable = |e: &&crate::config::Endpoint| e.ready && !e.terminating;
        let state = self.state(&backend.id);
        if backend.affinity.is_none() && state.ejections().is_empty() {
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
        let healthy = self.healthy(&state, &ready);

        let Some(policy) = &backend.affinity else {
            let addr = healthy[state.next(healthy.len())];
            return Ok(plain(addr));
        };
        let parsed = cookie.and_then(|c| CookieValue::parse(policy.mode, c));
        let choice = match parsed {
            Some(CookieValue::Persistent { tag }) => {
                match ready.iter().copied().find(|a| self.key.tag(*a) == tag) {
                    Some(home) if healthy.contains(&home) => plain(home),
                    Some(_) => {
                        // The pinned endpoint is ejected: serve elsewhere, move the session
                        // only when asked to.
                        let addr = healthy[state.next(healthy.len())];
                        let set = policy
                            .change_on_failure
                            .then(|| self.persistent_value(addr));
                        Choice {
                            target: Target::Addr(addr),
                            set_cookie: set,
                            new_session: false,
                        }
                    }
                    None => self.new_session(policy.mode, &state, &ready, &healthy),
                }
            }
            Some(CookieValue::Balanced { session, tag }) => {
                let home = self.key.rendezvous(session, &ready);
                match home {
                    Some(home) if healthy.contains(&home) => {
                        let home_tag = self.key.tag(home);
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
                        let addr = self.key.rendezvous(session, &healthy).unwrap_or(healthy[0]);
                        let set = policy.change_on_failure.then(|| {
                            CookieValue::Balanced {
                                session,
                                tag: self.key.tag(addr),
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
            None => self.new_session(policy.mode, &state, &ready, &healthy),
        };
        Ok(choice)
    }

    /// After a connect failure on `failed`, picks another endpoint for the same request.
    /// `None` when there is no other.
    pub fn pick_retry(&self, backend: &Backend, failed: &Target, first: &Choice) -> Option<Choice> {
        let (BackendKind::Endpoints(eps), Target::Addr(failed)) = (&backend.kind, failed) else {
            return None;
        };
        let ready: Vec<SocketAddr> = eps
            .iter()
            .filter(|e| e.ready && !e.terminating && e.addr != *failed)
            .map(|e| e.addr)
            .collect();
        if ready.is_empty() {
            return None;
        }
        let state = self.state(&backend.id);
        let healthy = self.healthy(&state, &ready);
        let addr = healthy[state.next(healthy.len())];
        let Some(policy) = &backend.affinity else {
            return Some(plain(addr));
        };
        let set_cookie = if first.new_session || policy.change_on_failure {
            Some(match policy.mode {
                AffinityMode::Persistent => self.persistent_value(addr),
                AffinityMode::Balanced => self.balanced_value(addr, &ready),
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
    pub fn connect_failed(&self, backend: &BackendId, target: &Target) {
        let Target::Addr(addr) = target else { return };
        let state = self.state(backend);
        let mut ejections = state.ejections();
        let now = Instant::now();
        let entry = ejections.entry(*addr).or_insert(Ejection {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let factor = 1u32 << (entry.failures - 1).min(16);
        let backoff = self
            .ejection
            .base
            .saturating_mul(factor)
            .min(self.ejection.max);
        entry.until = now + backoff;
        tracing::warn!(backend = %backend, endpoint = %addr, failures = entry.failures,
            backoff_ms = backoff.as_millis() as u64, "ejecting endpoint after connect failure");
    }

    /// Records a successful connect: the endpoint's backoff starts over.
    pub fn connect_succeeded(&self, backend: &BackendId, target: &Target) {
        let Target::Addr(addr) = target else { return };
        let Some(state) = self.backends().get(backend).cloned() else {
            return;
        };
        let mut ejections = state.ejections();
        if ejections.remove(addr).is_some() {
            tracing::info!(backend = %backend, endpoint = %addr, "endpoint back in rotation");
        }
    }

    /// `ready` minus ejected endpoints; all of `ready` when every one is ejected, since
    /// trying a possibly-recovered endpoint beats refusing the request.
    fn healthy<'a>(&self, state: &BackendState, ready: &'a [SocketAddr]) -> Cow<'a, [SocketAddr]> {
        let ejections = state.ejections();
        if ejections.is_empty() {
            return Cow::Borrowed(ready);
        }
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

    fn new_session(
        &self,
        mode: AffinityMode,
        state: &BackendState,
        ready: &[SocketAddr],
        healthy: &[SocketAddr],
    ) -> Choice {
        let addr = healthy[state.next(healthy.len())];
        let value = match mode {
            AffinityMode::Persistent => self.persistent_value(addr),
            AffinityMode::Balanced => self.balanced_value(addr, ready),
        };
        Choice {
            target: Target::Addr(addr),
            set_cookie: Some(value),
            new_session: true,
        }
    }

    fn persistent_value(&self, addr: SocketAddr) -> String {
        CookieValue::Persistent {
            tag: self.key.tag(addr),
        }
        .encode()
    }

    /// A balanced cookie whose session key maps to `addr` among `ready`, so round-robin
    /// decides where new sessions start while rendezvous hashing keeps them there.
    fn balanced_value(&self, addr: SocketAddr, ready: &[SocketAddr]) -> String {
        // Expected tries are ready.len(); past a few dozen endpoints a random key spreads
        // well enough on its own and the search would cost more than it is worth.
        let tries = if ready.len() <= 64 {
            ready.len() * 8
        } else {
            1
        };
        let mut session: u64 = rand::random();
        for _ in 0..tries {
            if self.key.rendezvous(session, ready) == Some(addr) {
                break;
            }
            session = rand::random();
        }
        let home = self.key.rendezvous(session, ready).unwrap_or(addr);
        CookieValue::Balanced {
            session,
            tag: self.key.tag(home),
        }
        .encode()
    }
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

    fn backend(n: u8, affinity: Option<CookieAffinity>) -> Backend {
        let eps = (1..=n)
            .map(|i| Endpoint::ready(format!("10.0.0.{i}:80").parse().unwrap()))
            .collect();
        let mut b = Backend::new(BackendId::new("ns", "svc", "80"), eps);
        b.affinity = affinity;
        b
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
        if let BackendKind::Endpoints(eps) = &mut b.kind {
            eps[1].ready = false;
        }
        let mut counts = HashMap::new();
        for _ in 0..100 {
            *counts
                .entry(addr_of(&reg.pick(&b, None).unwrap()))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 2);
        assert!(counts.values().all(|c| *c == 50), "{counts:?}");
    }

    #[test]
    fn no_ready_endpoint_is_an_error() {
        let reg = registry();
        let mut b = backend(1, None);
        if let BackendKind::Endpoints(eps) = &mut b.kind {
            eps[0].ready = false;
        }
        assert_eq!(reg.pick(&b, None), Err(NoReadyEndpoint(b.id.clone())));
    }

    #[test]
    fn persistent_cookie_pins_until_the_endpoint_goes() {
        let reg = registry();
        let policy = CookieAffinity {
            mode: AffinityMode::Persistent,
            ..CookieAffinity::default()
        };
        let b = backend(3, Some(policy.clone()));
        let first = reg.pick(&b, None).unwrap();
        let cookie = first.set_cookie.clone().unwrap();
        for _ in 0..20 {
            let c = reg.pick(&b, Some(&cookie)).unwrap();
            assert_eq!(c.target, first.target);
            assert_eq!(c.set_cookie, None);
        }
        // Scale up: persistent sessions stay.
        let bigger = backend(6, Some(policy.clone()));
        assert_eq!(
            reg.pick(&bigger, Some(&cookie)).unwrap().target,
            first.target
        );
        // Pinned endpoint gone: re-balanced with a fresh cookie.
        let mut smaller = b.clone();
        if let BackendKind::Endpoints(eps) = &mut smaller.kind {
            eps.retain(|e| Target::Addr(e.addr) != first.target);
        }
        let moved = reg.pick(&smaller, Some(&cookie)).unwrap();
        assert_ne!(moved.target, first.target);
        let fresh = moved.set_cookie.unwrap();
        assert_ne!(fresh, cookie);
        assert_eq!(
            reg.pick(&smaller, Some(&fresh)).unwrap().target,
            moved.target
        );
    }

    #[test]
    fn balanced_sessions_spread_and_partly_move_on_scale_up() {
        let reg = registry();
        let b = backend(3, Some(CookieAffinity::default()));
        let mut sessions = Vec::new();
        let mut counts = HashMap::new();
        for _ in 0..300 {
            let c = reg.pick(&b, None).unwrap();
            *counts.entry(addr_of(&c)).or_insert(0) += 1;
            let cookie = c.set_cookie.clone().unwrap();
            assert_eq!(reg.pick(&b, Some(&cookie)).unwrap().target, c.target);
            sessions.push((c.target, cookie));
        }
        assert!(counts.values().all(|c| *c == 100), "{counts:?}");
        let bigger = backend(4, Some(CookieAffinity::default()));
        let moved = sessions
            .iter()
            .filter(|(t, cookie)| {
                let c = reg.pick(&bigger, Some(cookie)).unwrap();
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
        let bad = Target::Addr("10.0.0.1:80".parse().unwrap());
        reg.connect_failed(&b.id, &bad);
        for _ in 0..10 {
            assert_ne!(reg.pick(&b, None).unwrap().target, bad);
        }
        std::thread::sleep(Duration::from_millis(600));
        assert!((0..10).any(|_| reg.pick(&b, None).unwrap().target == bad));
        reg.connect_succeeded(&b.id, &bad);
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
        let t = Target::Addr("10.0.0.1:80".parse().unwrap());
        let until =
            |reg: &Registry| reg.state(&b.id).ejections()[&"10.0.0.1:80".parse().unwrap()].until;
        reg.connect_failed(&b.id, &t);
        let first = until(&reg);
        reg.connect_failed(&b.id, &t);
        assert!(until(&reg) > first);
        reg.connect_succeeded(&b.id, &t);
        assert!(reg.state(&b.id).ejections().is_empty());
    }

    #[test]
    fn retry_avoids_the_failed_endpoint_and_moves_new_sessions() {
        let reg = registry();
        let b = backend(2, Some(CookieAffinity::default()));
        let first = reg.pick(&b, None).unwrap();
        reg.connect_failed(&b.id, &first.target);
        let retry = reg.pick_retry(&b, &first.target, &first).unwrap();
        assert_ne!(retry.target, first.target);
        let cookie = retry.set_cookie.clone().unwrap();
        assert_eq!(reg.pick(&b, Some(&cookie)).unwrap().target, retry.target);
        let single = backend(1, None);
        let only = reg.pick(&single, None).unwrap();
        assert_eq!(reg.pick_retry(&single, &only.target, &only), None);
    }

    #[test]
    fn prune_forgets_removed_backends() {
        let reg = registry();
        let b = backend(1, None);
        reg.connect_failed(&b.id, &Target::Addr("10.0.0.1:80".parse().unwrap()));
        assert_eq!(reg.backends().len(), 1);
        reg.prune(&Arc::new(Config::default()));
        assert_eq!(reg.backends().len(), 0);
    }
}
