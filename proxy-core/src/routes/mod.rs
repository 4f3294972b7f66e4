//! Host/path route table: built once per Config, looked up per request.
//!
//! [`RouteTable::build`] compiles the rules; [`RouteTable::lookup`] takes a host from
//! [`request_host`] and a path from [`normalize_path`]; [`RouteTable::lookup_request`]
//! does all three for a hyper request.

use std::sync::Arc;

use crate::config::BackendId;
use crate::pipeline::RoutePolicy;

mod normalize;
mod table;

pub use normalize::{normalize_path, normalize_rule_path, request_host, PathError};
pub use table::{HostRoutes, RouteTable};

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
    /// What the route does besides sending the request there.
    pub policy: Arc<RoutePolicy>,
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
