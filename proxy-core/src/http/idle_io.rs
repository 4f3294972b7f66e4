//! Sockets whose writes fail once the peer has taken nothing for a while, as nginx's
//! timers between two writes (`proxy-send-timeout` towards a pod, `send_timeout` towards
//! a client). A socket with nothing to write is never timed, so an idle connection is
//! left to the idle timers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::IdleTimer;

/// The peer took no data for longer than the write timeout.
#[derive(Debug, thiserror::Error)]
#[error("peer took no data for the write timeout")]
pub(crate) struct WriteStalled;

impl WriteStalled {
    /// Whether `e` is this timeout.
    pub fn is(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::TimedOut && e.get_ref().is_some_and(|i| i.is::<WriteStalled>())
    }
}

/// How long a write may wait on the peer.
pub(crate) enum WriteTimeout {
    /// One value for the connection's life (a client connection).
    Fixed(Duration),
    /// Milliseconds, shared, so that each request on a pooled upstream connection sets
    /// its own route's value.
    Shared(Arc<AtomicU64>),
}

/// `IO` whose writes time out after the peer stalls for the write timeout.
pub(crate) struct WriteIdle<IO> {
    inner: IO,
    timeout: WriteTimeout,
    timer: Option<IdleTimer>,
}

impl<IO> WriteIdle<IO> {
    pub fn new(inner: IO, timeout: WriteTimeout) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = match &self.timeout {
            WriteTimeout::Fixed(timeout) => *timeout,
            WriteTimeout::Shared(millis) => Duration::from_millis(millis.load(Ordering::Relaxed)),
        };
        let timer = self.timer.get_or_insert_with(|| IdleTimer::new(timeout));
        // The request now on the connection may have set another value.
        timer.set_timeout(timeout);
        timer.expired(cx)
    }

    fn progressed(&mut self) {
        if let Some(t) = &mut self.timer {
            t.progress();
        }
    }

    fn stall_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, WriteStalled)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteIdle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteIdle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(Self::stall_error())),
            Poll::Pending => Poll::Pending,
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(Self::stall_error())),
            Poll::Pending => Poll::Pending,
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(Self::stall_error())),
            Poll::Pending => Poll::Pending,
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `IO` whose reads fail once the peer has sent nothing for `timeout`: an upgraded
/// (WebSocket) tunnel's pod side, under `proxy-read-timeout` as ingress-nginx applies it.
pub(crate) struct ReadIdle<IO> {
    inner: IO,
    timer: IdleTimer,
}

impl<IO> ReadIdle<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        Self {
            inner,
            timer: IdleTimer::new(timeout),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReadIdle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.timer.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer sent nothing for the read timeout",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                this.timer.progress();
                ready
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReadIdle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
