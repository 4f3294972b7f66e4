//! Request smuggling guard for HTTP/1.x client connections.
//!
//! hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` by
//! letting chunked win and dropping `Content-Length` before the service sees the request,
//! so the conflict is invisible to us. RFC 9112 §6.1 says such a message "ought to be
//! handled as an error"; we answer 400 and close. To know, this wrapper watches the bytes
//! hyper reads, follows the request framing (heads, fixed and chunked bodies) and records,
//! for every request head in order, whether it had both headers. The service takes one
//! verdict per request: HTTP/1 requests on a connection are served in order.
//!
//! Heads may end lines with a bare LF, as hyper accepts them. An `Upgrade` request is
//! followed like any other: the stream stops being HTTP only once the proxy answers
//! `101` ([`Verdicts::switched`]). HTTP/2's preface ends the scanning for good. Whenever
//! the scanner loses track otherwise (a head or chunk line hyper will reject anyway), it
//! stops and every later request on the connection is refused rather than let through
//! unchecked.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-request verdicts of one connection, oldest first, and what the scanner knows of
/// the connection as a whole.
#[derive(Clone, Default)]
pub(crate) struct Verdicts(Arc<Shared>);

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<bool>>,
    /// The client has sent at least one byte.
    read: AtomicBool,
    /// The scanner lost track of the framing: no later request can be vouched for.
    lost: AtomicBool,
    /// The connection switched protocols (or to HTTP/2): nothing more to scan.
    ended: AtomicBool,
    /// It switched to HTTP/2.
    h2: AtomicBool,
}

/// What the scanner says of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Clean,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Conflicting,
    /// The scanner could not follow the framing up to this request.
    Unknown,
}

impl Verdicts {
    /// The client has sent at least one byte.
    pub fn has_read(&self) -> bool {
        self.0.read.load(Ordering::Acquire)
    }

    fn push(&self, conflicting: bool) {
        self.0
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(conflicting);
    }

    /// The proxy answered `101`: what follows is not HTTP.
    pub fn switched(&self) {
        self.0.ended.store(true, Ordering::Release);
    }

    fn ended(&self) -> bool {
        self.0.ended.load(Ordering::Acquire)
    }

    /// The client spoke HTTP/2 (h2c): the scanner saw its preface.
    pub fn is_h2(&self) -> bool {
        self.0.h2.load(Ordering::Acquire)
    }

    /// The verdict on the next HTTP/1 request of the connection.
    pub fn next(&self) -> Verdict {
        let next = self
            .0
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next {
            Some(true) => Verdict::Conflicting,
            Some(false) => Verdict::Clean,
            None if self.0.lost.load(Ordering::Acquire) => Verdict::Unknown,
            None => Verdict::Clean,
        }
    }
}

enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers(Vec<u8>),
    Done,
}

struct Scanner {
    state: State,
    max_head: usize,
    max_headers: usize,
    verdicts: Verdicts,
}

/// Longest chunk-size or trailer line we follow; longer ones make hyper fail anyway.
const MAX_LINE: usize = 4096;

/// Most header fields the scanner reads in one head; a head with more stops the scanner
/// (hyper answers it with 431 first when its own limit is lower).
const MAX_HEADERS: usize = 256;

impl Scanner {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Head(buf) => {
                    if buf.is_empty() {
                        // Empty lines before a request line are allowed and skipped.
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        // Usually a whole head arrives in one read: scan it in place
                        // rather than copying it aside first.
                        let window = &data[..data.len().min(self.max_head)];
                        if let Some(end) = head_end(window) {
                            self.state = self.on_head(&data[..end]);
                            data = &data[end..];
                            continue;
                        }
                    }
                    let start = buf.len().saturating_sub(2);
                    let room = self.max_head.saturating_sub(buf.len());
                    let take = data.len().min(room.max(1));
                    buf.extend_from_slice(&data[..take]);
                    let found = head_end(&buf[start..]).map(|i| start + i);
                    match found {
                        Some(end) => {
                            // Bytes past the head belong to the body or the next request.
                            let extra = buf.len() - end;
                            data = &data[take - extra..];
                            let head = std::mem::take(buf);
                            self.state = self.on_head(&head[..end]);
                        }
                        None if buf.len() >= self.max_head => self.state = self.lost(),
                        None => data = &data[take..],
                    }
                }
                State::Fixed(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) | State::Trailers(line) => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_LINE {
                            self.state = self.lost();
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    let text = std::mem::take(line);
                    self.state = match self.state {
                        State::ChunkSize(_) => chunk_size(&text)
                            .map(|size| match size {
                                0 => State::Trailers(Vec::new()),
                                n => State::ChunkData(n),
                            })
                            .unwrap_or_else(|| self.lost()),
                        _ if text == b"\r\n" || text == b"\n" => State::Head(Vec::new()),
                        _ => State::Trailers(Vec::new()),
                    };
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    let n = usize::from(*left).min(data.len());
                    *left -= n as u8;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
            }
        }
    }

    fn on_head(&mut self, head: &[u8]) -> State {
        // Uninitialised slots on the stack: no allocation and no zeroing per request.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let slots = &mut slots[..self.max_headers.clamp(1, MAX_HEADERS)];
        if head.starts_with(b"PRI * HTTP/2.0\r\n") {
            // HTTP/2 from here on: hyper's HTTP/2 framing needs no guard.
            self.verdicts.0.h2.store(true, Ordering::Release);
            self.verdicts.switched();
            return State::Done;
        }
        let mut req = httparse::Request::new(&mut []);
        if !matches!(
            req.parse_with_uninit_headers(head, slots),
            Ok(httparse::Status::Complete(_))
        ) {
            return self.lost();
        }
        let mut te_chunked = None;
        let mut content_length: Option<u64> = None;
        let mut bad_length = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
                te_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                {
                    Some(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                    _ => bad_length = true,
                }
            }
        }
        let conflicting = te_chunked.is_some() && (content_length.is_some() || bad_length);
        self.verdicts.push(conflicting);
        match (te_chunked, content_length) {
            (Some(true), _) => State::ChunkSize(Vec::new()),
            (Some(false), _) => self.lost(),
            (None, _) if bad_length => self.lost(),
            (None, Some(0)) | (None, None) => State::Head(Vec::new()),
            (None, Some(n)) => State::Fixed(n),
        }
    }
}

