//! Host names: the one rule for what a host may be, how it is normalised and what a `*.`
//! wildcard matches. Ingress rules, TLS entries, certificate names, SNI and request
//! `Host` headers all go through here, so every part of Portico agrees on them.
//!
//! The rule is the Kubernetes API's for `spec.rules[].host` and `spec.tls[].hosts[]`: an
//! RFC 1123 DNS subdomain (dot-separated labels of `a-z`, `0-9` and `-`, each 1-63 long,
//! not starting or ending with `-`, 253 characters in all), not an IP address, with an
//! optional leading `*.` label. Normalisation first lower-cases ASCII and drops one
//! trailing dot (`Foo.COM.` is the host `foo.com`), as DNS compares names; a request's
//! `Host` is normalised the same way, so both sides meet in one representation.
//!
//! A wildcard `*.foo.com` matches exactly one extra leading label: `bar.foo.com`, not
//! `foo.com` and not `baz.bar.foo.com`.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::sync::Arc;

/// The longest DNS name, in characters, without the trailing dot.
pub const MAX_HOST_LEN: usize = 253;
/// The longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a configured host was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("host is an IP address; hosts must be DNS names")]
    IpAddress,
    #[error("host has an empty label")]
    EmptyLabel,
    #[error("host has a label longer than {MAX_LABEL_LEN} characters")]
    LabelTooLong,
    #[error("host has a label that starts or ends with '-'")]
    LabelHyphen,
    #[error("host may hold only letters, digits, '-' and '.' (found {0:?})")]
    BadCharacter(char),
    #[error("'*' may only stand alone as the first label, as in \"*.example.com\"")]
    BadWildcard,
}

/// A valid, normalised DNS host name: never a wildcard, never an IP address.
///
/// Cheap to clone; hashes and compares as its text, so maps keyed by it can be looked up
/// with a `&str` from [`normalize_request_host`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(Arc<str>);

impl HostName {
    /// Parses and normalises a host name (see the module docs for the rule).
    pub fn parse(raw: &str) -> Result<HostName, HostError> {
        let host = normalize(raw);
        check_name(&host)?;
        if host.parse::<Ipv4Addr>().is_ok() {
            return Err(HostError::IpAddress);
        }
        Ok(HostName(Arc::from(host.as_ref())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<HostName> for Arc<str> {
    fn from(h: HostName) -> Arc<str> {
        h.0
    }
}

impl Deref for HostName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A configured host: an exact name or a one-label wildcard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `app.example.com`
    Exact(HostName),
    /// `*.example.com`, held as its suffix `example.com`.
    Wildcard(HostName),
}

impl HostPattern {
    /// Parses a configured host: a name, or `*.` followed by a name.
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        let trimmed = raw.trim();
        match trimmed.strip_prefix("*.") {
            Some(suffix) => {
                if suffix.contains('*') {
                    return Err(HostError::BadWildcard);
                }
                // The suffix of a wildcard may look like an address (`*.0.0.1`): the
                // Kubernetes API checks only that it is a DNS subdomain.
                let suffix = normalize(suffix);
                check_name(&suffix)?;
                let name = HostName(Arc::from(suffix.as_ref()));
                // `*.foo` plus one label must still fit in a DNS name.
                if name.len() + 2 > MAX_HOST_LEN {
                    return Err(HostError::TooLong);
                }
                Ok(HostPattern::Wildcard(name))
            }
            None if trimmed.contains('*') => Err(HostError::BadWildcard),
            None => HostName::parse(trimmed).map(HostPattern::Exact),
        }
    }

    /// The exact name, or the wildcard's suffix: the key lookups use.
    pub fn key(&self) -> &HostName {
        match self {
            HostPattern::Exact(h) | HostPattern::Wildcard(h) => h,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self, HostPattern::Wildcard(_))
    }

    /// Whether a normalised host (a [`HostName`] or a [`normalize_request_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.as_str() == host,
            HostPattern::Wildcard(suffix) => wildcard_parent(host) == Some(suffix.as_str()),
        }
    }

