//! CORS, for two owners with one origin check and one preflight answer:
//!
//! - [`CorsRules::IngressNginx`]: `enable-cors` and the `cors-*` keys, as ingress-nginx's
//!   CORS template answers: a request whose `Origin` is allowed gets the
//!   `Access-Control-*` fields on its answer (whatever answers it), and an allowed
//!   `OPTIONS` request is answered by Portico with 204 (a preflight never reaches the
//!   pod). A request from another origin is passed on untouched, `OPTIONS` included.
//! - [`CorsRules::GatewayApi`]: Gateway API's `HTTPCORSFilter`. Only a request with an
//!   `Origin` is a CORS request. A preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) is always answered by Portico with 204, with the
//!   preflight fields when the origin is allowed and none when it is not; any other
//!   request from an allowed origin goes to the pod, and its answer gets
//!   `Access-Control-Allow-Origin`, `-Allow-Credentials` and `-Expose-Headers`. With
//!   credentials allowed, a configured `*` is never sent (the Fetch standard reads it
//!   literally then): the request's origin, method or header names are echoed instead.

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError};

/// Whose CORS rules a [`Cors`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorsRules {
    /// ingress-nginx's `enable-cors` template.
    IngressNginx,
    /// Gateway API's `HTTPCORSFilter` (v1.6).
    GatewayApi,
}

/// Which origins are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`. ingress-nginx: every request, with or without `Origin`, gets
    /// `Access-Control-Allow-Origin: *`. Gateway API: every request with an `Origin`.
    Any,
    /// These origins, each answered with itself.
    List(Vec<OriginPattern>),
}

/// An allowed origin, as one of the two owners writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern(Pattern);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// `cors-allow-origin`'s: lower-cased; split at the first `*` when there is one.
    Nginx {
        before: Box<str>,
        after: Option<Box<str>>,
    },
    /// `allowOrigins`': scheme, host and port (the scheme's own when not written).
    Gateway {
        scheme: Scheme,
        host: GatewayHost,
        port: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GatewayHost {
    /// `*`: every host.
    Any,
    /// `*.example.com`, kept as `.example.com`: one or more labels before it.
    Suffix(Box<str>),
    Exact(Box<str>),
}

/// Why an `allowOrigins` entry is not an origin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("{0:?} is not of the form <scheme>://<host>[:<port>]")]
    Shape(String),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("host {0:?} is not a DNS name, `*`, or `*.` and a DNS name")]
    Host(String),
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
}

impl OriginPattern {
    /// An origin as `cors-allow-origin` lists it: `https://example.com`, `http://a.b:8080`,
    /// `https://*.example.com` (the first `*` stands for one label of letters, digits and
    /// `-`), or `null`. Compared without regard to case, as nginx's `~*`.
    pub fn new(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        OriginPattern(match lower.split_once('*') {
            Some((before, after)) => Pattern::Nginx {
                before: before.into(),
                after: Some(after.into()),
            },
            None => Pattern::Nginx {
                before: lower.into(),
                after: None,
            },
        })
    }

    /// An origin as Gateway API's `allowOrigins` lists it: `http` or `https`, a host that
    /// is a DNS name, `*` (every host) or `*.` and a DNS name (any number of labels in
    /// place of the `*`), and an optional port (without one, the scheme's: 80 or 443).
    /// The lone `*` (every origin) is [`CorsOrigins::Any`], not a pattern.
    pub fn gateway(pattern: &str) -> Result<Self, OriginError> {
        let lower = pattern.to_ascii_lowercase();
        let (scheme, authority) = lower
            .split_once("://")
            .ok_or_else(|| OriginError::Shape(pattern.to_owned()))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| OriginError::Scheme(scheme.to_owned()))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                let n = port
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0 && port.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| OriginError::Port(port.to_owned()))?;
                (host, n)
            }
            None => (authority, scheme.default_port()),
        };
        if host.contains(['/', '?', '#', '@']) {
            return Err(OriginError::Shape(pattern.to_owned()));
        }
        let host = if host == "*" {
            GatewayHost::Any
        } else if let Some(rest) = host.strip_prefix("*.") {
            if !dns_name(rest) {
                return Err(OriginError::Host(host.to_owned()));
            }
            GatewayHost::Suffix(format!(".{rest}").into())
        } else if dns_name(host) {
            GatewayHost::Exact(host.into())
        } else {
            return Err(OriginError::Host(host.to_owned()));
        };
        Ok(OriginPattern(Pattern::Gateway { scheme, host, port }))
    }

    pub fn matches(&self, origin: &[u8]) -> bool {
        let origin = origin.to_ascii_lowercase();
        match &self.0 {
            Pattern::Nginx { before, after } => nginx_matches(before, after.as_deref(), &origin),
            Pattern::Gateway { scheme, host, port } => {
                std::str::from_utf8(&origin).is_ok_and(|o| gateway_matches(*scheme, host, *port, o))
            }
        }
    }
}

