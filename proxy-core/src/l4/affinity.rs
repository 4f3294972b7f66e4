//! Endpoint picking for one Service port: round-robin for new clients, `ClientIP`
//! affinity pins on top.
//!
//! A [`Balancer`] outlives config swaps (the proxy keeps one per Service port and scope),
//! so pins and the round-robin position survive endpoint changes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Sweep expired pins once the table reaches this size (then at twice the live size).
const MIN_SWEEP_AT: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Pin {
    endpoint: SocketAddr,
    last_used: Instant,
}

#[derive(Debug)]
struct Pins {
    by_client: HashMap<IpAddr, Pin>,
    sweep_at: usize,
}

#[derive(Debug)]
pub(crate) struct Balancer {
    next: AtomicUsize,
    pins: Mutex<Pins>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self {
            // A random start keeps many proxies from all sending their first
            // connection to the same endpoint.
            next: AtomicUsize::new(rand::random::<u16>() as usize),
            pins: Mutex::new(Pins {
                by_client: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
        }
    }
}

impl Balancer {
    fn pins(&self) -> std::sync::MutexGuard<'_, Pins> {
        // Every update is a single map operation, so a poisoned table is still consistent.
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn round_robin(&self, endpoints: &[SocketAddr]) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints[i % endpoints.len()]
    }

    /// The endpoint for a new connection from `client`. With `affinity`, a client pinned
    /// within the timeout to an endpoint still in `endpoints` goes there again (and the
    /// pin's clock restarts, as kube-proxy's `recent` match does); otherwise it is pinned
    /// to the round-robin choice.
    pub(crate) fn pick(
        &self,
        client: IpAddr,
        endpoints: &[SocketAddr],
        affinity: Option<Duration>,
        now: Instant,
    ) -> Option<SocketAddr> {
        if endpoints.is_empty() {
            return None;
        }
        let Some(timeout) = affinity else {
            return Some(self.round_robin(endpoints));
        };
        let mut pins = self.pins();
        if let Some(pin) = pins.by_client.get_mut(&client) {
            if now.saturating_duration_since(pin.last_used) <= timeout
                && endpoints.contains(&pin.endpoint)
            {
                pin.last_used = now;
                return Some(pin.endpoint);
            }
        }
        let endpoint = self.round_robin(endpoints);
        pins.by_client.insert(
            client,
            Pin {
                endpoint,
                last_used: now,
            },
        );
        if pins.by_client.len() >= pins.sweep_at {
            pins.by_client
                .retain(|_, p| now.saturating_duration_since(p.last_used) <= timeout);
            pins.sweep_at = (pins.by_client.len() * 2).max(MIN_SWEEP_AT);
        }
        Some(endpoint)
    }

    /// Another endpoint than `failed` for a retry, re-pinning `client` to it when affinity
    /// is on.
    pub(crate) fn pick_other(
        &self,
        client: IpAddr,
        endpoints: &[SocketAddr],
        failed: SocketAddr,
        affinity: Option<Duration>,
        now: Instant,
    ) -> Option<SocketAddr> {
        let others: Vec<SocketAddr> = endpoints.iter().copied().filter(|e| *e != failed).collect();
        if others.is_empty() {
            return None;
        }
        let endpoint = self.round_robin(&others);
        if affinity.is_some() {
            self.pins().by_client.insert(
                client,
                Pin {
                    endpoint,
                    last_used: now,
                },
            );
        }
        Some(endpoint)
    }

    /// Drop pins to endpoints that are no longer eligible, so a client whose endpoint went
    /// away is re-balanced even if that endpoint comes back later.
    pub(crate) fn retain_endpoints(&self, endpoints: &[SocketAddr]) {
        self.pins()
            .by_client
            .retain(|_, p| endpoints.contains(&p.endpoint));
    }

