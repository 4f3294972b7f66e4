//! `from-to-www-redirect`: the host the Ingress does not name (`www.` added or taken
//! away) answers every request with a redirect to the one it names, as ingress-nginx's
//! redirect server: same scheme, the port always named, the request URI kept but for a
//! trailing `/`, and the ConfigMap's `http-redirect-code`.

use http::request::Parts;
use http::StatusCode;

use super::redirect::{answer, request_uri};
use super::{Flow, RequestCtx};
use crate::http::{ProxyError, Scheme};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WwwRedirect {
    /// The host the Ingress names, which the redirect goes to.
    pub to: String,
    pub code: StatusCode,
}

impl WwwRedirect {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let (scheme, port) = match ctx.scheme {
            Scheme::Http => ("http", ctx.http_port),
            Scheme::Https => ("https", ctx.https_port),
        };
        let uri = request_uri(parts, true);
        let location = format!("{scheme}://{}:{port}{uri}", self.to);
        Ok(Flow::Answer(Box::new(answer(self.code, &location)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head, location};
    use super::*;

    #[test]
    fn redirects_to_the_named_host_with_port_and_uri() {
        let f = WwwRedirect {
            to: "fromtowwwredirect.bar.com".into(),
            code: StatusCode::PERMANENT_REDIRECT,
        };
        let mut c = ctx(Scheme::Http, "www.fromtowwwredirect.bar.com", 443);
        // ingress-nginx's own end-to-end expectations.
        assert_eq!(
            location(f.on_request(&mut c, &head("/foo")).unwrap()),
            Some((
                StatusCode::PERMANENT_REDIRECT,
                "http://fromtowwwredirect.bar.com:80/foo".into()
            ))
        );
        let mut c = ctx(Scheme::Https, "www.fromtowwwredirect.bar.com", 443);
        assert_eq!(
            location(f.on_request(&mut c, &head("/")).unwrap())
                .unwrap()
                .1,
            "https://fromtowwwredirect.bar.com:443"
        );
        assert_eq!(
            location(f.on_request(&mut c, &head("/a/?x=1")).unwrap())
                .unwrap()
                .1,
            "https://fromtowwwredirect.bar.com:443/a/?x=1"
        );
    }
}
