//! The rustls server configuration and a handshake helper for the HTTPS listener.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::client_auth::ClientAuthHosts;
use crate::TlsError;
use proxy_core::pipeline::ClientCert;

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
    /// The client certificate as the host's CA judged it, when the SNI named a host
    /// that asks for one (`auth-tls-*`).
    pub client_cert: Option<Arc<ClientCert>>,
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
        client_cert: None,
    };
    Ok((stream, info))
}

/// [`accept`], reading the ClientHello first so that a host in `hosts` (by SNI) gets its
/// own configuration, which asks for a client certificate; the certificate is judged
/// by the host's CA once the handshake is done. Other hosts get `base`.
pub async fn accept_by_sni<IO>(
    io: IO,
    base: &Arc<ServerConfig>,
    hosts: &ClientAuthHosts,
    handshake_timeout: Duration,
) -> Result<(TlsStream<IO>, TlsInfo), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let host = sni.as_deref().and_then(|s| hosts.get(s));
        let config = host.map_or_else(|| base.clone(), |(_, h)| h.config.clone());
        let stream = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((stream, sni, host))
    };
    let (stream, sni, host) = tokio::time::timeout(handshake_timeout, handshake)
        .await
        .map_err(|_| TlsError::HandshakeTimeout(handshake_timeout))?
        .map_err(TlsError::Handshake)?;
    let (_, conn) = stream.get_ref();
    let client_cert =
        host.map(|(server, h)| Arc::new(h.auth.judge(server, conn.peer_certificates())));
    if let Some(c) = &client_cert {
        tracing::debug!(server = %c.server, verify = %c.verify.header_value(), subject = %c.subject_dn, "client certificate judged");
    }
    let info = TlsInfo {
        sni,
        alpn_h2: conn.alpn_protocol() == Some(ALPN_H2),
        client_cert,
    };
    Ok((stream, info))
}
