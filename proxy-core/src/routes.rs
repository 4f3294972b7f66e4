//! Host/path route table: built once per Config, looked up per request.

use std::sync::Arc;

use crate::config::BackendId;

/// How a rule's host matches the request host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// Lower-cased exact host, e.g. `foo.bar.com`.
    Exact(String),
    /// `*.foo.com`, stored as the lower-cased suffix `foo.com`: matches exactly one extra label.
    Wildcard(String),
    /// A rule with no host: matches every host, after all host rules.
    Any,
}

/// Ingress v1 `pathType`, after `ImplementationSpecific` has been mapped by the compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathType {
    Exact,
    Prefix,
}

/// What a matched rule sends the request to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    pub backend: BackendId,
    /// Answer plain-HTTP requests with a 308 to `https://`.
    pub ssl_redirect: bool,
    /// `namespace/name` of the Ingress the rule came from, for logs.
    pub source: Arc<str>,
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub host: HostMatch,
    pub path: String,
    pub path_type: PathType,
    pub target: RouteTarget,
}

/// The compiled table.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    rules: Vec<RouteRule>,
}

impl RouteTable {
    pub fn build(rules: Vec<RouteRule>) -> Self {
        Self { rules }
    }

    pub fn lookup(&self, _host: &str, _path: &str) -> Option<&RouteTarget> {
        self.rules.first().map(|r| &r.target)
    }
}
