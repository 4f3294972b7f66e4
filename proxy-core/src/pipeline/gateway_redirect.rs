//! Gateway API's RequestRedirect filter: answers with a redirect built from the request,
//! with the scheme, hostname, port and path the filter replaces.
//!
//! The port, when the filter names none: the scheme's well-known port when the filter
//! changes the scheme, else the Gateway listener's port. A well-known port (80 for http,
//! 443 for https) is left out of `Location`, as the spec recommends. The query is kept.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError, Scheme};

/// How the redirect's path is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectPath {
    /// `ReplaceFullPath`.
    Full(String),
    /// `ReplacePrefixMatch`: the rule's matched prefix (no trailing slash) replaced.
    Prefix {
        matched: String,
        replacement: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRedirect {
    /// 301, 302, 303, 307 or 308, checked by the compiler.
    pub code: StatusCode,
    pub scheme: Option<Scheme>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    /// The port of the listener the route is attached to.
    pub listener_port: u16,
    pub path: Option<RedirectPath>,
}

impl GatewayRedirect {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let scheme = self.scheme.unwrap_or(ctx.scheme);
        let port = match (self.port, self.scheme) {
            (Some(port), _) => port,
            (None, Some(Scheme::Http)) => 80,
            (None, Some(Scheme::Https)) => 443,
            // The listener's port; but 80 and 443 are the ports the cluster maps onto
            // the HTTP and HTTPS listeners, and one route table serves both: a request
            // that came over the other one came on the other well-known port.
            (None, None) => match (self.listener_port, ctx.scheme) {
                (80, Scheme::Https) => 443,
                (443, Scheme::Http) => 80,
                (port, _) => port,
            },
        };
        let (name, default_port) = match scheme {
            Scheme::Http => ("http", 80),
            Scheme::Https => ("https", 443),
        };
        let host = self.hostname.as_deref().unwrap_or(ctx.host);
        let request_path = parts.uri.path();
        let path = match &self.path {
            None => request_path.to_owned(),
            Some(RedirectPath::Full(p)) => p.clone(),
            Some(RedirectPath::Prefix {
                matched,
                replacement,
            }) => replace_prefix(request_path, matched, replacement),
        };
        let mut location = format!("{name}://{host}");
        if port != default_port {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if let Some(q) = parts.uri.query() {
            location.push('?');
            location.push_str(q);
        }
        let location = HeaderValue::from_str(&location)
            .map_err(|_| ProxyError::BadRequest("redirect target is not a valid header"))?;
        let mut resp = Response::new(ProxyBody::full(Vec::new()));
        *resp.status_mut() = self.code;
        resp.headers_mut().insert(header::LOCATION, location);
        Ok(Flow::Answer(Box::new(resp)))
    }
}

/// The spec's `ReplacePrefixMatch`: `matched` (the rule's prefix without its trailing
/// slash) at the start of `path` becomes `replacement`, element-wise, so that neither a
/// trailing slash of the replacement nor an empty remainder doubles or loses a `/`:
/// `/foo/bar` with `/foo` -> `/xyz/` is `/xyz/bar`, `/foo/` -> `` is `/`.
pub(crate) fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    // The route matched `matched` element-wise, so the rest is empty or starts with `/`.
    let rest = path.get(matched.len()..).unwrap_or("");
    let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;

    fn location(f: &GatewayRedirect, scheme: Scheme, uri: &str) -> (u16, String) {
        match f
            .on_request(&mut ctx(scheme, "a.test", 443), &head(uri))
            .unwrap()
        {
            Flow::Answer(r) => (
                r.status().as_u16(),
                r.headers()[header::LOCATION].to_str().unwrap().to_owned(),
            ),
            Flow::Continue => panic!("not answered"),
        }
    }

    fn filter() -> GatewayRedirect {
        GatewayRedirect {
            code: StatusCode::FOUND,
            scheme: None,
            hostname: None,
            port: None,
            listener_port: 80,
            path: None,
        }
    }

    #[test]
    fn builds_the_location_from_the_request_and_the_filter() {
        assert_eq!(
            location(&filter(), Scheme::Http, "/x?q=1"),
            (302, "http://a.test/x?q=1".to_owned())
        );
        let https = GatewayRedirect {
            scheme: Some(Scheme::Https),
            code: StatusCode::MOVED_PERMANENTLY,
            ..filter()
        };
        assert_eq!(
            location(&https, Scheme::Http, "/x"),
            (301, "https://a.test/x".to_owned())
        );
        let host_port = GatewayRedirect {
            hostname: Some("example.org".into()),
            port: Some(8443),
            ..filter()
        };
        assert_eq!(
            location(&host_port, Scheme::Http, "/"),
            (302, "http://example.org:8443/".to_owned())
        );
        let listener = GatewayRedirect {
            listener_port: 8080,
            ..filter()
        };
        assert_eq!(
            location(&listener, Scheme::Http, "/").1,
            "http://a.test:8080/"
        );
    }

    #[test]
    fn a_well_known_listener_port_follows_the_scheme_the_request_came_with() {
        // A route of a port-80 listener reached over HTTPS, and the reverse.
        assert_eq!(
            location(&filter(), Scheme::Https, "/x").1,
            "https://a.test/x"
        );
        let https_listener = GatewayRedirect {
            listener_port: 443,
            ..filter()
        };
        assert_eq!(
            location(&https_listener, Scheme::Http, "/x").1,
            "http://a.test/x"
        );
        assert_eq!(
            location(&https_listener, Scheme::Https, "/x").1,
            "https://a.test/x"
        );
        // Other listener ports are kept, whatever the scheme.
        let listener = GatewayRedirect {
            listener_port: 8080,
            ..filter()
        };
        assert_eq!(
            location(&listener, Scheme::Https, "/").1,
            "https://a.test:8080/"
        );
    }

    #[test]
    fn replaces_the_full_path_or_the_matched_prefix() {
        let full = GatewayRedirect {
            path: Some(RedirectPath::Full("/new".into())),
            ..filter()
        };
        assert_eq!(
            location(&full, Scheme::Http, "/old/x").1,
            "http://a.test/new"
        );
        let prefix = |replacement: &str| GatewayRedirect {
            path: Some(RedirectPath::Prefix {
                matched: "/original-prefix".into(),
                replacement: replacement.into(),
            }),
            ..filter()
        };
        assert_eq!(
            location(
                &prefix("/replacement-prefix"),
                Scheme::Http,
                "/original-prefix/lemon"
            )
            .1,
            "http://a.test/replacement-prefix/lemon"
        );
        assert_eq!(
            location(&prefix("/"), Scheme::Http, "/original-prefix/lemon").1,
            "http://a.test/lemon"
        );
        assert_eq!(
            location(&prefix("/"), Scheme::Http, "/original-prefix").1,
            "http://a.test/"
        );
    }
}
