//! Rules that match more than a host and a path (Gateway API HTTPRoute matches): a path
//! match plus optional method, header and query-parameter conditions, all of which must
//! hold.
//!
//! A host's match rules are kept in the order they are tried, the compiler having sorted
//! them by the Gateway API precedence; the first that matches wins, before the host's
//! plain path rules. Hosts without any (every Ingress-only host) keep an empty list and
//! pay one length check per lookup.

use http::header::HeaderName;
use http::request::Parts;
use http::Method;
use regex::bytes::{Regex, RegexBuilder};

use super::regex_path::{COMPILED_SIZE_LIMIT, MAX_PATTERN_LEN, NEST_LIMIT};
use super::{HostMatch, ListenerScope, RegexPathError, RouteTarget};

/// How a [`MatchRule`] matches the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The normalized request path equals this one.
    Exact(String),
    /// Element-wise prefix, as Ingress `Prefix`: `/foo` matches `/foo`, `/foo/` and
    /// `/foo/bar`, not `/foobar`. Stored without a trailing slash; `/` is empty.
    Prefix(String),
    /// `RegularExpression`: the whole path matches the pattern.
    Regex(FullMatch),
}

/// A pattern that must match the whole normalized path, case-sensitively, as Gateway
/// API paths compare (the spec leaves the dialect and anchoring to the
/// implementation). The engine is linear-time and its limits those of Ingress regex
/// paths ([`compile_pattern`](super::compile_pattern)).
#[derive(Clone, Debug)]
pub struct FullMatch {
    pattern: Box<str>,
    regex: Regex,
}

impl PartialEq for FullMatch {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for FullMatch {}

impl FullMatch {
    pub fn new(pattern: &str) -> Result<Self, RegexPathError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(RegexPathError::TooLong);
        }
        let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
            .unicode(false)
            .size_limit(COMPILED_SIZE_LIMIT)
            .dfa_size_limit(COMPILED_SIZE_LIMIT)
            .nest_limit(NEST_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => RegexPathError::TooBig,
                other => RegexPathError::Syntax(
                    other
                        .to_string()
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid pattern")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_owned(),
                ),
            })?;
        Ok(Self {
            pattern: pattern.into(),
            regex,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.regex.is_match(value)
    }
}

/// How a header or query-parameter value is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// Byte for byte.
    Exact(Box<str>),
    /// `RegularExpression`: the whole value matches.
    Regex(FullMatch),
}

impl ValueMatch {
    fn is_match(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(v) => v.as_bytes() == value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl PathMatch {
    /// A prefix match of `path` (a trailing slash is ignored).
    pub fn prefix(path: &str) -> Self {
        PathMatch::Prefix(path.strip_suffix('/').unwrap_or(path).to_owned())
    }

    fn is_match(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => match path.strip_prefix(p.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || p.is_empty(),
                None => false,
            },
            PathMatch::Regex(r) => r.regex.is_match(path.as_bytes()),
        }
    }
}

/// One match alternative of a rule, with where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchRule {
    pub host: HostMatch,
    pub path: PathMatch,
    pub method: Option<Method>,
    /// Each header must be present with a matching value (names are case-insensitive
    /// by type).
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Each query parameter must be present with a matching value; names compare
    /// exactly. Of a repeated parameter, the first is taken.
    pub query: Vec<(String, ValueMatch)>,
    /// The listeners the rule answers on (checked by the table, before the match).
    pub listeners: ListenerScope,
    pub target: RouteTarget,
}

impl MatchRule {
    /// Whether the request (its normalized path, without query, and its head) matches.
    pub fn is_match(&self, path: &str, parts: Option<&Parts>) -> bool {
        if !self.path.is_match(path) {
            return false;
        }
        let conditional =
            self.method.is_some() || !self.headers.is_empty() || !self.query.is_empty();
        if !conditional {
            return true;
        }
        let Some(parts) = parts else {
            return false;
        };
        if self.method.as_ref().is_some_and(|m| *m != parts.method) {
            return false;
        }
        let headers_match = self.headers.iter().all(|(name, m)| {
            // A repeated header is matched on its first value, as the spec allows.
            parts
                .headers
                .get(name)
                .is_some_and(|v| m.is_match(v.as_bytes()))
        });
        headers_match
            && self.query.iter().all(|(name, m)| {
                query_param(parts.uri.query(), name).is_some_and(|v| m.is_match(v.as_bytes()))
            })
    }
}

