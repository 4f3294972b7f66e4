//! Whether a client connection is in use: requests whose responses are not done yet. A
//! connection with none for the keep-alive timeout is closed, whatever its protocol;
//! hyper's own timer covers only HTTP/1's wait for the next request head, so without this
//! an idle HTTP/2 connection would be held for ever.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Shared by a connection's serve loop and its in-flight responses.
pub(crate) struct Activity {
    active: AtomicUsize,
    /// When the last response finished, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A request starts; it counts until the guard (held by its response body) drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.active.load(Ordering::Acquire) == 0)
            .then(|| self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)))
    }
}

pub(crate) struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves once the connection has had nothing in flight for `timeout`. It wakes only
/// on its own timer (at most once per `timeout` while requests flow), so requests never
/// pay for waking it.
pub(crate) struct IdleWatch {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleWatch {
    pub fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        Self {
            activity,
            timeout,
            sleep,
        }
    }
}

impl Future for IdleWatch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let next = match self.activity.idle_since() {
                Some(since) if now >= since + self.timeout => return Poll::Ready(()),
                Some(since) => since + self.timeout,
                None => now + self.timeout,
            };
            self.sleep.as_mut().reset(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_only_after_a_quiet_timeout() {
        let activity = Activity::new();
        let mut watch = IdleWatch::new(activity.clone(), Duration::from_secs(10));
        let guard = activity.begin();
        // Busy for 25 s: never idle.
        assert!(tokio::time::timeout(Duration::from_secs(25), &mut watch)
            .await
            .is_err());
        drop(guard);
        let quiet = Instant::now();
        (&mut watch).await;
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
    }
}
