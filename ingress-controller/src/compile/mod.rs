//! `compile`: a pure function from the watched objects to a [`proxy_core::Config`] plus
//! diagnostics. Every Kubernetes rule lives here.
//!
//! The publish loop keeps a [`CompileCache`] between compiles, so that a change costs
//! about what it touches: Ingresses are read once per version, host tables are rebuilt
//! only for the hosts a change reaches (`hosts`), and backends only for the references
//! that came and went or the Services whose endpoints changed (`backends`). The output
//! is the same as a compile from nothing; a test checks that over random edits.
//!
//! Choices worth knowing:
//! - `ImplementationSpecific` paths are served as `Prefix`, unless their Ingress asks for
//!   regex paths (`use-regex`, `rewrite-target`); then the whole host is matched as
//!   ingress-nginx's regex locations (`hosts::regex_rules`).
//! - A path whose Service or Service port is missing is still routed, to a backend with no
//!   endpoints, so it answers 503 (as ingress-nginx does) rather than 404: the user sees
//!   that the rule was taken and the backend is the problem.
//! - Conflicts (same host+path+pathType, several default backends) go to the oldest
//!   Ingress: creationTimestamp, then namespace/name.
//! - What a path does besides reaching its backend (affinity, timeouts, redirects, body
//!   limit) is its Ingress's, in the route's policy: two Ingresses on one Service keep
//!   their own.

mod aliases;
mod annotations;
mod backend_tls;
mod backends;
mod candidate;
mod certs;
mod class;
mod diagnostic;
pub mod endpoints;
mod gateway;
mod gateway_addresses;
mod gateway_cors;
mod gateway_mirror;
mod gateway_tls;
mod headers;
mod hosts;
mod l4;
mod listener_scope;
mod passthrough;
mod policy;
mod security;
mod settings;
mod syntax;
mod upstream;
mod upstream_tls;
mod www;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use proxy_core::balance::{AffinityKey, Balance, RingKey};
use proxy_core::config::{Config, ProxySettings};
use proxy_core::routes::{HostMatch, PathType, RouteTable, RouteTarget};

pub use annotations::{IngressAnnotations, NGINX_PREFIX, OWN_PREFIX};
pub use candidate::{check_candidate, Verdict};
pub use class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use diagnostic::{Diagnostic, DiagnosticReason, Severity};
pub use gateway::{
    Condition, GatewayApiStatus, ListenerStatus, ObjectStatus, ParentStatus, GATEWAY_CONTROLLER,
};
pub use policy::PolicyDefaults;
pub use settings::{
    decode_key, encode_key, GlobalSettings, AFFINITY_KEY_FIELD, AFFINITY_KEY_LEN,
    AFFINITY_KEY_SECRET,
};

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
    /// `--configmap NS/NAME`: the global settings.
    pub configmap: Option<ObjectKey>,
    /// `--default-backend-service NS/NAME`: the global default backend, on the
    /// Service's first port.
    pub default_backend_service: Option<ObjectKey>,
    /// `--watch-ingress-without-class`: Ingresses that name no class are ours.
    pub watch_ingress_without_class: bool,
    /// Say why each Ingress that is not ours is not served (over a manifest folder, where
    /// every Ingress is meant for us).
    pub explain_unowned: bool,
    /// `--publish-service NS/NAME` in a cluster: the Service whose ready endpoints are
    /// the replicas that share the rate and connection limits ([`Config::replicas`]).
    /// `None` (a manifest folder, or no such flag): one replica.
    pub replica_service: Option<ObjectKey>,
    /// Copied into [`Config::generation`].
    pub generation: u64,
    /// `--enable-ssl-passthrough`: honour the `ssl-passthrough` annotation.
    pub enable_ssl_passthrough: bool,
    /// `--gateway-address-pool`: the addresses Gateways get of their own.
    pub gateway_address_pool: Vec<ipnet::IpNet>,
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
            configmap: None,
            default_backend_service: None,
            watch_ingress_without_class: false,
            explain_unowned: false,
            replica_service: None,
            generation: 0,
            enable_ssl_passthrough: false,
            gateway_address_pool: Vec::new(),
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
    /// The certificates by SNI host, built from `certs` and `default_cert`; its findings
    /// are in `diagnostics`. The HTTPS listener swaps it in as it is.
    pub cert_store: Arc<tls::CertStore>,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses of our class, sorted; their status is ours to write.
    pub owned_ingresses: Vec<ObjectKey>,
    /// From `--configmap`; defaults without one.
    pub settings: GlobalSettings,
    /// From the [`AFFINITY_KEY_SECRET`] Secret; `None` when it is missing or malformed.
    pub affinity_key: Option<[u8; AFFINITY_KEY_LEN]>,
    /// The status conditions of the Gateway API objects of ours.
    pub gateway_status: GatewayApiStatus,
    /// `auth-tls-*`: the CA of each host that asks for client certificates, for the
    /// HTTPS listener's handshakes.
    pub client_auth: Vec<(proxy_core::host::HostPattern, Arc<tls::ClientAuth>)>,
}

