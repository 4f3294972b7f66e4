//! One HTTP/1 client connection's socket and read buffer, shared by the connection
//! (which reads heads and writes responses) and the request body (which reads itself off
//! the socket wherever it is polled, so a body streaming upstream needs no copy through a
//! channel).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::head::Framing;
use super::park::{Lot, ParkSlot, Parked};
use super::{Limits, ReadReady};
use crate::http::Conn;

/// Longest chunk-size line, extensions included; nginx allows about as much.
const MAX_CHUNK_LINE: usize = 4096;

/// Most trailer bytes read (and dropped) after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// Most bytes one read asks for.
const READ_SIZE: usize = 16 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why a request body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum H1BodyError {
    #[error("client closed the connection mid-body")]
    Eof,
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    #[error("the connection moved on to another request")]
    Detached,
}

/// Everything a served HTTP/1 connection keeps, in one allocation: the task serving it
/// holds little more than a pointer to this while the connection is idle.
pub(crate) struct Wire<IO> {
    state: Mutex<State<IO>>,
    pub conn: Conn,
    pub limits: Limits,
    pub ready: Option<ReadReady<IO>>,
}

pub(crate) struct State<IO> {
    /// `None` once handed over (upgrade, HTTP/2).
    pub io: Option<IO>,
    /// Read and not yet consumed; pipelined requests wait here.
    pub buf: BytesMut,
    pub body: Decoder,
    /// Which request the body being read belongs to; older bodies read nothing.
    pub generation: u32,
    pub cont: Continue,
    /// The body could not be followed: the connection cannot be reused.
    pub broken: bool,
    /// What its task held, while the connection is parked without one.
    pub parked: Option<Box<Parked>>,
}

/// `100 Continue` for a client that waits for it before sending its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Continue {
    /// Not asked for, sent already, or too late (the response has begun).
    No,
    /// Asked for: sent before the body's first read. Counts what was written of it
    /// (a few bytes: narrow, as every connection holds one).
    Due(u8),
}

/// Where the body of the current request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// No body, or all of it was read.
    Done,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers(usize),
}

impl Decoder {
    pub fn new(framing: Option<Framing>) -> Self {
        match framing {
            None | Some(Framing::Length(0)) => Decoder::Done,
            Some(Framing::Length(n)) => Decoder::Length(n),
            Some(Framing::Chunked) => Decoder::ChunkSize,
        }
    }
}

pub(crate) enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

impl<IO> Wire<IO> {
    pub fn new(io: IO, conn: Conn, limits: Limits, ready: Option<ReadReady<IO>>) -> Arc<Self> {
        Arc::new(Self {
            conn,
            limits,
            ready,
            state: Mutex::new(State {
                io: Some(io),
                buf: BytesMut::new(),
                body: Decoder::Done,
                generation: 0,
                cont: Continue::No,
                broken: false,
                parked: None,
            }),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State<IO>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<IO> ParkSlot for Wire<IO> {
    fn set_parked(&self, parked: Box<Parked>) {
        self.lock().parked = Some(parked);
    }

    fn lot(&self) -> Option<Arc<Lot>> {
        self.lock().parked.as_ref().map(|p| p.lot().clone())
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let state = self.lock();
        match (self.ready, state.io.as_ref()) {
            (Some(ready), Some(io)) => ready(io, cx).map(|_| ()),
            _ => Poll::Ready(()),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection handed over")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> State<IO> {
    /// Reads more into `buf`: `Ok(0)` at end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        let want = want.clamp(1, READ_SIZE);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// Writes from `bufs`, as much as the socket takes now.
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        Pin::new(io).poll_write_vectored(cx, bufs)
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        Pin::new(io).poll_flush(cx)
    }

    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.io.as_mut().ok_or_else(gone)?;
        Pin::new(io).poll_shutdown(cx)
    }

    /// The next piece of the current request's body: data, its end, or an error (after
    /// which the connection is not reused).
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, H1BodyError>>> {
        loop {
            match self.step() {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(why) => {
                    self.broken = true;
                    return Poll::Ready(Some(Err(H1BodyError::Malformed(why))));
                }
            }
            if let Continue::Due(written) = self.cont {
                let written = usize::from(written);
                let rest = [io::IoSlice::new(&CONTINUE[written..])];
                match self.poll_write(cx, &rest) {
                    Poll::Ready(Ok(n)) => {
                        let written = written + n;
                        self.cont = if written >= CONTINUE.len() {
                            Continue::No
                        } else {
                            // Below CONTINUE's length here, so it fits.
                            Continue::Due(u8::try_from(written).unwrap_or(u8::MAX))
                        };
                        if n == 0 {
                            self.broken = true;
                            return Poll::Ready(Some(Err(H1BodyError::Eof)));
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        self.broken = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            let want = match self.body {
                Decoder::Length(n) | Decoder::ChunkData(n) => {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
                _ => MAX_CHUNK_LINE,
            };
            match self.poll_fill(cx, want) {
                Poll::Ready(Ok(0)) => {
                    self.broken = true;
                    return Poll::Ready(Some(Err(H1BodyError::Eof)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.broken = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO> State<IO> {
    /// Decodes what `buf` holds.
    pub(crate) fn step(&mut self) -> Result<Step, &'static str> {
        decode(&mut self.body, &mut self.buf)
    }
}

/// The next piece of a body framed as `body` says, from what `buf` holds; shared by
/// request bodies from clients and response bodies from pods.
pub(crate) fn decode(body: &mut Decoder, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *body {
            Decoder::Done => return Ok(Step::End),
            Decoder::Length(rest) | Decoder::ChunkData(rest) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = usize::try_from(rest).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let rest = rest - n as u64;
                *body = match (*body, rest) {
                    (Decoder::Length(_), 0) => Decoder::Done,
                    (Decoder::Length(_), _) => Decoder::Length(rest),
                    (_, 0) => Decoder::ChunkDataEnd,
                    _ => Decoder::ChunkData(rest),
                };
                return Ok(Step::Data(data));
            }
            Decoder::ChunkSize => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("chunk size line too long");
                    }
                    return Ok(Step::NeedMore);
                };
                if nl > MAX_CHUNK_LINE {
                    return Err("chunk size line too long");
                }
                let size = chunk_size(&buf[..nl])?;
                buf.advance(nl + 1);
                *body = if size == 0 {
                    Decoder::Trailers(0)
                } else {
                    Decoder::ChunkData(size)
                };
            }
            Decoder::ChunkDataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF");
                }
                buf.advance(2);
                *body = Decoder::ChunkSize;
            }
            Decoder::Trailers(seen) => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err("trailers too large");
                    }
                    return Ok(Step::NeedMore);
                };
                if nl == 0 || buf[nl - 1] != b'\r' {
                    return Err("trailer line not ended by CRLF");
                }
                buf.advance(nl + 1);
                if nl == 1 {
                    *body = Decoder::Done;
                    return Ok(Step::End);
                }
                if seen + nl + 1 > MAX_TRAILERS {
                    return Err("trailers too large");
                }
                // Trailers are dropped: Portico passes on no HTTP/1 trailers, either way.
                *body = Decoder::Trailers(seen + nl + 1);
            }
        }
    }
}

/// The size on a chunk-size line (without its `\n`): hex digits, then optional
/// extensions, ended by CR.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let Some((b'\r', line)) = line.split_last() else {
        return Err("chunk size line not ended by CRLF");
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size is not hexadecimal");
    }
    if digits > 16 {
        return Err("chunk size too large");
    }
    let rest = &line[digits..];
    let ext = rest
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .map(|i| &rest[i..]);
    match ext {
        None => {}
        Some([b';', ..]) if rest.iter().any(|b| b.is_ascii_control() && *b != b'\t') => {
            return Err("control character in a chunk extension");
        }
        Some([b';', ..]) => {}
        Some(_) => return Err("chunk size is not hexadecimal"),
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = (*d as char)
            .to_digit(16)
            .ok_or("chunk size is not hexadecimal")?;
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(v)))
            .ok_or("chunk size too large")
    })
}

