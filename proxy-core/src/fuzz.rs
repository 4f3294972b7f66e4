//! Entry points for the fuzz targets in `fuzz/` (and the smoke test that runs them in
//! CI): each takes arbitrary bytes, drives one parser of client or configuration input,
//! and panics only when an invariant breaks. Not part of the dataplane's API.

use std::sync::Arc;

use crate::config::BackendId;
use crate::host::{normalize_request_host, HostPattern};
use crate::routes::{normalize_path, HostMatch, PathType, RouteRule, RouteTable, RouteTarget};

/// Request path normalisation: a normalised path is absolute and normalises to itself.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(once) = normalize_path(raw) {
        assert!(once.starts_with('/'), "{raw:?} -> {once:?}");
        let twice = normalize_path(&once).expect("a normalised path normalises");
        assert_eq!(once, twice, "not idempotent for {raw:?}");
    }
}

/// Host parsing: request hosts normalise idempotently, and configured patterns print and
/// parse back to themselves and match what they print.
pub fn host(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(once) = normalize_request_host(raw) {
        let twice = normalize_request_host(&once).expect("a normalised host normalises");
        assert_eq!(once, twice, "not idempotent for {raw:?}");
    }
    if let Ok(pattern) = HostPattern::parse(raw) {
        let printed = pattern.to_string();
        assert_eq!(
            HostPattern::parse(&printed).ok(),
            Some(pattern.clone()),
            "{raw:?}"
        );
        if let HostPattern::Exact(name) = &pattern {
            assert!(
                pattern.matches(name.as_str()),
                "{raw:?} does not match itself"
            );
        }
    }
}

/// The route table: rules and lookups from the same bytes; a lookup never panics, and
/// an exact rule's own host and path find a rule.
pub fn routes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut rules = Vec::new();
    let mut probes = Vec::new();
    for (i, line) in lines.by_ref().take(32).enumerate() {
        let (host, path) = line.split_once(' ').unwrap_or(("", line));
        let host = match host {
            "" => HostMatch::Any,
            h => match HostPattern::parse(h) {
                Ok(p) => HostMatch::Host(p),
                Err(_) => continue,
            },
        };
        let path_type = if i % 2 == 0 {
            PathType::Prefix
        } else {
            PathType::Exact
        };
        probes.push((host.clone(), path.to_owned()));
        rules.push(RouteRule {
            host,
            path: path.to_owned(),
            path_type,
            target: RouteTarget {
                backend: BackendId::new("fuzz", &i.to_string(), "80"),
                policy: Default::default(),
                source: Arc::from("fuzz/rules"),
            },
        });
    }
    let table = RouteTable::build(rules);
    for line in lines {
        let (host, path) = line.split_once(' ').unwrap_or(("", line));
        if let Ok(path) = normalize_path(path) {
            let _ = table.lookup(host, &path);
        }
    }
    for (host, path) in probes {
        let HostMatch::Host(HostPattern::Exact(name)) = host else {
            continue;
        };
        // Only paths that both normalisations leave as they are: a rule path and a
        // request path are read differently where they may differ (percent-encoding).
        let canonical = |p: &str| {
            normalize_path(p).is_ok_and(|n| n == p)
                && crate::routes::normalize_rule_path(p).is_ok_and(|n| n == p)
        };
        if canonical(&path) {
            assert!(
                table.lookup(name.as_str(), &path).is_some(),
                "{name} {path:?} has a rule of its own but no match"
            );
        }
    }
}

/// HTTP/1 request heads and bodies: reading never panics, and reads the same requests
/// however the stream is split across reads.
pub fn framing(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = crate::http::h1_messages(&[stream]);
    let step = usize::from(split).max(1);
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    assert_eq!(crate::http::h1_messages(&pieces), whole);
}
