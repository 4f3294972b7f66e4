//! HTTP/1.x client connections, served by Portico itself rather than a general-purpose
//! server: the request path is a proxy's, and owning it keeps an idle keep-alive
//! connection down to its socket and a small task (no buffers are held between
//! requests), decides message framing in one place (`head`), and lets a request body
//! stream straight off the socket to the upstream.
//!
//! A connection goes through: wait for bytes (keep-alive timer; the header timer for the
//! first request), read the head (header timer, size and field limits), hand the request
//! to the proxy while watching for the client leaving, write the response, then read
//! whatever the proxy left of the request body, so the next request starts clean.
//! HTTP/2 prior knowledge (h2c) is recognised by its preface and handed back.

pub(crate) mod client;
mod head;
pub(crate) mod park;
mod wire;
mod write;

pub use wire::{H1Body, H1BodyError};

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Method, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant, Sleep};

pub(crate) use self::head::PodFields;
use self::head::{Head, HeadError};
pub(crate) use self::wire::Wire;
use self::wire::{Continue, Decoder};
use self::write::Asked;
use super::body::ClientBody;
use super::errors::ProxyError;
use super::{ConnInfo, Proxy, ProxyBody, ProxyOptions, Shutdown};

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much of a request body left unread after its response is read and dropped to
/// keep the connection; a larger rest closes it instead.
const DRAIN_LIMIT: u64 = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long a closing connection with request bytes still coming is read from, so the
/// client sees the answer rather than a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// First read of a request head.
const HEAD_READ: usize = 4096;

