//! Idle keep-alive connections parked without a task of their own.
//!
//! A connection that has waited [`ProxyOptions::park_idle_after`](crate::http::ProxyOptions)
//! for its next request gives up its task: its socket's readiness then wakes the
//! connection itself (its [`Wire`] is the waker), and one task per proxy, the lot, spawns
//! a new serving task for it, or closes it when its keep-alive deadline passes or the
//! proxy shuts down. Thousands of idle clients then cost their sockets and wires, not
//! thousands of suspended tasks with their timers and stop signals. Connections that
//! keep sending (any benchmark, most API clients) never park, so their requests pay
//! nothing for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use super::Wire;
use crate::http::server::{Shutdown, ShutdownGuard};
use crate::http::{ConnPermit, Proxy};

/// What a connection's task held, kept with the connection while it has none.
pub(crate) struct Parked {
    /// Counts the connection as open for draining.
    guard: ShutdownGuard,
    permit: Option<ConnPermit>,
    /// Its keep-alive deadline, and its place in the lot.
    key: (Instant, u64),
    lot: Arc<Lot>,
}

impl Parked {
    pub(super) fn lot(&self) -> &Arc<Lot> {
        &self.lot
    }

    /// What the task resuming the connection holds: the guard, the permit and the
    /// keep-alive deadline.
    pub fn into_held(self) -> (ShutdownGuard, Option<ConnPermit>, Instant) {
        (self.guard, self.permit, self.key.0)
    }
}

/// A parked connection as the lot sees it, whatever its stream type.
pub(crate) trait Parkable: Send + Sync {
    /// Takes what its task held, once: `None` when it was resumed or closed already.
    fn unpark(&self) -> Option<Box<Parked>>;
    /// Serves it again in a task of its own.
    fn resume(self: Arc<Self>, proxy: Arc<Proxy>, parked: Box<Parked>);
    /// Closes its socket.
    fn close(&self);
}

/// The proxy's parked connections, by keep-alive deadline.
#[derive(Default)]
pub(crate) struct Lot {
    inner: Mutex<LotInner>,
    /// Wakes the lot's task: a connection woke, or one parked with an earlier deadline.
    notify: Notify,
}

#[derive(Default)]
struct LotInner {
    parked: BTreeMap<(Instant, u64), Arc<dyn Parkable>>,
    woken: Vec<Arc<dyn Parkable>>,
    next_id: u64,
    /// The proxy shut down: nothing parks any more.
    closed: bool,
}

impl Lot {
    fn lock(&self) -> std::sync::MutexGuard<'_, LotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the lot's task on the current runtime.
    pub fn start(proxy: &Arc<Proxy>, shutdown: Shutdown) -> Arc<Lot> {
        let lot = Arc::new(Lot::default());
        tokio::spawn(run(lot.clone(), Arc::downgrade(proxy), shutdown));
        lot
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.lock().parked.len()
    }

    /// Parks `wire` until its socket has something to read or `deadline` passes.
    pub fn park<W>(
        self: &Arc<Self>,
        wire: Arc<W>,
        guard: ShutdownGuard,
        permit: Option<ConnPermit>,
        deadline: Instant,
    ) where
        W: Parkable + Wake + ParkSlot + 'static,
    {
        let parked = {
            let mut lot = self.lock();
            if lot.closed {
                drop(lot);
                wire.close();
                return;
            }
            lot.next_id += 1;
            let key = (deadline, lot.next_id);
            let earliest = lot.parked.first_key_value().is_none_or(|(k, _)| key < *k);
            lot.parked.insert(key, wire.clone());
            wire.set_parked(Box::new(Parked {
                guard,
                permit,
                key,
                lot: self.clone(),
            }));
            earliest
        };
        if parked {
            self.notify.notify_one();
        }
        // Registered after parking, so a wake between the two still finds it parked.
        let waker = Waker::from(wire.clone());
        match wire.poll_ready(&mut Context::from_waker(&waker)) {
            Poll::Pending => {}
            // Readable already (or the socket is gone): serve it at once.
            Poll::Ready(()) => self.woke(wire),
        }
    }

    /// A parked connection's socket became ready.
    fn woke(&self, wire: Arc<dyn Parkable>) {
        self.lock().woken.push(wire);
        self.notify.notify_one();
    }

    fn forget(&self, key: &(Instant, u64)) {
        self.lock().parked.remove(key);
    }
}

/// Where a wire keeps its [`Parked`] state, and how its readiness is asked for.
pub(crate) trait ParkSlot {
    fn set_parked(&self, parked: Box<Parked>);
    fn lot(&self) -> Option<Arc<Lot>>;
    /// Registers the context's waker for the socket's next readiness.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()>;
}

impl<IO> Wake for Wire<IO>
where
    Wire<IO>: Parkable + ParkSlot + 'static,
{
    fn wake(self: Arc<Self>) {
        if let Some(lot) = self.lot() {
            lot.woke(self);
        }
    }
}

/// The lot's task: resumes woken connections, closes expired ones, and all of them when
/// the proxy shuts down.
async fn run(lot: Arc<Lot>, proxy: Weak<Proxy>, shutdown: Shutdown) {
    let mut stop = std::pin::pin!(shutdown.triggered());
    loop {
        let next = lot.lock().parked.first_key_value().map(|(k, _)| k.0);
        let notified = lot.notify.notified();
        tokio::select! {
            _ = notified => {}
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            _ = &mut stop => {
                let all = {
                    let mut inner = lot.lock();
                    inner.closed = true;
                    inner.woken.clear();
                    std::mem::take(&mut inner.parked)
                };
                for wire in all.into_values() {
                    if wire.unpark().is_some() {
                        wire.close();
                    }
                }
                return;
            }
        }
        let woken = std::mem::take(&mut lot.lock().woken);
        if !woken.is_empty() {
            let Some(proxy) = proxy.upgrade() else { return };
            for wire in woken {
                if let Some(parked) = wire.unpark() {
                    lot.forget(&parked.key);
                    wire.resume(proxy.clone(), parked);
                }
            }
        }
        let now = Instant::now();
        loop {
            let expired = {
                let mut inner = lot.lock();
                match inner.parked.first_key_value() {
                    Some((k, _)) if k.0 <= now => inner.parked.pop_first(),
                    _ => None,
                }
            };
            let Some((_, wire)) = expired else { break };
            if wire.unpark().is_some() {
                tracing::trace!("idle connection closed");
                wire.close();
            }
        }
    }
}
