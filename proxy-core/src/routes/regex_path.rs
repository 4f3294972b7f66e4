//! Regex paths, as ingress-nginx matches them once a host is in regex mode (`use-regex`
//! or `rewrite-target` on some Ingress of the host): every path is a
//! `location ~* "^PATH"`, a case-insensitive regular expression anchored at the start of
//! the path only, so it matches as a prefix. The compiler orders a host's regex rules
//! as ingress-nginx orders its locations (longest path first); the first that matches
//! wins.
//!
//! The engine is the `regex` crate: matching is linear in the path's length whatever
//! the pattern, and patterns it cannot run in linear time (look-around,
//! backreferences) do not compile. Patterns are matched on bytes without Unicode classes,
//! as nginx's PCRE matches a path, and their compiled size is bounded, so a pattern
//! cannot make a configuration that eats memory or CPU.

use regex::bytes::{Regex, RegexBuilder};

use super::{HostMatch, RouteTarget};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 2048;
/// Bound on one compiled pattern, and on its lazy DFA's cache.
pub(crate) const COMPILED_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting of groups and repetitions accepted.
pub(crate) const NEST_LIMIT: u32 = 64;

/// Why a pattern cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegexPathError {
    #[error("the pattern is longer than {MAX_PATTERN_LEN} bytes")]
    TooLong,
    #[error("the pattern compiles to more than the size limit")]
    TooBig,
    /// The engine's message, on one line (look-around and backreferences end up here).
    #[error("{0}")]
    Syntax(String),
}

/// Compiles `pattern` case-insensitively, on bytes, within the limits.
pub fn compile_pattern(pattern: &str) -> Result<Regex, RegexPathError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(RegexPathError::TooLong);
    }
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(COMPILED_SIZE_LIMIT)
        .dfa_size_limit(COMPILED_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => RegexPathError::TooBig,
            other => RegexPathError::Syntax(one_line(&other.to_string())),
        })
}

/// The engine's multi-line message cut to what it says is wrong.
fn one_line(message: &str) -> String {
    let last = message.lines().rev().find(|l| !l.trim().is_empty());
    let last = last.unwrap_or(message).trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

/// A rule path matched as nginx's `location ~* "^PATH"`.
#[derive(Clone, Debug)]
pub struct PathRegex {
    /// The path as written in the rule.
    source: Box<str>,
    regex: Regex,
}

impl PathRegex {
    /// `^` is put in front of `path` as ingress-nginx does (not around it: a top-level
    /// `a|b` leaves `b` unanchored there too).
    pub fn new(path: &str) -> Result<Self, RegexPathError> {
        let regex = compile_pattern(&format!("^{path}"))?;
        Ok(Self {
            source: path.into(),
            regex,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a normalized request path (no query) matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path.as_bytes())
    }
}

/// Two paths are the same rule when they are written the same.
impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathRegex {}

/// One rule of a host in regex mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegexRule {
    pub host: HostMatch,
    pub path: PathRegex,
    pub target: RouteTarget,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_as_case_insensitive_prefixes() {
        let p = PathRegex::new("/something(/|$)(.*)").unwrap();
        for yes in [
            "/something",
            "/something/",
            "/something/new",
            "/SOMETHING/x",
        ] {
            assert!(p.is_match(yes), "{yes}");
        }
        for no in ["/somethingelse", "/other/something", "/"] {
            assert!(!p.is_match(no), "{no}");
        }
        // A plain path in a regex host is a prefix without element boundaries, as
        // `location ~* "^/foo"` is.
        let plain = PathRegex::new("/foo").unwrap();
        assert!(plain.is_match("/foobar") && plain.is_match("/FOO/x"));
        // `^a|b`: the second branch is unanchored, as in nginx.
        let alt = PathRegex::new("/a|/b").unwrap();
        assert!(alt.is_match("/x/b"));
        assert!(PathRegex::new("/api\\/v[0-9]+")
            .unwrap()
            .is_match("/api/v2/x"));
    }

    #[test]
    fn patterns_it_cannot_run_in_linear_time_are_refused() {
        for bad in ["/(?=a)", "/(?!admin)", "/(?<=x)y", "/(a)\\1"] {
            match PathRegex::new(bad) {
                Err(RegexPathError::Syntax(msg)) => assert!(!msg.contains('\n'), "{msg}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            PathRegex::new("/(").unwrap_err(),
            RegexPathError::Syntax("unclosed group".into())
        );
        assert_eq!(
            PathRegex::new(&"/a".repeat(MAX_PATTERN_LEN)).unwrap_err(),
            RegexPathError::TooLong
        );
        // Small to write, huge to compile.
        assert_eq!(
            PathRegex::new("/(a{1000}){1000}").unwrap_err(),
            RegexPathError::TooBig
        );
        assert!(PathRegex::new(&"(".repeat(100)).is_err());
    }

    #[test]
    fn matching_stays_linear_on_hostile_input() {
        // Catastrophic for a backtracking engine; linear here.
        let p = PathRegex::new("/(a+)+$").unwrap();
        let path = format!("/{}!", "a".repeat(50_000));
        let start = std::time::Instant::now();
        assert!(!p.is_match(&path));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