/// Waits until a socket has bytes to read without reading them, so an idle connection
/// holds no buffer. Plain TCP has it; for other streams the read itself waits.
pub(crate) type ReadReady<IO> = fn(&IO, &mut Context<'_>) -> Poll<io::Result<()>>;

/// An upgraded client connection, for the tunnel: the socket with the bytes the client
/// sent after its request.
pub(crate) type Upgraded = Rewind<Box<dyn Io>>;

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Put in an upgrade request's extensions: gives the client's connection once the `101`
/// is written. (Extensions must be `Clone`; the one receiver is taken out.)
#[derive(Clone)]
pub(crate) struct ClientUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl ClientUpgrade {
    /// The client's connection; `None` when it closed (or was taken) before the upgrade.
    pub async fn connection(self) -> Option<Upgraded> {
        let rx = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        rx.await.ok()
    }
}

/// What to wait on to stop: fires once, then stays fired.
pub(crate) struct Stop<'a> {
    signal: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
    /// The shutdowns the signal waits for, read before it is polled again.
    shutdowns: [Option<&'a Shutdown>; 2],
    fired: bool,
    /// The signal was polled and waits, with this task's waker.
    waiting: bool,
}

impl<'a> Stop<'a> {
    /// `signal` resolves once one of `shutdowns` is triggered.
    pub fn new(
        signal: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
        shutdowns: [Option<&'a Shutdown>; 2],
    ) -> Self {
        Self {
            signal,
            shutdowns,
            fired: false,
            waiting: false,
        }
    }

    pub fn fired(&self) -> bool {
        self.fired
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Ready(());
        }
        // Once it waits, the signal is polled again only after a trigger: every poll of a
        // waiting signal takes its waiter list's lock, and a connection's task (whose
        // waker does not change) looks at it several times a request. The trigger sets
        // its flag before it wakes the waiters.
        if self.waiting && !self.shutdowns.iter().flatten().any(|s| s.is_triggered()) {
            return Poll::Pending;
        }
        let polled = self.signal.as_mut().poll(cx);
        self.fired = polled.is_ready();
        self.waiting = !self.fired;
        polled
    }
}

/// The limits one connection is served under that may differ between connections (the
/// rest are the proxy's options): the keep-alive time in force when it was accepted.
pub(crate) struct Limits {
    pub keep_alive: Option<Duration>,
}

/// How one exchange left the connection.
enum Next {
    KeepAlive,
    Close,
    Gone,
}

/// Serves HTTP/1 requests on the wire's socket until it closes; returns the connection
/// when the client spoke HTTP/2 instead, with what was read of it.
pub(crate) async fn serve<IO>(
    proxy: &Arc<Proxy>,
    wire: Arc<Wire<IO>>,
    stop: &mut Stop<'_>,
    begin: Begin,
) -> Served<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut first, start_deadline, park_after) = match begin {
        Begin::New { park_after } => (
            true,
            Instant::now() + proxy.opts.header_read_timeout,
            park_after,
        ),
        Begin::Resumed {
            deadline,
            park_after,
        } => (false, deadline, park_after),
    };
    // Only sockets whose readiness can be waited on without a read can park.
    let park_after = park_after.filter(|_| wire.ready.is_some());
    // One timer for the connection's life, moved rather than made anew: pushing a
    // deadline later is an atomic store, while a new timer costs a registration and a
    // removal in the runtime's wheel for every request.
    let mut timer = pin!(sleep_until(start_deadline));
    // While waiting for the next request with parking on, the timer is set to when the
    // connection parks, and this is its keep-alive deadline.
    let mut idle_deadline: Option<Instant> = None;
    loop {
        if wire.ready.is_some() && wire.lock().buf.is_empty() {
            let waited = poll_fn(|cx| {
                if stop.poll(cx).is_ready() {
                    return Poll::Ready(Waited::Closed);
                }
                let state = wire.lock();
                let (Some(ready), Some(io)) = (wire.ready, state.io.as_ref()) else {
                    return Poll::Ready(Waited::Closed);
                };
                if let Poll::Ready(r) = ready(io, cx) {
                    return Poll::Ready(if r.is_ok() {
                        Waited::Readable
                    } else {
                        Waited::Closed
                    });
                }
                drop(state);
                timer.as_mut().poll(cx).map(|()| Waited::Timer)
            })
            .await;
            match waited {
                Waited::Readable => {}
                Waited::Closed => return Served::Done,
                Waited::Timer => {
                    return match idle_deadline {
                        Some(deadline) if Instant::now() < deadline => {
                            let mut state = wire.lock();
                            if state.buf.is_empty() {
                                // Parked connections hold no buffer.
                                state.buf = Default::default();
                            }
                            drop(state);
                            Served::Idle(wire, deadline)
                        }
                        _ => Served::Done,
                    };
                }
            }
        }
        // Boxed, as the exchange is: an idle connection has no head to read.
        let head = Box::pin(read_head(
            &wire,
            &proxy.opts,
            first,
            timer.as_mut(),
            idle_deadline.take(),
            stop,
        ))
        .await;
        let head = match head {
            ReadHead::Head(head) => head,
            ReadHead::Closed => return Served::Done,
            ReadHead::H2 => {
                let info = wire.conn.info.clone();
                return match take(&wire) {
                    Some((io, read)) => Served::H2(Rewind::new(io, read), info),
                    None => Served::Done,
                };
            }
            ReadHead::Error(e) => {
                tracing::debug!(remote = %wire.conn.info.remote, error = %e, "bad request head");
                Box::pin(refuse(&wire, e)).await;
                return Served::Done;
            }
        };
        first = false;
        // Boxed: an idle connection keeps only this loop's small state, not that of an
        // exchange.
        match Box::pin(exchange(proxy, &wire, head, stop)).await {
            Next::KeepAlive if !stop.fired => {}
            Next::KeepAlive | Next::Close => {
                close(&wire).await;
                return Served::Done;
            }
            Next::Gone => return Served::Done,
        }
        let Some(keep_alive) = wire.limits.keep_alive else {
            close(&wire).await;
            return Served::Done;
        };
        let now = Instant::now();
        match park_after {
            Some(after) if after < keep_alive => {
                idle_deadline = Some(now + keep_alive);
                timer.as_mut().reset(now + after);
            }
            _ => timer.as_mut().reset(now + keep_alive),
        }
        if park_after.is_none() {
            let mut state = wire.lock();
            if state.buf.is_empty() {
                // Idle connections hold no buffer. One that parks gives its buffer up
                // then: until it does, the next request reuses it.
                state.buf = Default::default();
            }
        }
    }
}