/// What one compile learnt that the next may reuse: its output is still a function of
/// the store and options alone (see [`compile_with`]).
#[derive(Default)]
pub struct CompileCache {
    secrets: certs::SecretCache,
    routes: hosts::RouteCache,
    backends: backends::BackendTable,
    /// The reference the default backend was resolved from.
    default_ref: Option<backends::BackendRef>,
    /// The `default-backend` annotations' references.
    annotation_refs: Vec<backends::BackendRef>,
}

/// The replicas sharing the rate and connection limits: the ready endpoint addresses of
/// `service` (the controller's own Service), at least 1; 1 without one, or while the
/// store has none of its endpoints.
fn replicas(store: &Store, service: Option<&ObjectKey>) -> u32 {
    let Some((key, svc)) = service.and_then(|k| Some((k, store.services.get(k)?))) else {
        return 1;
    };
    let ready = endpoints::EndpointIndex::new(store)
        .addresses(key, svc)
        .iter()
        .filter(|a| a.ready)
        .count();
    u32::try_from(ready).unwrap_or(u32::MAX).max(1)
}

/// Compiles the store. Same store and options, same output (but for certificate validity,
/// which is judged against the clock).
pub fn compile(store: &Store, opts: &CompileOptions) -> Compiled {
    compile_with(store, opts, &mut CompileCache::default())
}

