//! `compile`: a pure function from the watched objects to a [`proxy_core::Config`] plus
//! diagnostics. Every Kubernetes rule lives here.
//!
//! Choices worth knowing:
//! - `ImplementationSpecific` paths are served as `Prefix` (no regex paths).
//! - A path whose Service or Service port is missing is still routed, to a backend with no
//!   endpoints, so it answers 503 (as ingress-nginx does) rather than 404: the user sees
//!   that the rule was taken and the backend is the problem.
//! - Conflicts (same host+path+pathType, several default backends, different backend
//!   settings) go to the oldest Ingress: creationTimestamp, then namespace/name.

mod annotations;
mod backends;
mod certs;
mod class;
mod diagnostic;
pub mod endpoints;
mod l4;
mod syntax;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use proxy_core::config::Config;
use proxy_core::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};

pub use annotations::{BackendSettings, IngressAnnotations, NGINX_PREFIX, OWN_PREFIX};
pub use class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use diagnostic::{Diagnostic, DiagnosticReason, Severity};

use crate::store::{Kind, ObjectKey, Store};

/// Controller settings that shape compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// `--ingress-class`: the class name matched by the legacy annotation.
    pub ingress_class: String,
    /// `spec.controller` of the IngressClasses that are ours.
    pub controller_name: String,
    /// `--default-certificate NS/NAME`.
    pub default_certificate: Option<ObjectKey>,
    /// `--service-proxy`: also compile Services into L4 forwarding.
    pub service_proxy: bool,
    pub node_name: Option<String>,
    pub node_addresses: Vec<IpAddr>,
    /// Copied into [`Config::generation`].
    pub generation: u64,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            ingress_class: "portico".to_owned(),
            controller_name: "portico.dev/ingress-controller".to_owned(),
            default_certificate: None,
            service_proxy: false,
            node_name: None,
            node_addresses: Vec::new(),
            generation: 0,
        }
    }
}

/// Everything one compile produces.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    pub config: Config,
    /// Certificates from `spec.tls`, one per Secret, sorted by name.
    pub certs: Vec<tls::CertSource>,
    /// `--default-certificate`, when it names a usable Secret.
    pub default_cert: Option<tls::CertSource>,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses of our class, sorted; their status is ours to write.
    pub owned_ingresses: Vec<ObjectKey>,
}

/// What one compile learnt that the next may reuse: its output is still a function of
/// the store and options alone (see [`compile_with`]).
#[derive(Default)]
pub struct CompileCache {
    secrets: certs::SecretCache,
}

/// Compiles the store. Same store and options, same output.
pub fn compile(store: &Store, opts: &CompileOptions) -> Compiled {
    compile_with(store, opts, &mut CompileCache::default())
}

/// [`compile`], reusing what `cache` holds from earlier compiles (the publish loop keeps
/// one). The result equals [`compile`]'s for the same store and options.
pub fn compile_with(store: &Store, opts: &CompileOptions, cache: &mut CompileCache) -> Compiled {
    let (mut compiled, rules) = compile_inner(store, opts, cache);
    compiled.config.routes = RouteTable::build(rules);
    compiled
}

