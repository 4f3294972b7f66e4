//! `ssl-passthrough`: which TLS hosts go undecrypted to which backend.
//!
//! As ingress-nginx: the annotation needs `--enable-ssl-passthrough`; one Ingress that
//! sets it makes its whole host passthrough (every Ingress naming the host shares it);
//! the backend is that of the host's `/` path, whichever Ingress routes it, and a host
//! without one is not passed through; the ClientHello's SNI is matched against exact
//! host names only, so wildcard and host-less rules never pass through. Plain HTTP for
//! the host is served by the HTTP listener as before, with the Ingress's annotations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proxy_core::config::BackendId;
use proxy_core::host::HostPattern;
use proxy_core::routes::{HostMatch, PathType, RouteTable};

use super::annotations::{NGINX_PREFIX, OWN_PREFIX};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::Fragment;
use crate::store::Kind;

/// The annotation's field, under the prefix the Ingress used (its own first).
fn field(f: &Fragment) -> String {
    let annotations = f.ingress.metadata.annotations.as_ref();
    let own = format!("{OWN_PREFIX}ssl-passthrough");
    let name = if annotations.is_some_and(|a| a.contains_key(&own)) {
        own
    } else {
        format!("{NGINX_PREFIX}ssl-passthrough")
    };
    format!("metadata.annotations[{name:?}]")
}