/// [`compile`], reusing what `cache` holds from earlier compiles (the publish loop keeps
/// one): TLS Secrets already checked, Ingresses already read, hosts no change reached,
/// Service ports whose Service and endpoints did not change.
/// The result equals [`compile`]'s for the same store and options.
pub fn compile_with(store: &Store, opts: &CompileOptions, cache: &mut CompileCache) -> Compiled {
    let mut diags = Vec::new();
    let previous_secrets = std::mem::take(&mut cache.secrets);

    let classes = class::ClassFilter::new(store, opts);
    let mut ours: Vec<(&ObjectKey, &Arc<Ingress>)> = Vec::new();
    for (key, ing) in store.ingresses.iter() {
        if classes.owns(key, ing) {
            ours.push((key, ing));
        } else if opts.explain_unowned {
            diags.push(classes.explain(key, ing));
        }
    }
    let owned_ingresses = ours.iter().map(|(k, _)| (*k).clone()).collect();
    // Oldest first: every conflict goes to the first claimant. The store iterates in
    // key order and the sort is stable, so equal ages stay in namespace/name order.
    ours.sort_by(|(_, a), (_, b)| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        ta.cmp(&tb)
    });

    let tls = certs::compile_tls(
        store,
        &ours,
        &previous_secrets,
        &mut cache.secrets,
        &mut diags,
    );
    let settings = settings::global_settings(store, opts.configmap.as_ref(), &mut diags);
    let affinity_key = settings::affinity_key(store, &mut diags);
    let defaults = settings.policy_defaults();
    let update = cache
        .routes
        .update(&ours, |host| tls.hosts.covers(host), &defaults);
    let (mut removed, mut added) = (update.removed, update.added);

    // The default backend: the oldest Ingress that sets one that names a Service.
    let mut default_ref: Option<&Arc<hosts::Fragment>> = None;
    for f in &update.fragments {
        diags.extend(f.diags.iter().cloned());
        let Some(backend) = f
            .ingress
            .spec
            .as_ref()
            .and_then(|s| s.default_backend.as_ref())
        else {
            continue;
        };
        if f.ann.canary.is_some() {
            diags.push(Diagnostic::warning(
                Kind::Ingress,
                &f.key,
                "spec.defaultBackend",
                DiagnosticReason::CanaryDefaultBackend,
                "a canary Ingress's default backend is not used: a canary only shares the paths of its main Ingress",
            ));
            continue;
        }
        if let Some(current) = default_ref {
            diags.push(Diagnostic::warning(
                Kind::Ingress,
                &f.key,
                "spec.defaultBackend",
                DiagnosticReason::DuplicateDefaultBackend,
                format!(
                    "the older Ingress {} already sets the default backend; ignored",
                    current.source
                ),
            ));
        } else if backends::reference(&f.key, backend, &"spec.defaultBackend", &mut diags).is_some()
        {
            default_ref = Some(f);
        }
    }
    let default_ref = default_ref.map(|f| backends::BackendRef {
        fragment: f.clone(),
        field: backends::RefField::Default,
    });
    let previous_default = cache.default_ref.take();
    let same_default = match (&previous_default, &default_ref) {
        (Some(a), Some(b)) => Arc::ptr_eq(&a.fragment, &b.fragment),
        (None, None) => true,
        _ => false,
    };
    if !same_default {
        removed.extend(previous_default);
        added.extend(default_ref.clone());
    }
    // The `default-backend` annotations: one reference per Ingress that sets one (a
    // canary's plays no part), kept while its Ingress is unchanged.
    let annotation_refs: Vec<backends::BackendRef> = update
        .fragments
        .iter()
        .filter(|f| f.ann.default_backend.is_some() && f.ann.canary.is_none())
        .map(|f| backends::BackendRef {
            fragment: f.clone(),
            field: backends::RefField::Annotation,
        })
        .collect();
    let previous_annotations = std::mem::take(&mut cache.annotation_refs);
    let kept = |list: &[backends::BackendRef], r: &backends::BackendRef| {
        list.iter().any(|o| Arc::ptr_eq(&o.fragment, &r.fragment))
    };
    removed.extend(
        previous_annotations
            .iter()
            .filter(|r| !kept(&annotation_refs, r))
            .cloned(),
    );
    added.extend(
        annotation_refs
            .iter()
            .filter(|r| !kept(&previous_annotations, r))
            .cloned(),
    );
    cache.annotation_refs = annotation_refs;
    cache.backends.update(
        store,
        &removed,
        &added,
        opts.default_backend_service.as_ref(),
    );
    let default_backend = default_ref.as_ref().and_then(|r| {
        // The default backend serves every host, so only force-ssl-redirect redirects,
        // and no host's client certificates apply (nginx's default server has none).
        let mut ann = IngressAnnotations {
            ssl_redirect: Some(false),
            ..(*r.fragment.ann).clone()
        };
        ann.security.client_tls = None;
        Some(RouteTarget {
            backend: cache.backends.id_of(r)?,
            policy: Arc::new(policy::route_policy(&ann, &defaults, false, "/", None)),
            source: r.fragment.source.clone(),
        })
    });
    cache.default_ref = default_ref;
    // The global default backend: no Ingress's, so only force-ssl-redirect could
    // redirect, and no annotation applies; the ConfigMap's custom-http-errors do.
    let default_service = cache.backends.pinned_id().map(|backend| RouteTarget {
        backend,
        policy: Arc::new(policy::route_policy(
            &IngressAnnotations {
                ssl_redirect: Some(false),
                ..IngressAnnotations::default()
            },
            &defaults,
            false,
            "/",
            None,
        )),
        source: "".into(),
    });
    diags.extend(cache.routes.diagnostics().cloned());
    diags.extend(cache.backends.diagnostics().cloned());
    let www_hosts = www::redirect_hosts(&update.fragments, &cache.routes, &defaults, &mut diags);
    let alias_hosts = aliases::alias_hosts(&update.fragments, &cache.routes, &mut diags);

    let l4 = if opts.service_proxy {
        let index = endpoints::EndpointIndex::new(store);
        l4::compile_l4(store, &index, opts, &mut diags)
    } else {
        Vec::new()
    };
    let (credentials, digest_credentials) =
        security::credentials(store, &update.fragments, &mut diags);
    let (mut client_auth_hosts, mut client_auth) =
        security::client_auth(store, &update.fragments, &mut diags);
    let gateway = gateway::compile_gateway(
        store,
        &defaults,
        gateway::Secrets {
            previous: &previous_secrets,
            used: &mut cache.secrets,
        },
        &opts.gateway_address_pool,
        &mut diags,
    );
    // After the Ingresses' client certificate settings, as their certificates below.
    gateway_tls::merge_frontend(
        &gateway.frontend,
        &mut client_auth_hosts,
        &mut client_auth,
        &mut diags,
    );
    // After the Ingresses' certificates: on a host both claim, the Ingress's is kept.
    let mut all_certs = tls.certs;
    all_certs.extend(gateway.certs);
    let mut gateway_status = gateway.status;
    let mut backends = cache.backends.backends();
    for backend in gateway.backends {
        backends
            .entry(backend.id.clone())
            .or_insert_with(|| Arc::new(backend));
    }
    let backend_tls = backend_tls::backend_tls(
        store,
        backends.keys(),
        &gateway.backend_clients,
        &mut gateway_status,
        &mut diags,
    );
    let routes = RouteTable::from_hosts(
        cache
            .routes
            .tables()
            .chain(alias_hosts)
            .chain(www_hosts)
            .chain(gateway.hosts),
    );
    // Only a compile with some `upstream-hash-by` walks the routes for their rings.
    let hash_rings = if update
        .fragments
        .iter()
        .any(|f| f.ann.upstream.hash_by.is_some())
    {
        hash_rings(&routes, default_backend.as_ref())
    } else {
        Vec::new()
    };
    let mut config = Config {
        generation: opts.generation,
        routes,
        hash_rings,
        default_backend,
        default_service,
        backends,
        l4,
        settings: ProxySettings {
            proxy_set_headers: headers::proxy_set_headers(
                store,
                &settings,
                opts.configmap.as_ref(),
                &mut diags,
            ),
            ..settings.proxy_settings()
        },
        response_headers: headers::custom_headers(store, &update.fragments, &settings, &mut diags),
        upstream_tls: upstream_tls::upstream_tls(store, &update.fragments, &mut diags)
            .into_iter()
            .chain(backend_tls.settings)
            .collect(),
        backend_tls: backend_tls.backends,
        backend_client_certs: backend_tls.clients,
        gateway_sni: gateway.sni,
        routes_at: gateway
            .at_addresses
            .into_iter()
            .map(|(ip, hosts)| (ip, RouteTable::from_hosts(hosts)))
            .collect(),
        credentials,
        digest_credentials,
        auth_proxy_set_headers: security::auth_proxy_set_headers(
            store,
            &update.fragments,
            match (&settings.global_auth, opts.configmap.as_ref()) {
                (policy::GlobalAuth::On(auth), Some(key)) => Some((&**auth, key)),
                _ => None,
            },
            &mut diags,
        ),
        client_auth,
        affinity_key: affinity_key.map(AffinityKey::new),
        replicas: replicas(store, opts.replica_service.as_ref()),
        passthrough: Default::default(),
    };
    config.passthrough = passthrough::passthrough_hosts(
        &update.fragments,
        &config.routes,
        opts.enable_ssl_passthrough,
        &mut diags,
    );
    let default_cert = opts.default_certificate.as_ref().and_then(|k| {
        certs::default_cert(store, k, &previous_secrets, &mut cache.secrets, &mut diags)
    });
    let cert_store = Arc::new(certs::cert_store(
        &all_certs,
        default_cert.as_ref(),
        &mut diags,
    ));

    // One order whatever the cache held, and each thing said once (one slice can be
    // read for several ports of its Service).
    diags.sort_unstable_by(|a, b| {
        (
            a.kind, &a.object, &a.field, a.reason, a.severity, &a.message,
        )
            .cmp(&(
                b.kind, &b.object, &b.field, b.reason, b.severity, &b.message,
            ))
    });
    diags.dedup();

    Compiled {
        config,
        certs: all_certs,
        default_cert,
        cert_store,
        diagnostics: diags,
        owned_ingresses,
        settings,
        affinity_key,
        gateway_status,
        client_auth: client_auth_hosts,
    }
}

