//! `from-to-www-redirect`: for each host an Ingress with the annotation has paths on,
//! its twin (`www.` added, or taken away when the host starts with it) answers every
//! request with a redirect to the host, as ingress-nginx's redirect servers do.
//!
//! Like ingress-nginx, the twin is left alone when some Ingress names it itself (with a
//! warning), and only exact hosts have twins. Built on every compile from the
//! annotated Ingresses alone, so the incremental compile stays equal to a fresh one.

use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};
use proxy_core::pipeline::{RequestFilter, RoutePolicy, WwwRedirect};
use proxy_core::routes::{HostMatch, HostPattern, HostRoutes, PathType, RouteRule, RouteTarget};

use super::annotations::{NGINX_PREFIX, OWN_PREFIX};
use super::backends::{backend_id, reference};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::{Fragment, RouteCache};
use super::policy::PolicyDefaults;
use super::BackendField;
use crate::store::Kind;

/// The twin of `host`: `www.` taken away or added.
fn twin(host: &str) -> String {
    match host.strip_prefix("www.") {
        Some(bare) => bare.to_owned(),
        None => format!("www.{host}"),
    }
}

/// The annotation as the Ingress spells it (the own prefix wins, as when it is read).
fn annotation_field(f: &Fragment) -> String {
    const KEY: &str = "from-to-www-redirect";
    let own = format!("{OWN_PREFIX}{KEY}");
    let set = f.ingress.metadata.annotations.as_ref();
    let name = if set.is_some_and(|a| a.contains_key(&own)) {
        own
    } else {
        format!("{NGINX_PREFIX}{KEY}")
    };
    format!("metadata.annotations[{name:?}]")
}

/// The redirect hosts' tables, for `fragments` (oldest first) over the hosts in `routes`.
pub(super) fn redirect_hosts(
    fragments: &[Arc<Fragment>],
    routes: &RouteCache,
    defaults: &PolicyDefaults,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<HostRoutes>> {
    let mut done: HashSet<String> = HashSet::new();
    let mut rules = Vec::new();
    for f in fragments
        .iter()
        .filter(|f| f.ann.from_to_www && f.ann.canary.is_none())
    {
        for p in &f.paths {
            let HostMatch::Host(HostPattern::Exact(to)) = &f.hosts[p.host] else {
                continue;
            };
            let to = to.as_str();
            if done.contains(to) {
                continue;
            }
            let from = twin(to);
            let Ok(from_pattern) = HostPattern::parse(&from) else {
                continue;
            };
            let from_host = HostMatch::Host(from_pattern);
            done.insert(to.to_owned());
            if routes.has_host(&from_host) {
                diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    &f.key,
                    annotation_field(f),
                    DiagnosticReason::WwwRedirectConflict,
                    format!("an Ingress already has rules for {from:?}; no redirect from {from:?} to {to:?}, as in ingress-nginx"),
                ));
                continue;
            }
            // The redirect answers every request before a backend is picked; the target
            // names the path's own backend only because a route names one.
            let Some((service, port)) = f
                .backend_at(p.field)
                .and_then(|b| reference(&f.key, b, &BackendField(p.field), &mut Vec::new()))
            else {
                continue;
            };
            let policy = RoutePolicy {
                request: vec![RequestFilter::WwwRedirect(WwwRedirect {
                    to: to.to_owned(),
                    code: defaults.http_redirect_code,
                })],
                ..RoutePolicy::default()
            };
            rules.push(RouteRule {
                host: from_host,
                path: "/".to_owned(),
                path_type: PathType::Prefix,
                target: RouteTarget {
                    backend: backend_id(
                        &f.key.namespace,
                        service,
                        &port,
                        f.ann.upstream.service_upstream,
                    ),
                    policy: Arc::new(policy),
                    source: f.source.clone(),
                },
            });
        }
    }
    HostRoutes::group(rules)
}

#[cfg(test)]
mod tests {
    use super::twin;

    #[test]
    fn twins_add_or_take_away_www() {
        assert_eq!(twin("foo.bar.com"), "www.foo.bar.com");
        assert_eq!(twin("www.foo.bar.com"), "foo.bar.com");
        assert_eq!(twin("wwwfoo.com"), "www.wwwfoo.com");
    }
}
