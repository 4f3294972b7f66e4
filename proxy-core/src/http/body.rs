//! The bodies that cross the proxy, with the limits nginx puts on them: an idle timer
//! between reads (`client-body-timeout` on the way in, `proxy-read-timeout` on the way
//! out), a size limit on request bodies, and the access-log line once the response is
//! done.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use std::sync::Arc;

use super::activity::ActiveGuard;
use super::h1::{H1Body, H1BodyError, PodFields};
use super::stall::Progress;
use super::upstream::{PodBody, Stream};

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

/// A body that may still hold its pod's response fields as they came (see
/// [`PodFields`]).
pub(crate) trait HoldsPodFields {
    fn pod_fields(&self) -> Option<&PodFields>;
    fn pod_fields_mut(&mut self) -> Option<&mut PodFields>;
    fn take_pod_fields(&mut self) -> Option<Box<PodFields>>;
}

/// Sets `name` on the answer as `HeaderMap::insert` does. While the pod's fields are
/// held as they came, it is set over them there, and the answer's map is not built for
/// it.
pub(crate) fn set_field<B: HoldsPodFields>(
    resp: &mut http::Response<B>,
    name: HeaderName,
    value: HeaderValue,
) {
    let (name, value) = match resp.body_mut().pod_fields_mut() {
        Some(fields) => match fields.set_over(name, value) {
            Ok(()) => return,
            // No room: a name in the map is set over the pod's fields all the same.
            Err(back) => back,
        },
        None => (name, value),
    };
    resp.headers_mut().insert(name, value);
}

/// Reads the pod's fields still held by `resp`'s body into its map, and returns the
/// map. Whatever reads an answer's fields, or edits them other than by [`set_field`],
/// goes through this; only the HTTP/1 response writer reads them as they are.
pub(crate) fn read_pod_fields<B: HoldsPodFields>(resp: &mut http::Response<B>) -> &mut HeaderMap {
    if let Some(fields) = resp.body_mut().take_pod_fields() {
        fields.add_to(resp.headers_mut());
    }
    resp.headers_mut()
}

impl HoldsPodFields for PodBody {
    fn pod_fields(&self) -> Option<&PodFields> {
        match self {
            PodBody::H1(b) => b.fields.as_deref(),
            PodBody::Hyper(_) => None,
        }
    }

    fn pod_fields_mut(&mut self) -> Option<&mut PodFields> {
        match self {
            PodBody::H1(b) => b.fields.as_deref_mut(),
            PodBody::Hyper(_) => None,
        }
    }

    fn take_pod_fields(&mut self) -> Option<Box<PodFields>> {
        match self {
            PodBody::H1(b) => b.fields.take(),
            PodBody::Hyper(_) => None,
        }
    }
}

impl HoldsPodFields for ProxyBody {
    fn pod_fields(&self) -> Option<&PodFields> {
        match &self.kind {
            Kind::Upstream { body, .. } => body.pod_fields(),
            Kind::Full(_) => None,
        }
    }

    fn pod_fields_mut(&mut self) -> Option<&mut PodFields> {
        match &mut self.kind {
            Kind::Upstream { body, .. } => body.pod_fields_mut(),
            Kind::Full(_) => None,
        }
    }

    fn take_pod_fields(&mut self) -> Option<Box<PodFields>> {
        match &mut self.kind {
            Kind::Upstream { body, .. } => body.take_pod_fields(),
            Kind::Full(_) => None,
        }
    }
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
    /// `limit-rate`: the pace the body is sent at.
    throttle: Option<Box<Throttle>>,
}

/// nginx's `limit_rate` and `limit_rate_after`: past the first `after` bytes, the body
/// goes out at `rate` bytes a second, counted from the start of the answer with one
/// second's worth allowed at once, as nginx counts it; each frame is cut to at most a
/// second's worth so the pace stays even.
struct Throttle {
    rate: u64,
    after: u64,
    start: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The rest of a frame cut short.
    held: Option<Bytes>,
}

