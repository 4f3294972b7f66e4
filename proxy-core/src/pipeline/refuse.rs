//! Fail closed: a route whose security settings could not be honoured (malformed, naming
//! a missing Secret, or not implemented) answers 503 to every request, as ingress-nginx
//! answers a location it marked denied. Never served open.

use std::sync::Arc;

use http::request::Parts;

use super::{Flow, RequestCtx};
use crate::http::ProxyError;

/// Why the route is refused: names the object, the setting and the reason, for the
/// access log's `error` field (the client only sees 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refuse(pub Arc<str>);

impl Refuse {
    pub(super) fn on_request(
        &self,
        _ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        Err(ProxyError::Refused(self.0.clone()))
    }
}

/// A Gateway API rule whose backend references are all invalid: every request gets 500,
/// as the spec requires. Names the route and why, for the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoValidBackend(pub Arc<str>);

impl NoValidBackend {
    pub(super) fn on_request(
        &self,
        _ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        Err(ProxyError::NoValidBackend(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::{Blame, Scheme};
    use http::StatusCode;

    #[test]
    fn every_request_gets_503_blamed_on_the_config() {
        let f = Refuse("Ingress default/web: annotation auth-url: not implemented".into());
        let err = f
            .on_request(&mut ctx(Scheme::Http, "a", 443), &head("/"))
            .err()
            .expect("refused");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.blame(), Blame::Config);
        assert!(err.to_string().contains("auth-url"), "{err}");
    }
}