    /// Whether every host `other` matches is matched by `self` too: a wildcard covers
    /// the names one label below it and itself; an exact name only itself.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match other {
            HostPattern::Exact(h) => self.matches(h),
            HostPattern::Wildcard(_) => self == other,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// The suffix a `*.` wildcard must have to match `host`: `host` without its first label
/// (`a.b.c` -> `b.c`). `None` when there is no non-empty first label and rest.
pub fn wildcard_parent(host: &str) -> Option<&str> {
    // A byte loop: hosts are short, and `split_once` measured slower on the request path.
    let dot = host.bytes().position(|b| b == b'.')?;
    let rest = &host[dot + 1..];
    (dot > 0 && !rest.is_empty()).then_some(rest)
}

/// Normalises a request's host without its port (from `Host`, `:authority` or SNI) to
/// the form lookups use: the same character rule as [`HostName`], ASCII lower-cased, one
/// trailing dot dropped. An IP address is kept as written (IPv6 in brackets, lower-cased)
/// so it still shows in logs, though no rule can name it.
///
/// Borrows when the host is already in normal form, so the request path does not
/// allocate. `None` when it is neither a valid name nor an IP literal.
pub fn normalize_request_host(host: &str) -> Option<Cow<'_, str>> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        inner.parse::<Ipv6Addr>().ok()?;
        return Some(lowercase(host));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    // IPv4 literals are DNS-shaped, so the name check covers them too.
    check_name(host).ok()?;
    Some(lowercase(host))
}

/// What [`normalize_request_host`] gives for a `Host` value with an optional `:port`,
/// in one pass over the bytes, for the case real clients send: a name already
/// lower-case and without a trailing dot. `None` means only "not that case": the caller
/// then takes the general path, which decides validity.
pub(crate) fn plain_request_host(value: &[u8]) -> Option<&str> {
    let label_ok = |start: usize, end: usize| {
        end > start && end - start <= MAX_LABEL_LEN && value[end - 1] != b'-'
    };
    let mut start = 0;
    let mut end = value.len();
    for (i, b) in value.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' if i > start => {}
            b'.' if label_ok(start, i) => start = i + 1,
            b':' if value[i + 1..].iter().all(u8::is_ascii_digit) => {
                end = i;
                break;
            }
            _ => return None,
        }
    }
    if !label_ok(start, end) || end > MAX_HOST_LEN {
        return None;
    }
    std::str::from_utf8(&value[..end]).ok()
}

