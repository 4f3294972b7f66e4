//! `rewrite-target`: the path the upstream gets is rebuilt from the route's regex path,
//! as ingress-nginx's `rewrite "(?i)PATH" TARGET break;`: when the (unanchored,
//! case-insensitive) pattern matches the request path, the whole path is replaced by the
//! target with `$1`..`$9` filled from the pattern's groups, and the query string is kept.
//! Redirects answered by the route see the request as it came.

use http::request::Parts;
use regex::bytes::Regex;

use super::{Flow, RequestCtx};
use crate::http::ProxyError;
use crate::routes::{compile_pattern, RegexPathError};

/// Why a rewrite cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("path: {0}")]
    Pattern(#[from] RegexPathError),
    #[error("target {target:?}: `$` must be followed by a group number from 1 to 9 (no variables are expanded)")]
    Dollar { target: String },
    #[error("target {target:?} may only hold letters, digits, -._~/: and $1 to $9")]
    Chars { target: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Group(usize),
}

/// The rule path's pattern and the target it rewrites to.
#[derive(Clone, Debug)]
pub struct Rewrite {
    path: Box<str>,
    regex: Regex,
    target: Box<str>,
    pieces: Vec<Piece>,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.target == other.target
    }
}

impl Eq for Rewrite {}

impl Rewrite {
    /// `path` is the rule's regex path, `target` the annotation's value (the characters
    /// ingress-nginx allows there, `$` only before a group number).
    pub fn new(path: &str, target: &str) -> Result<Self, RewriteError> {
        let pieces = parse_target(target)?;
        Ok(Self {
            path: path.into(),
            regex: compile_pattern(path)?,
            target: target.into(),
            pieces,
        })
    }

    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        if let Some(path) = self.apply(parts.uri.path()) {
            ctx.rewritten = Some(match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            });
        }
        Ok(Flow::Continue)
    }

    /// The new path for a normalized request path; `None` when the pattern does not
    /// match it (the path is then sent as it is, as nginx leaves it).
    fn apply(&self, path: &str) -> Option<String> {
        let caps = self.regex.captures(path.as_bytes())?;
        let mut out = Vec::with_capacity(path.len() + self.target.len());
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.extend_from_slice(s.as_bytes()),
                // A group that took no part in the match is empty, as in nginx.
                Piece::Group(i) => {
                    if let Some(m) = caps.get(*i) {
                        out.extend_from_slice(m.as_bytes());
                    }
                }
            }
        }
        if out.first() != Some(&b'/') {
            out.insert(0, b'/');
        }
        // Pieces of a normalized path and of a validated target: ASCII.
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

fn parse_target(target: &str) -> Result<Vec<Piece>, RewriteError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._~/:$".contains(&b);
    if !target.bytes().all(ok) {
        return Err(RewriteError::Chars {
            target: target.into(),
        });
    }
    let mut pieces = Vec::new();
    let mut rest = target;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            pieces.push(Piece::Literal(rest[..at].into()));
        }
        let group = rest.as_bytes().get(at + 1).copied();
        match group {
            Some(d @ b'1'..=b'9') => pieces.push(Piece::Group(usize::from(d - b'0'))),
            _ => {
                return Err(RewriteError::Dollar {
                    target: target.into(),
                })
            }
        }
        rest = &rest[at + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.into()));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::Scheme;

    fn rewritten(path: &str, target: &str, uri: &str) -> Option<String> {
        let r = Rewrite::new(path, target).unwrap();
        let mut c = ctx(Scheme::Http, "rewrite.bar.com", 443);
        assert!(matches!(
            r.on_request(&mut c, &head(uri)),
            Ok(Flow::Continue)
        ));
        c.rewritten
    }

    #[test]
    fn the_documentation_example() {
        // path /something(/|$)(.*), rewrite-target /$2.
        let p = "/something(/|$)(.*)";
        assert_eq!(rewritten(p, "/$2", "/something").as_deref(), Some("/"));
        assert_eq!(rewritten(p, "/$2", "/something/").as_deref(), Some("/"));
        assert_eq!(
            rewritten(p, "/$2", "/something/new").as_deref(),
            Some("/new")
        );
        // The query string is kept; the match is case-insensitive.
        assert_eq!(
            rewritten(p, "/$2", "/SomeThing/new?a=1&b=2").as_deref(),
            Some("/new?a=1&b=2")
        );
    }

    #[test]
    fn groups_literals_and_whole_path_replacement() {
        assert_eq!(
            rewritten("/api/(v[0-9]+)/(.*)", "/internal/$2/$1", "/api/v2/users/7").as_deref(),
            Some("/internal/users/7/v2")
        );
        // The whole path is replaced, not only the matched part; a group that took no
        // part, or does not exist, is empty.
        assert_eq!(
            rewritten("/a(x)?", "/b$1$9", "/a/tail").as_deref(),
            Some("/b")
        );
        // No leading slash in the target: one is put in front.
        assert_eq!(rewritten("/(.*)", "$1", "/z").as_deref(), Some("/z"));
        // The unanchored rewrite pattern, as nginx's.
        assert_eq!(
            rewritten("/foo|/bar", "/x", "/a/bar").as_deref(),
            Some("/x")
        );
        assert_eq!(rewritten("/foo", "/x", "/other"), None);
    }

    #[test]
    fn targets_are_strict() {
        for bad in ["/$host", "/$0", "/$", "/a?b", "/a b", "/${1}"] {
            assert!(Rewrite::new("/(.*)", bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Rewrite::new("/(?=x)", "/"),
            Err(RewriteError::Pattern(_))
        ));
    }
}
