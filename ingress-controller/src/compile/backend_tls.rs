//! Gateway API BackendTLSPolicy: which backends are reached over TLS, verified how.
//!
//! A policy targets a Service of its namespace (`sectionName`: one port, by name) and
//! applies to every backend of the compile that is that Service (port): the routes of
//! HTTPRoutes and their mirrors, and Ingress paths to it too, since the policy speaks
//! for the Service. The pod's certificate must chain to the CA certificates of the
//! `caCertificateRefs` (ConfigMaps, key `ca.crt`), or the system's with
//! `wellKnownCACertificates: System`, and carry `hostname`, which also goes out as SNI;
//! with `subjectAltNames` (type Hostname), one of those instead. A policy that cannot
//! be honoured (a bad CA reference, another set of well-known CAs, a malformed
//! subjectAltName) still claims its backends, whose requests then fail (503) rather
//! than go out in plaintext or unverified.
//!
//! Of two policies for the same Service and sectionName, the older (then by
//! namespace/name) wins and the other is not Accepted (`Conflicted`); one naming the
//! port beats one for the whole Service on that port.
//!
//! A Gateway with a backend client certificate gets each setting again, presenting
//! that certificate: its routes name it (`RoutePolicy::backend_client_cert`).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use proxy_core::config::BackendId;
use proxy_core::http::upstream_tls::UpstreamTls;
use proxy_core::pipeline::BackendClientCert;
use proxy_core::routes::HostPattern;
use tls::{BackendCa, SubjectAltName};

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::gateway::{Condition, GatewayApiStatus, ObjectStatus, ParentStatus};
use crate::gateway_api::BackendTLSPolicy;
use crate::store::{Kind, ObjectKey, Store};

const CA_KEY: &str = "ca.crt";

/// What the policies add to a compile.
#[derive(Default)]
pub(super) struct BackendTls {
    /// Each backend a policy claims, with the key of its setting in `settings` (absent
    /// there when the policy cannot be honoured: requests fail).
    pub backends: HashMap<BackendId, Arc<str>>,
    pub settings: HashMap<Arc<str>, Arc<UpstreamTls>>,
    /// Per Gateway backend client certificate (by the key its routes name), each
    /// setting's key presenting it.
    pub clients: HashMap<Arc<str>, BackendClientCert>,
}

/// What a policy's setting is made of, to make it again with a client certificate.
struct Recipe {
    pem: Vec<u8>,
    system: bool,
    sans: Vec<SubjectAltName>,
    hostname: String,
}

impl Recipe {
    /// The setting `id`, presenting `client` (`tls.crt`, `tls.key`) when the pod asks.
    fn make(
        &self,
        id: Arc<str>,
        client: Option<(&[u8], &[u8])>,
    ) -> Result<UpstreamTls, tls::UpstreamTlsError> {
        let ca = if self.system {
            BackendCa::System
        } else {
            BackendCa::Pem(&self.pem)
        };
        let config = tls::backend_tls_config(ca, &self.sans, client)?;
        Ok(UpstreamTls::new(
            id,
            config,
            Some(&self.hostname.to_ascii_lowercase()),
            true,
            true,
        ))
    }
}

/// One judged policy.
struct Judged {
    key: ObjectKey,
    /// The setting's key, and the setting when it could be made (with its recipe).
    tls: (Arc<str>, Option<(Arc<UpstreamTls>, Recipe)>),
    accepted: Condition,
    resolved: Condition,
    /// `(service, sectionName)` of each targetRef to a Service it applies to (a
    /// conflict lost takes one out).
    targets: Vec<(String, Option<String>)>,
    /// The Services it names, for its ancestors whatever it applies to.
    services: Vec<String>,
}