/// The first value of query parameter `name`, percent-decoding neither side: the spec
/// compares the values as sent.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackendId;

    fn rule(path: PathMatch) -> MatchRule {
        MatchRule {
            host: HostMatch::Any,
            path,
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            listeners: ListenerScope::default(),
            target: RouteTarget {
                backend: BackendId::new("default", "svc", "80"),
                policy: Default::default(),
                source: "default/route".into(),
            },
        }
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn prefix_matches_element_wise() {
        let r = rule(PathMatch::prefix("/foo/"));
        assert!(r.is_match("/foo", None));
        assert!(r.is_match("/foo/bar", None));
        assert!(!r.is_match("/foobar", None));
        let root = rule(PathMatch::prefix("/"));
        assert!(root.is_match("/anything", None));
        let exact = rule(PathMatch::Exact("/foo".into()));
        assert!(exact.is_match("/foo", None));
        assert!(!exact.is_match("/foo/", None));
    }

    #[test]
    fn regular_expressions_match_the_whole_path_case_sensitively() {
        let r = rule(PathMatch::Regex(FullMatch::new("/v[0-9]+/.*").unwrap()));
        assert!(r.is_match("/v2/users", None));
        assert!(!r.is_match("/api/v2/users", None));
        assert!(!r.is_match("/V2/users", None));
        // The alternation stays inside the anchors.
        let alt = rule(PathMatch::Regex(FullMatch::new("/a|/b").unwrap()));
        assert!(alt.is_match("/b", None));
        assert!(!alt.is_match("/b/c", None));
        assert!(!alt.is_match("/x/a", None));
        assert!(matches!(
            FullMatch::new("/(?=x)"),
            Err(RegexPathError::Syntax(_))
        ));
        assert!(matches!(
            FullMatch::new(&"a".repeat(MAX_PATTERN_LEN + 1)),
            Err(RegexPathError::TooLong)
        ));
    }

    #[test]
    fn header_and_query_values_match_whole_regular_expressions() {
        let mut r = rule(PathMatch::prefix("/"));
        r.headers = vec![(
            HeaderName::from_static("version"),
            ValueMatch::Regex(FullMatch::new("v[0-9]+").unwrap()),
        )];
        r.query = vec![(
            "animal".into(),
            ValueMatch::Regex(FullMatch::new("wh.*").unwrap()),
        )];
        let ok = parts("GET", "/x?animal=whale", &[("version", "v12")]);
        assert!(r.is_match("/x", Some(&ok)));
        let partial = parts("GET", "/x?animal=whale", &[("version", "v12-beta")]);
        assert!(!r.is_match("/x", Some(&partial)));
        let other = parts("GET", "/x?animal=dolphin", &[("version", "v1")]);
        assert!(!r.is_match("/x", Some(&other)));
    }

    #[test]
    fn every_condition_must_hold() {
        let mut r = rule(PathMatch::prefix("/"));
        r.method = Some(Method::POST);
        r.headers = vec![(
            HeaderName::from_static("version"),
            ValueMatch::Exact("two".into()),
        )];
        r.query = vec![("animal".into(), ValueMatch::Exact("whale".into()))];
        let ok = parts("POST", "/x?animal=whale&b=1", &[("Version", "two")]);
        assert!(r.is_match("/x", Some(&ok)));
        assert!(!r.is_match("/x", None));
        let get = parts("GET", "/x?animal=whale", &[("version", "two")]);
        assert!(!r.is_match("/x", Some(&get)));
        let other_value = parts("POST", "/x?animal=whale", &[("version", "Two")]);
        assert!(!r.is_match("/x", Some(&other_value)));
        let no_query = parts("POST", "/x?animals=whale", &[("version", "two")]);
        assert!(!r.is_match("/x", Some(&no_query)));
    }
}
