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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use foldhash::HashMap;
use http::Method;
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::body::{RequestBody, RequestBodyError};
use super::buffer::BufferedBody;
use super::errors::ProxyError;
use super::idle_io::{WriteIdle, WriteStalled, WriteTimeout};
use crate::balance::Target;
use crate::config::{Config, Runtime, Timeouts};

/// What goes upstream: the client's body, streamed or read whole first, or nothing (a
/// replayed request). The buffered one is boxed: it is the largest and the rarest, and
/// the request carrying this type moves through every layer of the send.
pub(crate) type UpstreamBody = Either<RequestBody, Either<Box<BufferedBody>, Empty<Bytes>>>;

/// A pooled connection: idle, or still relaying the response it was last used for (it
/// becomes ready by itself once that body is done, with no task watching it).
struct Idle {
    sender: SendRequest<UpstreamBody>,
    link: Arc<Link>,
    last_used: Instant,
}

/// One upstream connection as the requests on it see it: the write-stall timeout its
/// socket applies (each request sets its route's), and a way to close it from outside.
pub(crate) struct Link {
    send_timeout: Arc<AtomicU64>,
    task: OnceLock<AbortHandle>,
}

impl Link {
    /// Closes the connection (its task ends and the socket with it): the pod learns at
    /// once, and a response still streaming from it ends with an error.
    pub fn close(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// Pool tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Pooled connections unused for longer than this are closed rather than reused.
    pub idle_timeout: Duration,
    /// Idle connections kept per backend endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_idle_per_endpoint: 64,
        }
    }
}

/// A failed send. `request` is handed back when nothing was sent, so the caller may try
/// another endpoint.
pub(crate) struct SendError {
    pub error: ProxyError,
    pub request: Option<Request<UpstreamBody>>,
}

/// A connect taking longer than this marks its endpoint as suspect (see
/// [`crate::balance::Registry::connect_slow`]); pods answer a connect in well under it.
const SLOW_CONNECT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct EndpointPool {
    idle: Mutex<Vec<Idle>>,
}

impl EndpointPool {
    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Pool {
    opts: PoolOptions,
    endpoints: ArcSwap<HashMap<Target, Arc<EndpointPool>>>,
}

impl Runtime for Pool {
    fn apply(&self, next: &Config) {
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
    pub fn new(opts: PoolOptions) -> Self {
        Self {
            opts,
            endpoints: ArcSwap::default(),
        }
    }

    fn checkout(&self, pool: &EndpointPool) -> Option<(SendRequest<UpstreamBody>, Arc<Link>)> {
        let mut list = pool.idle();
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let conn = &list[i];
            if conn.sender.is_closed() {
                list.swap_remove(i);
            } else if conn.sender.is_ready() {
                let conn = list.swap_remove(i);
                if now.duration_since(conn.last_used) < self.opts.idle_timeout {
                    return Some((conn.sender, conn.link));
                }
            }
        }
        None
    }

    /// Keeps `sender` for reuse as soon as it is handed its request's response, so no task
    /// has to wait for the body to finish. Busy connections are kept whatever their
    /// number (they are in use anyway); idle ones beyond the limit are closed.
    fn put(&self, pool: &EndpointPool, sender: SendRequest<UpstreamBody>, link: Arc<Link>) {
        let mut list = pool.idle();
        let max = self.opts.max_idle_per_endpoint;
        if list.len() >= max {
            list.retain(|c| !c.sender.is_closed());
            // After a burst many connections turn idle at once: close the surplus, from
            // the front of the list, where the longer-pooled ones mostly are.
            let mut surplus = list
                .iter()
                .filter(|c| c.sender.is_ready())
                .count()
                .saturating_sub(max.saturating_sub(1));
            list.retain(|c| {
                let close = surplus > 0 && c.sender.is_ready();
                surplus -= usize::from(close);
                !close
            });
        }
        list.push(Idle {
            sender,
            link,
            last_used: Instant::now(),
        });
    }