/// How a connection starts being served by [`serve`].
#[derive(Clone, Copy)]
pub(crate) enum Begin {
    /// A new connection. `park_after`: how long it waits for a next request before it
    /// parks (see [`park`]); `None` keeps it in its task.
    New { park_after: Option<Duration> },
    /// A parked connection whose socket became readable, with its keep-alive deadline.
    Resumed {
        deadline: Instant,
        park_after: Option<Duration>,
    },
}

/// How [`serve`] left a connection.
pub(crate) enum Served<IO> {
    /// Closed, or to be dropped.
    Done,
    /// The client spoke HTTP/2: the socket with what was read of it.
    H2(Rewind<IO>, ConnInfo),
    /// Idle for the park time: park it until its keep-alive deadline.
    Idle(Arc<Wire<IO>>, Instant),
}

enum Waited {
    Readable,
    Closed,
    Timer,
}

enum ReadHead {
    Head(Head),
    Closed,
    H2,
    Error(HeadError),
}

/// Reads one request head. The first byte is waited for until the timer's deadline; from
/// then on the head must be complete within the header timeout (for a new connection,
/// within the same deadline, counted from the accept).
async fn read_head<IO>(
    wire: &Wire<IO>,
    opts: &ProxyOptions,
    first: bool,
    mut timer: Pin<&mut Sleep>,
    mut idle_deadline: Option<Instant>,
    stop: &mut Stop<'_>,
) -> ReadHead
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut scanned = 0;
    let mut started = false;
    // The header timer is set only for a head that does not arrive whole at once: most
    // do, and then the timer is not touched.
    let mut header_timer_set = first;
    poll_fn(|cx| {
        let mut state = wire.lock();
        loop {
            // Empty lines before a request line are skipped (RFC 9112 §2.2).
            let blank = state
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if blank > 0 {
                state.buf.advance(blank);
                scanned = 0;
            }
            if !state.buf.is_empty() && !started {
                started = true;
            }
            if first && state.buf.first() == Some(&b'P') {
                let n = state.buf.len().min(H2_PREFACE.len());
                if state.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return Poll::Ready(ReadHead::H2);
                    }
                    scanned = 0;
                }
            }
            if let Some(end) = head::head_end_from(&state.buf, scanned) {
                let bytes = state.buf.split_to(end).freeze();
                return Poll::Ready(match head::parse(bytes, opts.max_headers) {
                    Ok(head) => ReadHead::Head(head),
                    Err(e) => ReadHead::Error(e),
                });
            }
            scanned = state.buf.len();
            if state.buf.len() >= opts.max_header_bytes {
                return Poll::Ready(ReadHead::Error(HeadError::TooLarge));
            }
            let want = (opts.max_header_bytes - state.buf.len()).min(HEAD_READ);
            match state.poll_fill(cx, want) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(ReadHead::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        drop(state);
        if started && !header_timer_set {
            header_timer_set = true;
            timer
                .as_mut()
                .reset(Instant::now() + opts.header_read_timeout);
        }
        // A connection with no request in flight closes at once when asked to stop.
        if !started && stop.poll(cx).is_ready() {
            return Poll::Ready(ReadHead::Closed);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // Readiness without a byte (rare), with the timer set to the park time: wait
            // for the first byte until the keep-alive deadline instead.
            match idle_deadline.take() {
                Some(deadline) if !started && Instant::now() < deadline => {
                    timer.as_mut().reset(deadline);
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(ReadHead::Closed);
                    }
                }
                _ => return Poll::Ready(ReadHead::Closed),
            }
        }
        Poll::Pending
    })
    .await
}

