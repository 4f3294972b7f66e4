//! Portico's HTTP/1.1 client towards pods over plain TCP: the request is written and
//! the response read by the request's own future, and the response body reads itself
//! off the socket wherever it is polled. No connection task, no channel between the two,
//! and a connection goes back to its pool the moment its response has been read whole,
//! which for a small answer is before the response head leaves this module.
//!
//! Framing is as strict as on the client side: a response with both `Content-Length`
//! and `Transfer-Encoding`, or with lengths that disagree, is refused (502, as nginx
//! refuses it), and a chunked body that breaks its own framing ends with an error.

use std::fmt::Write as _;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::head::{self, BodyFraming, PodFields, ResponseHeadError};
use super::wire::{decode, Decoder, Step};
use super::Rewind;
use crate::config::UpstreamKeepalive;
use crate::http::headers::Forwarded;
use crate::http::idle_io::{WriteIdle, WriteStalled, WriteTimeout};
use crate::http::socket::{copy_behind, Socket};
use crate::http::upstream::{EndpointPool, Link, Outbound, UpstreamBody};

/// Most bytes one read asks for.
const READ_SIZE: usize = 64 * 1024;

/// The least a read for a response head asks for: most heads, and small bodies with
/// them, fit (nginx's `proxy_buffer_size` is as large). A connection asks for as much
/// as its last response took, so that a response of the same size comes in one read.
const HEAD_READ: usize = 4 * 1024;

/// Longest response head taken from a pod; a longer one is refused.
const MAX_HEAD: usize = 64 * 1024;