/// The policies of the store applied to `backends` (the compile's backend ids); their
/// status goes to `status`, with ancestors the Gateways whose attached routes use a
/// backend of the policy's Service.
pub(super) fn backend_tls<'a>(
    store: &Store,
    backends: impl Iterator<Item = &'a BackendId>,
    clients: &[(Arc<str>, Vec<u8>, Vec<u8>)],
    status: &mut GatewayApiStatus,
    diags: &mut Vec<Diagnostic>,
) -> BackendTls {
    if store.backend_tls_policies.is_empty() {
        return BackendTls::default();
    }
    let mut policies: Vec<(&ObjectKey, &Arc<BackendTLSPolicy>)> =
        store.backend_tls_policies.iter().collect();
    policies.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref();
        let tb = b.metadata.creation_timestamp.as_ref();
        ta.cmp(&tb).then(ka.cmp(kb))
    });
    let mut judged: Vec<Judged> = policies
        .into_iter()
        .map(|(key, p)| judge(store, key, p, diags))
        .collect();
    // Conflicts: the first (oldest) policy for a Service and sectionName keeps it.
    let mut claimed: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for j in &mut judged {
        let mut lost = false;
        j.targets.retain(|(service, section)| {
            let fresh = claimed.insert((j.key.namespace.clone(), service.clone(), section.clone()));
            lost |= !fresh;
            fresh
        });
        if lost {
            let message = "an older BackendTLSPolicy targets the same Service and sectionName";
            diags.push(Diagnostic::error(
                Kind::BackendTLSPolicy,
                &j.key,
                "spec.targetRefs",
                DiagnosticReason::InvalidUpstreamTls,
                format!("{message} (Conflicted); not applied there"),
            ));
            if j.targets.is_empty() {
                j.accepted = Condition::new(
                    "Accepted",
                    false,
                    "Conflicted",
                    message,
                    j.accepted.observed_generation,
                );
            }
        }
    }
    let mut out = BackendTls::default();
    for id in backends {
        // The policy naming the port first, then one for the whole Service.
        let port_name = port_name(store, id);
        let pick = |want_section: bool| {
            judged.iter().find(|j| {
                *j.key.namespace == *id.namespace
                    && j.targets.iter().any(|(service, section)| {
                        **service == *id.service
                            && match (section, want_section) {
                                (Some(s), true) => {
                                    Some(s.as_str()) == port_name.as_deref()
                                        || s.as_str() == &*id.port
                                }
                                (None, false) => true,
                                _ => false,
                            }
                    })
            })
        };
        let Some(j) = pick(true).or_else(|| pick(false)) else {
            continue;
        };
        out.backends.insert(id.clone(), j.tls.0.clone());
        if let Some((tls, _)) = &j.tls.1 {
            out.settings.insert(j.tls.0.clone(), tls.clone());
        }
    }
    // Each setting in use again, presenting each Gateway's client certificate.
    for (client, cert, key) in clients {
        let with = out.clients.entry(client.clone()).or_default();
        for j in &judged {
            let Some((_, recipe)) = &j.tls.1 else {
                continue;
            };
            if !out.settings.contains_key(&j.tls.0) {
                continue;
            }
            let id: Arc<str> = format!("{} with {client}", j.tls.0).into();
            match recipe.make(id.clone(), Some((cert, key))) {
                Ok(tls) => {
                    out.settings.insert(id.clone(), Arc::new(tls));
                    with.insert(j.tls.0.clone(), id);
                }
                // Left out: requests through that Gateway to its backends fail.
                Err(e) => diags.push(Diagnostic::error(
                    Kind::BackendTLSPolicy,
                    &j.key,
                    "spec.validation",
                    DiagnosticReason::InvalidUpstreamTls,
                    format!("cannot present {client} to its backends: {e}; those requests fail"),
                )),
            }
        }
    }
    for j in judged {
        let ancestors = ancestors(store, status, &j);
        let parents = ancestors
            .into_iter()
            .map(|gateway| ParentStatus {
                gateway,
                section_name: None,
                port: None,
                conditions: vec![j.accepted.clone(), j.resolved.clone()],
            })
            .collect();
        status.insert(
            (Kind::BackendTLSPolicy, j.key.clone()),
            ObjectStatus {
                parents,
                ..ObjectStatus::default()
            },
        );
    }
    out
}

/// The name of the Service port a backend id names by number (or by name).
fn port_name(store: &Store, id: &BackendId) -> Option<String> {
    let service = store
        .services
        .get(&ObjectKey::new(&id.namespace, &id.service))?;
    service
        .spec
        .as_ref()?
        .ports
        .iter()
        .flatten()
        .find(|p| p.port.to_string() == *id.port || p.name.as_deref() == Some(&*id.port))
        .and_then(|p| p.name.clone())
}

