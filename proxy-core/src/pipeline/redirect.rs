//! `ssl-redirect` / `force-ssl-redirect`: plain-HTTP requests are sent to `https://`.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError, Scheme};

/// Answers plain-HTTP requests with a redirect to the same host and path over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslRedirect {
    /// 308 by default, as ingress-nginx: it keeps the method and body.
    pub code: StatusCode,
}

impl Default for SslRedirect {
    fn default() -> Self {
        Self {
            code: StatusCode::PERMANENT_REDIRECT,
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
            match ctx.local {
                std::net::SocketAddr::V4(a) => a.ip().to_string(),
                std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        } else {
            ctx.host.to_owned()
        };
        let port = match ctx.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let pq = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let location = HeaderValue::from_str(&format!("https://{host}{port}{pq}"))
            .map_err(|_| ProxyError::BadRequest("host cannot form a redirect URL"))?;
        let reason = self.code.canonical_reason().unwrap_or("Redirect");
        let body = format!("{} {reason}\n", self.code.as_u16());
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.code;
        resp.headers_mut().insert(header::LOCATION, location);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(Flow::Answer(Box::new(resp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn ctx<'a>(scheme: Scheme, host: &'a str, https_port: u16) -> RequestCtx<'a> {
        RequestCtx {
            scheme,
            host,
            local: "10.0.0.1:8080".parse().unwrap(),
            client: "192.0.2.1".parse().unwrap(),
            https_port,
            body_limit: None,
        }
    }

    fn location(flow: Flow) -> Option<(StatusCode, String)> {
        match flow {
            Flow::Answer(r) => Some((
                r.status(),
                r.headers()[header::LOCATION].to_str().unwrap().to_owned(),
            )),
            Flow::Continue => None,
        }
    }

    #[test]
    fn redirects_plain_http_keeping_path_and_query() {
        let (parts, ()) = Request::get("/a/b?x=1").body(()).unwrap().into_parts();
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
}