/// The rings the routes that hash (`upstream-hash-by`) look their endpoints up on: one
/// per backend and subset size, sorted.
fn hash_rings(routes: &RouteTable, default: Option<&RouteTarget>) -> Vec<RingKey> {
    let targets = routes
        .rules()
        .into_iter()
        .map(|r| &r.target)
        .chain(routes.regex_rules().into_iter().map(|r| &r.target))
        .chain(default);
    let mut rings: Vec<RingKey> = targets
        .filter_map(|t| match &t.policy.balance {
            Balance::Hash(by) => Some(RingKey {
                backend: t.backend.clone(),
                subset: by.subset.unwrap_or(0),
            }),
            _ => None,
        })
        .collect();
    rings.sort_unstable();
    rings.dedup();
    rings
}

/// `spec.rules[i].http.paths[j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    let host = host.to_string();
    if owner == source {
        Diagnostic::warning(
            Kind::Ingress,
            key,
            field,
            DiagnosticReason::DuplicatePath,
            format!("host {host:?} path {path:?} ({path_type}) is declared earlier in this Ingress; the first wins"),
        )
    } else {
        Diagnostic::error(
            Kind::Ingress,
            key,
            field,
            DiagnosticReason::DuplicatePath,
            format!("host {host:?} path {path:?} ({path_type}) is already claimed by the older Ingress {owner}; path ignored"),
        )
    }
}
