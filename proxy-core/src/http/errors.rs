//! What can go wrong proxying one request, and the answer the client gets for it.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::ProxyBody;
use crate::balance::{NoReadyEndpoint, Target};
use crate::config::BackendId;

/// `Server` on the answers the proxy writes itself; upstream answers keep their own.
pub(crate) const SERVER: &str = "portico";

/// Why a request was not proxied. The variant decides the status: whose side failed and
/// whether anything reached the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches and there is no default backend")]
    NoRoute,
    #[error("route points at backend {0}, which the config does not have")]
    UnknownBackend(BackendId),
    #[error(transparent)]
    NoReadyEndpoint(#[from] NoReadyEndpoint),
    #[error("connecting to {target} failed: {source}")]
    Connect { target: Target, source: io::Error },
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout { target: Target, timeout: Duration },
    #[error("{target} sent no response within {timeout:?}")]
    ResponseTimeout { target: Target, timeout: Duration },
    #[error("upstream {target} failed: {source}")]
    Upstream {
        target: Target,
        source: hyper::Error,
    },
    #[error("{target} switched protocols without being asked to")]
    UnexpectedUpgrade { target: Target },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UnknownBackend(_) | ProxyError::NoReadyEndpoint(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnexpectedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short plain-text answer; a bad request also closes the connection.
    pub(crate) fn to_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let body = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let mut resp = Response::new(ProxyBody::Right(Full::new(Bytes::from(body))));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(SERVER));
        if matches!(self, ProxyError::BadRequest(_)) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
