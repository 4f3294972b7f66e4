//! The rustls server configuration and a handshake helper for the HTTPS listener.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::TlsError;

/// ALPN protocols offered, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What the handshake negotiated, for the HTTP layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The SNI the client sent, lower-cased; `None` for IP literals and old clients.
    pub sni: Option<String>,
    /// Whether ALPN selected HTTP/2.
    pub alpn_h2: bool,
}

/// A server configuration with TLS 1.3 and 1.2 only, rustls' default (ring) cipher suites
/// (AEAD only, forward secret), ALPN `h2` then `http/1.1`, and `resolver` picking the
/// certificate per handshake.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    crate::server_config_with(resolver, &crate::TlsPolicy::default())
}

/// Runs the server handshake on `io`, giving up after `handshake_timeout` so a client that
/// connects and stalls cannot hold a task and a socket forever.
pub async fn accept<IO>(
    io: IO,
    acceptor: &TlsAcceptor,
    handshake_timeout: Duration,
) -> Result<(TlsStream<IO>, TlsInfo), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(handshake_timeout, acceptor.accept(io))
        .await
        .map_err(|_| TlsError::HandshakeTimeout(handshake_timeout))?
        .map_err(TlsError::Handshake)?;
    let (_, conn) = stream.get_ref();
    let info = TlsInfo {
        sni: conn.server_name().map(str::to_ascii_lowercase),
        alpn_h2: conn.alpn_protocol() == Some(ALPN_H2),
    };
    Ok((stream, info))
}
