//! Gateway API's URLRewrite filter, path part: the path the backend gets instead of the
//! request's (`ReplaceFullPath`, or `ReplacePrefixMatch` of the rule's matched prefix),
//! the query kept. The hostname part is an upstream `Host` ([`UpstreamHeaders`]).
//!
//! [`UpstreamHeaders`]: super::UpstreamHeaders

use http::request::Parts;

use super::gateway_redirect::replace_prefix;
use super::{Flow, RedirectPath, RequestCtx};
use crate::http::ProxyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRewrite {
    pub path: RedirectPath,
}

impl GatewayRewrite {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let path = self.apply(parts.uri.path());
        ctx.rewritten = Some(match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        });
        Ok(Flow::Continue)
    }

    fn apply(&self, path: &str) -> String {
        match &self.path {
            RedirectPath::Full(full) => full.clone(),
            RedirectPath::Prefix {
                matched,
                replacement,
            } => replace_prefix(path, matched, replacement),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::Scheme;

    fn rewritten(path: RedirectPath, uri: &str) -> Option<String> {
        let mut c = ctx(Scheme::Http, "a.test", 80);
        let f = GatewayRewrite { path };
        assert!(matches!(
            f.on_request(&mut c, &head(uri)),
            Ok(Flow::Continue)
        ));
        c.rewritten
    }

    fn prefix(matched: &str, replacement: &str) -> RedirectPath {
        RedirectPath::Prefix {
            matched: matched.into(),
            replacement: replacement.into(),
        }
    }

    /// The spec's table for ReplacePrefixMatch (the compiler passes the prefix without
    /// its trailing slash) and the conformance cases.
    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
            ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
            ("/strip-prefix", "/strip-prefix", "/", "/"),
            (
                "/prefix/rewrite-path-and-modify-headers/one",
                "/prefix/rewrite-path-and-modify-headers",
                "/prefix",
                "/prefix/one",
            ),
            // A `/` prefix match: everything is the rest.
            ("/a/b", "", "/x", "/x/a/b"),
        ];
        for (path, matched, replacement, want) in cases {
            assert_eq!(
                rewritten(prefix(matched, replacement), path).as_deref(),
                Some(want),
                "{path} {matched} {replacement}"
            );
        }
    }

    #[test]
    fn replace_full_path_keeps_the_query() {
        assert_eq!(
            rewritten(RedirectPath::Full("/one".into()), "/full/one/two?x=1&y").as_deref(),
            Some("/one?x=1&y")
        );
        assert_eq!(
            rewritten(prefix("/p", "/q"), "/p/r?s=t").as_deref(),
            Some("/q/r?s=t")
        );
    }
}