/// Like [`compile_with`], with the rules handed back unbuilt (`config.routes` left empty).
pub(crate) fn compile_inner(
    store: &Store,
    opts: &CompileOptions,
    cache: &mut CompileCache,
) -> (Compiled, Vec<RouteRule>) {
    let mut diags = Vec::new();
    let previous_secrets = std::mem::take(&mut cache.secrets);

    let classes = class::ClassFilter::new(store, opts);
    let mut ours: Vec<(&ObjectKey, &Ingress)> = store
        .ingresses
        .iter()
        .filter(|(key, ing)| classes.owns(key, ing))
        .map(|(key, ing)| (key, ing.as_ref()))
        .collect();
    let owned_ingresses = ours.iter().map(|(k, _)| (*k).clone()).collect();
    // Oldest first: every conflict goes to the first claimant.
    ours.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        ta.cmp(&tb).then_with(|| ka.cmp(kb))
    });

    let tls = certs::compile_tls(
        store,
        &ours,
        &previous_secrets,
        &mut cache.secrets,
        &mut diags,
    );
    let index = endpoints::EndpointIndex::new(store);
    let mut backends = backends::Backends::new(store, &index);

    // Sized up front: growing these one path at a time rehashes 50,000 claims repeatedly.
    let paths: usize = ours
        .iter()
        .filter_map(|(_, ing)| ing.spec.as_ref()?.rules.as_ref())
        .flatten()
        .filter_map(|rule| rule.http.as_ref())
        .map(|http| http.paths.len())
        .sum();
    let mut rules = Vec::with_capacity(paths);
    let mut claims: foldhash::HashMap<(HostMatch, String, PathType), Arc<str>> =
        foldhash::HashMap::with_capacity_and_hasher(paths, Default::default());
    let mut default_backend: Option<RouteTarget> = None;

    for &(key, ingress) in &ours {
        let ann = annotations::parse(key, ingress.metadata.annotations.as_ref(), &mut diags);
        let source: Arc<str> = key.to_string().into();
        let Some(spec) = ingress.spec.as_ref() else {
            continue;
        };

        if let Some(backend) = &spec.default_backend {
            if let Some(current) = &default_backend {
                diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    key,
                    "spec.defaultBackend",
                    DiagnosticReason::DuplicateDefaultBackend,
                    format!(
                        "the older Ingress {} already sets the default backend; ignored",
                        current.source
                    ),
                ));
            } else if let Some(id) =
                backends.resolve(key, &ann, backend, &"spec.defaultBackend", &mut diags)
            {
                default_backend = Some(RouteTarget {
                    backend: id,
                    ssl_redirect: ann.force_ssl_redirect,
                    source: source.clone(),
                });
            }
        }

        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match syntax::parse_host(rule.host.as_deref()) {
                Ok(h) => h,
                Err(msg) => {
                    diags.push(Diagnostic::error(
                        Kind::Ingress,
                        key,
                        format!("spec.rules[{i}].host"),
                        DiagnosticReason::InvalidHost,
                        format!("{msg}; rule ignored"),
                    ));
                    continue;
                }
            };
            let redirect = (ann.ssl_redirect && tls.hosts.covers(&host)) || ann.force_ssl_redirect;
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or_default();
            for (j, p) in paths.iter().enumerate() {
                // Formatted only when a diagnostic needs it: this loop runs per path.
                let field = PathField { rule: i, path: j };
                let path_type = match syntax::parse_path_type(&p.path_type) {
                    Ok(t) => t,
                    Err(msg) => {
                        diags.push(Diagnostic::error(
                            Kind::Ingress,
                            key,
                            format!("{field}.pathType"),
                            DiagnosticReason::InvalidPathType,
                            format!("{msg}; path ignored"),
                        ));
                        continue;
                    }
                };
                let path = match syntax::parse_path(p.path.as_deref()) {
                    Ok(p) => p,
                    Err(msg) => {
                        diags.push(Diagnostic::error(
                            Kind::Ingress,
                            key,
                            format!("{field}.path"),
                            DiagnosticReason::InvalidPath,
                            format!("{msg}; path ignored"),
                        ));
                        continue;
                    }
                };
                let claim = (
                    host.clone(),
                    syntax::claim_path(&path, path_type).to_owned(),
                    path_type,
                );
                if let Some(owner) = claims.get(&claim) {
                    diags.push(duplicate(
                        key,
                        &field.to_string(),
                        &host,
                        &path,
                        path_type,
                        owner,
                        &source,
                    ));
                    continue;
                }
                let backend_field = BackendField(field);
                let Some(id) = backends.resolve(key, &ann, &p.backend, &backend_field, &mut diags)
                else {
                    continue;
                };
                claims.insert(claim, source.clone());
                rules.push(RouteRule {
                    host: host.clone(),
                    path,
                    path_type,
                    target: RouteTarget {
                        backend: id,
                        ssl_redirect: redirect,
                        source: source.clone(),
                    },
                });
            }
        }
    }

    let mut config = Config {
        generation: opts.generation,
        routes: RouteTable::default(),
        default_backend,
        backends: backends.finish(),
        l4: Vec::new(),
    };
    if opts.service_proxy {
        config.l4 = l4::compile_l4(store, &index, opts, &mut diags);
    }
    let default_cert = opts.default_certificate.as_ref().and_then(|k| {
        certs::default_cert(store, k, &previous_secrets, &mut cache.secrets, &mut diags)
    });

    // One slice can be read for several ports of its Service; say each thing once.
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert(d.clone()));

    let compiled = Compiled {
        config,
        certs: tls.certs,
        default_cert,
        diagnostics: diags,
        owned_ingresses,
    };
    (compiled, rules)
}

/// `spec.rules[i].http.paths[j]`.
#[derive(Clone, Copy)]
struct PathField {
    rule: usize,
    path: usize,
}

impl fmt::Display for PathField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

/// `spec.rules[i].http.paths[j].backend`.
struct BackendField(PathField);

impl fmt::Display for BackendField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.backend", self.0)
    }
}

fn duplicate(
    key: &ObjectKey,
    field: &str,
    host: &HostMatch,
    path: &str,
    path_type: PathType,
    owner: &Arc<str>,
    source: &Arc<str>,
) -> Diagnostic {
    let host = match host {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(s) => format!("*.{s}"),
        HostMatch::Any => "*".to_owned(),
    };
    if owner == source {
        Diagnostic::warning(
            Kind::Ingress,
            key,
            field,
            DiagnosticReason::DuplicatePath,
            format!("host {host:?} path {path:?} ({path_type:?}) is declared earlier in this Ingress; the first wins"),
        )
    } else {
        Diagnostic::error(
            Kind::Ingress,
            key,
            field,
            DiagnosticReason::DuplicatePath,
            format!("host {host:?} path {path:?} ({path_type:?}) is already claimed by the older Ingress {owner}; path ignored"),
        )
    }
}
