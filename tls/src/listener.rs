//! The TLS accept loop: TCP accept, handshake under a timeout in its own task, then hand
//! the stream to the HTTP layer. Kept here so the binary only supplies the handler.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_core::http::shard::Incoming;
use proxy_core::http::Socket;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::policy::AcceptorSource;
use crate::server::{accept, accept_by_sni, TlsInfo};
use crate::TlsError;

/// One accepted, handshaken connection.
pub struct TlsConnection<X = ()> {
    pub stream: TlsStream<Socket>,
    pub info: TlsInfo,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// What the prelude made of the connection before the handshake (see
    /// [`serve_observed`]); kept for as long as the connection is served.
    pub admitted: X,
}

/// Accepts connections on `listener` until `shutdown` completes, then drops the listener;
/// connections already accepted carry on (draining them is the handler's business). Each
/// handshake runs in its own task so a
/// slow client never delays others; failed or timed-out handshakes are logged at debug
/// (scanners and health probes make many) and dropped. `handler` runs in that task after
/// a successful handshake.
pub async fn serve<A, H, Fut>(
    listener: impl Into<Incoming>,
    acceptor: A,
    handshake_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    A: AcceptorSource,
    H: Fn(TlsConnection) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_observed(
        listener,
        acceptor,
        handshake_timeout,
        shutdown,
        handler,
        |_: &TlsError| {},
        |tcp: TcpStream, _remote: SocketAddr| async move { Some((tcp, ())) },
    )
    .await
}

/// [`serve`], also calling `on_failure` for every failed or timed-out handshake (for
/// metrics), and running `prelude` on each connection before its handshake: it admits
/// the connection (or returns `None` to close it at once), reads what a load balancer
/// sends first (a PROXY protocol header), and hands back the stream and what it found.
pub async fn serve_observed<A, H, Fut, F, P, PFut, X>(
    listener: impl Into<Incoming>,
    acceptor: A,
    handshake_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    handler: H,
    on_failure: F,
    prelude: P,
) where
    A: AcceptorSource,
    H: Fn(TlsConnection<X>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    F: Fn(&TlsError) + Clone + Send + 'static,
    P: Fn(TcpStream, SocketAddr) -> PFut + Clone + Send + 'static,
    PFut: Future<Output = Option<(TcpStream, X)>> + Send + 'static,
    X: Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut incoming = listener.into();
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = incoming.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "https accept failed");
                tokio::time::sleep(accept_backoff(&e)).await;
                continue;
            }
        };
        // The configuration in force when the connection came; a later swap leaves it be.
        let client_auth = acceptor.client_auth();
        let acceptor = acceptor.current();
        let handler = handler.clone();
        let on_failure = on_failure.clone();
        let prelude = prelude.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Some((tcp, admitted)) = prelude(tcp, remote).await else {
                return;
            };
            let local = match tcp.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "connection closed before handshake");
                    return;
                }
            };
            let tcp = Socket::new(tcp);
            // Only with hosts that ask for client certificates is the SNI read first.
            let accepted = match &client_auth {
                Some(hosts) => {
                    accept_by_sni(tcp, acceptor.config(), hosts, handshake_timeout).await
                }
                None => accept(tcp, &acceptor, handshake_timeout).await,
            };
            match accepted {
                Ok((stream, info)) => {
                    handler(TlsConnection {
                        stream,
                        info,
                        remote,
                        local,
                        admitted,
                    })
                    .await
                }
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                    on_failure(&e);
                }
            }
        });
    }
    tracing::info!("https listener stopped accepting");
}

fn accept_backoff(e: &io::Error) -> Duration {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => Duration::ZERO,
        _ => Duration::from_millis(100),
    }
}
