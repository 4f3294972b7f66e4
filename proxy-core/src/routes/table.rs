//! The compiled route table.
//!
//! Layout: a hash map from exact host to that host's paths, one from wildcard suffix to
//! its paths, and the host-less paths. Per host, Exact paths sit in a hash map keyed by
//! the path, and Prefix paths in a hash map keyed by the path without its trailing slash,
//! plus a bit set of the element counts present. A Prefix lookup tries the request path
//! and then each shorter element prefix, longest first, only at element counts some rule
//! has; the first hit is the longest match. Each probe borrows a slice of the request
//! path, so lookup never allocates, and its cost is a few hashes regardless of the number
//! of rules. (matchit or a segment trie would walk the path element by element and need
//! extra routes for the trailing-slash and Exact-over-Prefix rules; the maps probe only
//! the element counts rules have and keep the Ingress semantics easy to check.)
//!
//! The maps hash with foldhash rather than SipHash: only the configuration inserts keys,
//! so a client cannot flood a map with colliding keys however it picks its Host and
//! path, and SipHash's flooding resistance would only cost time.

use std::fmt;
use std::sync::Arc;

use foldhash::HashMap;
use http::request::Parts;
use std::collections::hash_map::Entry;

use super::normalize::{normalize_path, normalize_rule_path, request_host, PathError};
use super::{HostMatch, MatchRule, PathType, RegexRule, RouteRule, RouteTarget};
use crate::host::{wildcard_parent, HostName, HostPattern};
use crate::http::Scheme;

/// The compiled table. Cloning is cheap (it shares the compiled maps).
#[derive(Clone, Default)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    exact_hosts: HashMap<HostName, Arc<HostRoutes>>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: HashMap<HostName, Arc<HostRoutes>>,
    any_host: Option<Arc<HostRoutes>>,
    /// Some wildcard host has match rules (Gateway API): those cover any number of
    /// labels, where an Ingress wildcard covers one.
    deep_wildcards: bool,
    len: usize,
}

/// One host's rules, compiled on their own: a table is assembled from these
/// ([`RouteTable::from_hosts`]), so a recompile can keep every host a change did not touch
/// and rebuild only the others.
pub struct HostRoutes {
    host: HostMatch,
    /// The rules kept, normalized, in build order; `paths` holds indices into it.
    rules: Vec<RouteRule>,
    paths: PathTable,
    /// A host in regex mode: its rules in the order they are tried, the first match
    /// winning. Empty for other hosts, which then pay nothing for it.
    regex: Vec<RegexRule>,
    /// Rules with method, header or query conditions (Gateway API), in the order they
    /// are tried, before the path rules. Empty for hosts without any.
    matches: Vec<MatchRule>,
}

impl HostRoutes {
    /// Compiles `rules` into one table per host (after normalization), in the order the
    /// hosts first appear. Given duplicates (same host, path and type after
    /// normalization), the first one wins. Rules whose host or path cannot be matched (an
    /// empty wildcard suffix, a path that fails [`normalize_rule_path`]) are left out with
    /// a warning; the compiler reports them properly.
    pub fn group(rules: impl IntoIterator<Item = RouteRule>) -> Vec<Arc<HostRoutes>> {
        Self::group_owned(rules).into_iter().map(Arc::new).collect()
    }

    fn group_owned(rules: impl IntoIterator<Item = RouteRule>) -> Vec<HostRoutes> {
        let mut hosts: Vec<HostRoutes> = Vec::new();
        // Rules usually come grouped by host: check the last host before searching.
        let mut by_host: HashMap<HostMatch, usize> = HashMap::default();
        for rule in rules {
            let Some(rule) = normalize_rule(rule) else {
                continue;
            };
            let at = match hosts.last() {
                Some(last) if last.host == rule.host => hosts.len() - 1,
                _ => match by_host.get(&rule.host) {
                    Some(&at) => at,
                    None => {
                        by_host.insert(rule.host.clone(), hosts.len());
                        hosts.push(HostRoutes {
                            host: rule.host.clone(),
                            rules: Vec::new(),
                            paths: PathTable::default(),
                            regex: Vec::new(),
                            matches: Vec::new(),
                        });
                        hosts.len() - 1
                    }
                },
            };
            hosts[at].push(rule);
        }
        for h in &mut hosts {
            // Kept for the table's life: at 10,000 hosts the spare capacity of growing
            // by pushes is megabytes.
            h.rules.shrink_to_fit();
        }
        hosts
    }

    /// A host in regex mode (ingress-nginx's `use-regex`): `rules` are tried in this
    /// order and the first whose path matches wins. All must name `host`.
    pub fn with_regex(host: HostMatch, mut rules: Vec<RegexRule>) -> Arc<HostRoutes> {
        rules.retain(|r| r.host == host);
        rules.shrink_to_fit();
        Arc::new(HostRoutes {
            host,
            rules: Vec::new(),
            paths: PathTable::default(),
            regex: rules,
            matches: Vec::new(),
        })
    }

    /// A host's match rules (Gateway API), tried in this order, the first match winning.
    /// All must name `host`.
    pub fn with_matches(host: HostMatch, mut rules: Vec<MatchRule>) -> Arc<HostRoutes> {
        rules.retain(|r| r.host == host);
        rules.shrink_to_fit();
        Arc::new(HostRoutes {
            host,
            rules: Vec::new(),
            paths: PathTable::default(),
            regex: Vec::new(),
            matches: rules,
        })
    }

