//! Drain deadlines for connections to endpoints that left their Service.
//!
//! Every forwarded connection (or UDP flow) subscribes to the group of its
//! (Service port, endpoint). A reconcile that no longer lists the endpoint under that
//! Service port sets the group's deadline; one that lists it again clears it. Connections
//! to endpoints that stay are never touched.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::time::Instant;

use super::ServicePortId;

type Key = (ServicePortId, SocketAddr);

#[derive(Debug, Default)]
pub(crate) struct Drains {
    groups: Mutex<HashMap<Key, watch::Sender<Option<Instant>>>>,
}

impl Drains {
    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Option<Instant>>>> {
        // Each update is one map operation; a poisoned map is still consistent.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Join the group of `(id, endpoint)`; the receiver says when to stop.
    pub(crate) fn subscribe(
        &self,
        id: &ServicePortId,
        endpoint: SocketAddr,
    ) -> watch::Receiver<Option<Instant>> {
        self.groups()
            .entry((id.clone(), endpoint))
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe()
    }

    /// Apply a reconcile: groups not in `live` get `deadline` (unless they already have
    /// one), groups in `live` lose theirs, and groups nobody listens to are forgotten.
    /// Returns how many groups started draining.
    pub(crate) fn update(&self, live: &HashSet<Key>, deadline: Instant) -> usize {
        let mut started = 0;
        self.groups().retain(|key, tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            let present = live.contains(key);
            tx.send_if_modified(|d| match (present, *d) {
                (true, Some(_)) => {
                    *d = None;
                    true
                }
                (false, None) => {
                    *d = Some(deadline);
                    started += 1;
                    true
                }
                _ => false,
            });
            true
        });
        started
    }
}

/// Resolves once the group's deadline has passed (never, while there is none).
pub(crate) async fn drained(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            None => {
                if rx.changed().await.is_err() {
                    // The group is only forgotten once nobody listens; be safe anyway.
                    std::future::pending::<()>().await;
                }
            }
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => return,
                    r = rx.changed() => {
                        if r.is_err() {
                            tokio::time::sleep_until(at).await;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Resolves as soon as the group starts draining, ignoring the deadline. UDP flows use
/// it: a datagram flow has nothing to finish, and kube-proxy likewise deletes the
/// conntrack entries of removed UDP endpoints at once so clients are re-balanced.
pub(crate) async fn removed(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        if rx.borrow_and_update().is_some() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id() -> ServicePortId {
        ServicePortId::new("default", "kubia", "http")
    }

    fn ep(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 8080))
    }

    #[tokio::test(start_paused = true)]
    async fn removed_endpoint_drains_after_deadline_and_kept_one_never() {
        let d = Drains::default();
        let gone = tokio::spawn(drained(d.subscribe(&id(), ep(1))));
        let kept = tokio::spawn(drained(d.subscribe(&id(), ep(2))));
        let live: HashSet<Key> = [(id(), ep(2))].into();
        assert_eq!(d.update(&live, Instant::now() + Duration::from_secs(30)), 1);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!gone.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(gone.is_finished());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!kept.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_back_before_deadline_cancels_drain() {
        let d = Drains::default();
        let conn = tokio::spawn(drained(d.subscribe(&id(), ep(1))));
        d.update(&HashSet::new(), Instant::now() + Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(10)).await;
        // A second update without the endpoint keeps the first deadline.
        assert_eq!(
            d.update(&HashSet::new(), Instant::now() + Duration::from_secs(30)),
            0
        );
        d.update(&[(id(), ep(1))].into(), Instant::now());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!conn.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn removed_resolves_at_once_without_waiting_for_the_deadline() {
        let d = Drains::default();
        let flow = tokio::spawn(removed(d.subscribe(&id(), ep(1))));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!flow.is_finished());
        d.update(&HashSet::new(), Instant::now() + Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(flow.is_finished());
    }

    #[tokio::test]
    async fn unused_groups_are_forgotten() {
        let d = Drains::default();
        drop(d.subscribe(&id(), ep(1)));
        d.update(&HashSet::new(), Instant::now());
        assert!(d.groups().is_empty());
    }
}
