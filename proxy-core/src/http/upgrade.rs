//! `Upgrade` (WebSocket) tunnels: once both sides switched protocols, copy bytes both ways
//! until either side closes or the pod falls silent for the read timeout. The client side
//! is an HTTP/1.1 connection that switched protocols, or an HTTP/2 stream opened by an
//! extended CONNECT (RFC 8441); the pod side is always HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::h1::ClientUpgrade;
use super::idle_io::ReadIdle;
use super::upstream::PodUpgrade;
use super::{ProxyBody, ShutdownGuard};
use crate::balance::Target;
use hyper::upgrade::OnUpgrade;

/// Waits for both halves of the upgrade and relays until either side closes. Runs on its
/// own task: the connections it joins are no longer HTTP and need nothing from the config.
pub(crate) fn spawn_tunnel(
    client: ClientSide,
    upstream: PodUpgrade,
    endpoint: Target,
    read_timeout: Duration,
    guard: ShutdownGuard,
) {
    tokio::spawn(async move {
        let _guard = guard;
        match client {
            ClientSide::H1(client) => {
                let (client, upstream) = tokio::join!(client.connection(), pod_io(upstream));
                match (client, upstream) {
                    (Some(client), Ok(upstream)) => {
                        relay(client, upstream, &endpoint, read_timeout).await
                    }
                    (None, _) => {
                        tracing::debug!(%endpoint, "client connection closed before the upgrade")
                    }
                    (_, Err(e)) => {
                        tracing::debug!(%endpoint, error = %e, "upgrade did not complete")
                    }
                }
            }
            ClientSide::H2(client) => {
                let (client, upstream) = tokio::join!(client, pod_io(upstream));
                match (client, upstream) {
                    (Ok(client), Ok(upstream)) => {
                        relay(TokioIo::new(client), upstream, &endpoint, read_timeout).await
                    }
                    (Err(e), _) => {
                        tracing::debug!(%endpoint, error = %e, "upgrade did not complete")
                    }
                    (_, Err(e)) => {
                        tracing::debug!(%endpoint, error = %e, "upgrade did not complete")
                    }
                }
            }
        }
    });
}

/// The pod's connection, whichever client switched it.
trait PodIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PodIo for T {}

async fn pod_io(upstream: PodUpgrade) -> Result<Box<dyn PodIo>, String> {
    match upstream {
        PodUpgrade::H1(Some(io)) => Ok(Box::new(io)),
        PodUpgrade::H1(None) => Err("the pod connection was gone".to_owned()),
        PodUpgrade::Hyper(on) => match on.await {
            Ok(io) => Ok(Box::new(TokioIo::new(io))),
            Err(e) => Err(e.to_string()),
        },
    }
}

async fn relay(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: Box<dyn PodIo>,
    endpoint: &Target,
    read_timeout: Duration,
) {
    // A pod that sends nothing for the read timeout ends the tunnel, as nginx's
    // proxy_read_timeout ends an idle WebSocket; writes to it stall out at the
    // route's send timeout, as on every upstream connection.
    let mut upstream = ReadIdle::new(upstream, read_timeout);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            tracing::debug!(%endpoint, bytes_up = up, bytes_down = down, "tunnel closed")
        }
        Err(e) => tracing::debug!(%endpoint, error = %e, "tunnel ended with an error"),
    }
}

/// The client's end of a tunnel.
pub(crate) enum ClientSide {
    /// An HTTP/1.1 connection, handed over once the `101` is written.
    H1(ClientUpgrade),
    /// An HTTP/2 stream, handed over once the `200` answering its CONNECT is sent.
    H2(OnUpgrade),
}

/// Put in the extensions of an HTTP/2 WebSocket request turned into an HTTP/1.1 upgrade.
#[derive(Clone)]
pub(crate) struct H2WebSocket(std::sync::Arc<std::sync::Mutex<Option<OnUpgrade>>>);

impl H2WebSocket {
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// An HTTP/2 extended CONNECT for the `websocket` protocol (RFC 8441) becomes the
/// HTTP/1.1 upgrade the pod expects: `GET` with `Upgrade: websocket` and a fresh
/// `Sec-WebSocket-Key` (HTTP/2 clients send none); `Sec-WebSocket-Version`, `-Protocol`
/// and `-Extensions` travel as sent. Other requests are left alone.
pub(crate) fn h2_websocket(parts: &mut Parts) -> Result<(), super::ProxyError> {
    if parts.method != Method::CONNECT || parts.version != Version::HTTP_2 {
        return Ok(());
    }
    let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() else {
        return Ok(());
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(super::ProxyError::BadRequest(
            "extended CONNECT for a protocol other than websocket",
        ));
    }
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Ok(());
    };
    parts.extensions.remove::<hyper::ext::Protocol>();
    parts.method = Method::GET;
    let key: [u8; 16] = rand::random();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
    if let Ok(key) = HeaderValue::from_str(&key) {
        parts.headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    parts
        .extensions
        .insert(H2WebSocket(std::sync::Arc::new(std::sync::Mutex::new(
            Some(on_upgrade),
        ))));
    Ok(())
}

/// The HTTP/2 client's answer to the pod's `101`: `200` with the pod's WebSocket fields
/// but its accept key, which belongs to the HTTP/1.1 handshake.
pub(crate) fn h2_accepted(pod: &http::HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    for name in [
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        if let Some(v) = pod.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}
