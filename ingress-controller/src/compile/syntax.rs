//! Host and path syntax of Ingress rules, as the Kubernetes API validates them.

use proxy_core::routes::{normalize_rule_path, HostMatch, PathType};

/// A rule or TLS host (the one rule in [`proxy_core::host`]); `None`/empty is any host.
pub fn parse_host(raw: Option<&str>) -> Result<HostMatch, String> {
    HostMatch::parse(raw).map_err(|e| format!("host {:?}: {e}", raw.unwrap_or_default()))
}

/// The path type; `ImplementationSpecific` (and an empty value) is served as `Prefix`
/// unless its Ingress asks for regex paths (`use-regex`, `rewrite-target`), whose paths
/// are regexes whatever their type, as in ingress-nginx.
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

/// A regex rule path (`use-regex`, `rewrite-target`), kept as written: absent means `/`.
/// Must be absolute, as the Kubernetes API requires of every path, and without spaces or
/// control characters (a request path never holds them raw). Whether the engine can run
/// it is [`proxy_core::routes::PathRegex::new`]'s to say.
pub fn parse_regex_path(raw: Option<&str>) -> Result<String, String> {
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
    Ok(path.to_owned())
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
