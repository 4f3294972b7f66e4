//! HTTP/2 streams whose client takes no data. Over HTTP/2 one client can hold many
//! streams with zero flow-control window on a connection whose socket stays writable, so
//! the socket-level send timeout never fires, and hyper stops pulling the pod's body once
//! the stream's send buffer is full: the pod connection behind each such stream would be
//! held for as long as the client likes. Each upstream response on an HTTP/2 client
//! connection is therefore watched: one that makes no progress for the send timeout has
//! its pod connection closed, which frees the pod and ends the stream with an error.
//! HTTP/1 clients need none of this: their stalls show at the socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::upstream::Link;

/// What a watched response body reports.
#[derive(Default)]
pub(crate) struct Progress {
    frames: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub fn frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self) {
        self.done.store(true, Ordering::Release);
    }
}

struct Watched {
    progress: Arc<Progress>,
    link: Arc<Link>,
    seen: u64,
    quiet_checks: u8,
}

/// The watched responses of one client connection.
#[derive(Default)]
pub(crate) struct Stalls {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    watched: Vec<Watched>,
    /// Finished responses are forgotten when the list reaches this length, as well as at
    /// each check: a busy connection finishes thousands of responses between two checks,
    /// and each would be held until the next.
    prune_at: usize,
    /// The connection task's, to start the checks when the first response is watched.
    waker: Option<Waker>,
}

/// The shortest list that is pruned before the next check.
const PRUNE_MIN: usize = 32;

impl Stalls {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches a response streaming from the pod connection `link`.
    pub fn watch(&self, link: Arc<Link>) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        let mut inner = self.inner();
        if inner.watched.len() >= inner.prune_at {
            inner
                .watched
                .retain(|w| !w.progress.done.load(Ordering::Acquire));
            // Twice what is left: each response is passed over a bounded number of times.
            inner.prune_at = (inner.watched.len() * 2).max(PRUNE_MIN);
        }
        inner.watched.push(Watched {
            progress: progress.clone(),
            link,
            seen: 0,
            quiet_checks: 0,
        });
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        progress
    }

    /// One check: forgets finished responses, and closes the pod connection of those that
    /// made no progress since the check before the last. Whether any are left.
    fn check(&self) -> bool {
        let mut inner = self.inner();
        inner.watched.retain_mut(|w| {
            if w.progress.done.load(Ordering::Acquire) {
                return false;
            }
            let frames = w.progress.frames.load(Ordering::Relaxed);
            if frames != w.seen {
                w.seen = frames;
                w.quiet_checks = 0;
                return true;
            }
            w.quiet_checks += 1;
            if w.quiet_checks < 2 {
                return true;
            }
            tracing::debug!(
                "client stream took no data for the send timeout; closing its pod connection"
            );
            w.link.close();
            false
        });
        !inner.watched.is_empty()
    }
}

/// Runs the checks every half send timeout while responses are watched, so a stalled
/// one is cut between one and one and a half send timeouts after its last progress.
/// Never resolves.
pub(crate) struct StallWatch {
    stalls: Arc<Stalls>,
    period: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StallWatch {
    pub fn new(stalls: Arc<Stalls>, send_timeout: Duration) -> Self {
        Self {
            stalls,
            period: send_timeout / 2,
            sleep: None,
        }
    }
}

impl Future for StallWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.sleep {
                None => {
                    let mut inner = self.stalls.inner();
                    if inner.watched.is_empty() {
                        if !inner
                            .waker
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            inner.waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                    drop(inner);
                    let at = Instant::now() + self.period;
                    self.sleep = Some(Box::pin(tokio::time::sleep_until(at)));
                }
                Some(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if self.stalls.check() {
                        let at = Instant::now() + self.period;
                        if let Some(sleep) = &mut self.sleep {
                            sleep.as_mut().reset(at);
                        }
                    } else {
                        self.sleep = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

    fn link() -> Arc<Link> {
        Link::new(Timeouts::default()).0
    }

    #[test]
    fn finished_responses_are_forgotten_before_the_next_check() {
        let stalls = Stalls::default();
        let streaming: Vec<_> = (0..10).map(|_| stalls.watch(link())).collect();
        for _ in 0..10_000 {
            stalls.watch(link()).done();
        }
        let len = stalls.inner().watched.len();
        assert!(
            len <= 2 * PRUNE_MIN,
            "{len} responses held, 10 of them streaming"
        );
        // The ones still streaming are kept.
        let kept = stalls
            .inner()
            .watched
            .iter()
            .filter(|w| !w.progress.done.load(Ordering::Acquire))
            .count();
        assert_eq!(kept, streaming.len());
    }
}
