//! `proxy-body-size`: requests with a larger body get 413.

use http::header;
use http::request::Parts;

use super::{Flow, RequestCtx};
use crate::http::ProxyError;

/// The largest request body the route accepts, in bytes. A declared `Content-Length`
/// over it is refused before anything is sent upstream; a body without one is counted
/// as it streams and cut when it goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

impl BodyLimit {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.0) {
            return Err(ProxyError::BodyTooLarge { limit: self.0 });
        }
        ctx.body_limit = Some(self.0);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Scheme;
    use http::{Request, StatusCode};

    #[test]
    fn declared_length_over_the_limit_is_413() {
        let mut ctx = RequestCtx {
            scheme: Scheme::Http,
            host: "a",
            local: "127.0.0.1:80".parse().unwrap(),
            client: "127.0.0.1".parse().unwrap(),
            http_port: 80,
            https_port: 443,
            body_limit: None,
            rewritten: None,
            credentials: &super::super::redirect::tests::EMPTY_CREDENTIALS,
            digest_credentials: &super::super::redirect::tests::EMPTY_DIGEST_CREDENTIALS,
            answer_headers: Vec::new(),
            strip_authorization: false,
            limiter: &super::super::redirect::tests::EMPTY_LIMITER,
            replicas: 1,
            conn_slot: None,
            external_auth: None,
            client_auth: &super::super::redirect::tests::EMPTY_CLIENT_AUTH,
            client_cert: None,
            sni: None,
            upstream_set: Vec::new(),
        };
        let head = |len: &str| {
            Request::post("/")
                .header("content-length", len)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let f = BodyLimit(10);
        let err = f.on_request(&mut ctx, &head("11")).err().unwrap();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(matches!(
            f.on_request(&mut ctx, &head("10")),
            Ok(Flow::Continue)
        ));
        assert_eq!(ctx.body_limit, Some(10));
    }
}
