//! Host/path route table: built once per Config, looked up per request.
//!
//! [`RouteTable::build`] compiles the rules; [`RouteTable::lookup`] takes a host from
//! [`request_host`] and a path from [`normalize_path`]; [`RouteTable::lookup_request`]
//! does all three for a hyper request.

use std::fmt;
use std::sync::Arc;

pub use crate::host::{HostError, HostName, HostPattern};
use crate::model::BackendId;
use crate::pipeline::RoutePolicy;

mod listener;
mod matches;
mod normalize;
mod regex_path;
mod table;

pub use listener::{ListenerScope, SniScope};
pub use matches::{FullMatch, MatchRule, PathMatch, ValueMatch};
pub use normalize::{normalize_path, normalize_rule_path, request_host, PathError};
pub use regex_path::{compile_pattern, PathRegex, RegexPathError, RegexRule, MAX_PATTERN_LEN};
pub(crate) use regex_path::{COMPILED_SIZE_LIMIT, NEST_LIMIT};
pub use table::{HostRoutes, RouteTable};

/// How a rule's host matches the request host. Sorts host rules first, exact before
/// wildcard, and host-less rules last.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// An exact host or a `*.` wildcard (see [`crate::host`] for what they match).
    Host(HostPattern),
    /// A rule with no host: matches every host, after all host rules.
    Any,
}

impl HostMatch {
    /// A rule's host: absent or empty is [`HostMatch::Any`], else a [`HostPattern`].
    pub fn parse(raw: Option<&str>) -> Result<HostMatch, HostError> {
        match raw.filter(|h| !h.is_empty()) {
            None => Ok(HostMatch::Any),
            Some(h) => HostPattern::parse(h).map(HostMatch::Host),
        }
    }

    /// The pattern, unless this is the host-less match.
    pub fn pattern(&self) -> Option<&HostPattern> {
        match self {
            HostMatch::Host(p) => Some(p),
            HostMatch::Any => None,
        }
    }
}

impl From<HostPattern> for HostMatch {
    fn from(p: HostPattern) -> Self {
        HostMatch::Host(p)
    }
}

/// The host as written in an Ingress; `*` for a rule with no host.
impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Host(p) => fmt::Display::fmt(p, f),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

/// Ingress v1 `pathType`, after `ImplementationSpecific` has been mapped by the compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathType {
    Exact,
    Prefix,
}

/// The Ingress spelling: `Exact`, `Prefix`.
impl fmt::Display for PathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
        })
    }
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
