//! Which of Portico's listeners a Gateway API match rule answers on.
//!
//! A Gateway's HTTP listeners are all served on Portico's HTTP listener and its HTTPS
//! listeners on the HTTPS one, so a rule records the protocols of the listeners its
//! route attached through. Within one Gateway, a request belongs to the most specific
//! listener whose hostname matches its host (the spec's listener isolation): a rule
//! attached through `*.example.com` yields every host that a more specific listener of
//! the same Gateway and protocol, such as `*.foo.example.com`, matches. Ingress rules
//! are not match rules and answer on both listeners as before.

use std::sync::Arc;

use crate::host::HostPattern;
use crate::http::Scheme;

/// The listeners a match rule answers on. The default answers on every listener and
/// for every host its rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerScope {
    /// Answers requests on Portico's HTTP listener.
    pub http: bool,
    /// Answers requests on Portico's HTTPS listener (HTTP/3 included).
    pub https: bool,
    /// Hostnames of more specific listeners that take a request before this rule's:
    /// a host one of them matches (a `*.` wildcard here matches any number of labels,
    /// as Gateway API listener hostnames do) is not this rule's. Usually empty.
    pub yields_to: Arc<[HostPattern]>,
}

impl Default for ListenerScope {
    fn default() -> Self {
        Self {
            http: true,
            https: true,
            yields_to: Arc::from([]),
        }
    }
}

/// The TLS handshakes (by SNI) that belong to one HTTPS listener of a Gateway: those
/// for its hostname (without one, any host) less those a more specific HTTPS listener
/// of the same Gateway takes. A request whose connection was made for another
/// listener's name (HTTP/2 reuses a connection across names its certificate covers)
/// is misdirected: 421, as the Gateway API asks, rather than served past that
/// listener's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniScope {
    pub hostname: Option<HostPattern>,
    pub yields_to: Arc<[HostPattern]>,
}

impl SniScope {
    /// Whether a handshake (or a request) for the normalized `host` is this
    /// listener's.
    pub fn admits(&self, host: &str) -> bool {
        self.hostname.as_ref().is_none_or(|h| covers(h, host))
            && !self.yields_to.iter().any(|p| covers(p, host))
    }
}

impl ListenerScope {
    /// Whether a request that arrived on `scheme` for the normalized `host` (`""` for
    /// none) is this rule's to answer.
    #[inline]
    pub fn admits(&self, scheme: Scheme, host: &str) -> bool {
        let on = match scheme {
            Scheme::Http => self.http,
            Scheme::Https => self.https,
        };
        on && (self.yields_to.is_empty() || !self.yields_to.iter().any(|p| covers(p, host)))
    }
}