    /// The same rules under another host (ingress-nginx's `server-alias`): a request for
    /// `host` is routed as one for this table's host.
    pub fn aliased(&self, host: HostMatch) -> Arc<HostRoutes> {
        Arc::new(HostRoutes {
            rules: self
                .rules
                .iter()
                .map(|r| RouteRule {
                    host: host.clone(),
                    ..r.clone()
                })
                .collect(),
            paths: self.paths.clone(),
            regex: self
                .regex
                .iter()
                .map(|r| RegexRule {
                    host: host.clone(),
                    ..r.clone()
                })
                .collect(),
            matches: self
                .matches
                .iter()
                .map(|r| MatchRule {
                    host: host.clone(),
                    ..r.clone()
                })
                .collect(),
            host,
        })
    }

    /// The host the rules are for.
    pub fn host(&self) -> &HostMatch {
        &self.host
    }

    /// The regex rules, in the order they are tried.
    pub fn regex_rules(&self) -> &[RegexRule] {
        &self.regex
    }

    fn push(&mut self, rule: RouteRule) {
        if self
            .paths
            .insert(&rule.path, rule.path_type, self.rules.len())
        {
            self.rules.push(rule);
        } else {
            tracing::debug!(
                host = %rule.host,
                path = %rule.path,
                path_type = %rule.path_type,
                source = %rule.target.source,
                "duplicate route rule ignored; an earlier rule claims it"
            );
        }
    }

    /// The match rules, in the order they are tried.
    pub fn match_rules(&self) -> &[MatchRule] {
        &self.matches
    }

    fn lookup(&self, path: &SplitPath<'_>, req: &Req<'_>) -> Option<&RouteTarget> {
        if !self.matches.is_empty() {
            if let Some(target) = self.lookup_matches(path, req) {
                return Some(target);
            }
        }
        if !self.regex.is_empty() {
            if let Some(rule) = self.regex.iter().find(|r| r.path.is_match(path.full)) {
                return Some(&rule.target);
            }
        }
        let index = self.paths.lookup(path)?;
        self.rules.get(index).map(|rule| &rule.target)
    }

    /// The first match rule that takes the request on its listener.
    fn lookup_matches(&self, path: &SplitPath<'_>, req: &Req<'_>) -> Option<&RouteTarget> {
        self.matches
            .iter()
            .find(|r| r.listeners.admits(req.scheme, req.host) && r.is_match(path.full, req.parts))
            .map(|r| &r.target)
    }
}

/// What a lookup knows of the request besides its path.
struct Req<'a> {
    scheme: Scheme,
    /// Normalized; `""` for none.
    host: &'a str,
    parts: Option<&'a Parts>,
}

#[derive(Clone, Default)]
struct PathTable {
    exact: HashMap<Box<str>, usize>,
    /// Bit `len % 64` set: some Exact path has that length. Most request paths have no
    /// Exact rule of their length, and this skips hashing them.
    exact_lengths: u64,
    /// Keyed by the rule path without its trailing slash; `/` is the empty key.
    prefix: HashMap<Box<str>, usize>,
    /// Bit `n` set: some Prefix key has `n` elements (bit 63: 63 or more).
    prefix_depths: u64,
    /// The most elements of any Prefix key.
    max_prefix_depth: usize,
}

fn depth_bit(depth: usize) -> u64 {
    1 << depth.min(63)
}

impl PathTable {
    /// Adds a rule; `false` when an earlier rule already claimed the same path and type.
    fn insert(&mut self, path: &str, path_type: PathType, index: usize) -> bool {
        let (map, key) = match path_type {
            PathType::Exact => {
                self.exact_lengths |= 1 << (path.len() % 64);
                (&mut self.exact, path)
            }
            PathType::Prefix => {
                let key = path.strip_suffix('/').unwrap_or(path);
                let depth = key.bytes().filter(|&b| b == b'/').count();
                self.prefix_depths |= depth_bit(depth);
                self.max_prefix_depth = self.max_prefix_depth.max(depth);
                (&mut self.prefix, key)
            }
        };
        if map.contains_key(key) {
            return false;
        }
        map.insert(key.into(), index);
        true
    }

    /// The best rule for a normalized path: an Exact match if there is one (its path is
    /// the whole request path, so no Prefix match is longer, and Exact wins the tie),
    /// else the longest Prefix match.
    fn lookup(&self, path: &SplitPath<'_>) -> Option<usize> {
        if self.exact_lengths & (1 << (path.full.len() % 64)) != 0 {
            if let Some(&index) = self.exact.get(path.full) {
                return Some(index);
            }
        }
        if self.prefix_depths == 0 {
            return None;
        }
        // Deepest first; element counts no rule has are skipped without hashing.
        let deepest = path.depth.min(self.max_prefix_depth);
        (0..=deepest)
            .rev()
            .filter(|&depth| self.prefix_depths & depth_bit(depth) != 0)
            .find_map(|depth| self.prefix.get(path.prefix(depth)).copied())
    }
}

/// How many `/` positions [`SplitPath`] records; deeper paths still work, with a scan.
const RECORDED_SLASHES: usize = 24;

/// A request path scanned once per lookup and shared by the host tiers: the query cut
/// off and the `/` positions found in the same pass, so each Prefix candidate is a
/// slice taken without searching. Kept small: it lives on the stack of every lookup.
struct SplitPath<'a> {
    /// The path, query removed.
    full: &'a str,
    /// Elements in the path, trailing slash ignored: `/` is 0, `/a` and `/a/` are 1.
    depth: usize,
    /// Offsets of the first `recorded` `/`s of `full`.
    slashes: [u16; RECORDED_SLASHES],
    recorded: usize,
}

