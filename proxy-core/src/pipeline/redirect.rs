//! `ssl-redirect` / `force-ssl-redirect`: plain-HTTP requests are sent to `https://`, as
//! ingress-nginx's Lua rewrite phase sends them (`preserve-trailing-slash`,
//! `use-port-in-redirects`, the ConfigMap's `http-redirect-code`). Also the answer every
//! redirect filter gives.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError, Scheme};

/// Answers plain-HTTP requests with a redirect to the same host and path over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslRedirect {
    /// The ConfigMap's `http-redirect-code`; 308 by default, as ingress-nginx: it keeps
    /// the method and body.
    pub code: StatusCode,
    /// `preserve-trailing-slash`: keep a request URI's last `/`. Off by default, when
    /// ingress-nginx drops it (`/app/` goes to `https://host/app`, `/` to `https://host`).
    pub preserve_trailing_slash: bool,
    /// `use-port-in-redirects`: always name the HTTPS port, even 443. Without it the port
    /// is named only when it is not 443.
    pub use_port: bool,
}

impl Default for SslRedirect {
    fn default() -> Self {
        Self {
            code: StatusCode::PERMANENT_REDIRECT,
            preserve_trailing_slash: false,
            use_port: false,
        }
    }
}

impl SslRedirect {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        if ctx.scheme == Scheme::Https {
            return Ok(Flow::Continue);
        }
        let host = if ctx.host.is_empty() {
            local_host(ctx)
        } else {
            ctx.host.to_owned()
        };
        let port = match (self.use_port, ctx.https_port) {
            (false, 443) => String::new(),
            (_, p) => format!(":{p}"),
        };
        let uri = request_uri(parts, !self.preserve_trailing_slash);
        let location = format!("https://{host}{port}{uri}");
        Ok(Flow::Answer(Box::new(answer(self.code, &location)?)))
    }
}

/// The address the client connected to, as a URL host: for requests without a host.
pub(super) fn local_host(ctx: &RequestCtx<'_>) -> String {
    match ctx.local {
        std::net::SocketAddr::V4(a) => a.ip().to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// The request's path and query (nginx's `$request_uri`), without one trailing `/`
/// when `strip_slash`, as ingress-nginx's redirects drop it: `/` then becomes empty.
pub(super) fn request_uri(parts: &Parts, strip_slash: bool) -> &str {
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    match pq.strip_suffix('/') {
        Some(stripped) if strip_slash => stripped,
        _ => pq,
    }
}

/// A redirect answer: `code` with `Location: location` and a one-line body.
pub(super) fn answer(code: StatusCode, location: &str) -> Result<Response<ProxyBody>, ProxyError> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| ProxyError::BadRequest("host cannot form a redirect URL"))?;
    let reason = code.canonical_reason().unwrap_or("Redirect");
    let body = format!("{} {reason}\n", code.as_u16());
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use http::Request;

    /// No user lists, for filters that need none.
    pub(crate) static EMPTY_CREDENTIALS: std::sync::LazyLock<super::super::Credentials> =
        std::sync::LazyLock::new(Default::default);

    pub(crate) static EMPTY_DIGEST_CREDENTIALS: std::sync::LazyLock<
        super::super::DigestCredentials,
    > = std::sync::LazyLock::new(Default::default);

    /// No client-certificate settings, for filters that need none.
    pub(crate) static EMPTY_CLIENT_AUTH: std::sync::LazyLock<super::super::ClientAuthTable> =
        std::sync::LazyLock::new(Default::default);

    /// No limit state, for filters that need none.
    pub(crate) static EMPTY_LIMITER: std::sync::LazyLock<super::super::Limiter> =
        std::sync::LazyLock::new(Default::default);

    pub(crate) fn ctx<'a>(scheme: Scheme, host: &'a str, https_port: u16) -> RequestCtx<'a> {
        RequestCtx {
            scheme,
            host,
            local: "10.0.0.1:8080".parse().unwrap(),
            client: "192.0.2.1".parse().unwrap(),
            http_port: 80,
            https_port,
            body_limit: None,
            rewritten: None,
            credentials: &EMPTY_CREDENTIALS,
            digest_credentials: &EMPTY_DIGEST_CREDENTIALS,
            answer_headers: Vec::new(),
            strip_authorization: false,
            limiter: &EMPTY_LIMITER,
            replicas: 1,
            conn_slot: None,
            external_auth: None,
            client_auth: &EMPTY_CLIENT_AUTH,
            client_cert: None,
            sni: None,
            upstream_set: Vec::new(),
        }
    }

    pub(crate) fn location(flow: Flow) -> Option<(StatusCode, String)> {
        match flow {
            Flow::Answer(r) => Some((
                r.status(),
                r.headers()[header::LOCATION].to_str().unwrap().to_owned(),
            )),
            Flow::Continue => None,
        }
    }

    pub(crate) fn head(uri: &str) -> Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn redirect(f: &SslRedirect, host: &str, https_port: u16, uri: &str) -> Option<String> {
        let flow = f
            .on_request(&mut ctx(Scheme::Http, host, https_port), &head(uri))
            .unwrap();
        location(flow).map(|(code, l)| {
            assert_eq!(code, f.code);
            l
        })
    }

    #[test]
    fn redirects_plain_http_keeping_path_and_query() {
        let parts = head("/a/b?x=1");
        let f = SslRedirect::default();
        let got = location(
            f.on_request(&mut ctx(Scheme::Http, "app.test", 443), &parts)
                .unwrap(),
        );
        assert_eq!(
            got,
            Some((
                StatusCode::PERMANENT_REDIRECT,
                "https://app.test/a/b?x=1".into()
            ))
        );
        let got = location(
            f.on_request(&mut ctx(Scheme::Http, "", 8443), &parts)
                .unwrap(),
        );
        assert_eq!(got.unwrap().1, "https://10.0.0.1:8443/a/b?x=1");
        assert!(location(
            f.on_request(&mut ctx(Scheme::Https, "app.test", 443), &parts)
                .unwrap()
        )
        .is_none());
    }

    #[test]
    fn trailing_slash_is_dropped_unless_preserved() {
        let f = SslRedirect::default();
        assert_eq!(
            redirect(&f, "app.test", 443, "/app/").as_deref(),
            Some("https://app.test/app")
        );
        // `$request_uri` of `/` is `/`: nothing is left of it, as in ingress-nginx.
        assert_eq!(
            redirect(&f, "app.test", 443, "/").as_deref(),
            Some("https://app.test")
        );
        // Only the URI's last character counts: a query ends it.
        assert_eq!(
            redirect(&f, "app.test", 443, "/app/?a=b").as_deref(),
            Some("https://app.test/app/?a=b")
        );
        let keep = SslRedirect {
            preserve_trailing_slash: true,
            ..SslRedirect::default()
        };
        assert_eq!(
            redirect(&keep, "app.test", 443, "/app/").as_deref(),
            Some("https://app.test/app/")
        );
        assert_eq!(
            redirect(&keep, "app.test", 443, "/").as_deref(),
            Some("https://app.test/")
        );
    }

    #[test]
    fn use_port_names_the_https_port_even_443() {
        let f = SslRedirect {
            use_port: true,
            code: StatusCode::MOVED_PERMANENTLY,
            ..SslRedirect::default()
        };
        assert_eq!(
            redirect(&f, "app.test", 443, "/x").as_deref(),
            Some("https://app.test:443/x")
        );
        assert_eq!(
            redirect(&f, "app.test", 8443, "/x").as_deref(),
            Some("https://app.test:8443/x")
        );
    }
}