/// Whether a Gateway API hostname matches `host`: an exact name itself, a `*.` wildcard
/// every name below its suffix.
fn covers(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(h) => h.as_str() == host,
        HostPattern::Wildcard(suffix) => host
            .strip_suffix(suffix.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(http: bool, https: bool, yields_to: &[&str]) -> ListenerScope {
        ListenerScope {
            http,
            https,
            yields_to: yields_to
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
        }
    }

    /// The listener a handshake's SNI selects: its hostname (suffix match for a
    /// wildcard), less the more specific listeners' hosts.
    #[test]
    fn an_sni_scope_takes_its_listeners_handshakes() {
        let pattern = |h: &str| HostPattern::parse(h).unwrap();
        let wildcard = SniScope {
            hostname: Some(pattern("*.wildcard.org")),
            yields_to: Arc::from([pattern("fourth.wildcard.org")]),
        };
        assert!(wildcard.admits("third.wildcard.org"));
        assert!(wildcard.admits("a.b.wildcard.org"));
        assert!(!wildcard.admits("fourth.wildcard.org"));
        assert!(!wildcard.admits("wildcard.org"));
        assert!(!wildcard.admits("example.org"));
        let any = SniScope {
            hostname: None,
            yields_to: Arc::from([pattern("second.example.org")]),
        };
        assert!(any.admits("example.org"));
        assert!(!any.admits("second.example.org"));
    }

    #[test]
    fn a_scope_admits_its_protocols_only() {
        let https_only = scope(false, true, &[]);
        assert!(https_only.admits(Scheme::Https, "a.test"));
        assert!(!https_only.admits(Scheme::Http, "a.test"));
        let both = ListenerScope::default();
        assert!(both.admits(Scheme::Http, ""));
        assert!(both.admits(Scheme::Https, ""));
    }

    /// In the table: a scoped match rule answers only its listener and hosts, and
    /// what it does not answer falls through to the host's Ingress paths.
    #[test]
    fn the_table_checks_scopes_before_falling_through() {
        use crate::model::BackendId;
        use crate::routes::{
            HostMatch, HostRoutes, MatchRule, PathMatch, PathType, RouteRule, RouteTable,
            RouteTarget,
        };
        let target = |service: &str| RouteTarget {
            backend: BackendId::new("ns", service, "80"),
            policy: Default::default(),
            source: "test".into(),
        };
        let wide = HostMatch::parse(Some("*.example.com")).unwrap();
        let rule = |scope: ListenerScope, service: &str| MatchRule {
            host: wide.clone(),
            path: PathMatch::prefix("/"),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            listeners: scope,
            target: target(service),
        };
        let table = RouteTable::from_hosts(vec![
            HostRoutes::with_matches(
                wide.clone(),
                vec![
                    rule(scope(false, true, &[]), "https-only"),
                    rule(
                        scope(true, false, &["*.foo.example.com", "y.example.com"]),
                        "http-wide",
                    ),
                ],
            ),
            HostRoutes::group(vec![RouteRule {
                host: wide.clone(),
                path: "/".into(),
                path_type: PathType::Prefix,
                target: target("ingress"),
            }])
            .remove(0),
        ]);
        let got = |scheme, host| {
            table
                .lookup_on(scheme, host, "/x", None)
                .map(|t| t.backend.service.to_string())
        };
        assert_eq!(
            got(Scheme::Https, "a.example.com").as_deref(),
            Some("https-only")
        );
        assert_eq!(
            got(Scheme::Http, "a.example.com").as_deref(),
            Some("http-wide")
        );
        // Yielded to a more specific listener: the host's Ingress path takes it ...
        assert_eq!(
            got(Scheme::Http, "y.example.com").as_deref(),
            Some("ingress")
        );
        // ... and where no Ingress wildcard reaches (two labels down), nothing does.
        assert_eq!(got(Scheme::Http, "b.foo.example.com"), None);
        assert_eq!(
            got(Scheme::Http, "foo.example.com").as_deref(),
            Some("http-wide")
        );
        let ingress_host = "b.example.com";
        let without_rules = RouteTable::from_hosts(vec![HostRoutes::group(vec![RouteRule {
            host: wide.clone(),
            path: "/".into(),
            path_type: PathType::Prefix,
            target: target("ingress"),
        }])
        .remove(0)]);
        for scheme in [Scheme::Http, Scheme::Https] {
            assert_eq!(
                without_rules
                    .lookup_on(scheme, ingress_host, "/", None)
                    .map(|t| &*t.backend.service),
                Some("ingress")
            );
        }
    }

    #[test]
    fn a_scope_yields_hosts_of_more_specific_listeners() {
        let wide = scope(true, false, &["*.foo.example.com", "abc.foo.example.com"]);
        assert!(wide.admits(Scheme::Http, "bar.example.com"));
        assert!(wide.admits(Scheme::Http, "foo.example.com"));
        assert!(!wide.admits(Scheme::Http, "bar.foo.example.com"));
        assert!(!wide.admits(Scheme::Http, "a.b.foo.example.com"));
        assert!(!wide.admits(Scheme::Http, "abc.foo.example.com"));
        assert!(wide.admits(Scheme::Http, "xfoo.example.com"));
        assert!(wide.admits(Scheme::Http, ""));
    }
}
