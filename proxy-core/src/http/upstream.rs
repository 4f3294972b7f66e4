//! Upstream connections: connect (with its own timeout, so a refused connect is known to
//! have sent nothing), HTTP/1.1 handshake, and pools per endpoint that outlive config
//! swaps.
//!
//! Pools are keyed by the endpoint alone, not by the backend that led there: an HTTP/1.1
//! connection to a pod carries no trace of the Service or port name that chose it, so
//! backends that share pods (several Services over one Deployment, or one Service named
//! by port number and by port name) share their idle connections too. The set of pools
//! follows each published configuration ([`Runtime::apply`]): endpoints that leave every
//! backend have their idle connections closed then, never on the request path.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use foldhash::HashMap;
use http::Method;
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::body::{RequestBody, RequestBodyError};
use super::buffer::BufferedBody;
use super::errors::ProxyError;
use super::h1::client::{ExchangeError, Home, Outgoing, PodConn, ResponseBody, Upgraded};
use super::headers::Forwarded;
use super::idle_io::{WriteIdle, WriteStalled, WriteTimeout};
use super::shard;
use super::socket::Socket;
use super::upstream_tls::{Alpn, UpstreamTls};
use crate::balance::Target;
use crate::config::{Config, Runtime, Timeouts, UpstreamKeepalive};

/// What goes upstream: the client's body, streamed or read whole first, or nothing (a
/// replayed request). The buffered one is boxed: it is the largest and the rarest, and
/// the request carrying this type moves through every layer of the send.
pub(crate) type UpstreamBody = Either<RequestBody, Either<Box<BufferedBody>, Empty<Bytes>>>;

/// One upstream connection as the requests on it see it: the write-stall timeout its
/// socket applies (each request sets its route's), and a way to close it from outside.
pub(crate) struct Link {
    send_timeout: Arc<AtomicU64>,
    task: OnceLock<AbortHandle>,
    /// Requests in flight on it (HTTP/2, where they share it).
    streams: std::sync::atomic::AtomicUsize,
    /// A plain HTTP/1.1 connection's socket (it has no task to abort): noted while the
    /// connection lives and forgotten, under the lock, before the socket closes.
    socket: Mutex<Option<RawFd>>,
}

/// One request's share of an HTTP/2 connection, given back when its response is done.
pub(crate) struct Stream(Arc<Link>);