/// The Gateways (of ours) whose accepted routes send requests to a Service the policy
/// targets.
fn ancestors(store: &Store, status: &GatewayApiStatus, j: &Judged) -> BTreeSet<ObjectKey> {
    let mut out = BTreeSet::new();
    for (key, route) in store.http_routes.iter() {
        let Some(route_status) = status.get(&(Kind::HTTPRoute, key.clone())) else {
            continue;
        };
        let uses = route.spec.rules.iter().flatten().any(|rule| {
            let own_filters = rule.backend_refs.iter().flat_map(|r| &r.filters);
            let mirrors = rule
                .filters
                .iter()
                .chain(own_filters)
                .filter_map(|f| f.request_mirror.as_ref())
                .map(|m| &m.backend_ref);
            rule.backend_refs.iter().chain(mirrors).any(|r| {
                r.kind.as_deref().unwrap_or("Service") == "Service"
                    && r.group.as_deref().unwrap_or("").is_empty()
                    && r.namespace.as_deref().unwrap_or(&key.namespace) == j.key.namespace
                    && j.services.contains(&r.name)
            })
        });
        if !uses {
            continue;
        }
        for p in &route_status.parents {
            if p.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status)
            {
                out.insert(p.gateway.clone());
            }
        }
    }
    out
}

/// Checks a policy and makes its TLS setting; each problem is also a diagnostic.
fn judge(
    store: &Store,
    key: &ObjectKey,
    p: &BackendTLSPolicy,
    diags: &mut Vec<Diagnostic>,
) -> Judged {
    let generation = p.metadata.generation;
    let v = &p.spec.validation;
    let mut targets = Vec::new();
    for (i, t) in p.spec.target_refs.iter().enumerate() {
        if !t.group.is_empty() || t.kind != "Service" {
            diags.push(Diagnostic::warning(
                Kind::BackendTLSPolicy,
                key,
                format!("spec.targetRefs[{i}]"),
                DiagnosticReason::InvalidUpstreamTls,
                format!(
                    "target kind {:?} of group {:?} is not supported, only Services; ignored",
                    t.kind, t.group
                ),
            ));
            continue;
        }
        targets.push((t.name.clone(), t.section_name.clone()));
    }
    let mut bad = |field: &str, message: String| {
        diags.push(Diagnostic::error(
            Kind::BackendTLSPolicy,
            key,
            field.to_owned(),
            DiagnosticReason::InvalidUpstreamTls,
            format!("{message}; requests to its backends fail"),
        ));
        message
    };
    let accepted_ok = Condition::new("Accepted", true, "Accepted", "", generation);
    let resolved_ok = Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation);
    let id: Arc<str> = format!("BackendTLSPolicy {key}").into();
    let services: Vec<String> = targets.iter().map(|(s, _)| s.clone()).collect();
    let refused = |accepted: Condition, resolved: Condition, targets| Judged {
        key: key.clone(),
        tls: (id.clone(), None),
        accepted,
        resolved,
        targets,
        services: services.clone(),
    };
    let invalid =
        |message: String| Condition::new("Accepted", false, "Invalid", message, generation);
    if HostPattern::parse(&v.hostname).map_or(true, |h| h.is_wildcard()) {
        let m = bad(
            "spec.validation.hostname",
            format!("hostname {:?} is not a DNS name", v.hostname),
        );
        return refused(invalid(m), resolved_ok, targets);
    }
    let system = match v.well_known_ca_certificates.as_deref() {
        None | Some("") => false,
        Some("System") if v.ca_certificate_refs.is_empty() => true,
        Some("System") => {
            let m = bad(
                "spec.validation",
                "only one of caCertificateRefs and wellKnownCACertificates may be set".into(),
            );
            return refused(invalid(m), resolved_ok, targets);
        }
        Some(other) => {
            let m = bad(
                "spec.validation.wellKnownCACertificates",
                format!("wellKnownCACertificates {other:?} is not supported, only System"),
            );
            return refused(invalid(m), resolved_ok, targets);
        }
    };
    let mut sans = Vec::new();
    for (i, san) in v.subject_alt_names.iter().enumerate() {
        match (san.type_.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(h), _) if HostPattern::parse(h).is_ok() => {
                sans.push(SubjectAltName::Hostname(h.to_ascii_lowercase()))
            }
            // The API asks for a scheme and a scheme-specific part.
            ("URI", _, Some(u))
                if u.split_once(':')
                    .is_some_and(|(s, r)| !s.is_empty() && !r.is_empty()) =>
            {
                sans.push(SubjectAltName::Uri(u.clone()))
            }
            _ => {
                let m = bad(
                    &format!("spec.validation.subjectAltNames[{i}]"),
                    format!(
                        "subjectAltName of type {:?} needs a DNS name (Hostname) or an absolute URI (URI)",
                        san.type_
                    ),
                );
                return refused(invalid(m), resolved_ok, targets);
            }
        }
    }
    if v.ca_certificate_refs.is_empty() && !system {
        let m = bad(
            "spec.validation.caCertificateRefs",
            "no caCertificateRefs".into(),
        );
        return refused(invalid(m), resolved_ok, targets);
    }
    let mut pem = Vec::new();
    let mut problem: Option<(&'static str, String)> = None;
    for (i, r) in v.ca_certificate_refs.iter().enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            let m = bad(
                &field,
                format!(
                    "kind {:?} of group {:?} is not supported, only ConfigMaps",
                    r.kind, r.group
                ),
            );
            problem.get_or_insert(("InvalidKind", m));
            continue;
        }
        let ca = store
            .config_maps
            .get(&ObjectKey::new(&key.namespace, &r.name))
            .ok_or("ConfigMap not found")
            .and_then(|cm| {
                cm.data
                    .as_ref()
                    .and_then(|d| d.get(CA_KEY))
                    .map(|s| s.as_bytes().to_vec())
                    .or_else(|| {
                        cm.binary_data
                            .as_ref()
                            .and_then(|d| d.get(CA_KEY))
                            .map(|b| b.0.clone())
                    })
                    .ok_or("the ConfigMap holds no ca.crt")
            })
            .and_then(|ca| {
                // Each bundle is checked on its own, so the message names the bad one.
                tls::backend_tls_config(BackendCa::Pem(&ca), &[], None)
                    .map(|_| ca)
                    .map_err(|_| "ca.crt holds no usable PEM certificate")
            });
        match ca {
            Ok(ca) => {
                pem.extend_from_slice(&ca);
                pem.push(b'\n');
            }
            Err(why) => {
                let m = bad(&field, format!("ConfigMap {:?}: {why}", r.name));
                problem.get_or_insert(("InvalidCACertificateRef", m));
            }
        }
    }
    if let Some((reason, message)) = problem {
        let resolved = Condition::new("ResolvedRefs", false, reason, message.clone(), generation);
        let accepted = if pem.is_empty() {
            Condition::new(
                "Accepted",
                false,
                "NoValidCACertificate",
                message,
                generation,
            )
        } else {
            accepted_ok
        };
        // Fails closed even when some references are good: one named is unusable.
        return refused(accepted, resolved, targets);
    }
    // The contents are part of the identity: connections made with an older CA are
    // not reused once it changes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&pem, system, &v.hostname, &sans).hash(&mut h);
    let id: Arc<str> = format!("{id} content={:016x}", h.finish()).into();
    let recipe = Recipe {
        pem,
        system,
        sans,
        hostname: v.hostname.clone(),
    };
    let tls = match recipe.make(id.clone(), None) {
        Ok(tls) => tls,
        Err(e) => {
            let m = bad("spec.validation", e.to_string());
            return refused(invalid(m), resolved_ok, targets);
        }
    };
    Judged {
        key: key.clone(),
        tls: (id, Some((Arc::new(tls), recipe))),
        accepted: accepted_ok,
        resolved: resolved_ok,
        targets,
        services,
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::config::BackendId;

    use super::super::tests::store_from_yaml;
    use super::super::{compile, CompileOptions, Compiled};
    use crate::store::{Kind, ObjectKey};

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn compiled(policies: &str) -> Compiled {
        let ca: String = ca_pem().lines().map(|l| format!("    {l}\n")).collect();
        let yaml = format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: app}}
