//! One Ingress judged against the store before it is stored: what the validating webhook
//! asks.
//!
//! The candidate is compiled with every rule [`compile`] has, in a store cut down to what
//! can change its outcome: itself, the Ingresses naming one of its hosts (rule or TLS;
//! path claims and TLS claims go to the oldest), the Ingresses setting a default backend
//! when it sets one, and the Services and Secrets it names. A compile of a handful of
//! objects costs microseconds where one of the whole store costs tens of milliseconds, and
//! the findings about the candidate are the same, because every rule that relates two
//! Ingresses relates Ingresses that share a host (or, for the default backend, that both
//! set one).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::class::ClassFilter;
use super::{compile, CompileOptions, Diagnostic, DiagnosticReason, Severity};
use crate::store::{Kind, ObjectKey, Store};

/// What the compile says about a candidate Ingress.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the Ingress is of our class; when it is not, nothing is said about it.
    pub ours: bool,
    /// Findings that make the Ingress not served as written, or unsafe to serve.
    pub errors: Vec<Diagnostic>,
    /// Findings worth telling its author that do not stop it (ignored cosmetic
    /// annotations, and problems with objects that may well be created after it).
    pub warnings: Vec<Diagnostic>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Errors that depend on objects commonly created after the Ingress (`kubectl apply -f`
/// of a folder goes in name order): reported as warnings, never a reason to refuse it.
const LATER_OBJECTS: &[DiagnosticReason] = &[
    DiagnosticReason::ServiceNotFound,
    DiagnosticReason::ServicePortNotFound,
    DiagnosticReason::NoEndpoints,
    DiagnosticReason::CanaryWithoutMain,
];

/// Judges `candidate` (a new Ingress, or a new version of one in the store) against
/// `store`. A candidate without a creation time (not yet stored) counts as the newest.
pub fn check_candidate(store: &Store, opts: &CompileOptions, mut candidate: Ingress) -> Verdict {
    if candidate.metadata.creation_timestamp.is_none() {
        candidate.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }
    let key = ObjectKey::of(&candidate);
    let candidate = Arc::new(candidate);
    let classes = ClassFilter::new(store, opts);
    if !classes.owns(&key, &candidate) {
        return Verdict::default();
    }
    let small = neighbourhood(store, opts, &key, &candidate);
    let opts = CompileOptions {
        // Services' L4 forwarding has nothing to say about an Ingress.
        service_proxy: false,
        ..opts.clone()
    };
    let compiled = compile(&small, &opts);
    let mut verdict = Verdict {
        ours: true,
        ..Verdict::default()
    };
    for d in compiled.diagnostics {
        if d.kind != Kind::Ingress || d.object != key {
            continue;
        }
        if d.severity == Severity::Error && !LATER_OBJECTS.contains(&d.reason) {
            verdict.errors.push(d);
        } else {
            verdict.warnings.push(d);
        }
    }
    verdict
}

/// The store as far as `candidate` can see it (see the module docs).
fn neighbourhood(
    store: &Store,
    opts: &CompileOptions,
    key: &ObjectKey,
    candidate: &Arc<Ingress>,
) -> Store {
    let hosts = hosts_of(candidate);
    let wants_default = candidate
        .spec
        .as_ref()
        .is_some_and(|s| s.default_backend.is_some());
    let mut ingresses: BTreeMap<ObjectKey, Arc<Ingress>> = BTreeMap::new();
    for (k, ing) in store.ingresses.iter() {
        if k == key {
            continue;
        }
        let shares_host = hosts_of_iter(ing).any(|h| hosts.iter().any(|c| same_host(c, h)));
        let both_default = wants_default
            && ing
                .spec
                .as_ref()
                .is_some_and(|s| s.default_backend.is_some());
        if shares_host || both_default {
            ingresses.insert(k.clone(), ing.clone());
        }
    }
    ingresses.insert(key.clone(), candidate.clone());

    let mut services = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut copy = |ns: &str, service: Option<&str>, secret: Option<&str>| {
        if let Some(name) = service {
            let k = ObjectKey::new(ns, name);
            if let Some(s) = store.services.get(&k) {
                services.insert(k, s.clone());
            }
        }
        if let Some(name) = secret {
            let k = ObjectKey::new(ns, name);
            if let Some(s) = store.secrets.get(&k) {
                secrets.insert(k, s.clone());
            }
        }
    };
    for (k, ing) in &ingresses {
        let spec = ing.spec.as_ref();
        let backends = spec
            .and_then(|s| s.default_backend.as_ref())
            .into_iter()
            .chain(
                spec.and_then(|s| s.rules.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.http.as_ref())
                    .flat_map(|h| h.paths.iter().map(|p| &p.backend)),
            );
        for b in backends {
            copy(
                &k.namespace,
                b.service.as_ref().map(|s| s.name.as_str()),
                None,
            );
        }
        for value in ing.metadata.annotations.iter().flat_map(|a| {
            [super::OWN_PREFIX, super::NGINX_PREFIX]
                .map(|p| a.get(&format!("{p}default-backend")))
                .into_iter()
                .flatten()
        }) {
            copy(&k.namespace, Some(value.trim()), None);
        }
        for tls in spec.and_then(|s| s.tls.as_ref()).into_iter().flatten() {
            copy(&k.namespace, None, tls.secret_name.as_deref());
        }
    }
    if let Some(k) = &opts.default_certificate {
        copy(&k.namespace, None, Some(&k.name));
    }
    Store {
        ingresses: Arc::new(ingresses),
        ingress_classes: store.ingress_classes.clone(),
        services: Arc::new(services),
        // Endpoints decide which pods get traffic, nothing about the Ingress itself.
        endpoint_slices: Arc::default(),
        endpoints: Arc::default(),
        secrets: Arc::new(secrets),
        config_maps: store.config_maps.clone(),
        gateway_classes: store.gateway_classes.clone(),
        gateways: store.gateways.clone(),
        http_routes: store.http_routes.clone(),
        grpc_routes: store.grpc_routes.clone(),
        reference_grants: store.reference_grants.clone(),
        backend_tls_policies: store.backend_tls_policies.clone(),
        namespaces: store.namespaces.clone(),
    }
}

/// The hosts an Ingress names in its rules and TLS entries, as written (`""` for a rule
/// without a host).
fn hosts_of_iter(ing: &Ingress) -> impl Iterator<Item = &str> {
    let spec = ing.spec.as_ref();
    let rules = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.host.as_deref().unwrap_or(""));
    let tls = spec
        .and_then(|s| s.tls.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|t| t.hosts.iter().flatten().map(String::as_str));
    rules.chain(tls)
}

