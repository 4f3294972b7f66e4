//! A TCP stream whose gathered writes go out with `sendmsg` rather than `writev`, and
//! with `send` when only one of the buffers holds anything.
//!
//! `writev` enters through the file layer first (`fdget_pos`, `vfs_writev`, the position
//! lock a socket has no use for), and on small answers that is a tenth or more of the
//! kernel's part of a write. `sendmsg` skips that but still copies in and checks a
//! message header and an array of buffers; `send` takes one buffer as it is, about 0.2 µs
//! less a call on loopback. Reads already use `recv`.

use std::io::{self, IoSlice};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that writes gathered buffers with one `sendmsg`, or `send`.
pub struct Socket(TcpStream);

/// Body data up to this size is copied behind the head (or the chunk size line) it
/// follows, so that the two go out as one buffer, with `send`: the copy costs less than
/// a gathered call would.
pub(crate) const COPY_BEHIND_HEAD_MAX: usize = 2048;

/// Appends `data` to `unsent` when it is small and something is there to write it
/// with; otherwise leaves both and says so, and `data` goes out from where it is (alone,
/// with `send`, or gathered behind `unsent`).
pub(crate) fn copy_behind(unsent: &mut Vec<u8>, data: &[u8]) -> bool {
    let copy = !unsent.is_empty() && data.len() <= COPY_BEHIND_HEAD_MAX;
    if copy {
        unsent.extend_from_slice(data);
    }
    copy
}

impl Socket {
    pub fn new(stream: TcpStream) -> Self {
        Self(stream)
    }
}

impl Deref for Socket {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.0
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(one), None) = (filled.next(), filled.next()) {
            return Pin::new(&mut self.0).poll_write(cx, one);
        }
        let stream = &self.0;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            // A peer gone mid-write is an error, not a signal, as with `send`.
            match stream.try_io(Interest::WRITABLE, || {
                SockRef::from(stream).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
            }) {
                // Readiness was stale and is cleared: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Both ends of a loopback connection: the accepted one, then the client.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (server, _) = listener.accept().await.unwrap();
        (server, client.await.unwrap())
    }

    #[tokio::test]
    async fn gathered_writes_arrive_whole_and_in_order() {
        let (server, mut client) = connected().await;
        let mut server = Socket::new(server);
        // Larger than the socket buffers, so some writes take part of what they are
        // given and wait for the peer to read.
        let head = vec![b'h'; 3000];
        let body = vec![b'b'; 4 << 20];
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut h, mut b) = (&head[..], &body[..]);
        while !h.is_empty() || !b.is_empty() {
            let n = server
                .write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
                .await
                .unwrap();
            let from_head = n.min(h.len());
            h = &h[from_head..];
            b = &b[n - from_head..];
        }
        server.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), head.len() + body.len());
        assert!(got[..head.len()].iter().all(|&c| c == b'h'));
        assert!(got[head.len()..].iter().all(|&c| c == b'b'));
    }

    /// Gathered writes and single buffers among empty ones (sent as they are) alike: a
    /// write the socket takes only part of must report what it took, so that the rest
    /// follows in order. Small socket buffers and a reader that starts late make writes of
    /// every kind come back short.
    #[tokio::test]
    async fn every_kind_of_write_arrives_whole_and_in_order() {
        let (server, mut client) = connected().await;
        SockRef::from(&server)
            .set_send_buffer_size(16 << 10)
            .unwrap();
        SockRef::from(&client)
            .set_recv_buffer_size(16 << 10)
            .unwrap();
        let mut server = Socket::new(server);
        let mut writes: Vec<Vec<Vec<u8>>> = Vec::new();
        for i in 0..400u32 {
            let mark = |len: usize, salt: u32| -> Vec<u8> {
                (0..len)
                    .map(|j| (i as usize * 31 + j * 7 + salt as usize) as u8)
                    .collect()
            };
            writes.push(match i % 3 {
                // A head, a body and an empty suffix, as an answer is written.
                0 => vec![mark(200, 1), mark(1900, 2), Vec::new()],
                1 => vec![mark(1500, 3), mark(13, 4), mark(2, 5)],
                // One buffer among empty ones.
                _ => vec![Vec::new(), mark(700, 6), Vec::new()],
            });
        }
        let want: Vec<u8> = writes.iter().flatten().flatten().copied().collect();
        let total = want.len();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut got = Vec::with_capacity(total);
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut short = 0;
        for parts in &writes {
            let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut bufs = &mut slices[..];
            let mut left: usize = parts.iter().map(Vec::len).sum();
            while left > 0 {
                let n = server.write_vectored(bufs).await.unwrap();
                assert!(n > 0 && n <= left, "wrote {n} of {left}");
                if n < left {
                    short += 1;
                }
                left -= n;
                IoSlice::advance_slices(&mut bufs, n);
            }
        }
        server.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert!(
            short > 0,
            "the socket never filled up, so no write came back short"
        );
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes arrived out of order");
    }

    #[tokio::test]
    async fn writes_to_a_closed_peer_fail() {
        let (server, client) = connected().await;
        drop(client);
        let mut server = Socket::new(server);
        let chunk = vec![0u8; 64 << 10];
        let mut failed = false;
        for _ in 0..100 {
            if server
                .write_vectored(&[IoSlice::new(&chunk), IoSlice::new(&chunk)])
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed, "writes to a closed peer kept succeeding");
    }
}