/// One request and its response.
async fn exchange<IO>(
    proxy: &Arc<Proxy>,
    wire: &Arc<Wire<IO>>,
    head: Head,
    stop: &mut Stop<'_>,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = &wire.conn;
    let Head {
        mut parts,
        framing,
        refused,
        keep_alive,
        expect_continue,
        upgrade,
    } = head;
    let asked_version = parts.version;
    let is_head = parts.method == Method::HEAD;
    let body = {
        let mut state = wire.lock();
        state.generation = state.generation.wrapping_add(1);
        state.body = if refused.is_some() {
            Decoder::Done
        } else {
            Decoder::new(framing)
        };
        state.cont = if expect_continue && state.body != Decoder::Done {
            Continue::Due(0)
        } else {
            Continue::No
        };
        match (framing, state.body) {
            (Some(framing), body) if body != Decoder::Done => {
                let source: Arc<dyn wire::BodySource> = wire.clone();
                ClientBody::H1(H1Body::new(source, state.generation, framing))
            }
            _ => ClientBody::Empty,
        }
    };
    let upgraded = if upgrade && refused.is_none() {
        let (tx, rx) = oneshot::channel();
        parts
            .extensions
            .insert(ClientUpgrade(Arc::new(std::sync::Mutex::new(Some(rx)))));
        Some(tx)
    } else {
        None
    };
    let mut keep_alive = keep_alive && refused.is_none();
    let resp = match refused {
        Some(why) => proxy.reject(parts, conn, ProxyError::BadRequest(why)),
        None => {
            let mut handler = pin!(proxy.handle(parts, body, conn));
            let mut watching = true;
            let outcome = poll_fn(|cx| {
                if let Poll::Ready(resp) = handler.as_mut().poll(cx) {
                    return Poll::Ready(Some(resp));
                }
                if watching {
                    match client_gone(wire, cx) {
                        Poll::Ready(true) => return Poll::Ready(None),
                        Poll::Ready(false) => watching = false,
                        Poll::Pending => {}
                    }
                }
                if stop.poll(cx).is_ready() {
                    keep_alive = false;
                }
                Poll::Pending
            })
            .await;
            match outcome {
                Some(resp) => resp,
                None => {
                    tracing::debug!(remote = %conn.info.remote, "client left before its answer");
                    return Next::Gone;
                }
            }
        }
    };
    respond(wire, resp, asked_version, is_head, keep_alive, upgraded).await
}

/// Writes the response and settles the request body.
async fn respond<IO>(
    wire: &Arc<Wire<IO>>,
    resp: Response<ProxyBody>,
    version: http::Version,
    is_head: bool,
    keep_alive: bool,
    upgraded: Option<oneshot::Sender<Upgraded>>,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (parts, body) = resp.into_parts();
    let unanswered_continue = {
        let mut state = wire.lock();
        // Once the answer has begun, a client waiting to send its body need not.
        let due = state.cont == Continue::Due(0);
        state.cont = Continue::No;
        due
    };
    let asked = Asked {
        version,
        head: is_head,
        // A client still waiting for its go-ahead may or may not send its body now.
        keep_alive: keep_alive && !unanswered_continue,
    };
    let mut out = Vec::new();
    let (framing, keep_alive) = write::head(&parts, &body, &asked, &mut out);
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(tx) = upgraded {
            drop(body);
            if write::write_all(wire, &mut [io::IoSlice::new(&out)])
                .await
                .is_err()
            {
                return Next::Gone;
            }
            if let Some((io, read)) = take(wire) {
                let io: Box<dyn Io> = Box::new(io);
                let _ = tx.send(Rewind::new(io, read));
            }
            return Next::Gone;
        }
    }
    match write::send(wire, out, body, framing).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return Next::Gone,
    }
    let finished = {
        let mut state = wire.lock();
        let finished = state.body == Decoder::Done && !state.broken;
        // A body still held somewhere reads nothing more from this connection.
        state.generation = state.generation.wrapping_add(1);
        finished
    };
    if finished {
        return if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        };
    }
    if keep_alive && drain(wire).await {
        return Next::KeepAlive;
    }
    linger(wire).await;
    Next::Gone
}

/// Whether the client closed while its request is in flight. Only looked at once the
/// request body is read: reading on could take the next pipelined request's bytes, which
/// are kept, and then watching stops (`Ready(false)`).
fn client_gone<IO>(wire: &Wire<IO>, cx: &mut Context<'_>) -> Poll<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = wire.lock();
    if state.body != Decoder::Done {
        return Poll::Pending;
    }
    if !state.buf.is_empty() {
        return Poll::Ready(false);
    }
    match state.poll_fill(cx, 1) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(true),
        Poll::Ready(Ok(_)) => Poll::Ready(false),
        Poll::Pending => Poll::Pending,
    }
}

