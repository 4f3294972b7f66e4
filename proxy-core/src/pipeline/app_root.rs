//! `app-root`: a request for exactly `/` is sent to the application's root with a 302,
//! as ingress-nginx's `if ($uri = /) { return 302 $scheme://$http_host<app-root>; }`.

use http::header;
use http::request::Parts;
use http::StatusCode;

use super::redirect::{answer, local_host};
use super::{Flow, RequestCtx};
use crate::http::{ProxyError, Scheme};

/// The application root, an absolute path validated by the compiler (no query, no
/// variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoot(pub String);

impl AppRoot {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        // The path is the normalized one the route was matched on; a query does not count.
        if parts.uri.path() != "/" {
            return Ok(Flow::Continue);
        }
        let scheme = match ctx.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        // `$http_host`: the Host as the client sent it, port included.
        let host = match parts.headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) if !h.is_empty() => h.to_owned(),
            _ if !ctx.host.is_empty() => ctx.host.to_owned(),
            _ => local_host(ctx),
        };
        let location = format!("{scheme}://{host}{}", self.0);
        Ok(Flow::Answer(Box::new(answer(
            StatusCode::FOUND,
            &location,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head, location};
    use super::*;
    use http::Request;

    #[test]
    fn only_the_root_is_redirected_with_302() {
        // The ingress-nginx documentation's example: app-root /app1 on approot.bar.com.
        let f = AppRoot("/app1".into());
        let parts = Request::get("/")
            .header("host", "approot.bar.com")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let got = f
            .on_request(&mut ctx(Scheme::Http, "approot.bar.com", 443), &parts)
            .unwrap();
        assert_eq!(
            location(got),
            Some((StatusCode::FOUND, "http://approot.bar.com/app1".into()))
        );
        // The query is not carried over: nginx's `return` names the URL alone.
        let parts = Request::get("/?a=1")
            .header("host", "approot.bar.com:8080")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let got = f
            .on_request(&mut ctx(Scheme::Https, "approot.bar.com", 443), &parts)
            .unwrap();
        assert_eq!(
            location(got).unwrap().1,
            "https://approot.bar.com:8080/app1"
        );
        for other in ["/app1", "/x/", "/index.html"] {
            let got = f
                .on_request(&mut ctx(Scheme::Http, "approot.bar.com", 443), &head(other))
                .unwrap();
            assert!(location(got).is_none(), "{other}");
        }
    }
}