    /// Sends `req` to `target` on a pooled or new connection, waiting at most the read
    /// timeout for the response head. `on_slow_connect` is called if connecting takes
    /// long. Returns whether a new connection was made, so the caller can clear an
    /// ejection.
    pub async fn send(
        &self,
        target: &Target,
        timeouts: Timeouts,
        mut req: Request<UpstreamBody>,
        on_slow_connect: impl FnOnce(),
    ) -> Result<(Response<Incoming>, bool, Arc<Link>), SendError> {
        // An endpoint the pool was not told about (a request on an older configuration)
        // is served on a connection of its own that is not kept.
        let pool = self.endpoints.load().get(target).cloned();
        let mut on_slow_connect = Some(on_slow_connect);
        let mut stale_retry = true;
        loop {
            let checked_out = pool.as_deref().and_then(|p| self.checkout(p));
            let (mut sender, link, fresh) = match checked_out {
                Some((sender, link)) => (sender, link, false),
                None => {
                    let slow = on_slow_connect.take();
                    // Boxed: most requests reuse a connection, and every request's
                    // future would otherwise carry (and move) the connect's state.
                    match Box::pin(connect(target, timeouts, slow)).await {
                        Ok((sender, link)) => (sender, link, true),
                        Err(error) => {
                            return Err(SendError {
                                error,
                                request: Some(req),
                            })
                        }
                    }
                }
            };
            link.send_timeout
                .store(millis(timeouts.send), Ordering::Relaxed);
            // A reused connection may have been closed by the upstream just as we sent.
            // A bodiless idempotent request can then be replayed on a new connection.
            let replay = (!fresh && stale_retry && replayable(&req)).then(|| req.clone_head());
            let sent = tokio::time::timeout(timeouts.read, sender.try_send_request(req)).await;
            match sent {
                Ok(Ok(resp)) => {
                    if let Some(pool) = &pool {
                        self.put(pool, sender, link.clone());
                    }
                    return Ok((resp, fresh, link));
                }
                Ok(Err(mut e)) => match (e.take_message(), replay) {
                    // The pooled connection closed before it took the request: nothing
                    // was sent, try another.
                    (Some(back), _) if !fresh => req = back,
                    (None, Some(head))
                        if e.error().is_incomplete_message() || e.error().is_canceled() =>
                    {
                        tracing::debug!(endpoint = %target, error = %e.error(), "reused connection failed; replaying");
                        stale_retry = false;
                        req = head;
                    }
                    _ => {
                        return Err(SendError {
                            error: classify(target, timeouts, e.into_error()),
                            request: None,
                        })
                    }
                },
                Err(_) => {
                    return Err(SendError {
                        error: ProxyError::ResponseTimeout {
                            target: target.clone(),
                            timeout: timeouts.read,
                        },
                        request: None,
                    })
                }
            }
        }
    }
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
            return match body {
                RequestBodyError::Timeout(timeout) => {
                    ProxyError::ClientBodyTimeout { timeout: *timeout }
                }
                RequestBodyError::TooLarge(limit) => ProxyError::BodyTooLarge { limit: *limit },
                RequestBodyError::Client(_) => {
                    ProxyError::BadRequest("request body could not be read")
                }
            };
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

async fn connect(
    target: &Target,
    timeouts: Timeouts,
    on_slow: Option<impl FnOnce()>,
) -> Result<(SendRequest<UpstreamBody>, Arc<Link>), ProxyError> {
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
    let send_timeout = Arc::new(AtomicU64::new(millis(timeouts.send)));
    let io = WriteIdle::new(stream, WriteTimeout::Shared(send_timeout.clone()));
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
    let link = Arc::new(Link {
        send_timeout,
        task: OnceLock::new(),
    });
    let _ = link.task.set(task.abort_handle());
    Ok((sender, link))
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