/// Reads and drops the rest of a request body the proxy did not read, so the connection
/// can serve the next request; `false` when it is too large or too slow.
async fn drain<IO>(wire: &Wire<IO>) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut dropped = 0u64;
    let drained = poll_fn(|cx| {
        let mut state = wire.lock();
        loop {
            match state.poll_body(cx) {
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Ready(Some(Ok(data))) => {
                    dropped += data.len() as u64;
                    if dropped > DRAIN_LIMIT {
                        return Poll::Ready(false);
                    }
                }
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    matches!(tokio::time::timeout(DRAIN_TIME, drained).await, Ok(true))
}

/// Closes after an answer while the client may still be sending: stop writing, then read
/// and drop what comes for a moment, so that closing does not reset the connection
/// before the client has read the answer.
async fn linger<IO>(wire: &Wire<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _ = poll_fn(|cx| wire.lock().poll_shutdown(cx)).await;
    let discard = poll_fn(|cx| {
        let mut state = wire.lock();
        loop {
            state.buf.clear();
            match state.poll_fill(cx, HEAD_READ) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}

/// Ends a connection whose last answer is complete.
async fn close<IO>(wire: &Wire<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _ = poll_fn(|cx| wire.lock().poll_shutdown(cx)).await;
}

/// Answers a head that could not be read, and closes.
async fn refuse<IO>(wire: &Wire<IO>, e: HeadError)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let status = e.status();
    let text = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = write::write_all(wire, &mut [io::IoSlice::new(text.as_bytes())]).await;
    linger(wire).await;
}

/// The socket and the bytes read from it but not consumed, to serve the connection
/// some other way; a request body still held reads nothing more.
fn take<IO>(wire: &Wire<IO>) -> Option<(IO, Bytes)> {
    let mut state = wire.lock();
    let io = state.io.take()?;
    let read = std::mem::take(&mut state.buf).freeze();
    Some((io, read))
}

/// What a connection reads from a client stream arriving in `chunks`: for each request,
/// its method and target and its body, or why reading stopped. For the fuzz target,
/// which checks that how a stream is split across reads changes nothing.
pub(crate) fn messages_of(chunks: &[&[u8]]) -> Vec<Result<(String, Vec<u8>), String>> {
    let mut state = wire::State::<tokio::io::Empty> {
        io: None,
        buf: Default::default(),
        body: Decoder::Done,
        generation: 0,
        cont: Continue::No,
        broken: false,
        parked: None,
    };
    let mut out = Vec::new();
    let mut chunks = chunks.iter();
    let mut current: Option<(String, Vec<u8>)> = None;
    loop {
        if let Some((_, body)) = &mut current {
            match state.step() {
                Ok(wire::Step::Data(data)) => {
                    body.extend_from_slice(&data);
                    continue;
                }
                Ok(wire::Step::End) => {
                    out.extend(current.take().map(Ok));
                    continue;
                }
                Ok(wire::Step::NeedMore) => {}
                Err(e) => {
                    out.push(Err(e.to_owned()));
                    return out;
                }
            }
        } else {
            let blank = state
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            state.buf.advance(blank);
            if let Some(end) = head::head_end_from(&state.buf, 0) {
                let bytes = state.buf.split_to(end).freeze();
                match head::parse(bytes, 100) {
                    Ok(h) if h.refused.is_none() => {
                        state.body = Decoder::new(h.framing);
                        current = Some((format!("{} {}", h.parts.method, h.parts.uri), Vec::new()));
                    }
                    Ok(h) => {
                        out.push(Err(h.refused.unwrap_or_default().to_owned()));
                        return out;
                    }
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
                continue;
            }
        }
        match chunks.next() {
            Some(chunk) => state.buf.extend_from_slice(chunk),
            None => return out,
        }
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(io: IO, read: Bytes) -> Self {
        Self { read, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