/// The verdicts the scanner gives a stream read in `chunks`, and then whether it was
/// lost; for the fuzz targets and tests.
pub(crate) fn verdicts_of(chunks: &[&[u8]]) -> (Vec<bool>, bool) {
    let verdicts = Verdicts::default();
    let mut s = Scanner::new(64 * 1024, 100, verdicts.clone());
    for c in chunks {
        s.feed(c);
    }
    let queued = verdicts
        .0
        .queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    (queued, verdicts.0.lost.load(Ordering::Acquire))
}

impl Scanner {
    fn new(max_head: usize, max_headers: usize, verdicts: Verdicts) -> Self {
        Self {
            state: State::Head(Vec::new()),
            max_head,
            max_headers,
            verdicts,
        }
    }

    /// Stops scanning for good; later requests get [`Verdict::Unknown`].
    fn lost(&self) -> State {
        self.verdicts.0.lost.store(true, Ordering::Release);
        State::Done
    }
}

/// Where a request head ends: after its first empty line, with CRLF or bare LF line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 || end > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..end]).ok()?, 16).ok()
}

/// The client IO with the scanner on its read side.
pub(crate) struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    read_any: bool,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, max_head: usize, max_headers: usize) -> (Self, Verdicts) {
        let verdicts = Verdicts::default();
        let scanner = Scanner::new(max_head, max_headers, verdicts.clone());
        (
            Self {
                io,
                scanner,
                read_any: false,
            },
            verdicts,
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !this.read_any && !new.is_empty() {
            this.read_any = true;
            this.scanner.verdicts.0.read.store(true, Ordering::Release);
        }
        if !this.scanner.verdicts.ended() {
            this.scanner.feed(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<bool> {
        let verdicts = Verdicts::default();
        let mut s = Scanner::new(8192, 100, verdicts.clone());
        for c in chunks {
            s.feed(c);
        }
        let v = verdicts.0.queue.lock().unwrap().iter().copied().collect();
        v
    }

    /// A scanner that has read `stream`, and its verdicts.
    fn scanned(stream: &[u8]) -> Verdicts {
        let verdicts = Verdicts::default();
        Scanner::new(8192, 100, verdicts.clone()).feed(stream);
        verdicts
    }

    #[test]
    fn follows_fixed_and_chunked_bodies_across_reads() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nGET /fake HTTP/1.1\r\n\r\n\r\n\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let whole = scan(&[stream]);
        assert_eq!(whole, vec![false, false, true]);
        // Byte by byte gives the same verdicts.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&bytes), whole);
        // And in uneven pieces.
        let pieces: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(scan(&pieces), whole);
    }

    #[test]
    fn conflict_in_either_order_and_stops_at_h2() {
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"]),
            vec![true]
        );
        assert_eq!(
            scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]),
            Vec::<bool>::new()
        );
    }

    #[test]
    fn neither_bare_lf_nor_a_lone_upgrade_header_blinds_the_guard() {
        // A bare-LF head, then a conflicting one.
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            vec![false, true]
        );
        // Mixed line ends.
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\n\r\nPOST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n"]),
            vec![false, true]
        );
        // An Upgrade header (answered without 101) does not stop the scanner.
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            vec![false, true]
        );
    }

    #[test]
    fn a_lost_scanner_vouches_for_nothing_after() {
        let verdicts = scanned(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n");
        assert_eq!(verdicts.next(), Verdict::Clean);
        assert_eq!(verdicts.next(), Verdict::Unknown);
        // HTTP/2 is not lost: nothing is queued and nothing refused.
        let h2 = scanned(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2.next(), Verdict::Clean);
    }

    #[test]
    fn oversized_heads_stop_the_scanner() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10_000));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(scan(&[&big]), Vec::<bool>::new());
    }
}
