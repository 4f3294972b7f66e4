//! Upstream connections: connect (with its own timeout, so a refused connect is known to
//! have sent nothing), HTTP/1.1 handshake, and a pool keyed by endpoint that outlives
//! config swaps.
//!
//! The pool is keyed by the endpoint alone, not by the backend that led there: an
//! HTTP/1.1 connection to a pod carries no trace of the Service or port name that chose
//! it, so backends that share pods (several Services over one Deployment, or one Service
//! named by port number and by port name) share their idle connections too.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashSet};
use http::Method;
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::errors::ProxyError;
use crate::balance::Target;
use crate::config::{Backend, BackendKind, Config, Timeouts};

type Key = Target;

/// What goes upstream: the client's body, streamed, or nothing (a replayed request).
pub(crate) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// A pooled connection: idle, or still relaying the response it was last used for (it
/// becomes ready by itself once that body is done, with no task watching it).
struct Idle {
    sender: SendRequest<UpstreamBody>,
    last_used: Instant,
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
    /// The failure was connecting: the endpoint should be ejected.
    pub connect: bool,
}

pub(crate) struct Pool {
    opts: PoolOptions,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    pruned_for: AtomicUsize,
}

impl Pool {
    pub fn new(opts: PoolOptions) -> Self {
        Self {
            opts,
            idle: Mutex::new(HashMap::default()),
            pruned_for: AtomicUsize::new(0),
        }
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes pooled connections to endpoints no backend of `config` has any more.
    pub fn prune(&self, config: &Arc<Config>) {
        let ptr = Arc::as_ptr(config) as usize;
        if self.pruned_for.swap(ptr, Ordering::AcqRel) == ptr {
            return;
        }
        let mut live: HashSet<Target> = HashSet::default();
        for backend in config.backends.values() {
            match &backend.kind {
                BackendKind::Endpoints(eps) => {
                    live.extend(eps.iter().map(|e| Target::Addr(e.addr)));
                }
                BackendKind::ExternalName { host, port } => {
                    live.insert(Target::Name {
                        host: host.clone(),
                        port: *port,
                    });
                }
            }
        }
        self.idle().retain(|target, _| live.contains(target));
    }

    fn checkout(&self, key: &Key) -> Option<SendRequest<UpstreamBody>> {
        let mut map = self.idle();
        let list = map.get_mut(key)?;
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
                    return Some(conn.sender);
                }
            }
        }
        None
    }

    /// Keeps `sender` for reuse as soon as it is handed its request's response, so no task
    /// has to wait for the body to finish. Busy connections are kept whatever their
    /// number (they are in use anyway); idle ones beyond the limit are closed.
    fn put(&self, key: Key, sender: SendRequest<UpstreamBody>) {
        let mut map = self.idle();
        let list = map.entry(key).or_default();
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
            last_used: Instant::now(),
        });
    }

    /// Sends `req` to `target` on a pooled or new connection, waiting at most the
    /// backend's response timeout for the response head. Returns whether a new connection
    /// was made, so the caller can clear an ejection.
    pub async fn send(
        self: &Arc<Self>,
        backend: &Backend,
        target: &Target,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, bool), SendError> {
        let key = target.clone();
        let timeouts = backend.timeouts;
        let mut stale_retry = true;
        loop {
            let (mut sender, fresh) = match self.checkout(&key) {
                Some(sender) => (sender, false),
                None => match connect(target, timeouts).await {
                    Ok(sender) => (sender, true),
                    Err(error) => {
                        return Err(SendError {
                            error,
                            request: Some(req),
                            connect: true,
                        })
                    }
                },
            };
            // A reused connection may have been closed by the upstream just as we sent.
            // A bodiless idempotent request can then be replayed on a new connection.
            let replay = (!fresh && stale_retry && replayable(&req)).then(|| req.clone_head());
            let sent = tokio::time::timeout(timeouts.response, sender.try_send_request(req)).await;
            match sent {
                Ok(Ok(resp)) => {
                    self.put(key, sender);
                    return Ok((resp, fresh));
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
                            error: ProxyError::Upstream {
                                target: target.clone(),
                                source: e.into_error(),
                            },
                            request: None,
                            connect: false,
                        })
                    }
                },
                Err(_) => {
                    return Err(SendError {
                        error: ProxyError::ResponseTimeout {
                            target: target.clone(),
                            timeout: timeouts.response,
                        },
                        request: None,
                        connect: false,
                    })
                }
            }
        }
    }
}

async fn connect(
    target: &Target,
    timeouts: Timeouts,
) -> Result<SendRequest<UpstreamBody>, ProxyError> {
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
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Upstream {
            target: target.clone(),
            source,
        })?;
    let target = target.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(endpoint = %target, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
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
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method().clone();
        *req.uri_mut() = self.uri().clone();
        *req.version_mut() = self.version();
        *req.headers_mut() = self.headers().clone();
        req
    }
}