/// Lower-cases ASCII and strips surrounding space and one trailing dot.
fn normalize(raw: &str) -> Cow<'_, str> {
    let trimmed = raw.trim();
    lowercase(trimmed.strip_suffix('.').unwrap_or(trimmed))
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The RFC 1123 subdomain rule, on an already lower-cased name; upper-case letters pass
/// too so a request host can be checked before it is lower-cased.
fn check_name(host: &str) -> Result<(), HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    // One pass over the bytes: this runs on every request.
    let bytes = host.as_bytes();
    let mut start = 0;
    for i in 0..=bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b'.');
        if b == b'.' {
            let label = &bytes[start..i];
            match (label.first(), label.last()) {
                (None, _) | (_, None) => return Err(HostError::EmptyLabel),
                _ if label.len() > MAX_LABEL_LEN => return Err(HostError::LabelTooLong),
                (Some(b'-'), _) | (_, Some(b'-')) => return Err(HostError::LabelHyphen),
                _ => {}
            }
            start = i + 1;
        } else if !(b.is_ascii_alphanumeric() || b == b'-') {
            let bad = host[i..].chars().next().unwrap_or('?');
            return Err(if bad == '*' {
                HostError::BadWildcard
            } else {
                HostError::BadCharacter(bad)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass path agrees with the general one wherever it answers, and answers
    /// for the plain hosts clients send.
    #[test]
    fn plain_request_host_agrees_with_the_general_path() {
        let general = |raw: &str| {
            let host = match raw.rfind(':') {
                Some(c) if raw[c + 1..].bytes().all(|b| b.is_ascii_digit()) => &raw[..c],
                Some(_) => return None,
                None => raw,
            };
            normalize_request_host(host).map(Cow::into_owned)
        };
        let alphabet = b"ab0-.:Z_[]9";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut answered = 0;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 14) as usize;
            let raw: String = (0..len)
                .map(|i| alphabet[((seed >> (4 + 4 * i)) % alphabet.len() as u64) as usize] as char)
                .collect();
            if let Some(plain) = plain_request_host(raw.as_bytes()) {
                answered += 1;
                assert_eq!(Some(plain.to_owned()), general(&raw), "{raw:?}");
            }
        }
        assert!(
            answered > 1000,
            "the plain path answered only {answered} times"
        );
        let long_label = "a".repeat(MAX_LABEL_LEN + 1);
        let long_host = ["a"; 130].join(".");
        for raw in [
            "vh0.bench.test",
            "example.com:8080",
            "a-b.c:",
            "10.0.0.1:80",
        ] {
            assert_eq!(
                plain_request_host(raw.as_bytes()).map(str::to_owned),
                general(raw)
            );
            assert!(plain_request_host(raw.as_bytes()).is_some(), "{raw}");
        }
        for raw in [
            &long_label,
            &long_host,
            "-a.b",
            "a-.b",
            "a..b",
            "a.b.",
            "A.b",
            "",
            ":80",
        ] {
            assert_eq!(plain_request_host(raw.as_bytes()), None, "{raw}");
        }
    }

    fn exact(s: &str) -> HostPattern {
        HostPattern::Exact(HostName(s.into()))
    }

    fn wild(s: &str) -> HostPattern {
        HostPattern::Wildcard(HostName(s.into()))
    }

    #[test]
    fn parse_table() {
        let long_label = "a".repeat(64);
        let name_253 = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        let name_254 = format!("{name_253}e");
        let cases: Vec<(&str, Result<HostPattern, HostError>)> = vec![
            ("app.example.com", Ok(exact("app.example.com"))),
            ("App.Example.COM", Ok(exact("app.example.com"))),
            ("app.example.com.", Ok(exact("app.example.com"))),
            ("localhost", Ok(exact("localhost"))),
            ("xn--bcher-kva.example", Ok(exact("xn--bcher-kva.example"))),
            ("*.foo.com", Ok(wild("foo.com"))),
            ("*.FOO.com.", Ok(wild("foo.com"))),
            ("*.com", Ok(wild("com"))),
            (&name_253, Ok(exact(&name_253))),
            (&name_254, Err(HostError::TooLong)),
            ("", Err(HostError::Empty)),
            (".", Err(HostError::Empty)),
            ("*", Err(HostError::BadWildcard)),
            ("*.", Err(HostError::Empty)),
            ("*.*.foo.com", Err(HostError::BadWildcard)),
            ("a.*.foo.com", Err(HostError::BadWildcard)),
            ("*foo.com", Err(HostError::BadWildcard)),
            ("foo_bar.com", Err(HostError::BadCharacter('_'))),
            ("bücher.de", Err(HostError::BadCharacter('ü'))),
            ("foo.com:80", Err(HostError::BadCharacter(':'))),
            ("ex ample.com", Err(HostError::BadCharacter(' '))),
            ("a..com", Err(HostError::EmptyLabel)),
            (".a.com", Err(HostError::EmptyLabel)),
            ("-a.com", Err(HostError::LabelHyphen)),
            ("a-.com", Err(HostError::LabelHyphen)),
            (&long_label, Err(HostError::LabelTooLong)),
            ("10.0.0.1", Err(HostError::IpAddress)),
            ("[::1]", Err(HostError::BadCharacter('['))),
            ("::1", Err(HostError::BadCharacter(':'))),
        ];
        for (raw, want) in cases {
            assert_eq!(HostPattern::parse(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for raw in ["app.example.com", "*.foo.com"] {
            let p = HostPattern::parse(raw).unwrap();
            assert_eq!(p.to_string(), raw);
            assert_eq!(HostPattern::parse(&p.to_string()), Ok(p));
        }
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let w = wild("foo.com");
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("foo.com"));
        assert!(!w.matches("baz.bar.foo.com"));
        assert!(!w.matches(".foo.com"));
        assert!(exact("foo.com").matches("foo.com"));
        assert!(!exact("foo.com").matches("bar.foo.com"));
    }

    #[test]
    fn covers_is_one_label_and_wildcards_only_by_themselves() {
        assert!(wild("foo.com").covers(&exact("bar.foo.com")));
        assert!(!wild("foo.com").covers(&exact("baz.bar.foo.com")));
        assert!(!wild("foo.com").covers(&exact("foo.com")));
        assert!(wild("foo.com").covers(&wild("foo.com")));
        assert!(!exact("bar.foo.com").covers(&wild("foo.com")));
        assert!(!wild("com").covers(&wild("foo.com")));
        assert!(exact("foo.com").covers(&exact("foo.com")));
    }

    #[test]
    fn wildcard_parent_drops_first_label() {
        assert_eq!(wildcard_parent("a.b.c"), Some("b.c"));
        assert_eq!(wildcard_parent("c"), None);
        assert_eq!(wildcard_parent("c."), None);
        assert_eq!(wildcard_parent(".c"), None);
    }

    #[test]
    fn request_hosts_use_the_same_rule() {
        let cases = [
            ("foo.bar.com", Some("foo.bar.com")),
            ("Foo.Bar.COM.", Some("foo.bar.com")),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("[2001:DB8::1]", Some("[2001:db8::1]")),
            ("under_score.example", None),
            ("a..com", None),
            ("-a.com", None),
            ("*.foo.com", None),
            ("", None),
            (".", None),
            ("[::1", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_request_host(raw).as_deref(), want, "{raw:?}");
            // Whatever a configured exact host normalises to, a request for it does too.
            if let Ok(HostPattern::Exact(h)) = HostPattern::parse(raw) {
                assert_eq!(want, Some(h.as_str()), "{raw:?}");
            }
        }
    }
}