spec:
  gatewayClassName: portico
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: app}}
spec: {{ports: [{{name: https, port: 443}}, {{name: admin, port: 8443}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: plain, namespace: app}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: app}}
data:
  ca.crt: |
{ca}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: no-ca, namespace: app}}
data: {{other: x}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: app}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{value: /s}}}}]
    backendRefs: [{{name: secure, port: 443}}]
  - matches: [{{path: {{value: /a}}}}]
    backendRefs: [{{name: secure, port: 8443}}]
  - matches: [{{path: {{value: /p}}}}]
    backendRefs: [{{name: plain, port: 80}}]
{policies}"#
        );
        compile(&store_from_yaml(&yaml), &CompileOptions::default())
    }

    fn policy(name: &str, target: &str, ca: &str, created: &str) -> String {
        format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: app, creationTimestamp: "{created}"}}
spec:
  targetRefs: [{{group: "", kind: Service, {target}}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca}}}]
    hostname: secure.app.internal
"#
        )
    }

    fn conditions(c: &Compiled, name: &str) -> String {
        let st = &c.gateway_status[&(Kind::BackendTLSPolicy, ObjectKey::new("app", name))];
        st.to_string()
    }

    fn id(port: &str) -> BackendId {
        BackendId::new("app", "secure", port)
    }

    #[test]
    fn a_policy_claims_its_service_with_a_usable_setting() {
        let c = compiled(&policy("p", "name: secure", "ca", "2024-01-01T00:00:00Z"));
        let key = c.config.backend_tls.get(&id("443")).expect("claimed");
        assert_eq!(c.config.backend_tls.get(&id("8443")), Some(key));
        let tls = c.config.upstream_tls.get(key).expect("usable");
        assert!(tls.verify && tls.sni);
        assert!(!c
            .config
            .backend_tls
            .contains_key(&BackendId::new("app", "plain", "80")));
        assert_eq!(
            conditions(&c, "p"),
            "parent app/gw: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)"
        );
    }

    #[test]
    fn a_bad_ca_reference_fails_closed() {
        let c = compiled(&format!(
            "{}{}",
            policy(
                "missing",
                "name: secure, sectionName: https",
                "nope",
                "2024-01-01T00:00:00Z"
            ),
            policy(
                "no-key",
                "name: secure, sectionName: admin",
                "no-ca",
                "2024-01-01T00:00:00Z"
            ),
        ));
        for port in ["443", "8443"] {
            let key = c.config.backend_tls.get(&id(port)).expect("claimed");
            assert!(!c.config.upstream_tls.contains_key(key), "{port}");
        }
        for name in ["missing", "no-key"] {
            let said = conditions(&c, name);
            assert!(
                said.contains("Accepted=False (NoValidCACertificate)")
                    && said.contains("ResolvedRefs=False (InvalidCACertificateRef)"),
                "{said}"
            );
        }
        assert!(c
            .diagnostics
            .iter()
            .any(|d| d.kind == Kind::BackendTLSPolicy
                && d.field == "spec.validation.caCertificateRefs[0]"));
    }

    #[test]
    fn the_older_policy_wins_and_a_port_beats_the_service() {
        let c = compiled(&format!(
            "{}{}{}",
            policy("newer", "name: secure", "nope", "2024-02-01T00:00:00Z"),
            policy("older", "name: secure", "ca", "2024-01-01T00:00:00Z"),
            policy(
                "admin",
                "name: secure, sectionName: admin",
                "nope",
                "2024-03-01T00:00:00Z"
            ),
        ));
        assert!(conditions(&c, "newer").contains("Accepted=False (Conflicted)"));
        assert!(conditions(&c, "older").contains("Accepted=True"));
        let https = c.config.backend_tls.get(&id("443")).unwrap();
        assert!(https.contains("app/older"));
        let admin = c.config.backend_tls.get(&id("8443")).unwrap();
        assert!(admin.contains("app/admin"));
        assert!(!c.config.upstream_tls.contains_key(admin));
    }

    fn well_known(value: &str) -> String {
        policy("system", "name: secure", "ca", "2024-01-01T00:00:00Z").replace(
            "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]\n",
            &format!("    wellKnownCACertificates: {value}\n"),
        )
    }

    #[test]
    fn unsupported_validation_is_refused() {
        let c = compiled(&well_known("example.com/private"));
        assert!(conditions(&c, "system").contains("Accepted=False (Invalid)"));
        let key = c.config.backend_tls.get(&id("443")).unwrap();
        assert!(!c.config.upstream_tls.contains_key(key));
        let uri = |value: &str| {
            policy("uri", "name: secure", "ca", "2024-01-01T00:00:00Z")
                + &format!("    subjectAltNames: [{{type: URI, uri: \"{value}\"}}]\n")
        };
        let c = compiled(&uri("no-scheme"));
        assert!(conditions(&c, "uri").contains("Accepted=False (Invalid)"));
        let key = c.config.backend_tls.get(&id("443")).unwrap();
        assert!(!c.config.upstream_tls.contains_key(key));
        let c = compiled(&uri("spiffe://cluster/ns/app/sa/secure"));
        assert!(conditions(&c, "uri").contains("Accepted=True"));
    }

    /// The system's CAs: usable where the machine has some, else refused (never
    /// unverified).
    #[test]
    fn system_ca_certificates() {
        let c = compiled(&well_known("System"));
        let said = conditions(&c, "system");
        let key = c.config.backend_tls.get(&id("443")).unwrap();
        if said.contains("Accepted=True") {
            assert!(c.config.upstream_tls.get(key).is_some_and(|t| t.verify));
        } else {
            assert!(said.contains("Accepted=False (Invalid)"), "{said}");
            assert!(!c.config.upstream_tls.contains_key(key));
        }
    }
}