impl Throttle {
    /// Ready once `sent` bytes are within the pace.
    fn wait(&mut self, sent: u64, cx: &mut Context<'_>) -> Poll<()> {
        let over = sent.saturating_sub(self.after);
        if over == 0 {
            return Poll::Ready(());
        }
        let rate = u128::from(self.rate.max(1));
        // The next piece (a second's worth at most) is due once rate x (elapsed + 1 s)
        // covers it on top of what was sent past `after`, as nginx's whole-second count
        // lets it out.
        let due_nanos = u128::from(over) * 1_000_000_000 / rate;
        let due = self.start + Duration::from_nanos(u64::try_from(due_nanos).unwrap_or(u64::MAX));
        if Instant::now() >= due {
            self.sleep = None;
            return Poll::Ready(());
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleep = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The part of `data` to send now, keeping the rest for later.
    fn cut(&mut self, mut data: Bytes) -> Bytes {
        let max = usize::try_from(self.rate.max(1)).unwrap_or(usize::MAX);
        if data.len() > max {
            self.held = Some(data.split_off(max));
        }
        data
    }
}

enum Kind {
    Upstream {
        body: PodBody,
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
            throttle: None,
        }
    }

    /// The upstream's body; each wait for more of it is bounded by `read_timeout`.
    pub(crate) fn upstream(body: PodBody, read_timeout: Duration, stream: Option<Stream>) -> Self {
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
            throttle: None,
        }
    }

    /// Reports progress to an HTTP/2 connection's stall watch.
    pub(crate) fn watched(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// Sends the body at `rate` bytes a second past its first `after` bytes.
    pub(crate) fn throttle(&mut self, rate: u64, after: u64) {
        self.throttle = Some(Box::new(Throttle {
            rate,
            after,
            start: Instant::now(),
            sleep: None,
            held: None,
        }));
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
        if let Some(t) = &mut this.throttle {
            if t.wait(this.sent, cx).is_pending() {
                return Poll::Pending;
            }
        }
        let held = this.throttle.as_mut().and_then(|t| {
            let rest = t.held.take()?;
            Some(t.cut(rest))
        });
        let polled = match (&mut this.kind, held) {
            (_, Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            (kind, None) => match kind {
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
                        Poll::Ready(Some(Err(e)))
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
            },
        };
        let polled = match (polled, &mut this.throttle) {
            (Poll::Ready(Some(Ok(frame))), Some(t)) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(t.cut(data))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            (polled, _) => polled,
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
        if self.throttle.as_ref().is_some_and(|t| t.held.is_some()) {
            return false;
        }
        match &self.kind {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let inner = match &self.kind {
            Kind::Full(full) => full.size_hint(),
            Kind::Upstream { body, .. } => body.size_hint(),
        };
        let held = self
            .throttle
            .as_ref()
            .and_then(|t| t.held.as_ref())
            .map_or(0, |b| b.len() as u64);
        if held == 0 {
            return inner;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// The data frames of `body` and when each came, in seconds from the start.
    async fn frames(mut body: ProxyBody) -> Vec<(usize, f64)> {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            out.push((data.len(), start.elapsed().as_secs_f64()));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn limit_rate_paces_the_body_after_its_first_bytes() {
        // 1 KiB/s after the first 2 KiB, over a 6 KiB body in one frame: nginx sends
        // the 2 KiB, then one second's worth at once, then 1 KiB a second.
        let mut body = ProxyBody::full(vec![b'x'; 6 << 10]);
        body.throttle(1 << 10, 2 << 10);
        let got = frames(body).await;
        let sizes: Vec<usize> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(sizes, [1024, 1024, 1024, 1024, 1024, 1024]);
        let times: Vec<f64> = got.iter().map(|(_, t)| t.round()).collect();
        assert_eq!(times, [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_the_body_is_not_held() {
        let got = frames(ProxyBody::full(vec![b'x'; 6 << 10])).await;
        assert_eq!(got, [(6 << 10, 0.0)]);
    }
}