fn nginx_matches(before: &str, after: Option<&str>, origin: &[u8]) -> bool {
    let Some(after) = after else {
        return origin == before.as_bytes();
    };
    let (before, after) = (before.as_bytes(), after.as_bytes());
    if origin.len() < before.len() + after.len() + 1
        || !origin.starts_with(before)
        || !origin.ends_with(after)
    {
        return false;
    }
    origin[before.len()..origin.len() - after.len()]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// `origin` (lower-cased) against a Gateway API pattern: same scheme, same port once the
/// scheme's own is filled in, and a host the pattern covers.
fn gateway_matches(scheme: Scheme, host: &GatewayHost, port: u16, origin: &str) -> bool {
    let Some((s, authority)) = origin.split_once("://") else {
        return false;
    };
    let Some(s) = Scheme::parse(s) else {
        return false;
    };
    // A port follows the last `:` unless that `:` is inside an IPv6 literal.
    let (h, p) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return false,
        },
        _ => (authority, s.default_port()),
    };
    if s != scheme || p != port || h.is_empty() || h.contains(['/', '?', '#', '@']) {
        return false;
    }
    match host {
        GatewayHost::Any => true,
        GatewayHost::Suffix(suffix) => h.len() > suffix.len() && h.ends_with(&**suffix),
        GatewayHost::Exact(exact) => h == &**exact,
    }
}

