//! The bodies that cross the proxy, with the limits nginx puts on them: an idle timer
//! between reads (`client-body-timeout` on the way in, `proxy-read-timeout` on the way
//! out), a size limit on request bodies, and the access-log line once the response is
//! done.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use std::sync::Arc;

use super::activity::ActiveGuard;
use super::h1::{H1Body, H1BodyError};
use super::stall::Progress;
use super::upstream::Stream;

/// Fires when a body has been waiting on its source for `timeout` since it last made
/// progress. Costs nothing while data keeps coming: the timer is only armed when the
/// source has nothing ready.
pub(crate) struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// Takes effect from the next wait on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The source produced something.
    pub fn progress(&mut self) {
        self.armed = false;
    }

    /// The source has nothing ready: whether it has been waiting too long.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

/// A client's request body, as the connection it came on reads it.
pub(crate) enum ClientBody {
    Empty,
    H1(H1Body),
    H2(Incoming),
    /// Boxed: the rarest, and the largest.
    H3(Box<super::h3::H3Body>),
}

/// Why a client's body broke off.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    H1(#[from] H1BodyError),
    #[error(transparent)]
    H2(#[from] hyper::Error),
    #[error(transparent)]
    H3(#[from] h3::error::StreamError),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H3(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
            ClientBody::H3(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
            ClientBody::H3(body) => body.size_hint(),
        }
    }
}

/// Why the client's request body stopped, as the upstream send sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("client sent no body data for {0:?}")]
    Timeout(Duration),
    #[error("request body over the {0}-byte limit")]
    TooLarge(u64),
    #[error("client body: {0}")]
    Client(ClientBodyError),
}

/// The client's request body on its way upstream.
pub(crate) struct RequestBody {
    inner: ClientBody,
    idle: IdleTimer,
    limit: Option<u64>,
    seen: u64,
}

impl RequestBody {
    pub fn new(inner: ClientBody, idle_timeout: Duration, limit: Option<u64>) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(idle_timeout),
            limit,
            seen: 0,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.progress();
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge(limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.idle.expired(cx) {
                    return Poll::Ready(Some(Err(RequestBodyError::Timeout(this.idle.timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a response body ended, for the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Sent whole.
    Complete,
    /// The upstream stopped sending for longer than the read timeout.
    UpstreamTimeout,
    /// The upstream broke the body off.
    UpstreamError,
    /// The client went away before the end.
    ClientGone,
}

/// Told once when a response is done (or abandoned), with the bytes sent and how.
pub(crate) trait OnDone: Send {
    fn done(self: Box<Self>, bytes: u64, end: BodyEnd);
}

/// Every response body the proxy sends: the upstream's, streamed under the read idle
/// timeout, or a short one of its own.
pub struct ProxyBody {
    kind: Kind,
    sent: u64,
    end: Option<BodyEnd>,
    on_done: Option<Box<dyn OnDone>>,
    /// Keeps the client connection counted as busy until the body is done.
    _active: Option<ActiveGuard>,
    /// Told of every frame, for an HTTP/2 client's stall watch.
    progress: Option<Arc<Progress>>,
}

enum Kind {
    Upstream {
        body: Incoming,
        idle: IdleTimer,
        /// Its share of an HTTP/2 connection to the pod, given back when the body is done.
        _stream: Option<Stream>,
    },
    Full(Full<Bytes>),
}

impl ProxyBody {
    /// A body of our own.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Full::new(data.into())),
            sent: 0,
            end: None,
            on_done: None,
            _active: None,
            progress: None,
        }
    }

    /// The upstream's body; each wait for more of it is bounded by `read_timeout`.
    pub(crate) fn upstream(body: Incoming, read_timeout: Duration, stream: Option<Stream>) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                idle: IdleTimer::new(read_timeout),
                _stream: stream,
            },
            sent: 0,
            end: None,
            on_done: None,
            _active: None,
            progress: None,
        }
    }

    /// Reports progress to an HTTP/2 connection's stall watch.
    pub(crate) fn watched(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// Counts the client connection as busy until the body is done or dropped.
    pub(crate) fn hold(&mut self, guard: ActiveGuard) {
        self._active = Some(guard);
    }

    /// The response went out without its body (`HEAD`, 204, 304): that is its end.
    pub(crate) fn not_sent(&mut self) {
        self.end.get_or_insert(BodyEnd::Complete);
    }

    /// Runs `f` once the body is done or dropped.
    pub(crate) fn on_done(&mut self, f: Box<dyn OnDone>) {
        self.on_done = Some(f);
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.done();
        }
        if let Some(f) = self.on_done.take() {
            // hyper does not poll a body it knows is over (HEAD, 204, an empty upstream
            // body), so "not seen to end" is only the client leaving if more was due.
            let end = self.end.unwrap_or(if self.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::ClientGone
            });
            f.done(self.sent, end);
        }
    }
}

/// The upstream read timeout expired mid-body; hyper then aborts the client's
/// connection (HTTP/1.1) or stream (HTTP/2) rather than pretend the body ended.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct UpstreamStalled(Duration);

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Upstream { body, idle, .. } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    idle.progress();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.end = Some(BodyEnd::UpstreamError);
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    if idle.expired(cx) {
                        this.end = Some(BodyEnd::UpstreamTimeout);
                        return Poll::Ready(Some(Err(Box::new(UpstreamStalled(idle.timeout)))));
                    }
                    Poll::Pending
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if let Some(p) = &this.progress {
                    p.frame();
                }
            }
            Poll::Ready(None) => {
                this.end = Some(BodyEnd::Complete);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(full) => full.size_hint(),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
