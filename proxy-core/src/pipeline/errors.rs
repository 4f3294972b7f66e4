//! Error pages and the route's own default backend, as ingress-nginx's `custom-http-errors`
//! and `default-backend` annotations make them.
//!
//! - **Intercepted codes.** An upstream answer (or the proxy's own 502/503/504 for the
//!   route) whose status is one of [`ErrorPages::codes`] is not passed on: its body is
//!   dropped and the request is answered by a default backend instead (the route's
//!   `default-backend`, else the global `--default-backend-service`), asked with a `GET /`
//!   that carries what went wrong in the `X-Code`, `X-Format`, `X-Original-URI`,
//!   `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port` and
//!   `X-Request-ID` headers ([`ErrorInfo`]). Its answer goes to the client as it is,
//!   status included, as nginx's `error_page CODE = @location` passes it on.
//! - **No ready endpoint.** When the route's backend has no ready endpoint, the route's
//!   own default backend (when it has one, with a ready endpoint) takes the request as it
//!   is, with the same headers but `X-Original-URI`, and `X-Code: 503`.
//!
//! `http::forward` runs both; this module holds the data and the headers.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::config::BackendId;
use crate::routes::RouteTarget;

pub(crate) const X_CODE: HeaderName = HeaderName::from_static("x-code");
pub(crate) const X_FORMAT: HeaderName = HeaderName::from_static("x-format");
pub(crate) const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub(crate) const X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
pub(crate) const X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
pub(crate) const X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
pub(crate) const X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A route's error handling: the codes it intercepts and its own default backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorPages {
    /// Status codes answered by a default backend instead of the upstream; sorted, each
    /// once. Empty: none are intercepted.
    pub codes: Box<[u16]>,
    /// The route's `default-backend`: serves its error pages, and its requests while
    /// its backend has no ready endpoint. `None`: the global default backend serves the
    /// error pages, and a backend without endpoints answers 503.
    pub backend: Option<BackendId>,
    /// `disable-proxy-intercept-errors`: the pods' own answers pass as they are; only
    /// the answers Portico makes for them (502, 503, 504) get an error page, as nginx's
    /// `error_page` without `proxy_intercept_errors`.
    pub pass_upstream: bool,
}

impl ErrorPages {
    /// Codes as given, sorted and each kept once.
    pub fn new(codes: impl IntoIterator<Item = u16>, backend: Option<BackendId>) -> Self {
        let mut codes: Vec<u16> = codes.into_iter().collect();
        codes.sort_unstable();
        codes.dedup();
        Self {
            codes: codes.into(),
            backend,
            pass_upstream: false,
        }
    }

    /// Whether an answer with `status` goes to a default backend instead.
    pub fn intercepts(&self, status: StatusCode) -> bool {
        self.codes.binary_search(&status.as_u16()).is_ok()
    }
}

/// What a default backend is told about the request it answers for, as ingress-nginx's
/// location variables hold it. Empty values are not sent (nginx drops a header set to "").
pub(crate) struct ErrorInfo<'a> {
    pub code: StatusCode,
    /// The client's `Accept`, every value joined by `, ` (`$http_accept`).
    pub accept: Option<String>,
    /// The request target as the client sent it (`$request_uri`); `None` for the
    /// no-endpoint case, where ingress-nginx does not send it.
    pub original_uri: Option<&'a str>,
    /// The route: its Ingress's namespace and name, its Service and port as the Ingress
    /// names them. `None` for the global default backend's own route, which belongs to no
    /// Ingress.
    pub route: Option<&'a RouteTarget>,
    /// `X-Request-ID`: the client's, or one made for this request.
    pub request_id: HeaderValue,
}

impl ErrorInfo<'_> {
    /// Sets the headers on a request to a default backend, replacing any the client sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_CODE, HeaderValue::from(self.code.as_u16()));
        set(headers, X_FORMAT, self.accept.as_deref());
        set(headers, X_ORIGINAL_URI, self.original_uri);
        let route = self.route;
        let ingress = route.and_then(|r| r.source.split_once('/').map(|(_, name)| name));
        set(headers, X_NAMESPACE, route.map(|r| &*r.backend.namespace));
        set(headers, X_INGRESS_NAME, ingress);
        set(headers, X_SERVICE_NAME, route.map(|r| &*r.backend.service));
        set(headers, X_SERVICE_PORT, route.map(|r| &*r.backend.port));
        headers.insert(X_REQUEST_ID, self.request_id.clone());
    }
}