    #[cfg(test)]
    fn pinned(&self, client: IpAddr) -> Option<SocketAddr> {
        self.pins().by_client.get(&client).map(|p| p.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::from([192, 168, 0, i])
    }

    #[test]
    fn no_endpoints_picks_nothing() {
        let b = Balancer::default();
        assert_eq!(b.pick(client(1), &[], None, Instant::now()), None);
        assert_eq!(
            b.pick(client(1), &[], Some(Duration::from_secs(1)), Instant::now()),
            None
        );
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let b = Balancer::default();
        let e = eps(3);
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..300 {
            let got = b.pick(client(1), &e, None, Instant::now()).unwrap();
            *counts.entry(got).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }

    #[test]
    fn client_ip_pins_until_timeout_then_rebalances() {
        let b = Balancer::default();
        let e = eps(3);
        let t = Some(Duration::from_secs(10));
        let start = Instant::now();
        let first = b.pick(client(1), &e, t, start).unwrap();
        // Other clients move the round-robin on; client 1 stays.
        for i in 2..10 {
            b.pick(client(i), &e, t, start);
        }
        for s in 1..=10 {
            let now = start + Duration::from_secs(s);
            assert_eq!(b.pick(client(1), &e, t, now), Some(first));
        }
        // Within the timeout the round-robin is not consulted.
        let rr = b.next.load(Ordering::Relaxed);
        b.pick(client(1), &e, t, start + Duration::from_secs(20));
        assert_eq!(b.next.load(Ordering::Relaxed), rr);
        // Idle for longer than the timeout (measured from the last use): a fresh pick.
        let expired = start + Duration::from_secs(20) + Duration::from_secs(11);
        let expected = e[rr % e.len()];
        assert_eq!(b.pick(client(1), &e, t, expired), Some(expected));
        assert_eq!(b.next.load(Ordering::Relaxed), rr + 1);
    }

    #[test]
    fn pin_dropped_when_endpoint_goes() {
        let b = Balancer::default();
        let e = eps(3);
        let t = Some(Duration::from_secs(100));
        let now = Instant::now();
        let first = b.pick(client(1), &e, t, now).unwrap();
        let rest: Vec<_> = e.iter().copied().filter(|x| *x != first).collect();
        b.retain_endpoints(&rest);
        assert_eq!(b.pinned(client(1)), None);
        let second = b.pick(client(1), &rest, t, now).unwrap();
        assert_ne!(second, first);
        // The old endpoint coming back does not steal the client back.
        assert_eq!(b.pick(client(1), &e, t, now), Some(second));
    }

    #[test]
    fn pinned_endpoint_missing_from_list_is_not_used() {
        let b = Balancer::default();
        let e = eps(2);
        let t = Some(Duration::from_secs(100));
        let now = Instant::now();
        let first = b.pick(client(1), &e, t, now).unwrap();
        let rest: Vec<_> = e.iter().copied().filter(|x| *x != first).collect();
        assert_eq!(b.pick(client(1), &rest, t, now), Some(rest[0]));
    }

    #[test]
    fn pick_other_avoids_failed_and_repins() {
        let b = Balancer::default();
        let e = eps(2);
        let t = Some(Duration::from_secs(100));
        let now = Instant::now();
        let first = b.pick(client(1), &e, t, now).unwrap();
        let other = b.pick_other(client(1), &e, first, t, now).unwrap();
        assert_ne!(other, first);
        assert_eq!(b.pinned(client(1)), Some(other));
        assert_eq!(b.pick_other(client(1), &[first], first, t, now), None);
    }

    #[test]
    fn expired_pins_are_swept() {
        let b = Balancer::default();
        let e = eps(2);
        let t = Some(Duration::from_secs(1));
        let start = Instant::now();
        for i in 0..(MIN_SWEEP_AT as u32 - 1) {
            b.pick(IpAddr::from(i.to_be_bytes()), &e, t, start);
        }
        assert_eq!(b.pins().by_client.len(), MIN_SWEEP_AT - 1);
        b.pick(client(1), &e, t, start + Duration::from_secs(5));
        assert_eq!(b.pins().by_client.len(), 1);
    }
}
