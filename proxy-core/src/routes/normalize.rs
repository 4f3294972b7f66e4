//! Request-side normalization: the host and path the route table is looked up with.
//!
//! Both functions borrow from the request when it is already in canonical form, which is
//! what real clients send almost always, so the common request path does not allocate.

use std::borrow::Cow;

use http::request::Parts;

use crate::host::{normalize_request_host, plain_request_host};

/// Why a request path cannot be routed. The HTTP server answers these with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Neither empty nor starting with `/` (e.g. the asterisk-form `OPTIONS *`).
    #[error("request path does not start with '/'")]
    NotAbsolute,
    /// A literal or percent-encoded NUL byte.
    #[error("request path contains a NUL byte at offset {offset}")]
    Nul { offset: usize },
    /// A literal control character (other than NUL).
    #[error("request path contains control character 0x{byte:02x} at offset {offset}")]
    ControlChar { offset: usize, byte: u8 },
    /// `%` not followed by two hex digits.
    #[error("request path has an invalid percent-encoding at offset {offset}")]
    InvalidPercentEncoding { offset: usize },
}

/// The request's host, normalized for [`RouteTable::lookup`](super::RouteTable::lookup).
///
/// Source: the authority of the request URI first, which is where hyper puts an
/// absolute-form request target and the HTTP/2 `:authority` pseudo-header (RFC 9112
/// §3.2.2: a server must then ignore `Host`); otherwise the single `Host` header.
///
/// Normal form ([`normalize_request_host`], the same rule configured hosts follow): port
/// removed, one trailing dot removed (`foo.com.` is the same host as `foo.com`), ASCII
/// lower-cased (borrowed when it already is). An IPv6 literal keeps its
/// brackets, `[::1]:8080` becomes `[::1]`: Ingress hosts cannot be IP addresses, so such
/// a request only ever matches host-less rules, and the bracketed form cannot be confused
/// with a DNS name.
///
/// `None` when there is no host, when there are several `Host` headers (ambiguous; RFC
/// 9112 says 400) or when the host is not a valid DNS name / IP literal with an optional
/// numeric port.
pub fn request_host(parts: &Parts) -> Option<Cow<'_, str>> {
    if let Some(authority) = parts.uri.authority() {
        // `Authority::host` already dropped userinfo and port and validated brackets.
        return normalize_request_host(authority.host());
    }
    let mut values = parts.headers.get_all(http::header::HOST).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    if let Some(host) = plain_request_host(value.as_bytes()) {
        return Some(Cow::Borrowed(host));
    }
    let value = value.to_str().ok()?;
    normalize_request_host(strip_port(value)?)
}

/// Removes `:port` from a `Host` header value; `None` when the port is not numeric.
fn strip_port(value: &str) -> Option<&str> {
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        (&value[..=end], &value[end + 1..])
    } else {
        match value.rfind(':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, ""),
        }
    };
    match port.strip_prefix(':') {
        // RFC 3986 allows an empty port after the colon.
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(host),
        Some(_) => None,
        None if port.is_empty() => Some(host),
        None => None,
    }
}

/// Normalizes a request path (no query; anything from `?` or `#` on is ignored) to the
/// canonical form the route table matches on:
///
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and the
///   hex digits of every other escape are upper-cased (RFC 3986 §6.2.2.1-2), so `%7e`,
///   `%7E` and `~` are one path; characters that may not appear raw are encoded;
/// - `%2F` stays encoded, so it never creates a new path element;
/// - `.` and `..` elements are resolved (RFC 3986 §5.2.4), after decoding so `%2e%2e` is
///   `..` too; `..` never climbs above `/`;
/// - empty elements are merged (`//a` is `/a`, as nginx's default `merge_slashes`), so a
///   doubled slash cannot step around a Prefix rule; a trailing slash is kept because
///   `Exact` rules see it;
/// - the empty path is `/`.
///
/// Borrows when the path is already canonical. Errors on NUL (raw or `%00`), raw control
/// characters, malformed escapes and paths not starting with `/`.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    normalize(&raw[..end], false)
}