/// Sets `name` to `value`, or removes it when there is none (or it is empty, or cannot be
/// a header value), so a client cannot pose as the proxy.
fn set(headers: &mut HeaderMap, name: HeaderName, value: Option<&str>) {
    match value
        .filter(|v| !v.is_empty())
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// The client's `X-Request-ID` when it sent a non-empty one, else a new random one of 32
/// hex digits, as nginx's `$request_id` (ingress-nginx's `$req_id`).
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID).filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

/// Every value of `name` joined by `, `, as nginx's `$http_` variables read a repeated
/// header.
pub(crate) fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::RoutePolicy;

    fn route() -> RouteTarget {
        RouteTarget {
            backend: BackendId::new("shop", "web", "http"),
            policy: Arc::new(RoutePolicy::default()),
            source: "shop/storefront".into(),
        }
    }

    #[test]
    fn codes_are_sorted_once_and_matched_exactly() {
        let pages = ErrorPages::new([503, 404, 503, 500], None);
        assert_eq!(&*pages.codes, &[404, 500, 503]);
        assert!(pages.intercepts(StatusCode::NOT_FOUND));
        assert!(pages.intercepts(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!pages.intercepts(StatusCode::BAD_GATEWAY));
        assert!(!pages.intercepts(StatusCode::OK));
        assert!(!ErrorPages::default().intercepts(StatusCode::NOT_FOUND));
    }

    #[test]
    fn headers_name_the_route_and_replace_the_clients() {
        let mut h = HeaderMap::new();
        h.insert(X_CODE, HeaderValue::from_static("200"));
        h.insert(X_NAMESPACE, HeaderValue::from_static("forged"));
        let route = route();
        let info = ErrorInfo {
            code: StatusCode::NOT_FOUND,
            accept: Some("text/html, application/json".into()),
            original_uri: Some("/a/b?c=d"),
            route: Some(&route),
            request_id: HeaderValue::from_static("abc"),
        };
        info.apply(&mut h);
        assert_eq!(h[X_CODE], "404");
        assert_eq!(h[X_FORMAT], "text/html, application/json");
        assert_eq!(h[X_ORIGINAL_URI], "/a/b?c=d");
        assert_eq!(h[X_NAMESPACE], "shop");
        assert_eq!(h[X_INGRESS_NAME], "storefront");
        assert_eq!(h[X_SERVICE_NAME], "web");
        assert_eq!(h[X_SERVICE_PORT], "http");
        assert_eq!(h[X_REQUEST_ID], "abc");
    }

    #[test]
    fn what_is_unknown_is_not_sent() {
        let mut h = HeaderMap::new();
        h.insert(X_NAMESPACE, HeaderValue::from_static("forged"));
        h.insert(X_ORIGINAL_URI, HeaderValue::from_static("/forged"));
        ErrorInfo {
            code: StatusCode::SERVICE_UNAVAILABLE,
            accept: None,
            original_uri: None,
            route: None,
            request_id: HeaderValue::from_static("id"),
        }
        .apply(&mut h);
        assert_eq!(h[X_CODE], "503");
        for name in [
            X_FORMAT,
            X_ORIGINAL_URI,
            X_NAMESPACE,
            X_INGRESS_NAME,
            X_SERVICE_NAME,
            X_SERVICE_PORT,
        ] {
            assert!(h.get(&name).is_none(), "{name} sent");
        }
    }

    #[test]
    fn request_ids_are_the_clients_or_new() {
        let mut h = HeaderMap::new();
        let a = request_id(&h);
        let b = request_id(&h);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        h.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(request_id(&h).len(), 32);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("something-unique"));
        assert_eq!(request_id(&h), "something-unique");
    }

    #[test]
    fn repeated_accept_headers_are_joined() {
        let mut h = HeaderMap::new();
        assert_eq!(joined(&h, &http::header::ACCEPT), None);
        h.append(http::header::ACCEPT, HeaderValue::from_static("text/html"));
        h.append(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(
            joined(&h, &http::header::ACCEPT).as_deref(),
            Some("text/html, */*")
        );
    }
}
