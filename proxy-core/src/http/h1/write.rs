//! HTTP/1.1 responses: the head, the body's framing (length, chunked, or until close for
//! HTTP/1.0 clients), and the writes, coalesced so that a small response goes out in one.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::response::Parts;
use http::{StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::head::{role, PodFields, Role};
use super::wire::Wire;
use crate::http::body::HoldsPodFields;
use crate::http::socket::copy_behind;
use crate::http::{CloseAfter, ProxyBody};

/// How the body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// No body: `HEAD`, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and no known length: the end of the body closes the connection.
    UntilClose,
}

/// What the request said that shapes its response.
pub(crate) struct Asked {
    pub version: Version,
    pub head: bool,
    /// The connection may stay open after this response.
    pub keep_alive: bool,
}

/// Writes the status line and fields of `parts` into `out`; returns the body framing and
/// whether the connection stays open.
pub(crate) fn head(
    parts: &Parts,
    body: &ProxyBody,
    asked: &Asked,
    out: &mut Vec<u8>,
) -> (Out, bool) {
    let status = parts.status;
    let no_body = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;

    let pod = body.pod_fields();
    out.reserve(128 + (parts.headers.len() + pod.map_or(0, PodFields::len)) * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // One pass writes the fields and notes what framing needs: the length a response
    // states is believed (bodies of our own know theirs), and `Connection: close` ends
    // the connection after it.
    let mut fields = Fields {
        bodiless,
        switching: status == StatusCode::SWITCHING_PROTOCOLS,
        stated: None,
        has_date: false,
    };
    // The map's fields, and those set over the pod's while it holds them.
    let set_over = pod.into_iter().flat_map(PodFields::set_over_fields);
    for (name, value) in parts.headers.iter().chain(set_over) {
        let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
        if fields.keep(role(name), value) {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(pod) = pod {
        // The pod's fields as it sent them, but for those set over them.
        let set_names = || {
            let over = pod.set_over_fields().map(|(name, _)| name);
            parts.headers.keys().chain(over)
        };
        let keep = |name: &[u8], role: Role, value: &[u8]| {
            let set = set_names().any(|k| {
                let k = k.as_str().as_bytes();
                k.len() == name.len() && k.eq_ignore_ascii_case(name)
            });
            !set && fields.keep(role, value)
        };
        pod.write_kept(keep, out);
    }
    let Fields {
        stated,
        has_date,
        switching,
        ..
    } = fields;
    let closes = parts.extensions.get::<CloseAfter>().is_some();
    let framing = if no_body {
        Out::Empty
    } else if let Some(n) = stated.or(body.size_hint().exact()) {
        Out::Length(n)
    } else if asked.version == Version::HTTP_11 {
        Out::Chunked
    } else {
        Out::UntilClose
    };
    let keep_alive = asked.keep_alive && !closes && framing != Out::UntilClose;
    match framing {
        Out::Length(n) if stated.is_none() => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if switching {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if asked.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// The fields of a response head, written one by one.
struct Fields {
    bodiless: bool,
    switching: bool,
    /// The length the response states.
    stated: Option<u64>,
    has_date: bool,
}

impl Fields {
    /// Whether a field is written: not when it is this connection's to set.
    fn keep(&mut self, role: Role, value: &[u8]) -> bool {
        match role {
            // Hop-by-hop: this connection's own are written after the fields.
            Role::Connection | Role::TransferEncoding | Role::HopByHop => false,
            Role::Upgrade => self.switching,
            Role::ContentLength => {
                let length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                if self.bodiless || length.is_none() || self.stated.is_some() {
                    return false;
                }
                self.stated = length;
                true
            }
            Role::Date => {
                self.has_date = true;
                true
            }
            Role::Expect | Role::Other => true,
        }
    }
}

/// Sends the head (already in `pending`) and the body. `Ok(true)` when the response was
/// written whole, `Ok(false)` when its body broke off (the connection must then close
/// without a proper end, as the client has to see the response as incomplete).
pub(crate) async fn send<IO>(
    wire: &Wire<IO>,
    mut pending: Vec<u8>,
    body: ProxyBody,
    framing: Out,
) -> io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = pin!(body);
    if framing == Out::Empty {
        body.as_mut().get_mut().not_sent();
        write_all(wire, &mut [IoSlice::new(&pending)]).await?;
        return Ok(true);
    }
    let limit = match framing {
        Out::Length(n) => n,
        _ => u64::MAX,
    };
    let mut written = 0u64;
    loop {
        // What is ready now goes out with the head; otherwise the head goes first.
        let frame = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let frame = match frame {
            Some(frame) => frame,
            None => {
                if !pending.is_empty() {
                    write_all(wire, &mut [IoSlice::new(&pending)]).await?;
                    pending.clear();
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                if framing == Out::Chunked {
                    pending.extend_from_slice(b"0\r\n\r\n");
                }
                if !pending.is_empty() {
                    write_all(wire, &mut [IoSlice::new(&pending)]).await?;
                }
                return Ok(written >= limit || framing != Out::Length(limit));
            }
            Some(Err(_)) => {
                if !pending.is_empty() {
                    write_all(wire, &mut [IoSlice::new(&pending)]).await?;
                }
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // HTTP/1.1 trailers need the client to have asked for them; dropped.
                Err(_) => continue,
            },
        };
        let data = if written + data.len() as u64 > limit {
            // More than the stated length: the rest would be read as another response.
            data.slice(..usize::try_from(limit - written).unwrap_or(0))
        } else {
            data
        };
        if data.is_empty() && written < limit {
            continue;
        }
        written += data.len() as u64;
        let ended = body.is_end_stream() || written == limit;
        let suffix: &[u8] = match (framing, ended) {
            (Out::Chunked, true) => b"\r\n0\r\n\r\n",
            (Out::Chunked, false) => b"\r\n",
            _ => b"",
        };
        if framing == Out::Chunked {
            pending.extend_from_slice(hex(data.len() as u64, &mut [0; 16]));
            pending.extend_from_slice(b"\r\n");
        }
        if copy_behind(&mut pending, &data) {
            pending.extend_from_slice(suffix);
            write_all(wire, &mut [IoSlice::new(&pending)]).await?;
        } else {
            write_all(
                wire,
                &mut [
                    IoSlice::new(&pending),
                    IoSlice::new(&data),
                    IoSlice::new(suffix),
                ],
            )
            .await?;
        }
        pending.clear();
        if ended {
            return Ok(written >= limit || framing != Out::Length(limit));
        }
    }
}

/// Writes every byte of `bufs`, then flushes.
pub(crate) async fn write_all<IO>(wire: &Wire<IO>, bufs: &mut [IoSlice<'_>]) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = poll_fn(|cx| wire.lock().poll_write(cx, bufs)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    poll_fn(|cx| wire.lock().poll_flush(cx)).await
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn hex(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// The `Date` value, formatted once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            }
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::socket::COPY_BEHIND_HEAD_MAX;
    use http::{header, HeaderValue, Response};

    fn head_of(resp: Response<ProxyBody>, asked: Asked) -> (String, Out, bool) {
        let (parts, body) = resp.into_parts();
        let mut out = Vec::new();
        let (framing, keep) = head(&parts, &body, &asked, &mut out);
        (String::from_utf8(out).unwrap(), framing, keep)
    }

    fn asked(version: Version, head: bool) -> Asked {
        Asked {
            version,
            head,
            keep_alive: true,
        }
    }

    #[test]
    fn our_own_bodies_state_their_length() {
        let (text, framing, keep) = head_of(
            Response::new(ProxyBody::full("hello")),
            asked(Version::HTTP_11, false),
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!((framing, keep), (Out::Length(5), true));
    }

    #[test]
    fn connection_close_and_http10_shape_the_head() {
        let mut resp = Response::new(ProxyBody::full("x"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        resp.headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        resp.extensions_mut().insert(CloseAfter);
        let (text, _, keep) = head_of(resp, asked(Version::HTTP_11, false));
        assert!(!keep);
        assert_eq!(text.matches("connection: ").count(), 1, "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        let (text, _, keep) = head_of(
            Response::new(ProxyBody::full("x")),
            asked(Version::HTTP_10, false),
        );
        assert!(keep);
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    }

    #[test]
    fn bodiless_answers_have_no_framing() {
        let mut resp = Response::new(ProxyBody::full(""));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let (text, framing, _) = head_of(resp, asked(Version::HTTP_11, false));
        assert_eq!(framing, Out::Empty);
        assert!(!text.contains("content-length"), "{text}");
        let mut resp = Response::new(ProxyBody::full("abc"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let (text, framing, _) = head_of(resp, asked(Version::HTTP_11, true));
        assert_eq!(framing, Out::Empty);
        assert!(text.contains("content-length: 3\r\n"), "{text}");
    }

    /// Records each write as the buffers it was handed that held anything.
    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Vec<Vec<u8>>>>>);

    impl AsyncRead for Recorder {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let filled: Vec<Vec<u8>> = bufs
                .iter()
                .filter(|b| !b.is_empty())
                .map(|b| b.to_vec())
                .collect();
            let n = filled.iter().map(Vec::len).sum();
            self.0.lock().unwrap().push(filled);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The writes `send` makes of `body` after a head of `HEAD`, framed as `framing`.
    async fn writes_of(body: &[u8], framing: Out) -> Vec<Vec<Vec<u8>>> {
        let io = Recorder::default();
        let conn = crate::http::Conn::for_tests();
        let wire = Wire::new(
            io.clone(),
            conn,
            super::super::Limits { keep_alive: None },
            None,
        );
        let body = ProxyBody::full(bytes::Bytes::copy_from_slice(body));
        assert!(send(&wire, HEAD.to_vec(), body, framing).await.unwrap());
        let writes = io.0.lock().unwrap().clone();
        writes
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nx-head: 1\r\n\r\n";

    /// A small body goes out in the head's buffer, one buffer to one `send`; a large one
    /// after it, gathered, rather than copied.
    #[tokio::test]
    async fn a_small_body_is_written_with_its_head() {
        let small = b"hello, world\n";
        let writes = writes_of(small, Out::Length(13)).await;
        assert_eq!(writes, vec![vec![[HEAD, small].concat()]]);
        let writes = writes_of(small, Out::Chunked).await;
        assert_eq!(
            writes,
            vec![vec![[HEAD, b"d\r\n", small, b"\r\n0\r\n\r\n"].concat()]]
        );
        let most = vec![b'm'; COPY_BEHIND_HEAD_MAX];
        let writes = writes_of(&most, Out::Length(most.len() as u64)).await;
        assert_eq!(writes, vec![vec![[HEAD, &most].concat()]]);
        let large = vec![b'l'; COPY_BEHIND_HEAD_MAX + 1];
        let writes = writes_of(&large, Out::Length(large.len() as u64)).await;
        assert_eq!(writes, vec![vec![HEAD.to_vec(), large.clone()]]);
        let writes = writes_of(&large, Out::Chunked).await;
        assert_eq!(
            writes,
            vec![vec![
                [HEAD, b"801\r\n"].concat(),
                large,
                b"\r\n0\r\n\r\n".to_vec()
            ]]
        );
    }

    #[test]
    fn numbers_format() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(hex(0, &mut [0; 16]), b"0");
        assert_eq!(hex(0x1a2b, &mut [0; 16]), b"1a2b");
        assert_eq!(hex(u64::MAX, &mut [0; 16]), b"ffffffffffffffff");
    }
}