/// The passthrough hosts (lowercase) and their backends, given the compiled `routes`.
/// `enabled` is `--enable-ssl-passthrough`.
pub(super) fn passthrough_hosts(
    fragments: &[Arc<Fragment>],
    routes: &RouteTable,
    enabled: bool,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Arc<str>, BackendId> {
    // Host -> the Ingress that asked first (fragments come oldest first).
    let mut wanted: BTreeMap<&str, &Fragment> = BTreeMap::new();
    for f in fragments.iter().filter(|f| f.ann.ssl_passthrough) {
        let diag = |msg: String| {
            Diagnostic::warning(
                Kind::Ingress,
                &f.key,
                field(f),
                DiagnosticReason::SslPassthroughNotApplied,
                msg,
            )
        };
        if !enabled {
            diags.push(diag(
                "ssl-passthrough needs the controller flag --enable-ssl-passthrough; ignored: TLS for the Ingress's hosts is terminated by Portico".to_owned(),
            ));
            continue;
        }
        if f.ann.canary.is_some() {
            diags.push(diag(
                "ssl-passthrough on a canary Ingress plays no part: a canary only shares the paths of its main Ingress".to_owned(),
            ));
            continue;
        }
        for host in &f.hosts {
            match host {
                HostMatch::Host(HostPattern::Exact(name)) => {
                    wanted.entry(name.as_str()).or_insert(f);
                }
                HostMatch::Host(p @ HostPattern::Wildcard(_)) => diags.push(diag(format!(
                    "ssl-passthrough matches the TLS server name against exact hosts only, as ingress-nginx; host {p} is terminated by Portico"
                ))),
                HostMatch::Any => diags.push(diag(
                    "ssl-passthrough needs a host: a rule without one is terminated by Portico".to_owned(),
                )),
            }
        }
    }
    if wanted.is_empty() {
        return HashMap::new();
    }
    // The `/` path of each wanted host; a Prefix or ImplementationSpecific one before an
    // Exact one (nginx's `location /` before `location = /`).
    let mut root: HashMap<&str, (bool, BackendId)> = HashMap::new();
    for rule in routes.rules() {
        let HostMatch::Host(HostPattern::Exact(name)) = &rule.host else {
            continue;
        };
        if rule.path != "/" || !wanted.contains_key(name.as_str()) {
            continue;
        }
        let exact = rule.path_type == PathType::Exact;
        match root.get(name.as_str()) {
            Some((false, _)) => {}
            Some((true, _)) if exact => {}
            _ => {
                root.insert(name.as_str(), (exact, rule.target.backend.clone()));
            }
        }
    }
    // A host in regex mode: its rule written `/`, which ingress-nginx's location "/" is.
    for rule in routes.regex_rules() {
        let HostMatch::Host(HostPattern::Exact(name)) = &rule.host else {
            continue;
        };
        if rule.path.as_str() == "/" && wanted.contains_key(name.as_str()) {
            root.entry(name.as_str())
                .or_insert((false, rule.target.backend.clone()));
        }
    }
    let mut out = HashMap::new();
    for (host, f) in wanted {
        match root.remove(host) {
            Some((_, backend)) => {
                tracing::debug!(host, %backend, ingress = %f.key, "ssl-passthrough host");
                out.insert(Arc::from(host), backend);
            }
            None => diags.push(Diagnostic::warning(
                Kind::Ingress,
                &f.key,
                field(f),
                DiagnosticReason::SslPassthroughNotApplied,
                format!(
                    "ssl-passthrough needs a path \"/\" for host {host} (its backend gets the connections); none is routed, so the host is terminated by Portico"
                ),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::store_from_yaml;
    use super::super::{compile, CompileOptions, DiagnosticReason};
    use proxy_core::config::BackendId;

    fn ingress(name: &str, annotated: bool, rules: &[(&str, &str, &str)]) -> String {
        let annotations = if annotated {
            "  annotations:\n    nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"\n"
        } else {
            ""
        };
        let mut out = format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n{annotations}spec:\n  ingressClassName: portico\n  rules:\n"
        );
        for (host, path, service) in rules {
            out.push_str(&format!(
                "  - host: \"{host}\"\n    http:\n      paths:\n      - path: {path}\n        pathType: Prefix\n        backend:\n          service:\n            name: {service}\n            port:\n              number: 80\n"
            ));
        }
        out
    }

    const CLASS: &str = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portico\nspec:\n  controller: portico.dev/ingress-controller\n";

    fn store() -> crate::store::Store {
        let mut text = CLASS.to_owned();
        // The annotated Ingress routes only /api of pass.test; another Ingress routes
        // its "/": that one's backend gets the connections, as ingress-nginx's
        // server-wide passthrough takes the merged server's location "/".
        text.push_str(&ingress(
            "annotated",
            true,
            &[
                ("pass.test", "/api", "api"),
                ("*.wild.test", "/", "wild"),
                ("noroot.test", "/x", "x"),
            ],
        ));
        text.push_str(&ingress("root", false, &[("pass.test", "/", "root")]));
        // A host in regex mode keeps its `/` among the regex rules.
        text.push_str(
            &ingress("regex", true, &[("regex.test", "/", "rx")]).replace(
                "  annotations:\n",
                "  annotations:\n    nginx.ingress.kubernetes.io/use-regex: \"true\"\n",
            ),
        );
        store_from_yaml(&text)
    }

    fn passthrough_diags(c: &super::super::Compiled) -> Vec<String> {
        c.diagnostics
            .iter()
            .filter(|d| d.reason == DiagnosticReason::SslPassthroughNotApplied)
            .map(|d| format!("{} {}: {}", d.object, d.field, d.message))
            .collect()
    }

    #[test]
    fn hosts_pass_through_to_the_backend_of_their_root_path() {
        let opts = CompileOptions {
            enable_ssl_passthrough: true,
            ..CompileOptions::default()
        };
        let c = compile(&store(), &opts);
        let mut hosts: Vec<(&str, &BackendId)> = c
            .config
            .passthrough
            .iter()
            .map(|(h, b)| (&**h, b))
            .collect();
        hosts.sort();
        assert_eq!(
            hosts,
            vec![
                ("pass.test", &BackendId::new("default", "root", "80")),
                ("regex.test", &BackendId::new("default", "rx", "80")),
            ]
        );
        assert!(c
            .config
            .backends
            .contains_key(&BackendId::new("default", "root", "80")));
        let diags = passthrough_diags(&c);
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(diags
            .iter()
            .any(|d| d.contains("*.wild.test") && d.contains("exact hosts only")));
        assert!(diags
            .iter()
            .any(|d| d.contains("noroot.test") && d.contains("path \"/\"")));
        assert!(diags.iter().all(|d| d.starts_with(
            "default/annotated metadata.annotations[\"nginx.ingress.kubernetes.io/ssl-passthrough\"]"
        )));
    }

    #[test]
    fn without_the_flag_nothing_passes_through_and_the_ingress_is_told() {
        let c = compile(&store(), &CompileOptions::default());
        assert!(c.config.passthrough.is_empty());
        let diags = passthrough_diags(&c);
        // One for each annotated Ingress.
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(
            diags.iter().all(|d| d.contains("--enable-ssl-passthrough")),
            "{diags:#?}"
        );
        // Its paths are routed as usual.
        assert!(c.config.routes.lookup("pass.test", "/api").is_some());
    }
}