/// Why a pod's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("connection closed before a complete response")]
    Closed,
    #[error(transparent)]
    Head(#[from] ResponseHeadError),
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed chunked body: {0}")]
    Body(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why an exchange with a pod failed.
pub(crate) enum ExchangeError {
    /// The client's body broke off (its error, as the body reported it).
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The client's body ended before the length its head stated.
    ShortBody,
    /// The pod took nothing for the send timeout.
    SendStalled,
    /// No response head within the read timeout.
    TimedOut,
    /// The pod closed, broke the connection, or did not speak HTTP/1.1. `answered`: some
    /// of a response had come (so the request was surely seen).
    Pod { error: PodError, answered: bool },
    /// A bodiless request got nothing back: the pod may have closed a reused connection
    /// just as it was sent. `replay` is the request as it was written, to send again.
    Unanswered { error: PodError, replay: Replay },
}

/// What an exchange sends: a request, or a bodiless one's bytes as an earlier exchange
/// wrote them (a replay costs nothing until it is needed).
// Not boxed: every request would pay an allocation for the rare replay's sake.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing {
    Request(Outbound),
    Replay(Replay),
}

/// A bodiless request as written.
pub(crate) struct Replay {
    head: Vec<u8>,
    method: http::Method,
    close: bool,
    /// The head holds forwarding fields that were not in the request's map.
    forwarded: bool,
}

impl Replay {
    /// The request again, for another endpoint, as it was before it was written: the
    /// forwarding fields written with it are written again.
    pub fn into_request(self, max_headers: usize) -> Option<Request<UpstreamBody>> {
        let end = head::head_end_from(&self.head, 0)?;
        let bytes = Bytes::from(self.head).slice(..end);
        let mut parsed = head::parse(bytes, max_headers).ok()?;
        if self.forwarded {
            Forwarded::remove_from(&mut parsed.parts.headers);
        }
        Some(Request::from_parts(
            *parsed.parts,
            Either::Right(Either::Right(Empty::new())),
        ))
    }
}

/// Where a connection goes back to once its response is read whole, and on what terms.
pub(crate) struct Home {
    pub pool: Arc<EndpointPool>,
    pub keep: UpstreamKeepalive,
}

/// Clears the link's note of the socket before the socket closes, so that
/// [`Link::close`] never touches a descriptor number reused by another socket.
struct SocketNote(Arc<Link>);

impl Drop for SocketNote {
    fn drop(&mut self) {
        self.0.forget_socket();
    }
}

/// One plain HTTP/1.1 connection to a pod. Boxed once when made and moved as a pointer
/// between the pool, the exchange and the response body.
pub(crate) struct PodConn {
    // First, so that it is dropped before the socket.
    note: SocketNote,
    io: WriteIdle<Socket>,
    /// Read and not yet consumed.
    buf: BytesMut,
    /// The request head (and chunk-size lines) being written.
    out: Vec<u8>,
    /// The wait for a response head, kept with the connection: moving a deadline later
    /// costs an atomic store, where a timer per request costs a registration.
    pub timer: Pin<Box<Sleep>>,
    pub last_used: Instant,
    /// When it was dialled, and the requests it has answered in full: what
    /// `upstream-keepalive-time` and `-requests` limit.
    opened: Instant,
    requests: u64,
    /// What a read for the next response head asks for.
    head_read: usize,
    /// Bytes read for the response now on the connection.
    read_now: usize,
    /// The shard whose runtime's reactor drives the socket: it is pooled there.
    pub shard: usize,
}

impl PodConn {
    pub fn new(
        stream: TcpStream,
        link: Arc<Link>,
        send_timeout: Arc<AtomicU64>,
        read_timeout: Duration,
    ) -> Box<Self> {
        link.note_socket(stream.as_raw_fd());
        let now = Instant::now();
        Box::new(Self {
            note: SocketNote(link),
            io: WriteIdle::new(Socket::new(stream), WriteTimeout::Shared(send_timeout)),
            buf: BytesMut::new(),
            out: Vec::new(),
            timer: Box::pin(tokio::time::sleep(read_timeout)),
            last_used: now,
            opened: now,
            requests: 0,
            head_read: HEAD_READ,
            read_now: 0,
            shard: crate::http::shard::current(),
        })
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.note.0
    }

    /// Makes a pooled connection its new request's: a link still held for an earlier
    /// response (an HTTP/2 client's stall watch) is left behind, so that closing that
    /// response's link can never close this request's connection.
    pub fn attach(&mut self) {
        if Arc::strong_count(&self.note.0) > 1 {
            self.note.0 = self.note.0.renewed();
        }
        self.note.0.note_socket(self.io.get_ref().as_raw_fd());
    }

    /// Whether an idle connection can carry another request: not if the pod closed it
    /// or sent something unasked. Asks the readiness the runtime already tracks, so a
    /// quiet connection costs no system call.
    pub fn is_reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.get_ref().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                // Readable while idle: the end of the stream, or bytes nobody asked for;
                // or readiness left from the last response's read, which this clears.
                let mut probe = [0u8; 1];
                matches!(self.io.get_ref().try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into `buf`, asking for about `want` bytes: `Ok(0)` at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.clamp(1, READ_SIZE);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if let Poll::Ready(Ok(n)) = read {
            self.read_now += n;
        }
        read
    }

    /// Sends `req` and reads the response head. Small bodies that came whole with the
    /// head are taken at once, and the connection goes `home` then.
    pub async fn exchange(
        mut self: Box<Self>,
        outgoing: Outgoing,
        forwarded: Option<&Forwarded>,
        home: Option<Home>,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        let (mut sending, method, asks_close, forwarded) = match outgoing {
            Outgoing::Request(req) => {
                let (parts, body) = (*req).into_parts();
                let mut sending = Sending::new(body);
                let asks_close = sending.encode_head(&parts, forwarded, &mut self.out);
                (sending, parts.method, asks_close, forwarded.is_some())
            }
            Outgoing::Replay(replay) => {
                self.out = replay.head;
                let mut sending = Sending::new(Either::Right(Either::Right(Empty::new())));
                sending.body_done = true;
                (sending, replay.method, replay.close, replay.forwarded)
            }
        };
        let mut scanned = 0;
        let mut answered = false;
        let mut send_failed = None;
        let head = poll_fn(|cx| {
            let conn = &mut *self;
            if !sending.done && send_failed.is_none() {
                match sending.poll(conn, cx) {
                    Poll::Ready(Err(ExchangeError::Pod { error, .. })) => {
                        // The pod may have answered before it stopped reading (a 413,
                        // say): its answer is still read.
                        send_failed = Some(error);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            loop {
                if let Some(end) = head::head_end_from(&conn.buf, scanned) {
                    scanned = 0;
                    let bytes = conn.buf.split_to(end).freeze();
                    match head::parse_response(bytes, &method) {
                        Ok(h)
                            if h.parts.status.is_informational()
                                && h.parts.status != StatusCode::SWITCHING_PROTOCOLS =>
                        {
                            // 100 Continue, 103 Early Hints: the final answer follows.
                            continue;
                        }
                        Ok(h) => return Poll::Ready(Ok(h)),
                        Err(e) => {
                            return Poll::Ready(Err(ExchangeError::Pod {
                                error: e.into(),
                                answered: true,
                            }))
                        }
                    }
                }
                scanned = conn.buf.len();
                if scanned > MAX_HEAD {
                    return Poll::Ready(Err(ExchangeError::Pod {
                        error: PodError::HeadTooLarge,
                        answered: true,
                    }));
                }
                match conn.poll_fill(cx, conn.head_read) {
                    Poll::Ready(Ok(0)) => {
                        let error = send_failed.take().unwrap_or(PodError::Closed);
                        return Poll::Ready(Err(ExchangeError::Pod {
                            error,
                            answered: answered || !conn.buf.is_empty(),
                        }));
                    }
                    Poll::Ready(Ok(_)) => answered = true,
                    Poll::Ready(Err(e)) => {
                        let error = send_failed.take().unwrap_or(PodError::Io(e));
                        return Poll::Ready(Err(ExchangeError::Pod {
                            error,
                            answered: answered || !conn.buf.is_empty(),
                        }));
                    }
                    Poll::Pending => break,
                }
            }
            match conn.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(ExchangeError::TimedOut)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(ExchangeError::Pod {
                error,
                answered: false,
            }) if sending.framing == Framing::Empty => {
                return Err(ExchangeError::Unanswered {
                    error,
                    replay: Replay {
                        head: std::mem::take(&mut self.out),
                        method,
                        close: asks_close,
                        forwarded,
                    },
                });
            }
            Err(e) => return Err(e),
        };

        let head::ResponseHead {
            parts,
            fields,
            framing,
            keep_alive,
            connection_names,
        } = head;
        let reusable = keep_alive && !asks_close && send_failed.is_none();
        let mut body = ResponseBody {
            decoder: Decoder::Done,
            until_close: false,
            keep_alive: reusable,
            sending: (!sending.done && send_failed.is_none()).then(|| Box::new(sending)),
            ready: None,
            home,
            conn: Some(self),
            connection_names,
            fields: Some(fields),
        };
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now (`ResponseBody::upgraded`).
            body.keep_alive = false;
            body.sending = None;
            return Ok(Response::from_parts(parts, body));
        }
        match framing {
            BodyFraming::None => body.finish(),
            BodyFraming::Length(n) => {
                body.decoder = Decoder::Length(n);
                body.take_whole();
            }
            BodyFraming::Chunked => body.decoder = Decoder::ChunkSize,
            BodyFraming::UntilClose => body.until_close = true,
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// The request going out: head, then body, framed by length or chunked.
struct Sending {
    body: UpstreamBody,
    framing: Framing,
    /// Bytes of the connection's `out` already written.
    out_at: usize,
    data: Bytes,
    tail: &'static [u8],
    /// Whether the body has been polled yet (its first piece rides with the head).
    started: bool,
    /// Everything was written.
    done: bool,
    body_done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

impl Sending {
    fn new(body: UpstreamBody) -> Self {
        Self {
            body,
            framing: Framing::Empty,
            out_at: 0,
            data: Bytes::new(),
            tail: b"",
            started: false,
            done: false,
            body_done: false,
        }
    }

    /// Writes the request head into `out` and settles the body's framing: the length
    /// the head states, else the body's own, else chunked. Returns whether the request
    /// asks to close the connection after it.
    fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        forwarded: Option<&Forwarded>,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        out.reserve(64 + parts.headers.len() * 48);
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = match parts.uri.path_and_query() {
            Some(pq) => pq.as_str(),
            None => "/",
        };
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut length = None;
        let mut close = false;
        for (name, value) in &parts.headers {
            match name.as_str() {
                // This connection's framing is written below, from the body.
                "transfer-encoding" => continue,
                "content-length" => {
                    let n = value
                        .to_str()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if length.is_some() || n.is_none() {
                        continue;
                    }
                    length = n;
                }
                "connection" => {
                    close |= value
                        .as_bytes()
                        .split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                }
                _ => {}
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(f) = forwarded {
            f.write(out);
        }
        self.framing = match length {
            Some(n) => Framing::Length(n),
            None if self.body.is_end_stream() => Framing::Empty,
            None => match self.body.size_hint().exact() {
                Some(n) => {
                    let _ = write!(Text(out), "content-length: {n}\r\n");
                    Framing::Length(n)
                }
                None => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    Framing::Chunked
                }
            },
        };
        out.extend_from_slice(b"\r\n");
        if self.framing == Framing::Empty {
            self.body_done = true;
        }
        close
    }

    /// Queues `data` behind what `out` holds: copied into it when small and behind
    /// something unsent, so that one buffer goes out (see [`copy_behind`]).
    fn queue(&mut self, conn: &mut PodConn, data: Bytes) -> Result<(), ExchangeError> {
        if self.out_at == conn.out.len() {
            conn.out.clear();
            self.out_at = 0;
        }
        match &mut self.framing {
            Framing::Length(rest) => {
                let n = data.len() as u64;
                if n > *rest {
                    // More than the head stated: the pod would read it as a request.
                    return Err(ExchangeError::Body(
                        "request body longer than its Content-Length".into(),
                    ));
                }
                *rest -= n;
                if !copy_behind(&mut conn.out, &data) {
                    self.data = data;
                }
            }
            Framing::Chunked => {
                let _ = write!(Text(&mut conn.out), "{:x}\r\n", data.len());
                if copy_behind(&mut conn.out, &data) {
                    conn.out.extend_from_slice(b"\r\n");
                } else {
                    self.data = data;
                    self.tail = b"\r\n";
                }
            }
            Framing::Empty => {}
        }
        Ok(())
    }

    /// The body's next piece, queued; or its end.
    fn poll_body(
        &mut self,
        conn: &mut PodConn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not sent: Portico passes on no HTTP/1 trailers.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Poll::Ready(self.queue(conn, data));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(ExchangeError::Body(e))),
                Poll::Ready(None) => {
                    self.body_done = true;
                    match self.framing {
                        Framing::Length(rest) if rest > 0 => {
                            return Poll::Ready(Err(ExchangeError::ShortBody))
                        }
                        Framing::Chunked => {
                            if self.out_at == conn.out.len() {
                                conn.out.clear();
                                self.out_at = 0;
                            }
                            conn.out.extend_from_slice(b"0\r\n\r\n");
                        }
                        _ => {}
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn pending(&self, conn: &PodConn) -> bool {
        self.out_at < conn.out.len() || !self.data.is_empty() || !self.tail.is_empty()
    }

    fn advance(&mut self, conn: &PodConn, mut n: usize) {
        let out = (conn.out.len() - self.out_at).min(n);
        self.out_at += out;
        n -= out;
        let data = self.data.len().min(n);
        self.data.advance(data);
        n -= data;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }

    /// Writes as much of the request as the socket and the body allow now.
    fn poll(
        &mut self,
        conn: &mut PodConn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        if !self.started {
            self.started = true;
            // A body ready now goes out with the head, in one write.
            if !self.body_done {
                if let Poll::Ready(Err(e)) = self.poll_body(conn, cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        loop {
            while self.pending(conn) {
                let bufs = [
                    IoSlice::new(&conn.out[self.out_at..]),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.tail),
                ];
                match Pin::new(&mut conn.io).poll_write_vectored(cx, &bufs) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ExchangeError::Pod {
                            error: PodError::Io(io::ErrorKind::WriteZero.into()),
                            answered: false,
                        }))
                    }
                    Poll::Ready(Ok(n)) => self.advance(conn, n),
                    Poll::Ready(Err(e)) if WriteStalled::is(&e) => {
                        return Poll::Ready(Err(ExchangeError::SendStalled))
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(ExchangeError::Pod {
                            error: PodError::Io(e),
                            answered: false,
                        }))
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.body_done {
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.poll_body(conn, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// `fmt::Write` into a byte buffer, for numbers in heads.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A pod's response body, read off its connection wherever it is polled. A request
/// body still going out (a pod may answer before reading all of it) is written from
/// here as well.
pub(crate) struct ResponseBody {
    /// `None` once the body is over (the connection gone home, or closed).
    conn: Option<Box<PodConn>>,
    decoder: Decoder,
    until_close: bool,
    /// The connection may carry another request once this body is read.
    keep_alive: bool,
    sending: Option<Box<Sending>>,
    /// The whole body, when it came with the head.
    ready: Option<Bytes>,
    home: Option<Home>,
    /// The head's `Connection` names fields of its own to remove.
    pub connection_names: bool,
    /// The head's fields, until something reads them into the response's map
    /// (`body::read_pod_fields`).
    pub fields: Option<Box<PodFields>>,
}

impl ResponseBody {
    /// A length-framed body already read whole is taken now, and the connection sent
    /// home before the response goes on.
    fn take_whole(&mut self) {
        let (Decoder::Length(n), Some(conn)) = (self.decoder, &mut self.conn) else {
            return;
        };
        if (conn.buf.len() as u64) < n {
            return;
        }
        // Below the buffer's length here, so it fits.
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.ready = Some(conn.buf.split_to(n).freeze());
        self.decoder = Decoder::Done;
        self.finish();
    }

    /// The response is read whole: the connection goes home if it may carry another
    /// request, else it is closed.
    fn finish(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !(self.keep_alive && self.sending.is_none() && conn.buf.is_empty()) {
            return;
        }
        if let Some(home) = self.home.take() {
            // The next response of this size comes in one read.
            conn.head_read = conn
                .read_now
                .next_multiple_of(1024)
                .clamp(HEAD_READ, READ_SIZE);
            if conn.read_now > HEAD_READ {
                // A pooled connection keeps a head's worth of buffer at most: a pool
                // holds hundreds, and each would otherwise keep its last large answer's
                // allocation while it waits. The next large answer allocates anew.
                conn.buf = BytesMut::new();
            }
            conn.read_now = 0;
            // Closing this response's link no longer reaches the connection.
            conn.link().forget_socket();
            let now = Instant::now();
            conn.requests += 1;
            if home
                .keep
                .spent(conn.requests, now.duration_since(conn.opened))
            {
                return;
            }
            conn.last_used = now;
            home.pool.put_h1(conn, home.keep.connections);
        }
    }

    /// The connection of a `101 Switching Protocols` answer, for the tunnel, with what
    /// the pod sent after the head.
    pub fn upgraded(&mut self) -> Option<Upgraded> {
        let conn = self.conn.take()?;
        let PodConn { io, buf, .. } = *conn;
        Some(Rewind::new(io, buf.freeze()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = PodError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PodError>>> {
        let this = &mut *self;
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(sending) = &mut this.sending {
            match sending.poll(conn, cx) {
                Poll::Ready(Ok(())) => this.sending = None,
                Poll::Ready(Err(_)) => {
                    // The pod stopped reading the request; its answer is still read,
                    // and the connection is not reused.
                    this.sending = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            if this.until_close {
                if !conn.buf.is_empty() {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            } else {
                match decode(&mut this.decoder, &mut conn.buf) {
                    Ok(Step::Data(data)) => {
                        if this.decoder == Decoder::Done {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(why) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(PodError::Body(why))));
                    }
                }
            }
            let want = match this.decoder {
                Decoder::Length(n) | Decoder::ChunkData(n) => {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
                _ => 16 * 1024,
            };
            match conn.poll_fill(cx, want) {
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    if this.until_close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(PodError::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(PodError::Io(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none()
            && (self.conn.is_none() || (!self.until_close && self.decoder == Decoder::Done))
    }

    fn size_hint(&self) -> SizeHint {
        let ready = self.ready.as_ref().map_or(0, |d| d.len() as u64);
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n + ready),
            Decoder::Done if !self.until_close || self.conn.is_none() => {
                SizeHint::with_exact(ready)
            }
            _ => SizeHint::default(),
        }
    }
}

/// A pod connection after `101 Switching Protocols`: what the pod sent after the head
/// is read first.
pub(crate) type Upgraded = Rewind<WriteIdle<Socket>>;

#[cfg(test)]
mod tests {
    use http::{header, Method};
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::Timeouts;
    use crate::http::buffer::BufferedBody;
    use crate::http::socket::COPY_BEHIND_HEAD_MAX;

    /// A pod that reads one request (head and, with `Content-Length`, body), hands it
    /// to the test and answers `answer` (written in pieces, to split heads and bodies
    /// across reads), then keeps the connection until the test ends.
    async fn pod(
        answer: Vec<&'static [u8]>,
    ) -> (Box<PodConn>, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
                if n == 0 || request_complete(&got) {
                    break;
                }
            }
            let _ = tx.send(got);
            for piece in answer {
                s.write_all(piece).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Held open: a close is the test's to cause.
            let _ = s.read(&mut buf).await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (link, send_timeout) = Link::new(Timeouts::default());
        (
            PodConn::new(stream, link, send_timeout, Duration::from_secs(5)),
            rx,
        )
    }

    fn request_complete(got: &[u8]) -> bool {
        let Some(end) = head::head_end_from(got, 0) else {
            return false;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            return got.ends_with(b"0\r\n\r\n");
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        got.len() >= end + length
    }

    fn get(method: Method) -> Outbound {
        let mut req = Request::new(Either::Right(Either::Right(Empty::new())));
        *req.method_mut() = method;
        *req.uri_mut() = http::Uri::from_static("/x?y=1");
        req.headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("app.test"));
        Box::new(req)
    }

    async fn body_of(resp: Response<ResponseBody>) -> Result<Vec<u8>, PodError> {
        Ok(resp.into_body().collect().await?.to_bytes().to_vec())
    }

    async fn answer(conn: Box<PodConn>, method: Method) -> Response<ResponseBody> {
        match conn
            .exchange(Outgoing::Request(get(method)), None, None)
            .await
        {
            Ok(resp) => resp,
            Err(_) => panic!("no response"),
        }
    }

    #[tokio::test]
    async fn a_length_body_split_across_reads_is_read_whole() {
        let (conn, sent) = pod(vec![
            b"HTTP/1.1 200 OK\r\nContent-",
            b"Length: 11\r\n\r\nhello",
            b" world",
        ])
        .await;
        let resp = answer(conn, Method::GET).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.body().size_hint().exact(), Some(11));
        assert_eq!(body_of(resp).await.expect("body"), b"hello world");
        let sent = sent.await.expect("request");
        assert_eq!(
            String::from_utf8_lossy(&sent),
            "GET /x?y=1 HTTP/1.1\r\nhost: app.test\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn chunked_bodies_decode_and_trailers_are_dropped() {
        let (conn, _) = pod(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ])
        .await;
        let resp = answer(conn, Method::GET).await;
        assert_eq!(body_of(resp).await.expect("body"), b"hello world");
    }

    #[tokio::test]
    async fn a_broken_chunk_ends_the_body_with_an_error() {
        let (conn, _) = pod(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX3\r\n",
        ])
        .await;
        let resp = answer(conn, Method::GET).await;
        assert!(matches!(body_of(resp).await, Err(PodError::Body(_))));
    }

    #[tokio::test]
    async fn ambiguous_response_framing_is_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            let (conn, _) = pod(vec![raw]).await;
            let what = String::from_utf8_lossy(raw);
            match conn
                .exchange(Outgoing::Request(get(Method::GET)), None, None)
                .await
            {
                Err(ExchangeError::Pod {
                    error: PodError::Head(_),
                    answered: true,
                }) => {}
                Err(_) => panic!("{what:?}: refused for another reason"),
                Ok(_) => panic!("{what:?} was taken"),
            }
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_the_final_one_read() {
        let (conn, _) = pod(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ])
        .await;
        let resp = answer(conn, Method::GET).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(body_of(resp).await.expect("body"), b"ok");
    }

    #[tokio::test]
    async fn head_and_304_answers_have_no_body_whatever_their_length_says() {
        let (conn, _) = pod(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"]).await;
        let mut resp = answer(conn, Method::HEAD).await;
        assert!(resp.body().is_end_stream());
        let fields = resp.body_mut().fields.take().expect("the head's fields");
        fields.add_to(resp.headers_mut());
        assert_eq!(resp.headers()["content-length"], "5");
        let (conn, _) = pod(vec![
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ])
        .await;
        let resp = answer(conn, Method::GET).await;
        assert_eq!(body_of(resp).await.expect("body"), b"");
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close() {
        let (conn, _) = pod(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil", b" close"]).await;
        let mut resp = answer(conn, Method::GET).await;
        let mut got = Vec::new();
        // The pod holds the connection open: what came is read, and no end seen yet.
        while got.len() < 11 {
            let frame = resp
                .body_mut()
                .frame()
                .await
                .expect("a frame")
                .expect("data");
            got.extend_from_slice(&frame.into_data().expect("data"));
        }
        assert_eq!(got, b"until close");
        assert!(!resp.body().is_end_stream());
    }

    #[tokio::test]
    async fn silence_times_out_and_a_close_before_the_head_answers_nothing() {
        let (mut conn, _) = pod(vec![]).await;
        conn.timer
            .as_mut()
            .reset(Instant::now() + Duration::from_millis(100));
        assert!(matches!(
            conn.exchange(Outgoing::Request(get(Method::GET)), None, None)
                .await,
            Err(ExchangeError::TimedOut)
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (link, send_timeout) = Link::new(Timeouts::default());
        let conn = PodConn::new(stream, link, send_timeout, Duration::from_secs(5));
        assert!(matches!(
            conn.exchange(Outgoing::Request(get(Method::GET)), None, None)
                .await,
            Err(ExchangeError::Unanswered {
                error: PodError::Closed,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_body_known_whole_goes_out_with_its_length_in_one_write() {
        let (conn, sent) = pod(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await;
        let body = BufferedBody::for_tests(b"abc");
        let mut req = Request::new(Either::Right(Either::Left(Box::new(body))));
        *req.method_mut() = Method::POST;
        if conn
            .exchange(Outgoing::Request(Box::new(req)), None, None)
            .await
            .is_err()
        {
            panic!("no response");
        }
        let sent = sent.await.expect("request");
        assert_eq!(
            String::from_utf8_lossy(&sent),
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    /// Body data up to the limit is copied behind the head (or its chunk size line), so
    /// that the request goes out as one buffer; larger data, or data with nothing unsent
    /// ahead of it, is written from where it is.
    #[tokio::test]
    async fn small_body_data_is_queued_behind_the_head() {
        let (mut conn, _) = pod(vec![]).await;
        for framing in [Framing::Length(1 << 20), Framing::Chunked] {
            let chunked = framing == Framing::Chunked;
            let empty = BufferedBody::for_tests(b"");
            let mut sending = Sending::new(Either::Right(Either::Left(Box::new(empty))));
            sending.framing = framing;
            conn.out.clear();
            conn.out.extend_from_slice(b"HEAD");
            assert!(sending.queue(&mut conn, Bytes::from_static(b"abc")).is_ok());
            let want: &[u8] = if chunked {
                b"HEAD3\r\nabc\r\n"
            } else {
                b"HEADabc"
            };
            assert_eq!(conn.out, want);
            assert!(sending.data.is_empty() && sending.tail.is_empty());
            let most = Bytes::from(vec![b'm'; COPY_BEHIND_HEAD_MAX]);
            assert!(sending.queue(&mut conn, most.clone()).is_ok());
            let suffix: &[u8] = if chunked { b"\r\n" } else { b"" };
            assert!(conn.out.ends_with(&[&most[..], suffix].concat()));
            assert!(sending.data.is_empty() && sending.tail.is_empty());
            // Sent: the next piece starts a new buffer, copied only behind a size line.
            sending.advance(&conn, conn.out.len());
            let small = Bytes::from_static(b"abc");
            assert!(sending.queue(&mut conn, small.clone()).is_ok());
            if chunked {
                assert_eq!(conn.out, b"3\r\nabc\r\n");
                assert!(sending.data.is_empty());
            } else {
                assert!(conn.out.is_empty());
                assert_eq!(sending.data, small);
            }
            sending.advance(&conn, conn.out.len() + sending.data.len());
            let large = Bytes::from(vec![b'l'; COPY_BEHIND_HEAD_MAX + 1]);
            assert!(sending.queue(&mut conn, large.clone()).is_ok());
            assert_eq!(sending.data, large);
            let want: &[u8] = if chunked { b"801\r\n" } else { b"" };
            assert_eq!(conn.out, want);
            assert_eq!(sending.tail, suffix);
        }
    }

    /// The buffer a connection goes back to the pool with after an answer of `size`
    /// bytes of body, read whole: what its next read reuses (the allocation it still
    /// holds, reclaimed whole once the body is gone), not just the room left after it.
    async fn pooled_buffer_after(size: usize) -> usize {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n{}",
            "x".repeat(size)
        );
        let answer: &'static [u8] = Box::leak(answer.into_bytes().into_boxed_slice());
        let (conn, _) = pod(vec![answer]).await;
        let pool = Arc::new(EndpointPool::default());
        let home = Home {
            pool: pool.clone(),
            keep: UpstreamKeepalive::default(),
        };
        let resp = match conn
            .exchange(Outgoing::Request(get(Method::GET)), None, Some(home))
            .await
        {
            Ok(resp) => resp,
            Err(_) => panic!("no response"),
        };
        assert_eq!(body_of(resp).await.expect("body").len(), size);
        let mut pooled = pool
            .checkout_h1(Instant::now(), Duration::from_secs(60))
            .expect("pooled");
        // Room for a head: a buffer that still holds its allocation takes it all back.
        pooled.buf.reserve(HEAD_READ);
        pooled.buf.capacity()
    }

    #[tokio::test]
    async fn a_pooled_connection_keeps_no_large_answers_buffer() {
        // A large answer's buffer is let go: idle connections hold no body-sized buffers.
        let kept = pooled_buffer_after(20_000).await;
        assert!(
            kept <= HEAD_READ,
            "an idle connection holds {kept} bytes of buffer"
        );
    }
}
