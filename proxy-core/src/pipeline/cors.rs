//! `enable-cors` and the `cors-*` keys, as ingress-nginx's CORS template answers: a
//! request whose `Origin` is allowed gets the `Access-Control-*` fields on its answer
//! (whatever answers it), and an allowed `OPTIONS` request is answered by Portico with 204
//! (a preflight never reaches the pod). A request from another origin is passed on
//! untouched, `OPTIONS` included.

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError};

/// Which origins are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: every request, with or without `Origin`, gets `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins, each answered with itself.
    List(Vec<OriginPattern>),
}

/// An origin as `cors-allow-origin` lists it: `https://example.com`, `http://a.b:8080`,
/// `https://*.example.com` (the first `*` stands for one label of letters, digits and
/// `-`), or `null`. Compared without regard to case, as nginx's `~*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPattern {
    /// Lower-cased; split at the first `*` when there is one.
    before: Box<str>,
    after: Option<Box<str>>,
}

impl OriginPattern {
    pub fn new(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        match lower.split_once('*') {
            Some((before, after)) => Self {
                before: before.into(),
                after: Some(after.into()),
            },
            None => Self {
                before: lower.into(),
                after: None,
            },
        }
    }

    pub fn matches(&self, origin: &[u8]) -> bool {
        let origin = origin.to_ascii_lowercase();
        let Some(after) = &self.after else {
            return origin == self.before.as_bytes();
        };
        let (before, after) = (self.before.as_bytes(), after.as_bytes());
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
}

/// One route's CORS answer fields, validated and formatted by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub origins: CorsOrigins,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    /// Not sent when empty.
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

impl Cors {
    /// The fields for a request from `origin`, if it is allowed.
    fn fields(&self, parts: &Parts) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let allow_origin = match &self.origins {
            CorsOrigins::Any => HeaderValue::from_static("*"),
            CorsOrigins::List(list) => {
                let origin = parts.headers.get(header::ORIGIN)?;
                if !list.iter().any(|p| p.matches(origin.as_bytes())) {
                    return None;
                }
                origin.clone()
            }
        };
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
        Some(out)
    }

    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let Some(fields) = self.fields(parts) else {
            return Ok(Flow::Continue);
        };
        if parts.method != Method::OPTIONS {
            ctx.answer_headers.extend(fields);
            return Ok(Flow::Continue);
        }
        let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let headers = resp.headers_mut();
        for (name, value) in fields {
            headers.insert(name, value);
        }
        // As ingress-nginx's preflight answer writes it; the empty body's framing is the
        // HTTP writer's (a 204 carries no Content-Length).
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain charset=UTF-8"),
        );
        Ok(Flow::Answer(Box::new(resp)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::ctx;
    use super::*;
    use crate::http::Scheme;
    use http::Request;

    fn cors(origins: CorsOrigins) -> Cors {
        Cors {
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
}
