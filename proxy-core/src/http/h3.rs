//! HTTP/3 from clients: a QUIC endpoint whose requests go through the same
//! [`Proxy::handle`] as every other (routing, filters, pods over HTTP/1.1 or HTTP/2).
//!
//! QUIC is quinn's, HTTP/3 framing h3's. The TLS configuration is the HTTPS listener's
//! (certificates by SNI), with ALPN `h3` and TLS 1.3 alone, as QUIC requires. 0-RTT is
//! not accepted (a replayed request could repeat a side effect); connection migration
//! is quinn's default (a client may change address; the connection follows).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{ClientBody, ClientBodyError};
use super::{Conn, ConnInfo, Proxy, Scheme, Shutdown};

/// ALPN for HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";

/// Why the QUIC endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Http3Error {
    #[error("TLS configuration for QUIC: {0}")]
    Tls(String),
    #[error("binding UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A QUIC endpoint on `addr` serving with the certificates `tls` resolves. `tls` is the
/// HTTPS listener's configuration; its ALPN is replaced by `h3`.
pub fn endpoint(
    addr: SocketAddr,
    tls: &rustls::ServerConfig,
) -> Result<quinn::Endpoint, Http3Error> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Http3Error::Tls(e.to_string()))?;
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, addr).map_err(|source| Http3Error::Bind { addr, source })
}

/// A request body read from an HTTP/3 stream.
pub(crate) struct H3Body {
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    /// `Content-Length`, when the client sent one.
    length: Option<u64>,
    done: bool,
}

impl Proxy {
    /// Serves HTTP/3 on `endpoint` until `shutdown`; connections then get GOAWAY and
    /// their requests in flight finish.
    pub async fn serve_h3(self: Arc<Self>, endpoint: quinn::Endpoint, shutdown: Shutdown) {
        super::upstream::Pool::sweep_in_background(&self.pool);
        let local = endpoint.local_addr().ok();
        loop {
            let incoming = tokio::select! {
                incoming = endpoint.accept() => incoming,
                _ = shutdown.triggered() => break,
            };
            let Some(incoming) = incoming else { break };
            let Some(local) = local else { break };
            let proxy = self.clone();
            let guard = shutdown.track();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let _guard = guard;
                proxy.h3_connection(incoming, local, stop).await;
            });
        }
    }

    async fn h3_connection(
        self: Arc<Self>,
        incoming: quinn::Incoming,
        local: SocketAddr,
        shutdown: Shutdown,
    ) {
        let remote = incoming.remote_address();
        let Some(permit) = self.admit(remote) else {
            incoming.refuse();
            return;
        };
        let Some(permit) = self.admit_client(permit, remote) else {
            return;
        };
        let conn = match incoming.await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "QUIC handshake failed");
                return;
            }
        };
        let sni = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.server_name)
            .map(|s| s.to_ascii_lowercase());
        let info = ConnInfo {
            remote,
            local: SocketAddr::new(conn.local_ip().unwrap_or(local.ip()), local.port()),
            scheme: Scheme::Https,
            sni,
            alpn_h2: false,
            proxied: None,
            // QUIC connections are never asked for a certificate: routes that check
            // them refuse these requests.
            client_cert: None,
        };
        let client = Arc::new(Conn {
            http3: true,
            ..Conn::new(info)
        });
        let mut h3 =
            match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await {
                Ok(h3) => h3,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "HTTP/3 connection setup failed");
                    return;
                }
            };
        let _permit = permit;
        loop {
            let next = tokio::select! {
                next = h3.accept() => next,
                _ = shutdown.triggered() => {
                    // GOAWAY: requests already taken finish, no new ones start.
                    let _ = h3.shutdown(0).await;
                    break;
                }
            };
            match next {
                Ok(Some(resolver)) => {
                    let proxy = self.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((req, stream)) => proxy.h3_request(req, stream, &client).await,
                            Err(e) => {
                                tracing::debug!(%remote, error = %e, "HTTP/3 request head unreadable")
                            }
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%remote, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            }
        }
    }

    async fn h3_request(
        self: Arc<Self>,
        req: Request<()>,
        stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
        conn: &Conn,
    ) {
        let (mut send, recv) = stream.split();
        let (parts, ()) = req.into_parts();
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // HTTP/3 says nothing of a body before it comes; a bodiless method without a
        // length is taken to have none, so the pod gets no chunked GET.
        let bodiless = length.is_none()
            && matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
            );
        let body = if bodiless {
            ClientBody::Empty
        } else {
            ClientBody::H3(Box::new(H3Body {
                recv,
                length,
                done: false,
            }))
        };
        let mut resp = self.handle(Box::new(parts), body, conn).await;
        // The HTTP/3 stream writes the map alone.
        crate::http::body::read_pod_fields(&mut resp);
        let (head, mut body) = resp.into_parts();
        if let Err(e) = send.send_response(Response::from_parts(head, ())).await {
            tracing::debug!(error = %e, "HTTP/3 response head not sent");
            return;
        }
        let mut body = Pin::new(&mut body);
        while let Some(frame) = body.frame().await {
            let sent = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => send.send_data(data).await,
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => send.send_trailers(trailers).await,
                        Err(_) => Ok(()),
                    },
                },
                Err(e) => {
                    tracing::debug!(error = %e, "response body broke off; resetting the HTTP/3 stream");
                    send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return;
                }
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "HTTP/3 client went away");
                return;
            }
        }
        let _ = send.finish().await;
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.recv.poll_recv_data(cx) {
            Poll::Ready(Ok(Some(mut buf))) => {
                let data = buf.copy_to_bytes(buf.remaining());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(ClientBodyError::H3(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.length == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
