//! How a path's requests pick and change endpoints: `load-balance`, `upstream-hash-by`
//! (`-subset`, `-subset-size`), `proxy-next-upstream` (`-tries`, `-timeout`), as
//! annotations over the ConfigMap's keys of the same names.

use std::sync::Arc;
use std::time::Duration;

use proxy_core::balance::{Balance, HashBy, HashKey, NextUpstream};

/// `load-balance` values, as ingress-nginx's parser takes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalance {
    #[default]
    RoundRobin,
    Ewma,
    /// `chash` / `chashsubset`: consistent hashing, which needs `upstream-hash-by`.
    Chash,
    ChashSubset,
    /// `sticky_balanced` / `sticky_persistent`: cookie affinity, which needs
    /// `affinity: cookie`.
    Sticky,
}

/// `load-balance`: one of ingress-nginx's algorithm names.
pub fn parse_load_balance(v: &str) -> Result<LoadBalance, String> {
    match v {
        "round_robin" => Ok(LoadBalance::RoundRobin),
        "ewma" => Ok(LoadBalance::Ewma),
        "chash" => Ok(LoadBalance::Chash),
        "chashsubset" => Ok(LoadBalance::ChashSubset),
        "sticky_balanced" | "sticky_persistent" => Ok(LoadBalance::Sticky),
        _ => Err(
            "round_robin, ewma, chash, chashsubset, sticky_balanced or sticky_persistent".into(),
        ),
    }
}

/// `proxy-next-upstream`: nginx's words, checked now, read with the tries and timeout
/// once those are known.
pub fn parse_next_upstream(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("one or more of error, timeout, invalid_header, http_5xx, ..., off".into());
    }
    NextUpstream::parse(v, 0, None)
        .map(|_| v.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
        .map_err(|e| e.to_string())
}

/// `proxy-next-upstream-tries`: an integer, 0 for no limit.
pub fn parse_tries(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| "a whole number of tries, 0 for no limit".into())
}

/// `proxy-next-upstream-timeout`: whole seconds, 0 for no limit.
pub fn parse_next_timeout(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| "whole seconds, 0 for no limit".into())
}

/// `upstream-hash-by-subset-size`: an integer; 0 counts as ingress-nginx's default, 3.
pub fn parse_subset_size(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Ok(3),
        Ok(n) if n <= 1024 => Ok(n),
        _ => Err("a subset size from 1 to 1024".into()),
    }
}

/// `upstream-hash-by`: text and nginx variables.
pub fn parse_hash_by(v: &str) -> Result<HashKey, String> {
    HashKey::parse(v).map_err(|e| e.to_string())
}

/// The upstream-selection annotations of one Ingress, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamAnnotations {
    /// `service-upstream`: send to the Service's cluster IP, not its endpoints.
    pub service_upstream: bool,
    pub load_balance: Option<LoadBalance>,
    pub hash_by: Option<HashKey>,
    pub hash_by_subset: bool,
    /// `upstream-hash-by-subset-size` (3).
    pub hash_by_subset_size: Option<usize>,
    /// `proxy-next-upstream`, its words space-separated.
    pub next_upstream: Option<String>,
    pub next_upstream_tries: Option<u32>,
    pub next_upstream_timeout: Option<u64>,
    /// `disable-proxy-intercept-errors`.
    pub disable_intercept: Option<bool>,
}

/// The ConfigMap's keys for the same, with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamDefaults {
    /// `load-balance` (`round_robin`).
    pub load_balance: LoadBalance,
    /// `proxy-next-upstream` (`error timeout`).
    pub next_upstream: String,
    /// `proxy-next-upstream-tries` (3).
    pub next_upstream_tries: u32,
    /// `proxy-next-upstream-timeout` (0, no limit).
    pub next_upstream_timeout: u64,
    /// `retry-non-idempotent` (false): POST, LOCK and PATCH too.
    pub retry_non_idempotent: bool,
    /// One of the keys above (but `load-balance`) is set: paths resend as they say.
    pub next_upstream_set: bool,
    /// `disable-proxy-intercept-errors` (false).
    pub disable_intercept: bool,
}

impl Default for UpstreamDefaults {
    fn default() -> Self {
        Self {
            load_balance: LoadBalance::RoundRobin,
            next_upstream: "error timeout".to_owned(),
            next_upstream_tries: 3,
            next_upstream_timeout: 0,
            retry_non_idempotent: false,
            next_upstream_set: false,
            disable_intercept: false,
        }
    }
}

/// The path's balancing: cookie affinity (decided elsewhere) wins, then
/// `upstream-hash-by` (whatever `load-balance` says, as ingress-nginx's balancer picks
/// `chash` when it is set), then `load-balance`.
pub fn balance(ann: &UpstreamAnnotations, defaults: &UpstreamDefaults) -> Balance {
    if let Some(key) = &ann.hash_by {
        return Balance::Hash(Arc::new(HashBy {
            key: key.clone(),
            subset: ann
                .hash_by_subset
                .then(|| ann.hash_by_subset_size.unwrap_or(3)),
        }));
    }
    match ann.load_balance.unwrap_or(defaults.load_balance) {
        LoadBalance::Ewma => Balance::Ewma,
        // chash without a key, sticky without affinity: round robin (reported by the
        // annotation reader).
        _ => Balance::RoundRobin,
    }
}

