//! A TCP stream whose gathered writes go out with `sendmsg` rather than `writev`.
//!
//! Both hand the kernel the same buffers, but `writev` enters through the file layer
//! first (`fdget_pos`, `vfs_writev`, the position lock a socket has no use for), and on
//! small answers that is a tenth or more of the kernel's part of a write. Reads already
//! use `recv`, and single-buffer writes `send`, as tokio's own stream does.

use std::io::{self, IoSlice};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that writes gathered buffers with one `sendmsg`.
pub struct Socket(TcpStream);

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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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

    #[tokio::test]
    async fn gathered_writes_arrive_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (server, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap();
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

    #[tokio::test]
    async fn writes_to_a_closed_peer_fail() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
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