impl Stream {
    fn open(link: &Arc<Link>) -> Self {
        link.streams.fetch_add(1, Ordering::Relaxed);
        Stream(link.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Link {
    /// Closes the connection (its task ends and the socket with it): the pod learns at
    /// once, and a response still streaming from it ends with an error.
    pub fn close(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = *socket {
            // The socket is held by a response body that may not be polled again (an
            // HTTP/2 stream with no window), so it is closed under its holder: its
            // descriptor is pointed at a fresh unconnected socket, which releases the
            // connection (the pod sees it end) while the holder's reads and writes fail
            // from then on and its own close closes the stand-in.
            // SAFETY: `fd` is the open socket of a live connection (it is forgotten
            // under this lock before that socket is closed); `dup2` swaps what it refers
            // to atomically, and the stand-in's own descriptor is closed right after.
            unsafe {
                let stand_in =
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if stand_in >= 0 {
                    libc::dup2(stand_in, fd);
                    libc::close(stand_in);
                } else {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        }
    }

    /// A link for the same connection, its send timeout shared, with no socket noted.
    pub(crate) fn renewed(&self) -> Arc<Link> {
        Arc::new(Link {
            send_timeout: self.send_timeout.clone(),
            task: OnceLock::new(),
            streams: Default::default(),
            socket: Mutex::new(None),
        })
    }

    pub(crate) fn note_socket(&self, fd: RawFd) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd);
    }

    pub(crate) fn forget_socket(&self) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// `upstream-keepalive-*` as the configuration last published says. Read on every send,
/// so kept as plain numbers rather than behind the configuration's pointer.
struct Keepalive {
    connections: AtomicUsize,
    timeout_ms: AtomicU64,
    requests: AtomicU64,
    time_ms: AtomicU64,
}

impl Keepalive {
    fn new(k: &UpstreamKeepalive) -> Self {
        let this = Self {
            connections: AtomicUsize::new(0),
            timeout_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            time_ms: AtomicU64::new(0),
        };
        this.store(k);
        this
    }

    fn store(&self, k: &UpstreamKeepalive) {
        self.connections.store(k.connections, Ordering::Relaxed);
        self.timeout_ms.store(millis(k.timeout), Ordering::Relaxed);
        self.requests.store(k.requests, Ordering::Relaxed);
        self.time_ms.store(millis(k.time), Ordering::Relaxed);
    }

    fn load(&self) -> UpstreamKeepalive {
        UpstreamKeepalive {
            connections: self.connections.load(Ordering::Relaxed),
            timeout: Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed)),
            requests: self.requests.load(Ordering::Relaxed),
            time: Duration::from_millis(self.time_ms.load(Ordering::Relaxed)),
        }
    }
}

/// A request on its way to a pod. Boxed: the futures that carry it through the send
/// (the retries, the pool, the exchange on a connection) then hold and move a pointer,
/// not the head.
pub(crate) type Outbound = Box<Request<UpstreamBody>>;

/// A failed send. `request` is handed back when nothing was sent, so the caller may try
/// another endpoint.
pub(crate) struct SendError {
    pub error: ProxyError,
    pub request: Option<Outbound>,
}

/// A pod's response body: read by Portico's own HTTP/1.1 client, or by hyper's (HTTP/2,
/// and HTTP/1.1 over TLS).
pub(crate) enum PodBody {
    H1(ResponseBody),
    Hyper(Incoming),
}

impl http_body::Body for PodBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            PodBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PodBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PodBody::H1(b) => b.is_end_stream(),
            PodBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            PodBody::H1(b) => b.size_hint(),
            PodBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// The pod's side of a `101 Switching Protocols` answer, for the tunnel.
pub(crate) enum PodUpgrade {
    H1(Option<Upgraded>),
    Hyper(hyper::upgrade::OnUpgrade),
}

/// Takes the pod's connection out of a `101` answer.
pub(crate) fn on_upgrade(resp: &mut Response<PodBody>) -> PodUpgrade {
    match resp.body_mut() {
        PodBody::H1(b) => PodUpgrade::H1(b.upgraded()),
        PodBody::Hyper(_) => PodUpgrade::Hyper(hyper::upgrade::on(resp)),
    }
}

/// A response head from a pod, and what it came over.
pub(crate) struct Sent {
    pub resp: Response<PodBody>,
    /// A new connection was made for it (the endpoint answers connects again).
    pub fresh: bool,
    pub link: Arc<Link>,
    /// The request's share of an HTTP/2 connection: keep it with the response body.
    pub stream: Option<Stream>,
    /// The head's `Connection` may name fields to remove; Portico's own client knows
    /// when it names none, which spares an HTTP/1 client's answer the lookup.
    pub connection_names: bool,
}

/// A connect taking longer than this marks its endpoint as suspect (see
/// [`crate::balance::Registry::connect_slow`]); pods answer a connect in well under it.
const SLOW_CONNECT: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct EndpointPool {
    /// Plain HTTP/1.1, by far the most common: idle connections only (one in use is
    /// its response body's until that is read whole), by [`shard`] of the runtime
    /// whose reactor drives them, the most recently used last. Boxed: a connection is
    /// moved as a pointer between the pool, the exchange and its response body.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Vec<Box<PodConn>>>>,
    /// Every other kind: HTTP/1.1 over TLS (idle, as above) and HTTP/2 (shared by the
    /// requests in flight on them), told apart by how they were dialled.
    other: Mutex<Vec<Other>>,
}

impl EndpointPool {
    #[allow(clippy::vec_box)]
    fn idle(&self) -> MutexGuard<'_, Vec<Vec<Box<PodConn>>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn other(&self) -> MutexGuard<'_, Vec<Other>> {
        self.other.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that can carry a request; the ones found
    /// closed or pooled too long on the way are dropped. The longest-pooled ones, which
    /// a busy pool never reaches from this end, are left to [`Pool::sweep`].
    pub(crate) fn checkout_h1(&self, now: Instant, idle_timeout: Duration) -> Option<Box<PodConn>> {
        let mut shards = self.idle();
        let list = shard::slot(&mut shards, shard::current());
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.last_used) < idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose response was read whole. Beyond `max` the one pooled
    /// longest is closed.
    pub(crate) fn put_h1(&self, conn: Box<PodConn>, max: usize) {
        let mut shards = self.idle();
        let list = shard::slot(&mut shards, conn.shard);
        if list.len() >= max.max(1) {
            list.remove(0);
        }
        list.push(conn);
    }
}

/// How a request wants its connection made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dial {
    /// Plain HTTP/1.1.
    Http1,
    /// Plain HTTP/2 by prior knowledge.
    H2c,
    /// TLS, then what ALPN settles (HTTP/2 by prior knowledge when only `h2` was
    /// offered and the pod chose nothing).
    Tls {
        tls: Arc<UpstreamTls>,
        alpn: Alpn,
        /// The name sent as SNI and checked (when verifying); `None` sends none.
        name: Option<ServerName<'static>>,
    },
}

/// A pooled connection of a kind other than plain HTTP/1.1.
struct Other {
    dial: Dial,
    lent: Lent,
    last_used: Instant,
}

/// A connection of a kind other than plain HTTP/1.1 as a request holds it: an HTTP/1.1
/// one taken out of the pool, or a share of an HTTP/2 one.
struct Lent {
    sender: Sender,
    link: Arc<Link>,
    /// When it was dialled, and the requests given to it: what
    /// `upstream-keepalive-time` and `-requests` limit.
    opened: Instant,
    requests: u64,
}

enum Sender {
    H1(SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Streams one HTTP/2 connection to a pod carries before another is opened beside it.
/// Below every common server's own limit (100 or more), so requests do not queue in a
/// connection the pod throttles.
const H2_STREAMS_PER_CONN: usize = 100;

/// HTTP/2 connections kept per endpoint and dial: beyond them, requests share the
/// least-loaded one and queue in it.
const H2_CONNS_PER_ENDPOINT: usize = 4;

pub(crate) struct Pool {
    keepalive: Keepalive,
    endpoints: ArcSwap<HashMap<Target, Arc<EndpointPool>>>,
    sweeping: OnceLock<()>,
}

impl Runtime for Pool {
    fn apply(&self, next: &Config) {
        self.keepalive.store(&next.settings.upstream_keepalive);
        let current = self.endpoints.load();
        let mut endpoints: HashMap<Target, Arc<EndpointPool>> = HashMap::default();
        for backend in next.backends.values() {
            for target in backend.targets() {
                if endpoints.contains_key(&target) {
                    continue;
                }
                let pool = current.get(&target).cloned().unwrap_or_default();
                endpoints.insert(target, pool);
            }
        }
        // Pools left out are dropped with their idle connections once the requests
        // still using them finish.
        self.endpoints.store(Arc::new(endpoints));
    }
}

impl Pool {
    pub fn new() -> Self {
        Self {
            keepalive: Keepalive::new(&UpstreamKeepalive::default()),
            sweeping: OnceLock::new(),
            endpoints: ArcSwap::default(),
        }
    }

    /// Starts, once, the task that closes idle connections past
    /// `upstream-keepalive-timeout`, as nginx does: checkouts drop them too, but the
    /// connections a burst left to a pod that gets no more requests would otherwise stay
    /// open against it. Ends with the pool.
    pub fn sweep_in_background(pool: &Arc<Self>) {
        if pool.sweeping.set(()).is_err() {
            return;
        }
        let pool = Arc::downgrade(pool);
        tokio::spawn(async move {
            loop {
                let period = match pool.upgrade() {
                    Some(p) => (p.keepalive.load().timeout / 2).max(Duration::from_millis(50)),
                    None => return,
                };
                tokio::time::sleep(period).await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Closes the idle connections unused for longer than the keep-alive timeout.
    fn sweep(&self) {
        let timeout = self.keepalive.load().timeout;
        let now = Instant::now();
        for pool in self.endpoints.load().values() {
            for list in pool.idle().iter_mut() {
                list.retain(|c| now.duration_since(c.last_used) < timeout);
            }
            pool.other().retain(|c| {
                !c.lent.sender.is_closed()
                    && (c.lent.link.streams.load(Ordering::Relaxed) > 0
                        || now.duration_since(c.last_used) < timeout)
            });
        }
    }

    /// Sends `req` to `target` on a pooled or new connection, waiting at most the read
    /// timeout for the response head. `forwarded`: forwarding fields to write after the
    /// request's own. `sent_at`: when the caller began the send, the clock reading the
    /// first try's idle check and response deadline use. `on_slow_connect` is called if
    /// connecting takes long. Returns whether a new connection was made, so the caller
    /// can clear an ejection.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        target: &Target,
        dial: &Dial,
        timeouts: Timeouts,
        mut req: Outbound,
        forwarded: Option<&Forwarded>,
        sent_at: Instant,
        on_slow_connect: impl FnOnce(),
    ) -> Result<Sent, SendError> {
        // An endpoint the pool was not told about (a request on an older configuration)
        // is served on a connection of its own that is not kept.
        let pool = self.endpoints.load().get(target).cloned();
        let keep = self.keepalive.load();
        if *dial != Dial::Http1 {
            if let Some(f) = forwarded {
                // Only Portico's own client writes them; any other takes them in the map.
                f.clone().add_to(req.headers_mut());
            }
            // Boxed: only routes that ask for another protocol carry its state.
            return Box::pin(self.send_other(pool, target, dial, timeouts, req, on_slow_connect))
                .await;
        }
        if keep.connections == 0 && !req.headers().contains_key(http::header::CONNECTION) {
            // No connection is kept, so the pod is told so (an upgrade keeps its own).
            req.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        let mut on_slow_connect = Some(on_slow_connect);
        let mut stale_retry = true;
        let mut outgoing = Outgoing::Request(req);
        // One reading of the clock per try, for the idle check and the response deadline:
        // the caller's for the first.
        let mut now = sent_at;
        loop {
            let checked_out = match pool.as_deref() {
                Some(p) => p.checkout_h1(now, keep.timeout),
                None => None,
            };
            let (conn, fresh) = match checked_out {
                Some(mut conn) => {
                    conn.attach();
                    conn.timer.as_mut().reset(now + timeouts.read);
                    (conn, false)
                }
                None => {
                    let slow = on_slow_connect.take();
                    // Boxed: most requests reuse a connection, and every request's
                    // future would otherwise carry (and move) the connect's state.
                    match Box::pin(connect_http1(target, timeouts, slow)).await {
                        Ok(conn) => (conn, true),
                        Err(error) => {
                            let request = match outgoing {
                                Outgoing::Request(req) => Some(req),
                                Outgoing::Replay(r) => {
                                    r.into_request(REPLAY_MAX_HEADERS).map(Box::new)
                                }
                            };
                            return Err(SendError { error, request });
                        }
                    }
                }
            };
            let link = conn.link().clone();
            link.send_timeout
                .store(millis(timeouts.send), Ordering::Relaxed);
            // A reused connection may have been closed by the upstream just as we sent.
            // A bodiless idempotent request is then sent again, as it was written, on a
            // new connection.
            let may_replay = !fresh
                && stale_retry
                && matches!(&outgoing, Outgoing::Request(req) if replayable(req));
            let home = pool
                .as_ref()
                .filter(|_| keep.connections > 0)
                .map(|p| Home {
                    pool: p.clone(),
                    keep,
                });
            match conn.exchange(outgoing, forwarded, home).await {
                Ok(resp) => {
                    return Ok(Sent {
                        connection_names: resp.body().connection_names,
                        resp: resp.map(PodBody::H1),
                        fresh,
                        link,
                        stream: None,
                    })
                }
                Err(ExchangeError::Unanswered { error, replay }) if may_replay => {
                    tracing::debug!(endpoint = %target, %error, "reused connection failed; replaying");
                    stale_retry = false;
                    outgoing = Outgoing::Replay(replay);
                    now = Instant::now();
                }
                Err(e) => {
                    return Err(SendError {
                        error: exchange_error(target, timeouts, e),
                        request: None,
                    })
                }
            }
        }
    }
}

/// Fields a replayed request may carry when it is read back for another endpoint; it
/// was written by this proxy, so this is a bound, not a limit clients meet.
const REPLAY_MAX_HEADERS: usize = 1024;

/// What a failed exchange on Portico's own HTTP/1.1 client is, to the caller.
fn exchange_error(target: &Target, timeouts: Timeouts, e: ExchangeError) -> ProxyError {
    match e {
        ExchangeError::Body(e) => match e.downcast_ref::<RequestBodyError>() {
            Some(body) => body_error(body),
            None => ProxyError::BadRequest("request body could not be read"),
        },
        ExchangeError::ShortBody => ProxyError::BadRequest("request body shorter than stated"),
        ExchangeError::SendStalled => ProxyError::SendTimeout {
            target: target.clone(),
            timeout: timeouts.send,
        },
        ExchangeError::TimedOut => ProxyError::ResponseTimeout {
            target: target.clone(),
            timeout: timeouts.read,
        },
        ExchangeError::Pod { error, .. } | ExchangeError::Unanswered { error, .. } => {
            ProxyError::UpstreamHttp1 {
                target: target.clone(),
                source: error,
            }
        }
    }
}

/// The client's body failing on its way to a pod: the client's fault, or its timeout.
fn body_error(body: &RequestBodyError) -> ProxyError {
    match body {
        RequestBodyError::Timeout(timeout) => ProxyError::ClientBodyTimeout { timeout: *timeout },
        RequestBodyError::TooLarge(limit) => ProxyError::BodyTooLarge { limit: *limit },
        RequestBodyError::Client(_) => ProxyError::BadRequest("request body could not be read"),
    }
}

impl Pool {
    /// [`Pool::send`] for every dial but plain HTTP/1.1.
    async fn send_other(
        &self,
        pool: Option<Arc<EndpointPool>>,
        target: &Target,
        dial: &Dial,
        timeouts: Timeouts,
        req: Outbound,
        on_slow_connect: impl FnOnce(),
    ) -> Result<Sent, SendError> {
        let mut req = *req;
        let mut on_slow_connect = Some(on_slow_connect);
        let mut stale_retry = true;
        loop {
            let checked_out = pool.as_deref().and_then(|p| self.checkout_other(p, dial));
            let (lent, fresh) = match checked_out {
                Some(lent) => (lent, false),
                None => {
                    let slow = on_slow_connect.take();
                    // Boxed: HTTP/2 connections are shared, so most requests find one,
                    // and the handshakes' state would otherwise be moved with each.
                    match Box::pin(connect_other(target, dial, timeouts, slow)).await {
                        Ok((sender, link)) => {
                            let lent = Lent {
                                sender,
                                link,
                                opened: Instant::now(),
                                requests: 1,
                            };
                            if let (Sender::H2(h2), Some(p)) = (&lent.sender, &pool) {
                                // Shared from the start: the requests that come while this
                                // one waits for its answer ride along.
                                if !self.keepalive.load().spent(lent.requests, Duration::ZERO) {
                                    self.put_other(p, dial, lent.share(h2));
                                }
                            }
                            (lent, true)
                        }
                        Err(error) => {
                            return Err(SendError {
                                error,
                                request: Some(Box::new(req)),
                            })
                        }
                    }
                }
            };
            let Lent {
                sender,
                link,
                opened,
                requests,
            } = lent;
            link.send_timeout
                .store(millis(timeouts.send), Ordering::Relaxed);
            let replay = (!fresh && stale_retry && replayable(&req)).then(|| req.clone_head());
            let (sent, stream) = match sender {
                Sender::H1(mut h1) => {
                    let sent = tokio::time::timeout(timeouts.read, h1.try_send_request(req))
                        .await
                        .map_err(|_| TimedOut);
                    if let (Ok(Ok(_)), Some(p)) = (&sent, &pool) {
                        // Past its limits it is dropped here, and closes once this
                        // response is read.
                        if !self.keepalive.load().spent(requests, opened.elapsed()) {
                            let lent = Lent {
                                sender: Sender::H1(h1),
                                link: link.clone(),
                                opened,
                                requests,
                            };
                            self.put_other(p, dial, lent);
                        }
                    }
                    (sent, None)
                }
                Sender::H2(mut h2) => {
                    let stream = Stream::open(&link);
                    let req = for_h2(req, dial);
                    let sent = tokio::time::timeout(timeouts.read, h2.try_send_request(req))
                        .await
                        .map_err(|_| TimedOut);
                    (sent, Some(stream))
                }
            };
            match judge(sent, fresh, replay, &mut stale_retry, target, timeouts)? {
                Attempt::Answered(resp) => {
                    return Ok(Sent {
                        resp: resp.map(PodBody::Hyper),
                        fresh,
                        link,
                        stream,
                        connection_names: true,
                    })
                }
                Attempt::Again(back) => req = back,
            }
        }
    }

    /// A connection for `dial`: an idle HTTP/1.1 one taken out, or an HTTP/2 one with
    /// room for another stream shared (the least loaded, once each has its share). An
    /// HTTP/2 one given its last request by `upstream-keepalive-requests` or `-time`
    /// leaves the pool, and closes once its streams are done.
    fn checkout_other(&self, pool: &EndpointPool, dial: &Dial) -> Option<Lent> {
        let mut list = pool.other();
        let now = Instant::now();
        let keep = self.keepalive.load();
        list.retain(|c| !c.lent.sender.is_closed());
        let mut h2: Option<(usize, usize)> = None;
        let mut h2_conns = 0;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let conn = &list[i];
            if conn.dial != *dial {
                continue;
            }
            match &conn.lent.sender {
                Sender::H1(s) => {
                    if s.is_ready() {
                        let conn = list.swap_remove(i);
                        if now.duration_since(conn.last_used) < keep.timeout {
                            let mut lent = conn.lent;
                            lent.requests += 1;
                            return Some(lent);
                        }
                    }
                }
                Sender::H2(_) => {
                    h2_conns += 1;
                    let load = conn.lent.link.streams.load(Ordering::Relaxed);
                    if h2.is_none_or(|(_, least)| load < least) {
                        h2 = Some((i, load));
                    }
                }
            }
        }
        let (i, load) = h2?;
        if load >= H2_STREAMS_PER_CONN && h2_conns < H2_CONNS_PER_ENDPOINT {
            return None;
        }
        let conn = &mut list[i];
        let Sender::H2(h2) = &conn.lent.sender else {
            return None;
        };
        conn.last_used = now;
        conn.lent.requests += 1;
        let lent = conn.lent.share(h2);
        if keep.spent(lent.requests, now.duration_since(lent.opened)) {
            list.swap_remove(i);
        }
        Some(lent)
    }

    fn put_other(&self, pool: &EndpointPool, dial: &Dial, lent: Lent) {
        let mut list = pool.other();
        let max = self.keepalive.connections.load(Ordering::Relaxed);
        if list.len() >= max {
            list.retain(|c| !c.lent.sender.is_closed());
            if list.len() >= max {
                // Full of connections that are in use or shared: this one is not kept.
                return;
            }
        }
        list.push(Other {
            dial: dial.clone(),
            lent,
            last_used: Instant::now(),
        });
    }
}

impl Lent {
    /// Another share of this HTTP/2 connection (`h2` is its sender).
    fn share(&self, h2: &http2::SendRequest<UpstreamBody>) -> Lent {
        Lent {
            sender: Sender::H2(h2.clone()),
            link: self.link.clone(),
            opened: self.opened,
            requests: self.requests,
        }
    }
}

/// What one try on a connection came to.
enum Attempt {
    Answered(Response<Incoming>),
    /// Nothing reached the pod, or a bodiless idempotent request may be replayed: try
    /// again with this request on another connection.
    Again(Request<UpstreamBody>),
}

type Tried = Result<
    Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>>,
    TimedOut,
>;

/// The response head did not come before the read timeout.
struct TimedOut;

/// One try's outcome, the same for every kind of connection: a pooled connection that
/// closed before it took the request hands it back (tried again on another), a reused
/// one that died mid-exchange lets a replayable request be replayed once (`replay`),
/// anything else fails.
// The send's own error type, moved once per failed request: not worth a box.
#[allow(clippy::result_large_err)]
fn judge(
    sent: Tried,
    fresh: bool,
    replay: Option<Request<UpstreamBody>>,
    stale_retry: &mut bool,
    target: &Target,
    timeouts: Timeouts,
) -> Result<Attempt, SendError> {
    match sent {
        Ok(Ok(resp)) => Ok(Attempt::Answered(resp)),
        Ok(Err(mut e)) => match (e.take_message(), replay) {
            // Closed (or told to go away) before it took the request: nothing was sent.
            (Some(back), _) if !fresh => Ok(Attempt::Again(from_h2(back))),
            (None, Some(head))
                if e.error().is_incomplete_message()
                    || e.error().is_canceled()
                    || refused_by_goaway(e.error()) =>
            {
                tracing::debug!(endpoint = %target, error = %e.error(), "reused connection failed; replaying");
                *stale_retry = false;
                Ok(Attempt::Again(head))
            }
            _ => Err(SendError {
                error: classify(target, timeouts, e.into_error()),
                request: None,
            }),
        },
        Err(_) => Err(SendError {
            error: ProxyError::ResponseTimeout {
                target: target.clone(),
                timeout: timeouts.read,
            },
            request: None,
        }),
    }
}

/// An HTTP/2 stream the pod refused by a graceful GOAWAY: above the last stream it
/// took, so not processed (RFC 9113 §6.8), and safe to send again.
fn refused_by_goaway(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h2| {
            h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)
        })
}

/// An HTTP/2 request names its target in `:scheme` and `:authority`; the `Host` field
/// becomes the authority, as RFC 9113 asks of intermediaries.
fn for_h2(mut req: Request<UpstreamBody>, dial: &Dial) -> Request<UpstreamBody> {
    let scheme = match dial {
        Dial::Tls { .. } => http::uri::Scheme::HTTPS,
        _ => http::uri::Scheme::HTTP,
    };
    let host = req.headers_mut().remove(http::header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority =
        Some(authority.unwrap_or_else(|| http::uri::Authority::from_static("localhost")));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    match http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            if let Some(host) = host {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

/// A request handed back unsent by an HTTP/2 connection, made ready for any other.
fn from_h2(mut req: Request<UpstreamBody>) -> Request<UpstreamBody> {
    if req.version() != http::Version::HTTP_2 {
        return req;
    }
    if let Some(authority) = req.uri().authority().cloned() {
        if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    let origin = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_owned();
    if let Ok(uri) = origin.parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    req
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whose fault a failed exchange is: the client's body, a stalled upstream write, or the
/// upstream.
fn classify(target: &Target, timeouts: Timeouts, error: hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return body_error(body);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if WriteStalled::is(io) {
                return ProxyError::SendTimeout {
                    target: target.clone(),
                    timeout: timeouts.send,
                };
            }
        }
        source = e.source();
    }
    ProxyError::Upstream {
        target: target.clone(),
        source: error,
    }
}

/// A TCP connection to `target`, within the connect timeout; `on_slow` is called when
/// it takes long.
pub(super) async fn connect_tcp(
    target: &Target,
    timeouts: Timeouts,
    on_slow: Option<impl FnOnce()>,
) -> Result<TcpStream, ProxyError> {
    let attempt = async {
        match target {
            Target::Addr(addr) => TcpStream::connect(addr).await,
            // ExternalName: resolved on every connect, so DNS changes are followed.
            Target::Name { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "name has no address");
                for addr in tokio::net::lookup_host((&**host, *port)).await? {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => return Ok(stream),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    };
    let attempt = async {
        tokio::pin!(attempt);
        let slow = tokio::time::sleep(SLOW_CONNECT.min(timeouts.connect));
        tokio::pin!(slow);
        let mut on_slow = on_slow;
        loop {
            tokio::select! {
                done = &mut attempt => return done,
                _ = &mut slow, if on_slow.is_some() => {
                    if let Some(f) = on_slow.take() {
                        f();
                    }
                }
            }
        }
    };
    let stream = match tokio::time::timeout(timeouts.connect, attempt).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(ProxyError::Connect {
                target: target.clone(),
                source,
            })
        }
        Err(_) => {
            return Err(ProxyError::ConnectTimeout {
                target: target.clone(),
                timeout: timeouts.connect,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect_http1(
    target: &Target,
    timeouts: Timeouts,
    on_slow: Option<impl FnOnce()>,
) -> Result<Box<PodConn>, ProxyError> {
    let stream = connect_tcp(target, timeouts, on_slow).await?;
    let (link, send_timeout) = Link::new(timeouts);
    Ok(PodConn::new(stream, link, send_timeout, timeouts.read))
}

impl Link {
    pub(crate) fn new(timeouts: Timeouts) -> (Arc<Link>, Arc<AtomicU64>) {
        let send_timeout = Arc::new(AtomicU64::new(millis(timeouts.send)));
        let link = Arc::new(Link {
            send_timeout: send_timeout.clone(),
            task: OnceLock::new(),
            streams: Default::default(),
            socket: Mutex::new(None),
        });
        (link, send_timeout)
    }
}

async fn handshake_http1<IO>(
    target: &Target,
    link: &Link,
    io: IO,
) -> Result<SendRequest<UpstreamBody>, ProxyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ProxyError::Upstream {
            target: target.clone(),
            source,
        })?;
    let target = target.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(endpoint = %target, error = %e, "upstream connection ended");
        }
    });
    let _ = link.task.set(task.abort_handle());
    Ok(sender)
}

/// Pings an idle HTTP/2 connection this often, and closes it when a ping goes
/// unanswered for [`H2_PING_TIMEOUT`]: a pod that vanished without a FIN is noticed
/// before a request is sent to it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

async fn handshake_http2<IO>(
    target: &Target,
    link: &Link,
    io: IO,
) -> Result<http2::SendRequest<UpstreamBody>, ProxyError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ProxyError::Upstream {
            target: target.clone(),
            source,
        })?;
    let target = target.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %target, error = %e, "upstream connection ended");
        }
    });
    let _ = link.task.set(task.abort_handle());
    Ok(sender)
}

/// A new connection for every dial but plain HTTP/1.1.
async fn connect_other(
    target: &Target,
    dial: &Dial,
    timeouts: Timeouts,
    on_slow: Option<impl FnOnce()>,
) -> Result<(Sender, Arc<Link>), ProxyError> {
    let stream = connect_tcp(target, timeouts, on_slow).await?;
    let (link, send_timeout) = Link::new(timeouts);
    let io = WriteIdle::new(Socket::new(stream), WriteTimeout::Shared(send_timeout));
    let (tls, alpn, name) = match dial {
        Dial::Http1 => {
            return Ok((Sender::H1(handshake_http1(target, &link, io).await?), link));
        }
        Dial::H2c => {
            return Ok((Sender::H2(handshake_http2(target, &link, io).await?), link));
        }
        Dial::Tls { tls, alpn, name } => (tls, *alpn, name),
    };
    // Without a name to send, the pod's address stands in; rustls sends no SNI for an
    // address.
    let server_name = match (name, target) {
        (Some(name), _) => name.clone(),
        (None, Target::Addr(addr)) => ServerName::IpAddress(addr.ip().into()),
        (None, Target::Name { host, .. }) => {
            ServerName::try_from(host.to_string()).map_err(|_| ProxyError::UpstreamTls {
                target: target.clone(),
                reason: format!("{host:?} is not a name TLS can check"),
            })?
        }
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config(alpn));
    let handshake = connector.connect(server_name, io);
    let stream = match tokio::time::timeout(timeouts.connect, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // Names the setting (and so the Secret) the pod was checked against.
            return Err(ProxyError::UpstreamTls {
                target: target.clone(),
                reason: format!("{e} (proxy-ssl {})", tls.id()),
            });
        }
        Err(_) => {
            return Err(ProxyError::ConnectTimeout {
                target: target.clone(),
                timeout: timeouts.connect,
            })
        }
    };
    let h2 = match stream.get_ref().1.alpn_protocol() {
        Some(p) => p == b"h2",
        // The pod chose nothing: HTTP/2 by prior knowledge when nothing else was offered.
        None => alpn == Alpn::H2,
    };
    let sender = if h2 {
        Sender::H2(handshake_http2(target, &link, stream).await?)
    } else {
        Sender::H1(handshake_http1(target, &link, stream).await?)
    };
    Ok((sender, link))
}

/// A copy of `req` to send to another endpoint once `req` has been sent: its body must
/// be held whole (none, or buffered in memory; a streamed body is gone once sent, and a
/// spilled one shares its file). `None` when it cannot be copied, or is an upgrade.
pub(crate) fn resendable(req: &Request<UpstreamBody>) -> Option<Outbound> {
    if req.headers().contains_key(http::header::UPGRADE) {
        return None;
    }
    if req.body().is_end_stream() {
        return Some(Box::new(req.clone_head()));
    }
    let Either::Right(Either::Left(buffered)) = req.body() else {
        return None;
    };
    let body = buffered.try_clone()?;
    let mut copy = Request::new(Either::Right(Either::Left(Box::new(body))));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(Box::new(copy))
}

fn replayable(req: &Request<UpstreamBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && req.body().is_end_stream()
        && !req.headers().contains_key(http::header::UPGRADE)
}

trait CloneHead {
    fn clone_head(&self) -> Self;
}

impl CloneHead for Request<UpstreamBody> {
    /// The same head with an empty body; only used when the body is known empty.
    fn clone_head(&self) -> Self {
        let mut req = Request::new(Either::Right(Either::Right(Empty::new())));
        *req.method_mut() = self.method().clone();
        *req.uri_mut() = self.uri().clone();
        *req.version_mut() = self.version();
        *req.headers_mut() = self.headers().clone();
        req
    }
}
