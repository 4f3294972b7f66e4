//! Host and path syntax of Ingress rules, as the Kubernetes API validates them.

use std::net::IpAddr;

use proxy_core::routes::{normalize_rule_path, HostMatch, PathType};

/// A rule or TLS host: lower-cased, `*.` wildcard or DNS name; `None`/empty is any host.
pub fn parse_host(raw: Option<&str>) -> Result<HostMatch, String> {
    let Some(raw) = raw.filter(|h| !h.is_empty()) else {
        return Ok(HostMatch::Any);
    };
    let host = raw.to_ascii_lowercase();
    if let Some(suffix) = host.strip_prefix("*.") {
        return if is_dns_subdomain(suffix) {
            Ok(HostMatch::Wildcard(suffix.to_owned()))
        } else {
            Err(format!(
                "host {raw:?} is not a valid wildcard (\"*.\" followed by a DNS name)"
            ))
        };
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "host {raw:?} is an IP address; hosts must be DNS names"
        ));
    }
    if is_dns_subdomain(&host) {
        Ok(HostMatch::Exact(host))
    } else {
        Err(format!(
            "host {raw:?} is not a valid DNS name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, 1-63 long, no leading or
/// trailing `-`, 253 characters in all.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// The path type; `ImplementationSpecific` (and an empty value) is served as `Prefix`,
/// Portico has no regex paths.
pub fn parse_path_type(raw: &str) -> Result<PathType, String> {
    match raw {
        "Exact" => Ok(PathType::Exact),
        "Prefix" | "ImplementationSpecific" | "" => Ok(PathType::Prefix),
        other => Err(format!(
            "pathType {other:?} is not one of Exact, Prefix, ImplementationSpecific"
        )),
    }
}

/// A rule path, in the route table's canonical form: absent means `/`. Must be absolute. For `Exact` and `Prefix` the
/// Kubernetes API also forbids `//`, `/./`, `/../`, `%2f` and a trailing `/.` or `/..`;
/// the same rules apply here, for every type, since ImplementationSpecific is Prefix.
pub fn parse_path(raw: Option<&str>) -> Result<String, String> {
    let Some(path) = raw.filter(|p| !p.is_empty()) else {
        return Ok("/".to_owned());
    };
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "path {path:?} must not contain spaces or control characters"
        ));
    }
    if path.contains(['?', '#']) {
        return Err(format!("path {path:?} must not contain '?' or '#'"));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(format!("path {path:?} must not contain {bad:?}"));
        }
    }
    if path.ends_with("/..") || path.ends_with("/.") {
        return Err(format!("path {path:?} must not end with \"/.\" or \"/..\""));
    }
    // The route table's canonical form (escapes normalized), so claims compare the way
    // the table matches.
    normalize_rule_path(path)
        .map(|p| p.into_owned())
        .map_err(|e| format!("path {path:?} cannot be routed: {e}"))
}

/// The key under which two path rules are the same claim: `Prefix` ignores a trailing
/// slash (`/foo` and `/foo/` match the same requests).
pub fn claim_path(path: &str, path_type: PathType) -> &str {
    match path_type {
        PathType::Prefix if path.len() > 1 => path.trim_end_matches('/'),
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(parse_host(None), Ok(HostMatch::Any));
        assert_eq!(parse_host(Some("")), Ok(HostMatch::Any));
        assert_eq!(
            parse_host(Some("Foo.Bar.com")),
            Ok(HostMatch::Exact("foo.bar.com".into()))
        );
        assert_eq!(
            parse_host(Some("*.foo.com")),
            Ok(HostMatch::Wildcard("foo.com".into()))
        );
        for bad in [
            "foo_bar.com",
            "-a.com",
            "a..com",
            "*.",
            "*",
            "a.*.com",
            "10.0.0.1",
            "foo.com:80",
            "ex ample.com",
        ] {
            assert!(parse_host(Some(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path(None).as_deref(), Ok("/"));
        assert_eq!(parse_path(Some("/a/b/")).as_deref(), Ok("/a/b/"));
        assert_eq!(parse_path(Some("/%7euser")).as_deref(), Ok("/~user"));
        for bad in [
            "a", "/a//b", "/a/../b", "/a/.", "/a%2Fb", "/a b", "/a?x=1", "/a%zz",
        ] {
            assert!(parse_path(Some(bad)).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_path_type("ImplementationSpecific"),
            Ok(PathType::Prefix)
        );
        assert!(parse_path_type("Regex").is_err());
        assert_eq!(claim_path("/foo/", PathType::Prefix), "/foo");
        assert_eq!(claim_path("/", PathType::Prefix), "/");
        assert_eq!(claim_path("/foo/", PathType::Exact), "/foo/");
    }
}
