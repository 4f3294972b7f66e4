//! `satisfy: any`: the client gets in when its address is in the source ranges *or* its
//! credentials pass basic auth, as nginx's `satisfy any` runs the access phase. When both
//! fail the answer is basic auth's 401 with its challenge (nginx keeps a 401 over a 403).

use http::request::Parts;

use super::{BasicAuth, DigestAuth, Flow, RequestCtx, SourceRanges};
use crate::http::ProxyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SatisfyAny {
    pub ranges: SourceRanges,
    pub auth: UserAuth,
}

/// The credentials check of a [`SatisfyAny`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAuth {
    Basic(BasicAuth),
    Digest(DigestAuth),
}

impl SatisfyAny {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        if self.ranges.permits(ctx.client) {
            // ingress-nginx clears `Authorization` on every request of an auth location.
            ctx.strip_authorization = true;
            return Ok(Flow::Continue);
        }
        match &self.auth {
            UserAuth::Basic(f) => f.on_request(ctx, parts),
            UserAuth::Digest(f) => f.on_request(ctx, parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::redirect::tests::ctx;
    use super::super::{Credentials, Htpasswd};
    use super::*;
    use crate::http::Scheme;
    use http::{Request, StatusCode};

    #[test]
    fn either_the_address_or_the_password_lets_in() {
        let f = SatisfyAny {
            ranges: SourceRanges {
                deny: vec![],
                allow: vec!["10.0.0.0/8".parse().unwrap()],
            },
            auth: UserAuth::Basic(BasicAuth::new("r", "u".into()).unwrap()),
        };
        let mut creds = Credentials::new();
        creds.insert("u".into(), Arc::new(Htpasswd::parse("a:{PLAIN}b").0));
        let run = |client: &str, auth: Option<&str>| {
            let mut c = ctx(Scheme::Http, "h", 443);
            c.client = client.parse().unwrap();
            c.credentials = &creds;
            let mut b = Request::get("/");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            match f.on_request(&mut c, &b.body(()).unwrap().into_parts().0) {
                Ok(Flow::Continue) => 200,
                Ok(Flow::Answer(r)) => r.status().as_u16(),
                Err(e) => e.status().as_u16(),
            }
        };
        assert_eq!(run("10.1.2.3", None), 200);
        // `a:b`.
        assert_eq!(run("192.0.2.1", Some("Basic YTpi")), 200);
        assert_eq!(run("192.0.2.1", None), StatusCode::UNAUTHORIZED.as_u16());
    }
}