fn hosts_of(ing: &Ingress) -> Vec<&str> {
    let mut hosts: Vec<&str> = hosts_of_iter(ing).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

/// Host names compare case-insensitively, a trailing dot aside. Erring towards "same"
/// only adds an Ingress to the compile.
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::store_from_yaml;

    const BASE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: old, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: portico
  rules:
  - host: taken.example.com
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#;

    fn candidate(yaml: &str) -> Ingress {
        let mut ing: Ingress = serde_yaml_ng::from_str(yaml).unwrap();
        ing.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        ing
    }

    fn check(yaml: &str) -> Verdict {
        check_candidate(
            &store_from_yaml(BASE),
            &CompileOptions::default(),
            candidate(yaml),
        )
    }

    fn reasons(d: &[Diagnostic]) -> Vec<(&str, DiagnosticReason)> {
        d.iter().map(|d| (d.field.as_str(), d.reason)).collect()
    }

    fn ingress(annotations: &str, host: &str, path: &str, tls: &str) -> String {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: new, annotations: {{{annotations}}}}}
spec:
  ingressClassName: portico
  {tls}
  rules:
  - host: {host}
    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
"#
        )
    }

    #[test]
    fn a_clean_ingress_is_allowed_without_warnings() {
        let v = check(&ingress("", "free.example.com", "/", ""));
        assert!(v.ours && v.allowed(), "{v:?}");
        assert!(v.warnings.is_empty(), "{v:?}");
    }

    #[test]
    fn a_path_an_older_ingress_claims_is_refused() {
        let v = check(&ingress("", "TAKEN.example.com", "/api", ""));
        assert_eq!(
            reasons(&v.errors),
            [(
                "spec.rules[0].http.paths[0]",
                DiagnosticReason::DuplicatePath
            )]
        );
        assert!(v.errors[0].message.contains("default/old"), "{v:?}");
        // Another path on the same host is fine.
        assert!(check(&ingress("", "taken.example.com", "/other", "")).allowed());
    }

    #[test]
    fn a_newer_version_of_the_claimant_itself_is_allowed() {
        let mut v = candidate(&ingress("", "taken.example.com", "/api", ""));
        v.metadata.name = Some("old".into());
        let verdict = check_candidate(&store_from_yaml(BASE), &CompileOptions::default(), v);
        assert!(verdict.allowed(), "{verdict:?}");
    }

    #[test]
    fn bad_annotations_and_snippets_are_refused_cosmetic_ones_warned() {
        let v = check(&ingress(
            r#""nginx.ingress.kubernetes.io/proxy-connect-timeout": "soon""#,
            "free.example.com",
            "/",
            "",
        ));
        assert_eq!(
            reasons(&v.errors),
            [(
                "metadata.annotations[\"nginx.ingress.kubernetes.io/proxy-connect-timeout\"]",
                DiagnosticReason::InvalidAnnotation
            )]
        );
        let v = check(&ingress(
            r#""nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x""#,
            "free.example.com",
            "/",
            "",
        ));
        assert_eq!(
            reasons(&v.errors),
            [("metadata.annotations", DiagnosticReason::SnippetNotExecuted)]
        );
        let v = check(&ingress(
            r#""nginx.ingress.kubernetes.io/enable-access-log": "false""#,
            "free.example.com",
            "/",
            "",
        ));
        assert!(v.allowed(), "{v:?}");
        assert_eq!(
            reasons(&v.warnings),
            [(
                "metadata.annotations",
                DiagnosticReason::UnsupportedAnnotation
            )]
        );
    }

    #[test]
    fn a_missing_or_broken_tls_secret_is_refused() {
        let tls = "tls: [{hosts: [free.example.com], secretName: nope}]";
        let v = check(&ingress("", "free.example.com", "/", tls));
        assert_eq!(
            reasons(&v.errors),
            [("spec.tls[0].secretName", DiagnosticReason::SecretNotFound)]
        );
        let mut store = store_from_yaml(BASE);
        store.apply(crate::store::Object::Secret(
            serde_yaml_ng::from_str(
                "{apiVersion: v1, kind: Secret, type: kubernetes.io/tls, \
                 metadata: {name: nope, namespace: default}, \
                 data: {tls.crt: Y2VydA==, tls.key: a2V5}}",
            )
            .unwrap(),
        ));
        let v = check_candidate(
            &store,
            &CompileOptions::default(),
            candidate(&ingress("", "free.example.com", "/", tls)),
        );
        assert_eq!(
            reasons(&v.errors),
            [(
                "spec.tls[0].secretName",
                DiagnosticReason::InvalidCertificate
            )]
        );
    }

    #[test]
    fn a_missing_service_is_only_a_warning() {
        let v =
            check(&ingress("", "free.example.com", "/", "").replace("name: web", "name: later"));
        assert!(v.allowed(), "{v:?}");
        assert_eq!(
            reasons(&v.warnings),
            [(
                "spec.rules[0].http.paths[0].backend.service.name",
                DiagnosticReason::ServiceNotFound
            )]
        );
    }

    #[test]
    fn other_classes_are_not_judged() {
        let v = check(
            &ingress(
                r#""nginx.ingress.kubernetes.io/configuration-snippet": "x""#,
                "taken.example.com",
                "/api",
                "",
            )
            .replace("ingressClassName: portico", "ingressClassName: nginx"),
        );
        assert_eq!(v, Verdict::default());
        assert!(v.allowed());
    }
}
