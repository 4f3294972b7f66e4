//! TCP: accept on a Service address, pick an endpoint, forward both ways with half-close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::drain::drained;
use super::reconcile::{Shared, Target};
use super::{Direction, FlowGuard, Protocol, ServicePortId};

pub(crate) async fn serve(
    listener: TcpListener,
    target: Arc<ArcSwap<Target>>,
    shared: Arc<Shared>,
) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer, target.load_full(), shared.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "L4 accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Close with an RST rather than a FIN, so the peer sees a refusal (or a cut) at once.
fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

async fn handle(mut client: TcpStream, peer: SocketAddr, t: Arc<Target>, shared: Arc<Shared>) {
    let observer = &shared.observer;
    let timeout = shared.options.connect_timeout;
    let mut picked = t.pick(peer.ip());
    let mut connected = None;
    // One retry on another endpoint covers an endpoint that died before the
    // EndpointSlice said so.
    for _ in 0..2 {
        let Some(ep) = picked else { break };
        match connect(ep, timeout).await {
            Ok(s) => {
                connected = Some((s, ep));
                break;
            }
            Err(e) => {
                tracing::debug!(service = %t.id, endpoint = %ep, error = %e, "L4 connect failed");
                picked = t.pick_other(peer.ip(), ep);
            }
        }
    }
    let Some((mut upstream, ep)) = connected else {
        tracing::debug!(service = %t.id, client = %peer, "no endpoint available; resetting");
        observer.refused(&t.id, Protocol::Tcp);
        reset(&client);
        return;
    };
    // Forwarding must not add Nagle delay the client did not ask for.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let drain = shared.drains.subscribe(&t.id, ep);
    let _open = FlowGuard::open(observer, &t.id, Protocol::Tcp);
    tracing::trace!(service = %t.id, client = %peer, endpoint = %ep, "L4 connection open");
    let outcome = tokio::select! {
        r = forward(&mut client, &mut upstream, &t.id, &shared) => r.map(|()| false),
        () = drained(drain) => Ok(true),
    };
    match outcome {
        Ok(false) => {}
        Ok(true) => {
            tracing::debug!(service = %t.id, client = %peer, endpoint = %ep,
                "endpoint left the Service and the drain timeout passed; closing");
            reset(&client);
            reset(&upstream);
        }
        Err(e) => {
            tracing::debug!(service = %t.id, client = %peer, endpoint = %ep, error = %e,
                "L4 connection failed");
            reset(&client);
            reset(&upstream);
        }
    }
}

async fn forward(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    id: &ServicePortId,
    shared: &Shared,
) -> io::Result<()> {
    let obs = &*shared.observer;
    let count = |d: Direction| move |n: u64| obs.bytes(id, Protocol::Tcp, d, n);
    #[cfg(target_os = "linux")]
    if shared.options.zero_copy {
        use super::splice::{pump, Pipe};
        match (Pipe::new(), Pipe::new()) {
            (Ok(p_in), Ok(p_out)) => {
                let (c, u) = (&*client, &*upstream);
                tokio::try_join!(
                    pump(c, u, &p_in, count(Direction::Inbound)),
                    pump(u, c, &p_out, count(Direction::Outbound)),
                )?;
                return Ok(());
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "no pipe for splice; copying in user space");
            }
        }
    }
    let mut c = Counting {
        inner: client,
        on_read: count(Direction::Inbound),
    };
    let mut u = Counting {
        inner: upstream,
        on_read: count(Direction::Outbound),
    };
    tokio::io::copy_bidirectional(&mut c, &mut u).await?;
    Ok(())
}

/// Reports every chunk read, so byte counters move while a long connection is open.
struct Counting<'a, F> {
    inner: &'a mut TcpStream,
    on_read: F,
}

impl<F: FnMut(u64) + Unpin> AsyncRead for Counting<'_, F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            (this.on_read)(n as u64);
        }
        r
    }
}

impl<F: Unpin> AsyncWrite for Counting<'_, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