/// The path's `proxy-next-upstream`: `None` when neither its Ingress nor the ConfigMap
/// sets any of the keys (failed connects are still tried elsewhere, 3 tries).
pub fn next_upstream(
    ann: &UpstreamAnnotations,
    defaults: &UpstreamDefaults,
) -> Option<NextUpstream> {
    let set = ann.next_upstream.is_some()
        || ann.next_upstream_tries.is_some()
        || ann.next_upstream_timeout.is_some();
    if !set && !defaults.next_upstream_set {
        return None;
    }
    let words = ann
        .next_upstream
        .as_deref()
        .unwrap_or(&defaults.next_upstream);
    let tries = ann
        .next_upstream_tries
        .unwrap_or(defaults.next_upstream_tries);
    let timeout = ann
        .next_upstream_timeout
        .unwrap_or(defaults.next_upstream_timeout);
    let timeout = (timeout > 0).then(|| Duration::from_secs(timeout));
    // Both were validated when read.
    let mut n = NextUpstream::parse(words, tries, timeout).ok()?;
    if defaults.retry_non_idempotent {
        n.non_idempotent = true;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::balance::Condition;

    #[test]
    fn load_balance_values_as_ingress_nginx_takes_them() {
        assert_eq!(parse_load_balance("ewma"), Ok(LoadBalance::Ewma));
        assert_eq!(
            parse_load_balance("round_robin"),
            Ok(LoadBalance::RoundRobin)
        );
        assert_eq!(parse_load_balance("chash"), Ok(LoadBalance::Chash));
        assert_eq!(
            parse_load_balance("sticky_balanced"),
            Ok(LoadBalance::Sticky)
        );
        assert!(parse_load_balance("EWMA").is_err());
        assert!(parse_load_balance("least_conn").is_err());
    }

    #[test]
    fn next_upstream_keys_fall_back_one_by_one() {
        let defaults = UpstreamDefaults::default();
        assert_eq!(
            next_upstream(&UpstreamAnnotations::default(), &defaults),
            None
        );
        let ann = UpstreamAnnotations {
            next_upstream_tries: Some(5),
            ..Default::default()
        };
        let n = next_upstream(&ann, &defaults).unwrap();
        assert_eq!(n.tries, 5);
        assert!(n.on(Condition::Error) && n.on(Condition::Timeout));
        assert_eq!(n.timeout, None);
        let ann = UpstreamAnnotations {
            next_upstream: Some("http_502 non_idempotent".into()),
            next_upstream_timeout: Some(7),
            ..Default::default()
        };
        let n = next_upstream(&ann, &defaults).unwrap();
        assert!(!n.on(Condition::Error) && n.non_idempotent);
        assert_eq!((n.tries, n.timeout), (3, Some(Duration::from_secs(7))));
        // The ConfigMap alone turns it on for every path.
        let global = UpstreamDefaults {
            next_upstream: "error http_503".into(),
            next_upstream_set: true,
            retry_non_idempotent: true,
            ..UpstreamDefaults::default()
        };
        let n = next_upstream(&UpstreamAnnotations::default(), &global).unwrap();
        assert!(n.on(Condition::Http503) && n.non_idempotent);
    }

    #[test]
    fn scalar_values_parse_as_ingress_nginx_reads_them() {
        assert_eq!(parse_tries("0"), Ok(0));
        assert!(parse_tries("-1").is_err());
        assert!(parse_tries("three").is_err());
        assert_eq!(parse_next_timeout("10"), Ok(10));
        assert!(parse_next_timeout("10s").is_err());
        assert_eq!(parse_subset_size("0"), Ok(3));
        assert_eq!(parse_subset_size("5"), Ok(5));
        assert!(parse_subset_size("x").is_err());
        assert_eq!(
            parse_next_upstream("error   timeout http_502"),
            Ok("error timeout http_502".into())
        );
        assert!(parse_next_upstream("error,timeout").is_err());
        assert!(parse_next_upstream("http_418").is_err());
    }

    #[test]
    fn hash_by_wins_over_load_balance() {
        let ann = UpstreamAnnotations {
            load_balance: Some(LoadBalance::Ewma),
            hash_by: Some(HashKey::parse("$request_uri").unwrap()),
            hash_by_subset: true,
            ..Default::default()
        };
        match balance(&ann, &UpstreamDefaults::default()) {
            Balance::Hash(by) => assert_eq!(by.subset, Some(3)),
            other => panic!("{other:?}"),
        }
        let ewma = UpstreamDefaults {
            load_balance: LoadBalance::Ewma,
            ..UpstreamDefaults::default()
        };
        assert_eq!(
            balance(&UpstreamAnnotations::default(), &ewma),
            Balance::Ewma
        );
        let rr = UpstreamAnnotations {
            load_balance: Some(LoadBalance::RoundRobin),
            ..Default::default()
        };
        assert_eq!(balance(&rr, &ewma), Balance::RoundRobin);
    }
}