/// Reads the body of one request off a [`Wire`]; type-erased so that every kind of
/// client socket gives the same body type.
pub(crate) trait BodySource: Send + Sync {
    fn poll_body(
        &self,
        generation: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, H1BodyError>>>;
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> BodySource for Wire<IO> {
    fn poll_body(
        &self,
        generation: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, H1BodyError>>> {
        let mut state = self.lock();
        if state.generation != generation {
            return Poll::Ready(Some(Err(H1BodyError::Detached)));
        }
        state.poll_body(cx)
    }
}

/// An HTTP/1 request body.
pub struct H1Body {
    source: Arc<dyn BodySource>,
    generation: u32,
    hint: SizeHint,
    ended: bool,
}

impl H1Body {
    pub(crate) fn new(source: Arc<dyn BodySource>, generation: u32, framing: Framing) -> Self {
        let hint = match framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked => SizeHint::default(),
        };
        Self {
            source,
            generation,
            hint,
            ended: false,
        }
    }
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.source.poll_body(self.generation, cx);
        match polled {
            Poll::Ready(Some(Ok(data))) => {
                let n = data.len() as u64;
                let left = self.hint.upper().map(|u| u.saturating_sub(n));
                if let Some(left) = left {
                    self.hint = SizeHint::with_exact(left);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.hint.exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let mut state: State<tokio::io::Empty> = State {
            io: None,
            buf: BytesMut::from(wire),
            body: Decoder::new(Some(framing)),
            generation: 0,
            cont: Continue::No,
            broken: false,
            parked: None,
        };
        let mut out = Vec::new();
        loop {
            match state.step()? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => return Ok((out, state.buf.to_vec())),
                Step::NeedMore => return Err("incomplete"),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_and_leave_the_next_request() {
        let (body, rest) = decode(
            Framing::Chunked,
            b"3\r\nabc\r\nA;name=v\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /",
        )
        .unwrap();
        assert_eq!(body, b"abc0123456789");
        assert_eq!(rest, b"GET /");
        let (body, rest) = decode(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"abc"[..], &b"def"[..])
        );
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"3;a\x01b\r\nabc\r\n0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            assert!(decode(Framing::Chunked, wire).is_err(), "{wire:?} decoded");
        }
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode(Framing::Chunked, long_ext.as_bytes()),
            Err("chunk size line too long")
        );
        // Sixteen digits is the most a size may have; this one fits but is incomplete.
        assert_eq!(
            decode(Framing::Chunked, b"000000000000000a\r\n"),
            Err("incomplete")
        );
    }
}
