//! `permanent-redirect` / `temporal-redirect`: every request of the route is answered
//! with a fixed URL, as nginx's `return CODE URL` answers: the request's path and query
//! are not appended.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::http::{ProxyBody, ProxyError};

/// The code (300 to 308, checked by the compiler) and the URL, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRedirect {
    pub code: StatusCode,
    pub url: HeaderValue,
}

impl UrlRedirect {
    pub(super) fn on_request(
        &self,
        _ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let mut resp = match self.code.as_u16() {
            // nginx names the URL in `Location` for these codes only...
            301 | 302 | 303 | 307 | 308 => {
                let reason = self.code.canonical_reason().unwrap_or("Redirect");
                let mut resp = Response::new(ProxyBody::full(format!(
                    "{} {reason}\n",
                    self.code.as_u16()
                )));
                resp.headers_mut()
                    .insert(header::LOCATION, self.url.clone());
                resp
            }
            // ...and sends it as the body for the other 3xx codes (`return 300 URL`).
            _ => Response::new(ProxyBody::full(self.url.as_bytes().to_vec())),
        };
        *resp.status_mut() = self.code;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(Flow::Answer(Box::new(resp)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::Scheme;
    use http_body_util::BodyExt;

    fn run(code: u16, uri: &str) -> Response<ProxyBody> {
        let f = UrlRedirect {
            code: StatusCode::from_u16(code).unwrap(),
            url: HeaderValue::from_static("https://www.google.com"),
        };
        match f
            .on_request(&mut ctx(Scheme::Http, "a.test", 443), &head(uri))
            .unwrap()
        {
            Flow::Answer(r) => *r,
            Flow::Continue => panic!("not answered"),
        }
    }

    #[test]
    fn answers_the_url_alone_with_the_code() {
        // The documentation's example: permanent-redirect https://www.google.com.
        for code in [301, 302, 303, 307, 308] {
            let r = run(code, "/some/path?q=1");
            assert_eq!(r.status().as_u16(), code);
            assert_eq!(r.headers()[header::LOCATION], "https://www.google.com");
        }
    }

    #[tokio::test]
    async fn other_codes_carry_the_url_as_body() {
        let r = run(300, "/");
        assert_eq!(r.status().as_u16(), 300);
        assert!(r.headers().get(header::LOCATION).is_none());
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"https://www.google.com");
    }
}