/// Labels of letters, digits and `-`, separated by single dots.
fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One route's CORS answer fields, validated and formatted by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub rules: CorsRules,
    pub origins: CorsOrigins,
    /// Gateway API: not sent when empty; a `*` with credentials allowed sends the
    /// request's `Access-Control-Request-Method` instead.
    pub allow_methods: HeaderValue,
    /// Gateway API: not sent when empty; a `*` with credentials allowed sends the
    /// request's `Access-Control-Request-Headers` instead (nothing when it has none).
    pub allow_headers: HeaderValue,
    /// Not sent when empty.
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for this request, if its origin is allowed.
    fn allow_origin(&self, parts: &Parts) -> Option<HeaderValue> {
        let origin = parts.headers.get(header::ORIGIN);
        match (&self.origins, self.rules) {
            (CorsOrigins::Any, CorsRules::IngressNginx) => Some(HeaderValue::from_static("*")),
            (CorsOrigins::Any, CorsRules::GatewayApi) => {
                let origin = origin?;
                Some(if self.allow_credentials {
                    origin.clone()
                } else {
                    HeaderValue::from_static("*")
                })
            }
            (CorsOrigins::List(list), _) => {
                let origin = origin?;
                list.iter()
                    .any(|p| p.matches(origin.as_bytes()))
                    .then(|| origin.clone())
            }
        }
    }

    /// ingress-nginx's fields, the same on every answer, in its template's order.
    fn nginx_fields(&self, allow_origin: HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
        if self.allow_credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        out.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        ));
        out.push((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        ));
        if let Some(expose) = &self.expose_headers {
            out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        out.push((header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        out
    }

    /// Gateway API's fields for an allowed request: the preflight's, or (`preflight`
    /// false) the actual request's.
    fn gateway_fields(
        &self,
        allow_origin: HeaderValue,
        parts: &Parts,
        preflight: bool,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
        if self.allow_credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if preflight {
            let echo = |configured: &HeaderValue, asked: HeaderName| {
                if self.allow_credentials && configured == "*" {
                    parts.headers.get(asked).cloned()
                } else {
                    Some(configured.clone()).filter(|v| !v.is_empty())
                }
            };
            if let Some(v) = echo(&self.allow_methods, header::ACCESS_CONTROL_REQUEST_METHOD) {
                out.push((header::ACCESS_CONTROL_ALLOW_METHODS, v));
            }
            if let Some(v) = echo(&self.allow_headers, header::ACCESS_CONTROL_REQUEST_HEADERS) {
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v));
            }
        }
        if let Some(expose) = &self.expose_headers {
            out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        if preflight {
            out.push((header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        }
        out
    }

    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        match self.rules {
            CorsRules::IngressNginx => {
                let Some(origin) = self.allow_origin(parts) else {
                    return Ok(Flow::Continue);
                };
                let fields = self.nginx_fields(origin);
                if parts.method != Method::OPTIONS {
                    ctx.answer_headers.extend(fields);
                    return Ok(Flow::Continue);
                }
                // As ingress-nginx's preflight answer writes it.
                Ok(preflight_answer(
                    fields,
                    Some(HeaderValue::from_static("text/plain charset=UTF-8")),
                ))
            }
            CorsRules::GatewayApi => {
                let preflight = parts.method == Method::OPTIONS
                    && parts.headers.contains_key(header::ORIGIN)
                    && parts
                        .headers
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
                let origin = self.allow_origin(parts);
                if preflight {
                    // A denied preflight gets 204 without fields, as the spec allows: the
                    // browser then sends no actual request.
                    let fields = origin
                        .map(|o| self.gateway_fields(o, parts, true))
                        .unwrap_or_default();
                    return Ok(preflight_answer(fields, None));
                }
                if let Some(o) = origin {
                    ctx.answer_headers
                        .extend(self.gateway_fields(o, parts, false));
                }
                Ok(Flow::Continue)
            }
        }
    }
}

/// Portico's own 204 to a preflight; the empty body's framing is the HTTP writer's (a
/// 204 carries no Content-Length).
fn preflight_answer(
    fields: Vec<(HeaderName, HeaderValue)>,
    content_type: Option<HeaderValue>,
) -> Flow {
    let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let headers = resp.headers_mut();
    for (name, value) in fields {
        headers.insert(name, value);
    }
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    Flow::Answer(Box::new(resp))
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::ctx;
    use super::*;
    use crate::http::Scheme;
    use http::Request;

    fn cors(origins: CorsOrigins) -> Cors {
        Cors {
            rules: CorsRules::IngressNginx,
            origins,
            allow_methods: HeaderValue::from_static("GET, PUT, POST, DELETE, PATCH, OPTIONS"),
            allow_headers: HeaderValue::from_static("DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"),
            expose_headers: None,
            allow_credentials: true,
            max_age: HeaderValue::from_static("1728000"),
        }
    }

    fn req(method: &str, origin: Option<&str>) -> Parts {
        let mut b = Request::builder().method(method).uri("/");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn wildcard_origins_stand_for_one_label() {
        let p = OriginPattern::new("https://*.origin.cors.com");
        assert!(p.matches(b"https://abc.origin.cors.com"));
        assert!(p.matches(b"HTTPS://A-1.Origin.Cors.Com"));
        assert!(!p.matches(b"https://origin.cors.com"));
        assert!(!p.matches(b"https://a.b.origin.cors.com"));
        assert!(!p.matches(b"http://abc.origin.cors.com"));
        assert!(!p.matches(b"https://evil.com/https://abc.origin.cors.com"));
        let p = OriginPattern::new("http://origin.com:8080");
        assert!(p.matches(b"http://origin.com:8080"));
        assert!(!p.matches(b"http://origin.com"));
        assert!(!p.matches(b"http://xorigin.com:8080"));
        assert!(OriginPattern::new("null").matches(b"null"));
    }

    #[test]
    fn preflight_is_answered_and_others_get_fields() {
        let f = cors(CorsOrigins::List(vec![
            OriginPattern::new("https://origin.cors.com"),
            OriginPattern::new("https://*.cors.net"),
        ]));
        let mut c = ctx(Scheme::Http, "a", 443);
        let Ok(Flow::Answer(resp)) =
            f.on_request(&mut c, &req("OPTIONS", Some("https://x.cors.net")))
        else {
            panic!("preflight not answered")
        };
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "https://x.cors.net");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "1728000");
        assert_eq!(h["content-type"], "text/plain charset=UTF-8");
        assert!(h.get("access-control-expose-headers").is_none());

        let mut c = ctx(Scheme::Http, "a", 443);
        assert!(matches!(
            f.on_request(&mut c, &req("GET", Some("https://origin.cors.com"))),
            Ok(Flow::Continue)
        ));
        assert_eq!(c.answer_headers.len(), 5);
        assert_eq!(c.answer_headers[0].1, "https://origin.cors.com");

        // Not allowed: passed on untouched, a preflight too.
        for (m, o) in [
            ("OPTIONS", Some("https://evil.com")),
            ("GET", None),
            ("OPTIONS", None),
        ] {
            let mut c = ctx(Scheme::Http, "a", 443);
            assert!(
                matches!(f.on_request(&mut c, &req(m, o)), Ok(Flow::Continue)),
                "{m} {o:?}"
            );
            assert!(c.answer_headers.is_empty());
        }
    }

    #[test]
    fn any_origin_answers_every_request_with_a_star() {
        let f = Cors {
            allow_credentials: false,
            expose_headers: Some(HeaderValue::from_static("X-Custom")),
            ..cors(CorsOrigins::Any)
        };
        let mut c = ctx(Scheme::Http, "a", 443);
        assert!(matches!(
            f.on_request(&mut c, &req("GET", None)),
            Ok(Flow::Continue)
        ));
        let names: Vec<&str> = c.answer_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "access-control-allow-origin",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-expose-headers",
                "access-control-max-age"
            ]
        );
        assert_eq!(c.answer_headers[0].1, "*");
        let mut c = ctx(Scheme::Http, "a", 443);
        let Ok(Flow::Answer(r)) = f.on_request(&mut c, &req("OPTIONS", Some("https://any.where")))
        else {
            panic!("preflight not answered")
        };
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
    }

    fn gateway(origins: CorsOrigins, credentials: bool, methods: &str, headers: &str) -> Cors {
        Cors {
            rules: CorsRules::GatewayApi,
            origins,
            allow_methods: HeaderValue::from_str(methods).unwrap(),
            allow_headers: HeaderValue::from_str(headers).unwrap(),
            expose_headers: Some(HeaderValue::from_static("x-header-3, x-header-4")),
            allow_credentials: credentials,
            max_age: HeaderValue::from_static("5"),
        }
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Parts {
        let mut b = Request::builder()
            .method("OPTIONS")
            .uri("/")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn answered(f: &Cors, parts: &Parts) -> Response<ProxyBody> {
        let mut c = ctx(Scheme::Http, "a", 443);
        match f.on_request(&mut c, parts) {
            Ok(Flow::Answer(r)) => *r,
            _ => panic!("not answered"),
        }
    }

    fn names(h: &http::HeaderMap) -> Vec<&str> {
        h.keys().map(|n| n.as_str()).collect()
    }

    #[test]
    fn gateway_origins_take_any_labels_and_default_ports() {
        let p = OriginPattern::gateway("https://*.bar.com").unwrap();
        assert!(p.matches(b"https://www.bar.com"));
        assert!(p.matches(b"https://xpto.www.bar.com"));
        assert!(p.matches(b"https://WWW.Bar.com:443"));
        assert!(!p.matches(b"https://bar.com"));
        assert!(!p.matches(b"https://www.bar.com:8443"));
        assert!(!p.matches(b"http://www.bar.com"));
        assert!(!p.matches(b"https://www.foobar.com"));
        assert!(!p.matches(b"https://evil.com/x.bar.com"));
        let p = OriginPattern::gateway("http://foo.com:8080").unwrap();
        assert!(p.matches(b"http://foo.com:8080"));
        assert!(!p.matches(b"http://foo.com"));
        let p = OriginPattern::gateway("http://foo.com").unwrap();
        assert!(p.matches(b"http://foo.com:80"));
        assert!(!p.matches(b"null"));
        let p = OriginPattern::gateway("https://*").unwrap();
        assert!(p.matches(b"https://a.b.c"));
        assert!(!p.matches(b"https://a.b.c:1"));
        for (bad, want) in [
            ("foo.com", OriginError::Shape("foo.com".into())),
            ("ftp://foo.com", OriginError::Scheme("ftp".into())),
            ("https://foo..com", OriginError::Host("foo..com".into())),
            ("https://a.*.com", OriginError::Host("a.*.com".into())),
            ("https://foo.com:0", OriginError::Port("0".into())),
            ("https://foo.com:70000", OriginError::Port("70000".into())),
            (
                "https://foo.com/path",
                OriginError::Shape("https://foo.com/path".into()),
            ),
        ] {
            assert_eq!(OriginPattern::gateway(bad), Err(want), "{bad}");
        }
    }

    #[test]
    fn gateway_preflight_gets_the_preflight_fields() {
        let f = gateway(
            CorsOrigins::List(vec![OriginPattern::gateway("https://www.foo.com").unwrap()]),
            true,
            "GET, OPTIONS",
            "x-header-1, x-header-2",
        );
        let r = answered(&f, &preflight("https://www.foo.com", "GET", None));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(
            names(h),
            [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-expose-headers",
                "access-control-max-age"
            ]
        );
        assert_eq!(h["access-control-allow-origin"], "https://www.foo.com");
        assert_eq!(h["access-control-allow-methods"], "GET, OPTIONS");
        assert_eq!(h["access-control-max-age"], "5");
        // Another origin: still answered (the pod never sees a preflight), no fields.
        let r = answered(&f, &preflight("https://foobar.com", "GET", None));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(names(r.headers()).is_empty());
    }

    #[test]
    fn gateway_actual_requests_get_origin_credentials_and_expose() {
        let f = gateway(
            CorsOrigins::List(vec![OriginPattern::gateway("https://*.foo.com").unwrap()]),
            true,
            "GET",
            "",
        );
        // An OPTIONS without Access-Control-Request-Method is not a preflight.
        for m in ["GET", "OPTIONS"] {
            let mut c = ctx(Scheme::Http, "a", 443);
            let flow = f.on_request(&mut c, &req(m, Some("https://a.foo.com")));
            assert!(matches!(flow, Ok(Flow::Continue)), "{m}");
            let got: Vec<_> = c
                .answer_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            assert_eq!(
                got,
                [
                    ("access-control-allow-origin", "https://a.foo.com"),
                    ("access-control-allow-credentials", "true"),
                    ("access-control-expose-headers", "x-header-3, x-header-4"),
                ]
            );
        }
        for o in [Some("https://foo.com"), None] {
            let mut c = ctx(Scheme::Http, "a", 443);
            assert!(matches!(
                f.on_request(&mut c, &req("GET", o)),
                Ok(Flow::Continue)
            ));
            assert!(c.answer_headers.is_empty(), "{o:?}");
        }
        // No allowHeaders: none sent on the preflight.
        let r = answered(&f, &preflight("https://a.foo.com", "GET", Some("x-a")));
        assert!(r.headers().get("access-control-allow-headers").is_none());
    }

    #[test]
    fn gateway_stars_are_echoed_with_credentials_and_sent_without() {
        let with = gateway(CorsOrigins::Any, true, "*", "*");
        let r = answered(
            &with,
            &preflight("https://o.com:12345", "PUT", Some("x-1, x-2")),
        );
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://o.com:12345");
        assert_eq!(h["access-control-allow-methods"], "PUT");
        assert_eq!(h["access-control-allow-headers"], "x-1, x-2");
        assert_eq!(h["access-control-allow-credentials"], "true");
        // Nothing asked for: no Allow-Headers, rather than a `*`.
        let r = answered(&with, &preflight("https://o.com", "PUT", None));
        assert!(r.headers().get("access-control-allow-headers").is_none());

        let without = gateway(CorsOrigins::Any, false, "*", "*");
        let r = answered(&without, &preflight("https://o.com", "PUT", Some("x-1")));
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-methods"], "*");
        assert_eq!(h["access-control-allow-headers"], "*");
        assert!(h.get("access-control-allow-credentials").is_none());
        // Any origin, but only a request that has one is a CORS request.
        let mut c = ctx(Scheme::Http, "a", 443);
        assert!(matches!(
            without.on_request(&mut c, &req("GET", None)),
            Ok(Flow::Continue)
        ));
        assert!(c.answer_headers.is_empty());
    }
}