impl<'a> SplitPath<'a> {
    fn new(path: &'a str) -> Self {
        let mut slashes = [0; RECORDED_SLASHES];
        let mut recorded = 0;
        let mut count = 0;
        let mut end = path.len();
        for (i, b) in path.bytes().enumerate() {
            match b {
                b'/' => {
                    // Offsets past u16 are left to the scan in `prefix`.
                    if let (Some(slot), Ok(at)) = (slashes.get_mut(count), u16::try_from(i)) {
                        *slot = at;
                        recorded = count + 1;
                    }
                    count += 1;
                }
                b'?' | b'#' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let full = &path[..end];
        // Normalized paths have no empty elements, so at most this one trailing slash.
        let depth = if full.ends_with('/') {
            count.saturating_sub(1)
        } else {
            count
        };
        Self {
            full,
            depth,
            slashes,
            recorded,
        }
    }

    /// The path cut to its first `depth` elements (`depth <= self.depth`), without a
    /// trailing slash: the Prefix key that would match it.
    fn prefix(&self, depth: usize) -> &'a str {
        let full = self.full;
        let cut = if depth >= self.depth {
            full.len() - usize::from(full.ends_with('/'))
        } else if depth < self.recorded {
            usize::from(self.slashes[depth])
        } else {
            full.match_indices('/')
                .nth(depth)
                .map_or(full.len(), |(at, _)| at)
        };
        full.get(..cut).unwrap_or(full)
    }
}

impl RouteTable {
    /// Compiles `rules` (see [`HostRoutes::group`]).
    pub fn build(rules: Vec<RouteRule>) -> Self {
        Self::from_hosts(HostRoutes::group(rules))
    }

    /// A table of these host tables. Two tables for the same host are merged, the
    /// earlier one's rules first (callers normally pass each host once).
    pub fn from_hosts(hosts: impl IntoIterator<Item = Arc<HostRoutes>>) -> Self {
        let mut inner = Inner::default();
        for host in hosts {
            let slot = match &host.host {
                HostMatch::Host(HostPattern::Exact(name)) => inner.exact_hosts.entry(name.clone()),
                HostMatch::Host(HostPattern::Wildcard(suffix)) => {
                    inner.wildcard_hosts.entry(suffix.clone())
                }
                HostMatch::Any => {
                    inner.any_host = Some(match inner.any_host.take() {
                        Some(earlier) => merge(&earlier, &host),
                        None => host,
                    });
                    continue;
                }
            };
            match slot {
                Entry::Vacant(v) => {
                    v.insert(host);
                }
                Entry::Occupied(mut o) => {
                    let merged = merge(o.get(), &host);
                    o.insert(merged);
                }
            }
        }
        inner.deep_wildcards = inner.wildcard_hosts.values().any(|h| !h.matches.is_empty());
        inner.len = inner.exact_hosts.values().map(|h| h.len()).sum::<usize>()
            + inner
                .wildcard_hosts
                .values()
                .map(|h| h.len())
                .sum::<usize>()
            + inner.any_host.as_ref().map_or(0, |h| h.len());
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The target for a normalized host (see [`request_host`]; `""` for none) and a
    /// normalized path (see [`normalize_path`]; a query, if any, is ignored).
    ///
    /// Host precedence: the exact host's rules, then the `*.` wildcard's, then the
    /// host-less rules, each consulted only when the one before has no matching path.
    /// The Ingress API says a rule without a host "routes all traffic" and a host rule
    /// applies to its host; nothing in the API or the conformance features lets a host
    /// rule hide a host-less rule from that host's requests, and the Gateway API (the
    /// Ingress successor) ranks matches the same way: most specific host first, among
    /// the rules that match. ingress-nginx differs here: its host-less rules live in the
    /// catch-all server, which only sees hosts no rule names, so there a request for a
    /// named host whose paths do not match gets the default backend instead.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&RouteTarget> {
        self.lookup_with(host, path, None)
    }

    /// [`RouteTable::lookup`], with the request head that match rules with method, header
    /// or query conditions look at (without it, those rules never match), as for a
    /// request on the HTTP listener.
    pub fn lookup_with(
        &self,
        host: &str,
        path: &str,
        parts: Option<&Parts>,
    ) -> Option<&RouteTarget> {
        self.lookup_on(Scheme::Http, host, path, parts)
    }

    /// [`RouteTable::lookup_with`] for a request that arrived on Portico's listener for
    /// `scheme`: Gateway API rules answer only on the listeners their routes attached
    /// to (see [`ListenerScope`](super::ListenerScope)); Ingress rules on both.
    pub fn lookup_on(
        &self,
        scheme: Scheme,
        host: &str,
        path: &str,
        parts: Option<&Parts>,
    ) -> Option<&RouteTarget> {
        let path = SplitPath::new(path);
        let req = Req {
            scheme,
            host,
            parts,
        };
        let inner = &*self.inner;
        (!host.is_empty())
            .then(|| inner.lookup_host(&path, &req))
            .flatten()
            .or_else(|| inner.any_host.as_ref()?.lookup(&path, &req))
    }

    /// Normalizes the request's host and path and looks them up. A request without a
    /// usable host (HTTP/1.0 with no `Host`, or an invalid one) is matched against the
    /// host-less rules only; a path that cannot be normalized is an error (answer 400).
    pub fn lookup_request(&self, parts: &Parts) -> Result<Option<&RouteTarget>, PathError> {
        let path = normalize_path(parts.uri.path())?;
        let host = request_host(parts);
        Ok(self.lookup_with(host.as_deref().unwrap_or(""), &path, Some(parts)))
    }

