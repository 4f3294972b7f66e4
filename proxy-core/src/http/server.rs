//! Accepting and serving client connections, and stopping them gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::activity::{Activity, IdleWatch};
use super::body::{read_pod_fields, ClientBody};
use super::h1;
use super::h1::park::{Lot, Parkable, Parked};
use super::idle_io::{WriteIdle, WriteTimeout};
use super::proxy_protocol::{self, ProxyHeader, ProxyProtocolError};
use super::shard;
use super::socket::Socket;
use super::stall::StallWatch;
use super::upstream;
use super::{Conn, ConnInfo, ConnPermit, Proxied, Proxy, Refusal, Scheme};

/// How long an idle connection being closed may take to say goodbye.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest wait for a PROXY protocol header; a load balancer sends it at once.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops listeners and drains connections. Clones share one state.
///
/// On SIGTERM: [`Shutdown::drain`] stops every accept loop watching the handle, asks each
/// connection to finish its in-flight requests and close, and waits for them (and for
/// open WebSocket tunnels) up to a deadline.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once; `stop` wakes whoever waits. (Not a watch channel: every connection waits
    /// on this, and a `Notified` is a third of a watch receiver's wait.)
    triggered: AtomicBool,
    stop: Notify,
    active: watch::Sender<usize>,
}

/// Counts one connection or tunnel as in flight until dropped.
#[derive(Debug)]
pub struct ShutdownGuard {
    inner: Arc<Inner>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.inner.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                stop: Notify::new(),
                active: watch::Sender::new(0),
            }),
        }
    }

    /// Stop accepting and ask connections to close once idle.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        self.inner.stop.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn triggered(&self) {
        // Created before the check, so a trigger in between still wakes it.
        let stopped = self.inner.stop.notified();
        if self.is_triggered() {
            return;
        }
        stopped.await
    }

    /// Connections and tunnels still open.
    pub fn active(&self) -> usize {
        *self.inner.active.borrow()
    }

    /// Registers one more thing to wait for; it counts until the guard drops. The TLS
    /// listener uses this for connections it serves through `serve_connection`.
    pub fn track(&self) -> ShutdownGuard {
        self.inner.active.send_modify(|n| *n += 1);
        ShutdownGuard {
            inner: self.inner.clone(),
        }
    }

    /// Triggers, then waits until nothing is active or `deadline` passes. Returns whether
    /// everything finished in time.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.trigger();
        let mut rx = self.inner.active.subscribe();
        let drained = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        drained
    }
}