/// [`normalize_path`] for a rule's `path` field: the same canonical form, but `?` and `#`
/// are encoded rather than cutting the path (a rule path has no query). The compiler can
/// use it to report a path that can never be routed.
pub fn normalize_rule_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize(path, true)
}

fn normalize(path: &str, encode_query_chars: bool) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path)? {
        Ok(Cow::Borrowed(path))
    } else {
        canonicalize(path, encode_query_chars).map(Cow::Owned)
    }
}

/// What one byte of a path is, for canonicalization.
#[derive(PartialEq, Eq)]
enum Class {
    /// Allowed raw in canonical form: unreserved, sub-delims, `:`, `@`, `/`.
    Raw,
    /// Starts an escape.
    Percent,
    /// Must be percent-encoded in canonical form (space, `"`, `{`, non-ASCII, ...).
    Encode,
    /// Rejected.
    Control,
}

fn class(b: u8) -> Class {
    match b {
        b'%' => Class::Percent,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => Class::Raw,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => Class::Raw,
        b':' | b'@' | b'/' => Class::Raw,
        0x00..=0x1f | 0x7f => Class::Control,
        _ => Class::Encode,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes the escape at `bytes[at] == b'%'`.
fn decode_escape(bytes: &[u8], at: usize) -> Result<u8, PathError> {
    let invalid = PathError::InvalidPercentEncoding { offset: at };
    let hi = bytes
        .get(at + 1)
        .copied()
        .and_then(hex_value)
        .ok_or(invalid)?;
    let lo = bytes
        .get(at + 2)
        .copied()
        .and_then(hex_value)
        .ok_or(invalid)?;
    let value = hi << 4 | lo;
    if value == 0 {
        return Err(PathError::Nul { offset: at });
    }
    Ok(value)
}

fn control_error(offset: usize, byte: u8) -> PathError {
    if byte == 0 {
        PathError::Nul { offset }
    } else {
        PathError::ControlChar { offset, byte }
    }
}

/// Whether `path` (starting with `/`) is already in canonical form; errors exactly when
/// [`canonicalize`] would.
fn is_canonical(path: &str) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    let mut canonical = true;
    let mut segment_start = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match class(b) {
            Class::Raw if b == b'/' && i > 0 => {
                let segment = &bytes[segment_start..i];
                if segment.is_empty() || segment == b"." || segment == b".." {
                    canonical = false;
                }
                segment_start = i + 1;
            }
            Class::Raw => {}
            Class::Percent => {
                let value = decode_escape(bytes, i)?;
                if is_unreserved(value)
                    || bytes[i + 1].is_ascii_lowercase()
                    || bytes[i + 2].is_ascii_lowercase()
                {
                    canonical = false;
                }
                i += 2;
            }
            Class::Encode => canonical = false,
            Class::Control => return Err(control_error(i, b)),
        }
        i += 1;
    }
    let last = &bytes[segment_start..];
    if last == b"." || last == b".." {
        canonical = false;
    }
    Ok(canonical)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The slow path: builds the canonical form of `path` (starting with `/`).
fn canonicalize(path: &str, encode_query_chars: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    // Built as a sequence of "/segment"; the trailing slash is added at the end.
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 8);
    let mut segment: Vec<u8> = Vec::new();
    let mut offset = 1; // bytes[0] is '/'
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        segment.clear();
        let raw = raw.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            match class(b) {
                Class::Raw => segment.push(b),
                Class::Percent => {
                    let value = decode_escape(bytes, offset + i)?;
                    if is_unreserved(value) {
                        segment.push(value);
                    } else {
                        segment.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(value >> 4)],
                            HEX[usize::from(value & 15)],
                        ]);
                    }
                    i += 2;
                }
                Class::Encode if (b == b'?' || b == b'#') && !encode_query_chars => {
                    // normalize_path cut the query off before getting here.
                    segment.push(b);
                }
                Class::Encode => {
                    segment.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ]);
                }
                Class::Control => return Err(control_error(offset + i, b)),
            }
            i += 1;
        }
        offset += raw.len() + 1;
        match segment.as_slice() {
            b"" | b"." => trailing_slash = true,
            b".." => {
                let parent = out.iter().rposition(|&c| c == b'/').unwrap_or(0);
                out.truncate(parent);
                trailing_slash = true;
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(&segment);
                trailing_slash = false;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    // Every byte pushed is ASCII: raw path bytes of class Raw, hex digits, or decoded
    // unreserved characters.
    String::from_utf8(out).map_err(|_| PathError::InvalidPercentEncoding { offset: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn norm(raw: &str) -> String {
        normalize_path(raw).unwrap().into_owned()
    }

    fn is_borrowed(raw: &str) -> bool {
        matches!(normalize_path(raw), Ok(Cow::Borrowed(_)))
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/foo",
            "/foo/",
            "/foo/bar.html",
            "/a/b/c/d/e/f",
            "/api/v1/users;matrix=1",
            "/%2F",
            "/a%20b",
            "/~user/..x/.hidden",
        ] {
            assert!(is_borrowed(p), "{p} should borrow");
            assert_eq!(norm(p), p);
        }
    }

    #[test]
    fn empty_path_is_root() {
        assert_eq!(norm(""), "/");
        assert!(is_borrowed(""));
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        assert_eq!(norm("/foo?x=1"), "/foo");
        assert!(is_borrowed("/foo?x=/../../etc"));
        assert_eq!(norm("/foo/?a"), "/foo/");
        assert_eq!(norm("/foo#frag"), "/foo");
        assert_eq!(norm("?x"), "/");
        // A bad byte in the query is not the path's problem.
        assert_eq!(norm("/foo?%zz"), "/foo");
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(norm("/foo/"), "/foo/");
        assert_eq!(norm("/foo//"), "/foo/");
        assert_eq!(norm("/foo"), "/foo");
    }

    #[test]
    fn dot_segments_are_resolved() {
        let cases = [
            ("/.", "/"),
            ("/..", "/"),
            ("/./", "/"),
            ("/../", "/"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/../../c", "/c"),
            ("/../../../etc/passwd", "/etc/passwd"),
            ("/a/../../../b", "/b"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/b./c", "/a/b./c"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw), want, "{raw}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2E%2E/admin"), "/admin");
        assert_eq!(norm("/public/.%2e/admin"), "/admin");
        assert_eq!(norm("/a/%2e/b"), "/a/b");
    }

    #[test]
    fn dotdot_cannot_escape_into_another_prefix() {
        // `/api/..` must not stay under `/api`; `/static/../api` must land on `/api`.
        assert_eq!(norm("/api/.."), "/");
        assert_eq!(norm("/static/../api/x"), "/api/x");
        assert_eq!(norm("/static/%2e%2e/api"), "/api");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/a//b///c"), "/a/b/c");
        assert_eq!(norm("//"), "/");
    }

    #[test]
    fn percent_encoding_is_canonical() {
        // Unreserved characters decode.
        assert_eq!(norm("/%7Euser"), "/~user");
        assert_eq!(norm("/%7euser"), "/~user");
        assert_eq!(norm("/%61%62%63"), "/abc");
        assert_eq!(norm("/a%2Db%5Fc"), "/a-b_c");
        // Reserved ones stay encoded, with upper-case hex.
        assert_eq!(norm("/a%2fb"), "/a%2Fb");
        assert_eq!(norm("/a%2Fb"), "/a%2Fb");
        assert!(is_borrowed("/a%2Fb"));
        assert_eq!(norm("/a%3fb"), "/a%3Fb");
        assert_eq!(norm("/caf%c3%a9"), "/caf%C3%A9");
        // Characters that may not appear raw get encoded.
        assert_eq!(norm("/a b"), "/a%20b");
        assert_eq!(norm("/{x}"), "/%7Bx%7D");
        assert_eq!(norm("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(norm("/a\\b"), "/a%5Cb");
    }

    #[test]
    fn encoded_slash_never_splits_a_segment() {
        assert_eq!(norm("/a%2F..%2Fb"), "/a%2F..%2Fb");
        assert_eq!(norm("/a/%2F/../b"), "/a/b");
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert_eq!(normalize_path("/a%00b"), Err(PathError::Nul { offset: 2 }));
        assert_eq!(normalize_path("/a\0b"), Err(PathError::Nul { offset: 2 }));
        assert_eq!(
            normalize_path("/a\nb"),
            Err(PathError::ControlChar {
                offset: 2,
                byte: b'\n'
            })
        );
        assert_eq!(
            normalize_path("/a\x7f"),
            Err(PathError::ControlChar {
                offset: 2,
                byte: 0x7f
            })
        );
        for (raw, offset) in [
            ("/%", 1),
            ("/%4", 1),
            ("/a%zz", 2),
            ("/a/%g0", 3),
            ("/%%41", 1),
        ] {
            assert_eq!(
                normalize_path(raw),
                Err(PathError::InvalidPercentEncoding { offset }),
                "{raw}"
            );
        }
        // Errors also come from the slow path (the path is not canonical before the bad byte).
        assert_eq!(
            normalize_path("//a/%zz"),
            Err(PathError::InvalidPercentEncoding { offset: 4 })
        );
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("foo/bar"), Err(PathError::NotAbsolute));
        assert!(PathError::Nul { offset: 3 }.to_string().contains("NUL"));
    }

    #[test]
    fn rule_paths_encode_query_characters() {
        assert_eq!(normalize_rule_path("/a?b").unwrap(), "/a%3Fb");
        assert_eq!(normalize_rule_path("/a#b").unwrap(), "/a%23b");
        assert_eq!(normalize_rule_path("/foo/").unwrap(), "/foo/");
        assert_eq!(normalize_rule_path("/%7efoo").unwrap(), "/~foo");
        // A request for the encoded form meets the rule.
        assert_eq!(norm("/a%3fb"), normalize_rule_path("/a?b").unwrap());
    }

    /// Random paths over an alphabet full of the tricky bytes: the fast check agrees with
    /// the slow path, the result is canonical, idempotent and free of dot segments.
    #[test]
    fn normalization_properties_on_random_paths() {
        const PIECES: &[&str] = &[
            "/", "/", "/", "a", "b", ".", "..", "%2e", "%2E", "%2f", "%2F", "%7e", "%41", "%zz",
            "%", "%00", "~", " ", "{", "é", "%c3%a9", ";", "=", "?", "#", "\t",
        ];
        let mut rng = StdRng::seed_from_u64(0x5eed_0001);
        for _ in 0..20_000 {
            let mut raw = String::from("/");
            for _ in 0..rng.random_range(0..12) {
                raw.push_str(PIECES[rng.random_range(0..PIECES.len())]);
            }
            let fast = normalize_path(&raw);
            let end = raw.find(['?', '#']).unwrap_or(raw.len());
            let slow = canonicalize(&raw[..end], false);
            match (&fast, &slow) {
                (Ok(f), Ok(s)) => assert_eq!(f.as_ref(), s.as_str(), "{raw:?}"),
                (Err(f), Err(s)) => assert_eq!(f, s, "{raw:?}"),
                _ => panic!("fast {fast:?} vs slow {slow:?} for {raw:?}"),
            }
            let Ok(out) = fast else { continue };
            assert!(out.starts_with('/'), "{raw:?} -> {out}");
            assert!(!out.contains("//"), "{raw:?} -> {out}");
            assert!(
                out.split('/').all(|s| s != "." && s != ".."),
                "{raw:?} -> {out}"
            );
            let again = normalize_path(&out).unwrap();
            assert!(
                matches!(again, Cow::Borrowed(_)),
                "not idempotent: {raw:?} -> {out}"
            );
        }
    }

    fn parts(uri: &str, hosts: &[&str]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(http::header::HOST, *h);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn host_of(uri: &str, hosts: &[&str]) -> Option<String> {
        request_host(&parts(uri, hosts)).map(Cow::into_owned)
    }

    #[test]
    fn host_header_is_normalized() {
        let cases = [
            ("foo.bar.com", Some("foo.bar.com")),
            ("foo.bar.com:8080", Some("foo.bar.com")),
            ("foo.bar.com:", Some("foo.bar.com")),
            ("Foo.Bar.COM", Some("foo.bar.com")),
            ("foo.bar.com.", Some("foo.bar.com")),
            ("FOO.bar.com.:443", Some("foo.bar.com")),
            ("under_score.example", None),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:8080", Some("[::1]")),
            ("[2001:DB8::1]:443", Some("[2001:db8::1]")),
            ("", None),
            (".", None),
            (":80", None),
            ("foo.com:http", None),
            ("foo.com:80:80", None),
            ("user@foo.com", None),
            ("foo bar", None),
            ("foo/bar", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[not-ip]:80", None),
            ("::1", None),
        ];
        for (header, want) in cases {
            assert_eq!(host_of("/", &[header]).as_deref(), want, "Host: {header:?}");
        }
    }

    #[test]
    fn lower_case_host_is_borrowed() {
        let p = parts("/", &["foo.bar.com:8080"]);
        assert!(matches!(
            request_host(&p),
            Some(Cow::Borrowed("foo.bar.com"))
        ));
        let p = parts("/", &["Foo.bar.com"]);
        assert!(matches!(request_host(&p), Some(Cow::Owned(_))));
    }

    #[test]
    fn missing_or_repeated_host_is_none() {
        assert_eq!(host_of("/", &[]), None);
        assert_eq!(host_of("/", &["a.com", "b.com"]), None);
        assert_eq!(host_of("/", &["a.com", "a.com"]), None);
    }

    #[test]
    fn absolute_form_authority_wins_over_host_header() {
        assert_eq!(
            host_of("http://Real.Example.com:8080/x?y", &["other.com"]).as_deref(),
            Some("real.example.com")
        );
        assert_eq!(
            host_of("http://user:pw@real.example.com/", &[]).as_deref(),
            Some("real.example.com")
        );
        assert_eq!(host_of("http://[::1]:9/", &[]).as_deref(), Some("[::1]"));
        assert_eq!(host_of("http://foo.com./", &[]).as_deref(), Some("foo.com"));
    }

    #[test]
    fn http2_authority_is_used() {
        // hyper's HTTP/2 server puts `:authority` into the request URI.
        let (p, _) = http::Request::builder()
            .version(http::Version::HTTP_2)
            .uri("https://h2.example.com:8443/path")
            .header(http::header::HOST, "ignored.example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&p).as_deref(), Some("h2.example.com"));
        // Without `:authority`, an HTTP/2 request falls back to `Host`.
        let (p, _) = http::Request::builder()
            .version(http::Version::HTTP_2)
            .uri("/path")
            .header(http::header::HOST, "fallback.example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&p).as_deref(), Some("fallback.example.com"));
    }

    #[test]
    fn absolute_form_path_is_normalized() {
        let p = parts("http://foo.com", &[]);
        assert_eq!(normalize_path(p.uri.path()).unwrap(), "/");
        let p = parts("http://foo.com/a/../b?q", &[]);
        assert_eq!(normalize_path(p.uri.path()).unwrap(), "/b");
    }
}