    /// The host tables, sorted by host.
    fn hosts(&self) -> Vec<&Arc<HostRoutes>> {
        let inner = &*self.inner;
        let mut hosts: Vec<_> = inner
            .exact_hosts
            .values()
            .chain(inner.wildcard_hosts.values())
            .chain(&inner.any_host)
            .collect();
        hosts.sort_unstable_by(|a, b| a.host.cmp(&b.host));
        hosts
    }

    /// The rules in the table, normalized, duplicates removed: by host (sorted), then in
    /// build order.
    pub fn rules(&self) -> Vec<&RouteRule> {
        self.hosts().into_iter().flat_map(|h| &h.rules).collect()
    }

    /// The rules of hosts in regex mode: by host (sorted), then in the order tried.
    pub fn regex_rules(&self) -> Vec<&RegexRule> {
        self.hosts().into_iter().flat_map(|h| &h.regex).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }
}

impl Inner {
    fn lookup_host(&self, path: &SplitPath<'_>, req: &Req<'_>) -> Option<&RouteTarget> {
        let host = req.host;
        if let Some(target) = self.exact_hosts.get(host).and_then(|p| p.lookup(path, req)) {
            return Some(target);
        }
        // `*.foo.com` covers exactly one non-empty label in front of `foo.com`.
        if self.wildcard_hosts.is_empty() {
            return None;
        }
        let parent = wildcard_parent(host)?;
        if let Some(target) = self
            .wildcard_hosts
            .get(parent)
            .and_then(|h| h.lookup(path, req))
        {
            return Some(target);
        }
        // A Gateway API wildcard is a suffix match: `*.foo.com` also takes `a.b.foo.com`,
        // through its HTTPRoute match rules only; the nearest wildcard first.
        if !self.deep_wildcards {
            return None;
        }
        let mut rest = parent;
        while let Some(up) = wildcard_parent(rest) {
            if let Some(target) = self
                .wildcard_hosts
                .get(up)
                .and_then(|h| h.lookup_matches(path, req))
            {
                return Some(target);
            }
            rest = up;
        }
        None
    }
}

impl HostRoutes {
    /// Rules of both kinds.
    fn len(&self) -> usize {
        self.rules.len() + self.regex.len() + self.matches.len()
    }
}

/// `earlier`'s rules, then `later`'s, as one host table.
fn merge(earlier: &Arc<HostRoutes>, later: &Arc<HostRoutes>) -> Arc<HostRoutes> {
    let rules = earlier.rules.iter().chain(&later.rules).cloned();
    let regex: Vec<RegexRule> = earlier.regex.iter().chain(&later.regex).cloned().collect();
    let matches: Vec<MatchRule> = earlier
        .matches
        .iter()
        .chain(&later.matches)
        .cloned()
        .collect();
    let mut merged = HostRoutes::group_owned(rules)
        .pop()
        .unwrap_or_else(|| HostRoutes {
            host: earlier.host.clone(),
            rules: Vec::new(),
            paths: PathTable::default(),
            regex: Vec::new(),
            matches: Vec::new(),
        });
    merged.regex = regex;
    merged.matches = matches;
    Arc::new(merged)
}

/// Brings a rule's path to the form lookup compares with (hosts are normal by type).
fn normalize_rule(mut rule: RouteRule) -> Option<RouteRule> {
    match normalize_rule_path(&rule.path) {
        Ok(path) => {
            if path != rule.path.as_str() {
                rule.path = path.into_owned();
            }
            Some(rule)
        }
        Err(error) => {
            tracing::warn!(
                source = %rule.target.source,
                path = %rule.path,
                %error,
                "route rule with an unroutable path ignored"
            );
            None
        }
    }
}

impl fmt::Debug for RouteTable {
    // A summary: a table of 100k rules printed in full helps nobody.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RouteTable")
            .field("rules", &inner.len)
            .field("exact_hosts", &inner.exact_hosts.len())
            .field("wildcard_hosts", &inner.wildcard_hosts.len())
            .field(
                "any_host_paths",
                &inner.any_host.as_ref().map_or(0, |h| h.rules.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackendId;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn target(service: &str) -> RouteTarget {
        RouteTarget {
            backend: BackendId::new("default", service, "80"),
            policy: Default::default(),
            source: "default/test".into(),
        }
    }

    fn rule(host: HostMatch, path: &str, path_type: PathType, service: &str) -> RouteRule {
        RouteRule {
            host,
            path: path.to_owned(),
            path_type,
            target: target(service),
        }
    }

    fn exact(path: &str, service: &str) -> RouteRule {
        rule(HostMatch::Any, path, PathType::Exact, service)
    }

    fn prefix(path: &str, service: &str) -> RouteRule {
        rule(HostMatch::Any, path, PathType::Prefix, service)
    }

    fn host_rule(host: &str, path: &str, path_type: PathType, service: &str) -> RouteRule {
        rule(host_match(host), path, path_type, service)
    }

    fn host_match(host: &str) -> HostMatch {
        HostMatch::parse(Some(host)).expect("test host")
    }

    fn service<'a>(table: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        table.lookup(host, path).map(|t| &*t.backend.service)
    }

    #[test]
    fn an_aliased_table_routes_its_host_as_the_original() {
        let original = HostRoutes::group(vec![
            host_rule("foo.test", "/", PathType::Prefix, "root"),
            host_rule("foo.test", "/api", PathType::Exact, "api"),
        ])
        .pop()
        .unwrap();
        let regex = HostRoutes::with_regex(
            host_match("re.test"),
            vec![RegexRule {
                host: host_match("re.test"),
                path: crate::routes::PathRegex::new("/r[0-9]+").unwrap(),
                target: target("digits"),
            }],
        );
        let table = RouteTable::from_hosts(vec![
            original.clone(),
            original.aliased(host_match("alias.test")),
            regex.aliased(host_match("*.re-alias.test")),
        ]);
        assert_eq!(service(&table, "alias.test", "/api"), Some("api"));
        assert_eq!(service(&table, "alias.test", "/x"), Some("root"));
        assert_eq!(service(&table, "foo.test", "/api"), Some("api"));
        assert_eq!(service(&table, "a.re-alias.test", "/R12"), Some("digits"));
        assert_eq!(service(&table, "re.test", "/r1"), None);
        assert_eq!(service(&table, "other.test", "/"), None);
        assert_eq!(
            original.aliased(host_match("alias.test")).host(),
            &host_match("alias.test")
        );
    }

    #[test]
    fn a_regex_host_tries_its_rules_in_order_then_falls_through() {
        use crate::routes::PathRegex;
        let regex = |path: &str, service: &str| RegexRule {
            host: host_match("r.test"),
            path: PathRegex::new(path).unwrap(),
            target: target(service),
        };
        let hosts = vec![
            HostRoutes::with_regex(
                host_match("r.test"),
                vec![
                    regex("/api/v[0-9]+", "v"),
                    regex("/api", "api"),
                    regex("/x", "x"),
                ],
            ),
            HostRoutes::group(vec![prefix("/", "any")]).remove(0),
        ];
        let table = RouteTable::from_hosts(hosts);
        assert_eq!(table.len(), 4);
        assert_eq!(service(&table, "r.test", "/API/V2/users"), Some("v"));
        assert_eq!(service(&table, "r.test", "/apiary"), Some("api"));
        assert_eq!(service(&table, "r.test", "/xyz?q=1"), Some("x"));
        // No regex matches: the host-less rules, as for any host without a match.
        assert_eq!(service(&table, "r.test", "/other"), Some("any"));
        // Merging two tables of one host keeps both kinds of rules.
        let merged = RouteTable::from_hosts(vec![
            HostRoutes::group(vec![host_rule("r.test", "/plain", PathType::Prefix, "p")]).remove(0),
            HostRoutes::with_regex(host_match("r.test"), vec![regex("/re", "re")]),
        ]);
        assert_eq!(service(&merged, "r.test", "/plain/a"), Some("p"));
        assert_eq!(service(&merged, "r.test", "/REx"), Some("re"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn traits_the_config_needs() {
        fn assert_traits<T: Clone + fmt::Debug + Default + Send + Sync>() {}
        assert_traits::<RouteTable>();
        let empty = RouteTable::default();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup("foo.com", "/"), None);
        let table = RouteTable::build(vec![prefix("/", "a")]);
        assert!(format!("{table:?}").contains("rules: 1"));
    }

    /// Every row of the examples table in the Kubernetes Ingress documentation
    /// (concepts/services-networking/ingress, "Examples").
    #[test]
    fn kubernetes_documentation_examples() {
        type Row = (
            &'static [(&'static str, PathType)],
            &'static str,
            Option<&'static str>,
        );
        use PathType::{Exact as E, Prefix as P};
        let rows: &[Row] = &[
            (&[("/", P)], "/", Some("/")),
            (&[("/", P)], "/anything/at/all", Some("/")),
            (&[("/foo", E)], "/foo", Some("/foo")),
            (&[("/foo", E)], "/bar", None),
            (&[("/foo", E)], "/foo/", None),
            (&[("/foo/", E)], "/foo", None),
            (&[("/foo", P)], "/foo", Some("/foo")),
            (&[("/foo", P)], "/foo/", Some("/foo")),
            (&[("/foo/", P)], "/foo", Some("/foo/")),
            (&[("/foo/", P)], "/foo/", Some("/foo/")),
            (&[("/aaa/bb", P)], "/aaa/bbb", None),
            (&[("/aaa/bbb", P)], "/aaa/bbb", Some("/aaa/bbb")),
            (&[("/aaa/bbb/", P)], "/aaa/bbb", Some("/aaa/bbb/")),
            (&[("/aaa/bbb", P)], "/aaa/bbb/", Some("/aaa/bbb")),
            (&[("/aaa/bbb", P)], "/aaa/bbb/ccc", Some("/aaa/bbb")),
            (&[("/aaa/bbb", P)], "/aaabbb", None),
            (&[("/", P), ("/aaa", P)], "/aaa/ccc", Some("/aaa")),
            (
                &[("/", P), ("/aaa", P), ("/aaa/bbb", P)],
                "/aaa/bbb",
                Some("/aaa/bbb"),
            ),
            (&[("/", P), ("/aaa", P), ("/aaa/bbb", P)], "/ccc", Some("/")),
            (&[("/aaa", P)], "/ccc", None),
            (&[("/foo", P), ("/foo", E)], "/foo", Some("/foo exact")),
        ];
        for (paths, request, want) in rows {
            // The service name records which rule matched.
            let rules = paths
                .iter()
                .map(|&(path, ty)| {
                    let name = if ty == E && paths.len() > 1 {
                        format!("{path} exact")
                    } else {
                        path.to_owned()
                    };
                    rule(HostMatch::Any, path, ty, &name)
                })
                .collect();
            let table = RouteTable::build(rules);
            assert_eq!(
                service(&table, "any.host", request),
                *want,
                "rules {paths:?}, request {request}"
            );
            // Rule order must not matter.
            let reversed = paths
                .iter()
                .rev()
                .map(|&(path, ty)| {
                    let name = if ty == E && paths.len() > 1 {
                        format!("{path} exact")
                    } else {
                        path.to_owned()
                    };
                    rule(HostMatch::Any, path, ty, &name)
                })
                .collect();
            let table = RouteTable::build(reversed);
            assert_eq!(
                service(&table, "any.host", request),
                *want,
                "reversed {paths:?}, request {request}"
            );
        }
    }

    /// The scenarios of the upstream conformance `path_rules.feature`.
    #[test]
    fn conformance_path_rules() {
        use PathType::{Exact as E, Prefix as P};
        let table = RouteTable::build(vec![
            host_rule("exact-path-rules", "/foo", E, "foo-exact"),
            host_rule("prefix-path-rules", "/foo", P, "foo-prefix"),
            host_rule("prefix-path-rules", "/aaa/bbb", P, "aaa-slash-bbb-prefix"),
            host_rule("prefix-path-rules", "/aaa", P, "aaa-prefix"),
            host_rule("mixed-path-rules", "/foo", P, "foo-prefix"),
            host_rule("mixed-path-rules", "/foo", E, "foo-exact"),
            host_rule(
                "trailing-slash-path-rules",
                "/aaa/bbb/",
                P,
                "aaa-slash-bbb-slash-prefix",
            ),
            host_rule("trailing-slash-path-rules", "/foo/", E, "foo-slash-exact"),
        ]);
        let cases = [
            ("exact-path-rules", "/foo", Some("foo-exact")),
            ("exact-path-rules", "/foo/", None),
            ("exact-path-rules", "/FOO", None),
            ("exact-path-rules", "/bar", None),
            ("prefix-path-rules", "/foo", Some("foo-prefix")),
            ("prefix-path-rules", "/foo/", Some("foo-prefix")),
            ("prefix-path-rules", "/FOO", None),
            (
                "prefix-path-rules",
                "/aaa/bbb",
                Some("aaa-slash-bbb-prefix"),
            ),
            (
                "prefix-path-rules",
                "/aaa/bbb/ccc",
                Some("aaa-slash-bbb-prefix"),
            ),
            ("prefix-path-rules", "/aaa/ccc", Some("aaa-prefix")),
            ("prefix-path-rules", "/aaaccc", None),
            ("mixed-path-rules", "/foo", Some("foo-exact")),
            ("mixed-path-rules", "/foo/x", Some("foo-prefix")),
            (
                "trailing-slash-path-rules",
                "/aaa/bbb",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            (
                "trailing-slash-path-rules",
                "/aaa/bbb/",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            ("trailing-slash-path-rules", "/foo", None),
            (
                "trailing-slash-path-rules",
                "/foo/",
                Some("foo-slash-exact"),
            ),
        ];
        for (host, path, want) in cases {
            assert_eq!(service(&table, host, path), want, "{host}{path}");
        }
    }

    /// The scenarios of the upstream conformance `host_rules.feature`.
    #[test]
    fn conformance_host_rules() {
        let table = RouteTable::build(vec![
            host_rule("*.foo.com", "/", PathType::Prefix, "wildcard-foo-com"),
            host_rule("foo.bar.com", "/", PathType::Prefix, "foo-bar-com"),
        ]);
        assert_eq!(service(&table, "foo.bar.com", "/"), Some("foo-bar-com"));
        assert_eq!(service(&table, "subdomain.bar.com", "/"), None);
        assert_eq!(
            service(&table, "bar.foo.com", "/"),
            Some("wildcard-foo-com")
        );
        assert_eq!(service(&table, "baz.bar.foo.com", "/"), None);
        assert_eq!(service(&table, "foo.com", "/"), None);
        assert_eq!(service(&table, ".foo.com", "/"), None);
        assert_eq!(service(&table, "", "/"), None);
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        use PathType::Prefix as P;
        let table = RouteTable::build(vec![
            rule(HostMatch::Any, "/", P, "any-root"),
            rule(HostMatch::Any, "/shared", P, "any-shared"),
            host_rule("*.example.com", "/", P, "wild-root"),
            host_rule("*.example.com", "/w", P, "wild-w"),
            host_rule("app.example.com", "/api", P, "app-api"),
        ]);
        // The exact host's rules first, even when a wildcard or host-less rule is longer.
        assert_eq!(
            service(&table, "app.example.com", "/api/x"),
            Some("app-api")
        );
        // Falls through to the wildcard when the exact host's paths do not match ...
        assert_eq!(
            service(&table, "app.example.com", "/other"),
            Some("wild-root")
        );
        assert_eq!(service(&table, "app.example.com", "/w"), Some("wild-w"));
        // ... and the wildcard's `/` shadows the host-less `/shared` for its hosts.
        assert_eq!(
            service(&table, "app.example.com", "/shared"),
            Some("wild-root")
        );
        assert_eq!(
            service(&table, "other.example.com", "/api"),
            Some("wild-root")
        );
        // Hosts no rule names get the host-less rules.
        assert_eq!(
            service(&table, "example.com", "/shared/x"),
            Some("any-shared")
        );
        assert_eq!(service(&table, "unknown.org", "/"), Some("any-root"));
        assert_eq!(service(&table, "", "/"), Some("any-root"));
        assert_eq!(service(&table, "[::1]", "/"), Some("any-root"));
    }

    #[test]
    fn exact_host_falls_through_to_host_less_rules() {
        let table = RouteTable::build(vec![
            host_rule("app.example.com", "/api", PathType::Exact, "app-api"),
            prefix("/", "catch-all"),
        ]);
        assert_eq!(service(&table, "app.example.com", "/api"), Some("app-api"));
        assert_eq!(
            service(&table, "app.example.com", "/api/v2"),
            Some("catch-all")
        );
    }

    /// A configured host and a request's `Host` meet in one form: the same lower-casing,
    /// trailing dot and character rule, and one label under a wildcard.
    #[test]
    fn rule_hosts_and_request_hosts_meet_in_one_form() {
        let cases = [
            ("Foo.Example.COM.", "foo.example.com", true),
            ("foo.example.com", "FOO.example.com.:8080", true),
            ("foo.example.com", "foo.example.com..", false),
            ("*.Wild.Example", "x.wild.example", true),
            ("*.wild.example", "X.Wild.Example.:443", true),
            ("*.wild.example", "y.x.wild.example", false),
            ("*.wild.example", "wild.example", false),
            ("*.wild.example", ".wild.example", false),
            ("xn--bcher-kva.example", "XN--BCHER-KVA.example", true),
        ];
        for (configured, header, want) in cases {
            let table =
                RouteTable::build(vec![host_rule(configured, "/", PathType::Prefix, "hit")]);
            let parts = http::Request::builder()
                .uri("/")
                .header(http::header::HOST, header)
                .body(())
                .unwrap()
                .into_parts()
                .0;
            let got = table.lookup_request(&parts).unwrap().is_some();
            assert_eq!(got, want, "rule {configured:?}, Host: {header:?}");
        }
    }

    #[test]
    fn rule_paths_are_normalized_like_request_paths() {
        let table = RouteTable::build(vec![
            exact("/%7euser", "tilde"),
            prefix("/caf\u{e9}", "cafe"),
            prefix("/bad%zz", "dropped"),
            prefix("relative", "dropped"),
        ]);
        assert_eq!(table.len(), 2);
        let p = normalize_path("/%7Euser").unwrap();
        assert_eq!(service(&table, "h", &p), Some("tilde"));
        let p = normalize_path("/caf%c3%a9/menu").unwrap();
        assert_eq!(service(&table, "h", &p), Some("cafe"));
    }

    #[test]
    fn duplicates_first_one_wins() {
        let table = RouteTable::build(vec![
            prefix("/foo", "first"),
            prefix("/foo/", "second"),
            exact("/foo", "exact-first"),
            exact("/foo", "exact-second"),
        ]);
        assert_eq!(service(&table, "h", "/foo/x"), Some("first"));
        assert_eq!(service(&table, "h", "/foo"), Some("exact-first"));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.rules()[1].target.backend.service.as_ref(),
            "exact-first"
        );
    }

    #[test]
    fn query_is_ignored_even_if_passed() {
        let table = RouteTable::build(vec![exact("/foo", "foo"), prefix("/bar", "bar")]);
        assert_eq!(service(&table, "h", "/foo?x=1"), Some("foo"));
        assert_eq!(service(&table, "h", "/bar/?x=/foo"), Some("bar"));
        assert_eq!(service(&table, "h", "/foo#x"), Some("foo"));
    }

    #[test]
    fn deep_paths_and_deep_rules() {
        let deep: String = (0..80).map(|i| format!("/s{i}")).collect();
        let table = RouteTable::build(vec![
            prefix("/", "root"),
            prefix(&deep[..deep.len() - 4], "deep"),
            prefix("/s0/s1", "shallow"),
        ]);
        assert_eq!(service(&table, "h", &deep), Some("deep"));
        assert_eq!(
            service(&table, "h", &format!("{deep}/more/and/more")),
            Some("deep")
        );
        assert_eq!(service(&table, "h", "/s0/s1/s2"), Some("shallow"));
        assert_eq!(service(&table, "h", "/s0/x"), Some("root"));
    }

    fn request(uri: &str, host: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(http::header::HOST, host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn lookup_request_normalizes_host_and_path() {
        use PathType::{Exact as E, Prefix as P};
        let table = RouteTable::build(vec![
            host_rule("app.example.com", "/api", P, "api"),
            host_rule("app.example.com", "/admin", E, "admin"),
            host_rule("app.example.com", "/", P, "app"),
            prefix("/", "default"),
        ]);
        let svc = |uri: &str, host: Option<&str>| {
            table
                .lookup_request(&request(uri, host))
                .map(|t| t.map(|t| t.backend.service.to_string()))
        };
        let ok = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(svc("/api/x", Some("APP.example.com.:8080")), ok("api"));
        // `..` resolves before matching: never stays under `/api`.
        assert_eq!(svc("/api/../admin", Some("app.example.com")), ok("admin"));
        assert_eq!(
            svc("/api/%2e%2e/admin", Some("app.example.com")),
            ok("admin")
        );
        assert_eq!(svc("/api/..", Some("app.example.com")), ok("app"));
        assert_eq!(svc("//admin", Some("app.example.com")), ok("admin"));
        assert_eq!(svc("/%61pi/x", Some("app.example.com")), ok("api"));
        // `%2F` is not a separator, so this is one element `api%2Fx`.
        assert_eq!(svc("/api%2Fx", Some("app.example.com")), ok("app"));
        assert_eq!(svc("/admin?x=1", Some("app.example.com")), ok("admin"));
        // Absolute-form target: its authority is the host.
        assert_eq!(
            svc("http://app.example.com/api", Some("other.org")),
            ok("api")
        );
        assert_eq!(svc("http://app.example.com", None), ok("app"));
        // No host, an invalid one, or an IP literal: host-less rules only.
        assert_eq!(svc("/api", None), ok("default"));
        assert_eq!(svc("/api", Some("bad host")), ok("default"));
        assert_eq!(svc("/api", Some("[::1]:8080")), ok("default"));
        // Paths that cannot be normalized are errors (400), not misroutes.
        assert_eq!(
            svc("/a%00", Some("app.example.com")),
            Err(PathError::Nul { offset: 2 })
        );
        assert_eq!(
            svc("/a%zz", Some("app.example.com")),
            Err(PathError::InvalidPercentEncoding { offset: 2 })
        );
        let (options_star, _) = http::Request::builder()
            .method(http::Method::OPTIONS)
            .uri("*")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            table.lookup_request(&options_star),
            Err(PathError::NotAbsolute)
        );
    }

    /// The Ingress semantics written out naively: filter the matching rules, rank them.
    fn reference<'a>(rules: &'a [RouteRule], host: &str, path: &str) -> Option<&'a RouteTarget> {
        fn elements(p: &str) -> Vec<&str> {
            p.split('/').filter(|e| !e.is_empty()).collect()
        }
        let host_tiers: [&dyn Fn(&HostMatch) -> bool; 3] = [
            &|h| matches!(h, HostMatch::Host(HostPattern::Exact(e)) if !host.is_empty() && e.as_str() == host),
            &|h| {
                matches!(h, HostMatch::Host(HostPattern::Wildcard(s))
                    if host.split_once('.').is_some_and(|(l, rest)| !l.is_empty() && rest == s.as_str()))
            },
            &|h| *h == HostMatch::Any,
        ];
        let request = elements(path);
        for tier in host_tiers {
            let best = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| tier(&r.host))
                .filter(|(_, r)| match r.path_type {
                    PathType::Exact => r.path == path,
                    PathType::Prefix => request.starts_with(&elements(&r.path)),
                })
                .map(|(i, r)| {
                    let len = match r.path_type {
                        PathType::Exact => r.path.len(),
                        PathType::Prefix => r.path.trim_end_matches('/').len(),
                    };
                    // Longest, then Exact, then the earliest rule.
                    (
                        (len, r.path_type == PathType::Exact, std::cmp::Reverse(i)),
                        r,
                    )
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            if let Some((_, r)) = best {
                return Some(&r.target);
            }
        }
        None
    }

    #[test]
    fn matches_naive_reference_on_random_rules() {
        compare_with_reference(0x5eed_0002, 0..=0);
    }

    /// Paths past the positions a lookup records (see `RECORDED_SLASHES`), sharing long
    /// runs of elements so that deep rules do match.
    #[test]
    fn matches_naive_reference_on_deep_random_rules() {
        compare_with_reference(0x5eed_0003, RECORDED_SLASHES - 3..=RECORDED_SLASHES + 3);
    }

    /// Random rules and requests over small alphabets, each path `/a` repeated a number
    /// of times from `base` followed by up to four random elements.
    fn compare_with_reference(seed: u64, base: std::ops::RangeInclusive<usize>) {
        const HOSTS: &[&str] = &["a.x.com", "b.x.com", "x.com", "c.b.x.com", "y.org", ""];
        const SEGMENTS: &[&str] = &["a", "b", "aa", "ab", "A", "~"];
        let mut rng = StdRng::seed_from_u64(seed);
        let random_path = |rng: &mut StdRng| {
            let mut p = "/a".repeat(rng.random_range(base.clone()));
            for _ in 0..rng.random_range(0..5) {
                p.push('/');
                p.push_str(SEGMENTS[rng.random_range(0..SEGMENTS.len())]);
            }
            if p.is_empty() || rng.random_bool(0.3) {
                p.push('/');
            }
            p
        };
        for round in 0..400 {
            let mut rules = Vec::new();
            for i in 0..rng.random_range(0..30) {
                let host = match rng.random_range(0..4) {
                    0 => HostMatch::Any,
                    1 => host_match(["*.x.com", "*.b.x.com", "*.org"][rng.random_range(0..3)]),
                    _ => host_match(HOSTS[rng.random_range(0..HOSTS.len() - 1)]),
                };
                let path_type = if rng.random_bool(0.5) {
                    PathType::Exact
                } else {
                    PathType::Prefix
                };
                let path = random_path(&mut rng);
                rules.push(rule(host, &path, path_type, &format!("r{i}")));
            }
            let table = RouteTable::build(rules.clone());
            // The same rules as host tables built from two halves, merged where a host
            // is in both, as a recompile that reuses host tables assembles them.
            let (first, second) = rules.split_at(rules.len() / 2);
            let assembled = RouteTable::from_hosts(
                HostRoutes::group(first.to_vec())
                    .into_iter()
                    .chain(HostRoutes::group(second.to_vec())),
            );
            assert_eq!(assembled.len(), table.len(), "round {round}");
            for _ in 0..50 {
                let host = HOSTS[rng.random_range(0..HOSTS.len())];
                let path = random_path(&mut rng);
                let expected = reference(&rules, host, &path);
                assert_eq!(
                    table.lookup(host, &path),
                    expected,
                    "round {round}: {host}{path} with rules {rules:#?}"
                );
                assert_eq!(
                    assembled.lookup(host, &path),
                    expected,
                    "assembled, round {round}: {host}{path} with rules {rules:#?}"
                );
            }
        }
    }
}
