//! What can go wrong proxying one request: whose side failed, whether it may be retried,
//! and the answer the client gets for it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{ClientBodyError, RequestBodyError};
use super::buffer::BufferError;
use super::ProxyBody;
use crate::balance::{NoReadyEndpoint, Target};
use crate::config::BackendId;

/// Whose fault a failed request is; logged, and counted in metrics, so that a client
/// cannot make a backend look broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Blame {
    /// The request was malformed, too large or too slow.
    Client,
    /// The upstream refused, broke or stalled the exchange.
    Upstream,
    /// The configuration has no answer: no route, no endpoint.
    Config,
    /// Portico itself failed (a temporary file could not be written).
    Internal,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Upstream => "upstream",
            Blame::Config => "config",
            Blame::Internal => "internal",
        }
    }
}

/// Why a request was not proxied. The variant decides the status, the blame and whether
/// a retry is safe.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches and there is no default backend")]
    NoRoute,
    /// No route matches, and the connection was made for a Gateway HTTPS listener
    /// whose hostname the request's host is not (see `Config::gateway_sni`).
    #[error("the connection was made for another listener than the request's host")]
    Misdirected,
    #[error("route points at backend {0}, which the config does not have")]
    UnknownBackend(BackendId),
    #[error(transparent)]
    NoReadyEndpoint(#[from] NoReadyEndpoint),
    /// The route's backend reaches no Service port; `reason` says what is missing.
    #[error("backend {backend}: {reason}")]
    Unresolved {
        backend: BackendId,
        reason: std::sync::Arc<str>,
    },
    /// The global default backend has no ready endpoint for an unmatched request.
    #[error("default backend {0} has no ready endpoint")]
    DefaultBackendDown(BackendId),
    /// An intercepted answer found no default backend with a ready endpoint.
    #[error("no default backend has a ready endpoint to answer {0} with an error page")]
    NoErrorBackend(StatusCode),
    #[error("connecting to {target} failed: {source}")]
    Connect { target: Target, source: io::Error },
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout { target: Target, timeout: Duration },
    #[error("{target} sent no response within {timeout:?}")]
    ResponseTimeout { target: Target, timeout: Duration },
    #[error("{target} took no request data for {timeout:?}")]
    SendTimeout { target: Target, timeout: Duration },
    #[error("upstream {target} failed: {source}")]
    Upstream {
        target: Target,
        source: hyper::Error,
    },
    #[error("upstream {target} failed: {source}")]
    UpstreamHttp1 {
        target: Target,
        source: super::h1::client::PodError,
    },
    /// The TLS handshake with a pod failed: its certificate did not verify, or it
    /// speaks no TLS.
    #[error("TLS to {target} failed: {reason}")]
    UpstreamTls { target: Target, reason: String },
    /// The route's TLS settings for its pods could not be made (a missing or broken
    /// Secret): refused rather than sent with less protection than asked.
    #[error("TLS to the pods is configured as {0:?}, which could not be set up")]
    UpstreamTlsUnusable(Arc<str>),
    #[error("{target} switched protocols without being asked to")]
    UnexpectedUpgrade { target: Target },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method {0} is not served")]
    MethodNotAllowed(http::Method),
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("client sent no request body data for {timeout:?}")]
    ClientBodyTimeout { timeout: Duration },
    #[error("client request body failed: {0}")]
    ClientBody(ClientBodyError),
    #[error("buffering the request body failed: {0}")]
    Buffering(std::io::Error),
    /// The route's security settings could not be honoured, so it is not served.
    #[error("route refused: {0}")]
    Refused(std::sync::Arc<str>),
    /// The external authentication service could not be asked, or gave an answer that
    /// is neither 2xx, 401 nor 403: 500, as nginx's `auth_request` answers then.
    #[error("external auth: {0}")]
    ExternalAuth(String),
    /// A Gateway API rule none of whose backends could be resolved: the spec asks for 500
    /// (a gRPC call gets UNAVAILABLE, as GRPCRoute's spec asks).
    #[error("no valid backend: {0}")]
    NoValidBackend(std::sync::Arc<str>),
}

impl From<BufferError> for ProxyError {
    fn from(e: BufferError) -> Self {
        match e {
            BufferError::Body(body) => body.into(),
            BufferError::Spill(io) => ProxyError::Buffering(io),
        }
    }
}

impl From<RequestBodyError> for ProxyError {
    fn from(e: RequestBodyError) -> Self {
        match e {
            RequestBodyError::Timeout(timeout) => ProxyError::ClientBodyTimeout { timeout },
            RequestBodyError::TooLarge(limit) => ProxyError::BodyTooLarge { limit },
            RequestBodyError::Client(e) => ProxyError::ClientBody(e),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute
            | ProxyError::DefaultBackendDown(_)
            | ProxyError::NoErrorBackend(_) => StatusCode::NOT_FOUND,
            ProxyError::UnknownBackend(_)
            | ProxyError::NoReadyEndpoint(_)
            | ProxyError::UpstreamTlsUnusable(_)
            | ProxyError::Unresolved { .. }
            | ProxyError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamHttp1 { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::UnexpectedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::SendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Buffering(_)
            | ProxyError::ExternalAuth(_)
            | ProxyError::NoValidBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoRoute
            | ProxyError::UnknownBackend(_)
            | ProxyError::NoReadyEndpoint(_)
            | ProxyError::Unresolved { .. }
            | ProxyError::DefaultBackendDown(_)
            | ProxyError::NoErrorBackend(_)
            | ProxyError::UpstreamTlsUnusable(_)
            | ProxyError::Refused(_)
            | ProxyError::NoValidBackend(_) => Blame::Config,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::SendTimeout { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamHttp1 { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::UnexpectedUpgrade { .. }
            | ProxyError::ExternalAuth(_) => Blame::Upstream,
            ProxyError::BadRequest(_)
            | ProxyError::Misdirected
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::ClientBodyTimeout { .. }
            | ProxyError::ClientBody(_) => Blame::Client,
            ProxyError::Buffering(_) => Blame::Internal,
        }
    }

    /// Nothing reached the upstream, so another endpoint may be tried with the same
    /// request, whatever its method.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
        )
    }

    /// A short plain-text answer; a client fault also closes the connection, since what
    /// follows on it cannot be trusted.
    pub(crate) fn to_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let body = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(self, ProxyError::MethodNotAllowed(_)) {
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
            );
        }
        if self.blame() == Blame::Client {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            // What the HTTP/1 writer goes by: it skips every `Connection` field, the
            // upstream's included.
            resp.extensions_mut().insert(super::CloseAfter);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_blame_and_retry_agree() {
        let t = Target::Addr("10.0.0.1:80".parse().unwrap());
        let refused = ProxyError::Connect {
            target: t.clone(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            (refused.status(), refused.blame(), refused.retry_safe()),
            (StatusCode::BAD_GATEWAY, Blame::Upstream, true)
        );
        let slow = ProxyError::ResponseTimeout {
            target: t,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            (slow.status(), slow.blame(), slow.retry_safe()),
            (StatusCode::GATEWAY_TIMEOUT, Blame::Upstream, false)
        );
        let big = ProxyError::BodyTooLarge { limit: 1 };
        assert_eq!(
            (big.status(), big.blame()),
            (StatusCode::PAYLOAD_TOO_LARGE, Blame::Client)
        );
        let r = big.to_response();
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(ProxyError::NoRoute.blame(), Blame::Config);
    }
}
