//! `server-alias`: more host names for an Ingress's hosts, as ingress-nginx adds them to
//! a server's `server_name`. An alias routes exactly as its host does (every path of the
//! host, from every Ingress), since in ingress-nginx it names the same server.
//!
//! As in ingress-nginx, a host takes the aliases of the oldest Ingress that sets them for
//! it (a newer one's are skipped), and an alias that is the host itself or a host some
//! Ingress routes is left out; Portico reports each of those. A canary Ingress's aliases
//! play no part, nor do aliases of host-less rules.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use proxy_core::routes::{HostMatch, HostRoutes};

use super::annotations::{NGINX_PREFIX, OWN_PREFIX};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::{Fragment, RouteCache};
use crate::store::Kind;

const KEY: &str = "server-alias";

/// The field naming the annotation as the Ingress spells it.
fn annotation_field(f: &Fragment) -> String {
    let own = format!("{OWN_PREFIX}{KEY}");
    let has_own = f
        .ingress
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(&own));
    let name = if has_own {
        own
    } else {
        format!("{NGINX_PREFIX}{KEY}")
    };
    format!("metadata.annotations[{name:?}]")
}

/// The alias hosts' tables, for `fragments` (oldest first) over the hosts in `routes`.
pub(super) fn alias_hosts(
    fragments: &[Arc<Fragment>],
    routes: &RouteCache,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<HostRoutes>> {
    // Host -> the Ingress whose aliases it took.
    let mut owner: HashMap<&HostMatch, &Arc<Fragment>> = HashMap::new();
    // Alias -> the host it names.
    let mut taken: HashMap<&HostMatch, &HostMatch> = HashMap::new();
    let mut out = Vec::new();
    let aliased = fragments
        .iter()
        .filter(|f| !f.ann.server_alias.is_empty() && f.ann.canary.is_none());
    for f in aliased {
        for host in &f.hosts {
            let Some(table) = routes.table(host).filter(|_| *host != HostMatch::Any) else {
                continue;
            };
            if let Some(first) = owner.get(host) {
                if !Arc::ptr_eq(first, f) {
                    diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        &f.key,
                        annotation_field(f),
                        DiagnosticReason::ServerAliasConflict,
                        format!(
                            "host {host} already takes its aliases from the older Ingress {}; these are ignored for it, as in ingress-nginx",
                            first.source
                        ),
                    ));
                }
                continue;
            }
            owner.insert(host, f);
            for alias in &f.ann.server_alias {
                if alias == host {
                    continue;
                }
                let clash = if routes.has_host(alias) {
                    Some("an Ingress routes that host itself".to_owned())
                } else {
                    taken
                        .get(alias)
                        .map(|other| format!("it is already an alias of {other}"))
                };
                if let Some(why) = clash {
                    diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        &f.key,
                        annotation_field(f),
                        DiagnosticReason::ServerAliasConflict,
                        format!("alias {alias} of host {host} ignored: {why}"),
                    ));
                    continue;
                }
                taken.insert(alias, host);
                out.push(table.aliased(alias.clone()));
            }
        }
    }
    out
}