impl Proxy {
    /// Serves one client connection (plain or already TLS-terminated) until it closes or
    /// the proxy's [`Shutdown`] drains it.
    pub async fn serve_connection<IO>(self: &Arc<Self>, io: IO, info: ConnInfo)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve(io, info, None, None, None).await
    }

    /// Accepts plain-HTTP connections until `shutdown` (or the proxy's own handle) is
    /// triggered. Connections already accepted keep being served until drained.
    pub async fn serve_listener(
        self: &Arc<Self>,
        incoming: impl Into<shard::Incoming>,
        shutdown: Shutdown,
    ) {
        let mut incoming = incoming.into();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.triggered() => break,
                _ = self.shutdown.triggered() => break,
                accepted = incoming.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = match stream.local_addr() {
                Ok(local) => local,
                Err(_) => continue,
            };
            let Some(permit) = self.admit(remote) else {
                continue;
            };
            let plain = move |proxied: Option<Box<Proxied>>| ConnInfo {
                remote,
                local,
                scheme: Scheme::Http,
                sni: None,
                alpn_h2: false,
                proxied,
                client_cert: None,
            };
            if !self.config.load().settings.proxy_protocol {
                // Set up here, so the task holds only what serving needs.
                let Some(permit) = self.admit_client(permit, remote) else {
                    continue;
                };
                // Spawned as it is: wrapping it in another future would hold it twice.
                let info = plain(None);
                tokio::spawn(self.serve(
                    Socket::new(stream),
                    info,
                    Some(&shutdown),
                    Some(tcp_ready),
                    Some(permit),
                ));
                continue;
            }
            let proxy = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Some((stream, proxied)) = proxy.proxy_protocol(stream, remote).await else {
                    return;
                };
                let client = proxied.as_ref().map_or(remote, |p| p.source);
                let Some(permit) = proxy.admit_client(permit, client) else {
                    return;
                };
                let info = plain(proxied);
                // The permit goes with the connection, which may outlive this task parked.
                proxy
                    .serve(
                        Socket::new(stream),
                        info,
                        Some(&shutdown),
                        Some(tcp_ready),
                        Some(permit),
                    )
                    .await
            });
        }
        tracing::info!("listener stopped accepting");
    }

    /// Takes a slot for a new client connection, or says why not (the caller closes it).
    /// Hold the permit for as long as the connection is served.
    pub fn admit(&self, remote: SocketAddr) -> Option<ConnPermit> {
        let admitted = self.limits.admit();
        self.refused(remote, admitted)
    }

    /// Counts the connection against its client's cap, once the client is known: the
    /// TCP peer, or the client a PROXY protocol header named, so that every client
    /// behind one load balancer has a cap of its own. `None` when over it.
    pub fn admit_client(&self, mut permit: ConnPermit, client: SocketAddr) -> Option<ConnPermit> {
        let admitted = self
            .limits
            .admit_client(&mut permit, client.ip())
            .map(|()| permit);
        self.refused(client, admitted)
    }

    fn refused(
        &self,
        who: SocketAddr,
        admitted: Result<ConnPermit, Refusal>,
    ) -> Option<ConnPermit> {
        match admitted {
            Ok(permit) => Some(permit),
            Err(why) => {
                tracing::debug!(client = %who, cap = why.as_str(), "connection refused");
                if let Some(observer) = &self.opts.observer {
                    observer.on_refused(why);
                }
                None
            }
        }
    }

    /// With `use-proxy-protocol` on, reads the PROXY header (v1 or v2) a load balancer
    /// sends first, before any TLS or HTTP: `None` when the connection must be closed
    /// (no valid header in time, as nginx closes it without an answer), else the stream
    /// and the client the header named. A header from a peer outside the trusted ranges
    /// is read but not believed, as nginx's realip module does.
    pub async fn proxy_protocol(
        &self,
        mut stream: TcpStream,
        remote: SocketAddr,
    ) -> Option<(TcpStream, Option<Box<Proxied>>)> {
        let config = self.config.load();
        if !config.settings.proxy_protocol {
            return Some((stream, None));
        }
        let timeout = self.opts.header_read_timeout.min(PROXY_HEADER_TIMEOUT);
        match proxy_protocol::read_header(&mut stream, timeout).await {
            Ok(ProxyHeader::Proxied {
                source,
                destination,
            }) => {
                let trusted = config.settings.client.trusts(remote.ip());
                let proxied = Box::new(Proxied {
                    source,
                    destination,
                });
                Some((stream, trusted.then_some(proxied)))
            }
            Ok(ProxyHeader::Local) => Some((stream, None)),
            Err(ProxyProtocolError::UnexpectedEof { received: 0 }) => None,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "closing a connection without a valid PROXY protocol header");
                None
            }
        }
    }

    /// Sets a connection up and returns the future that serves it. Set up before the
    /// future, so that the future (and the task it becomes) holds only what serving
    /// needs: a served idle connection costs its socket and little more.
    fn serve<IO>(
        self: &Arc<Self>,
        io: IO,
        info: ConnInfo,
        extra: Option<&Shutdown>,
        ready: Option<h1::ReadReady<WriteIdle<IO>>>,
        permit: Option<ConnPermit>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        upstream::Pool::sweep_in_background(&self.pool);
        let guard = self.shutdown.track();
        // The listener's handle is usually the proxy's own: wait on it once.
        let extra = extra
            .filter(|e| !Arc::ptr_eq(&e.inner, &self.shutdown.inner))
            .cloned();
        let extra_guard = extra.as_ref().map(Shutdown::track);
        let (keep_alive, send_timeout) = {
            let config = self.config.load();
            (config.settings.keep_alive, config.settings.send_timeout)
        };
        // A client that stops reading its answers is cut off, freeing the pod's
        // connection too.
        let io = WriteIdle::new(io, WriteTimeout::Fixed(send_timeout));
        // HTTP/2 state is boxed so that the HTTP/1 connections, the many idle ones
        // included, do not carry room for it.
        let start = if info.alpn_h2 {
            Start::H2(Box::new((io, info, (keep_alive, send_timeout))))
        } else {
            let limits = h1::Limits {
                keep_alive: self.opts.keep_alive.then_some(keep_alive),
            };
            Start::H1(h1::Wire::new(io, Conn::new(info), limits, ready))
        };
        let proxy = self.clone();
        async move {
            // Held by the task as it was captured, for as long as it runs: moved into a
            // local they would take room twice in every connection's task.
            let _ = (&guard, &extra_guard, &permit);
            let mut stop = pin!(stop_signal(&proxy.shutdown, extra.as_ref()));
            let (io, info, timers) = match start {
                Start::H2(h2) => *h2,
                Start::H1(wire) => {
                    // A listener with a stop of its own is rare: its connections stay in
                    // their tasks, where that stop is watched.
                    let park_after = proxy.opts.park_idle_after.filter(|_| extra.is_none());
                    let (served, stopped) = {
                        let mut signal =
                            h1::Stop::new(stop.as_mut(), [Some(&proxy.shutdown), extra.as_ref()]);
                        let begin = h1::Begin::New { park_after };
                        let served = h1::serve(&proxy, wire, &mut signal, begin).await;
                        (served, signal.fired())
                    };
                    match served {
                        h1::Served::Idle(wire, deadline) => {
                            proxy.park(wire, guard, permit, deadline);
                            return;
                        }
                        h1::Served::H2(io, info) if !stopped => {
                            // Read now rather than kept from the accept: an HTTP/1 task
                            // carries no room for them.
                            let timers = {
                                let config = proxy.config.load();
                                (config.settings.keep_alive, config.settings.send_timeout)
                            };
                            let conn = Arc::new(Conn::h2(info));
                            return Box::pin(proxy.serve_h2(io, &conn, timers, stop)).await;
                        }
                        _ => return,
                    }
                }
            };
            let conn = Arc::new(Conn::h2(info));
            Box::pin(proxy.serve_h2(io, &conn, timers, stop)).await
        }
    }

    /// Serves an HTTP/2 connection (ALPN `h2`, or h2c after its preface) with hyper.
    async fn serve_h2<IO, S>(
        self: &Arc<Self>,
        io: IO,
        conn: &Arc<Conn>,
        (keep_alive, send_timeout): (Duration, Duration),
        stop: Pin<&mut S>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Future<Output = ()>,
    {
        let activity = Activity::new();
        let busy = activity.clone();
        let proxy = self.clone();
        let conn_info = conn.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let info = conn_info.clone();
            let active = busy.begin();
            async move {
                let (parts, body) = req.into_parts();
                let mut resp = proxy
                    .handle(Box::new(parts), ClientBody::H2(body), &info)
                    .await;
                // hyper writes the map alone.
                read_pod_fields(&mut resp);
                resp.body_mut().hold(active);
                Ok::<_, Infallible>(resp)
            }
        });
        let mut conn_fut = pin!(self.builder_h2.serve_connection(TokioIo::new(io), service));
        let mut stop = stop;
        let mut idle = pin!(IdleWatch::new(activity, keep_alive));
        let stalls = conn.stalls.clone().unwrap_or_default();
        let mut stall_watch = pin!(StallWatch::new(stalls, send_timeout));
        let result = loop {
            tokio::select! {
                result = conn_fut.as_mut() => break result,
                _ = &mut stop => {
                    conn_fut.as_mut().graceful_shutdown();
                    break conn_fut.await;
                }
                _ = &mut stall_watch => {}
                _ = &mut idle => {
                    tracing::debug!(remote = %conn.info.remote, "idle connection closed");
                    conn_fut.as_mut().graceful_shutdown();
                    // HTTP/2's goodbye waits on the client's PING answer; one that does
                    // not answer is dropped.
                    match tokio::time::timeout(IDLE_CLOSE_GRACE, conn_fut.as_mut()).await {
                        Ok(result) => break result,
                        Err(_) => return,
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(remote = %conn.info.remote, error = %e, "client connection ended with an error");
        }
    }
}

impl Proxy {
    /// Idle HTTP/1 connections parked without a task right now.
    pub fn parked_connections(&self) -> usize {
        self.lots().iter().flatten().map(|lot| lot.len()).sum()
    }

    /// Parks an idle HTTP/1 connection without a task (see [`h1::park`]).
    fn park<IO>(
        self: &Arc<Self>,
        wire: Arc<h1::Wire<WriteIdle<IO>>>,
        guard: ShutdownGuard,
        permit: Option<ConnPermit>,
        deadline: tokio::time::Instant,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let lot = {
            let mut lots = self.lots();
            shard::slot(&mut lots, shard::current())
                .get_or_insert_with(|| Lot::start(self, self.shutdown.clone()))
                .clone()
        };
        lot.park(wire, guard, permit, deadline);
    }

    fn lots(&self) -> std::sync::MutexGuard<'_, Vec<Option<Arc<Lot>>>> {
        self.lots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<IO> Parkable for h1::Wire<WriteIdle<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn unpark(&self) -> Option<Box<Parked>> {
        self.lock().parked.take()
    }

    fn resume(self: Arc<Self>, proxy: Arc<Proxy>, parked: Box<Parked>) {
        tokio::spawn(serve_resumed(proxy, self, parked));
    }

    fn close(&self) {
        drop(self.lock().io.take());
    }
}

/// Serves a parked connection whose socket became readable, in a task of its own again.
async fn serve_resumed<IO>(
    proxy: Arc<Proxy>,
    wire: Arc<h1::Wire<WriteIdle<IO>>>,
    parked: Box<Parked>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (guard, permit, deadline) = parked.into_held();
    // Held, as by the task that parked it.
    let _ = (&guard, &permit);
    let mut stop = pin!(proxy.shutdown.triggered());
    let served = {
        let mut signal = h1::Stop::new(stop.as_mut(), [Some(&proxy.shutdown), None]);
        let begin = h1::Begin::Resumed {
            deadline,
            park_after: proxy.opts.park_idle_after,
        };
        h1::serve(&proxy, wire, &mut signal, begin).await
    };
    if let h1::Served::Idle(wire, deadline) = served {
        proxy.park(wire, guard, permit, deadline);
    }
}

/// Readiness of a plain TCP client socket, for idle HTTP/1 connections.
fn tcp_ready(io: &WriteIdle<Socket>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
    io.get_ref().poll_read_ready(cx)
}

/// How a connection starts being served.
enum Start<IO> {
    H1(Arc<h1::Wire<WriteIdle<IO>>>),
    H2(Box<(WriteIdle<IO>, ConnInfo, (Duration, Duration))>),
}

async fn stop_signal(own: &Shutdown, extra: Option<&Shutdown>) {
    match extra {
        // Rare (a listener with a handle of its own): boxed, so every connection does
        // not carry room for two waits.
        Some(extra) => {
            Box::pin(async {
                tokio::select! {
                    _ = own.triggered() => {},
                    _ = extra.triggered() => {},
                }
            })
            .await
        }
        None => own.triggered().await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every client connection holds one wire, parked or not: with the Arc's two
    /// counts it stays in mimalloc's 448-byte size class (the next is 512).
    #[test]
    fn a_plain_connection_wire_fits_its_allocation_class() {
        let size = std::mem::size_of::<h1::Wire<WriteIdle<Socket>>>();
        assert!(size + 16 <= 448, "a wire takes {size} bytes");
    }
}
