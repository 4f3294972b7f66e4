//! gRPC as the proxy sees it: recognising a call, its deadline, and answering a call
//! Portico itself fails the way gRPC clients understand (a status, not an HTML page).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::errors::ProxyError;
use super::ProxyBody;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `grpc-message` is percent-encoded: controls, non-ASCII and `%` itself.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// gRPC status codes Portico answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// A gRPC call: `Content-Type: application/grpc`, alone or with a `+format` suffix.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|v| {
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

/// The call's deadline from `grpc-timeout` (at most eight digits and a unit: `H`, `M`,
/// `S`, `m`, `u`, `n`); a malformed one is ignored, as servers ignore it.
pub(crate) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for what Portico would have answered with `status`, as gRPC maps
/// HTTP statuses, except that Portico's own timeouts are the call's deadline.
pub fn code_for(e: &ProxyError) -> Code {
    match e {
        ProxyError::ResponseTimeout { .. }
        | ProxyError::SendTimeout { .. }
        | ProxyError::ClientBodyTimeout { .. } => Code::DeadlineExceeded,
        ProxyError::BodyTooLarge { .. } => Code::ResourceExhausted,
        // A Gateway API rule (or share) without a usable backend: GRPCRoute's spec asks
        // for UNAVAILABLE where an HTTP client gets 500.
        ProxyError::NoValidBackend(_) => Code::Unavailable,
        _ => match e.status() {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

/// A trailers-only answer: HTTP 200 whose head carries `grpc-status` and
/// `grpc-message` (the HTTP reason, which names nothing inside the cluster).
pub(crate) fn answer(e: &ProxyError) -> Response<ProxyBody> {
    let code = code_for(e);
    let status = e.status();
    let message = status.canonical_reason().unwrap_or("error");
    let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code as u16));
    let encoded = utf8_percent_encode(message, MESSAGE).to_string();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Target;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn recognises_grpc_content_types() {
        assert!(is_grpc(&with("content-type", "application/grpc")));
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(is_grpc(&with(
            "content-type",
            "Application/GRPC;charset=utf-8"
        )));
        assert!(!is_grpc(&with("content-type", "application/grpc-web")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn parses_grpc_timeouts() {
        let t = |v| timeout(&with("grpc-timeout", v));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("123456789S"), None, "nine digits");
        assert_eq!(t("10"), None, "no unit");
        assert_eq!(t("m"), None, "no digits");
        assert_eq!(t("-1S"), None);
        assert_eq!(t("1x"), None);
    }

    #[test]
    fn failures_map_to_grpc_statuses() {
        let target = Target::Addr("10.0.0.1:80".parse().unwrap());
        assert_eq!(code_for(&ProxyError::NoRoute), Code::Unimplemented);
        let refused = ProxyError::Connect {
            target: target.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(code_for(&refused), Code::Unavailable);
        let late = ProxyError::ResponseTimeout {
            target,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(code_for(&late), Code::DeadlineExceeded);
        let no_backend = ProxyError::NoValidBackend("GRPCRoute ns/r spec.rules[0]".into());
        assert_eq!(no_backend.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(code_for(&no_backend), Code::Unavailable);
        let resp = answer(&late);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(resp.headers()["grpc-message"], "Gateway Timeout");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
    }
}
