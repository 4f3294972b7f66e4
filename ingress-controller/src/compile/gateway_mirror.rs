//! HTTPRoute `RequestMirror` filters: the backends a rule's requests are copied to.
//!
//! A mirror's `backendRef` is judged exactly as a rule's backendRefs are (kind, port,
//! ReferenceGrant, Service), by the same function; one that cannot be used is
//! reported, sets the route's `ResolvedRefs` to False with the spec's reason, and is
//! left out: the rule's own traffic is unaffected. The sending is proxy-core's
//! (`pipeline::mirror`).
//!
//! A `RequestMirror` among a backendRef's own `filters` mirrors the requests sent to
//! that backend: on a rule with that one backendRef, all of the rule's requests, as a
//! rule's filter does. On a rule with several, Portico does not support it (the copy
//! would depend on the weighted pick): it is reported and left out.

use std::collections::HashMap;
use std::sync::Arc;

use proxy_core::config::{Backend, BackendId};
use proxy_core::pipeline::{Fraction, Mirrors, RequestMirror};

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::endpoints::EndpointIndex;
use super::gateway::{backend_ref, RouteKey};
use crate::gateway_api::{self, HTTPBackendRef, HTTPRouteFilter};
use crate::store::{Kind, ObjectKey, Store};

/// The mirrors of a rule's `filters` and of its backendRefs' (`field` names the rule);
/// `None` when it has none that can be used.
#[allow(clippy::too_many_arguments)]
pub(super) fn rule_mirrors(
    store: &Store,
    index: &EndpointIndex<'_>,
    key: &ObjectKey,
    field: &str,
    (filters, refs): (&[HTTPRouteFilter], &[HTTPBackendRef]),
    backends: &mut HashMap<BackendId, Backend>,
    unresolved: &mut Option<(&'static str, String)>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<Mirrors>> {
    let mut mirrors = Vec::new();
    let of_rule = filters
        .iter()
        .enumerate()
        .map(|(f, filter)| (format!("{field}.filters[{f}]"), filter));
    let mut of_refs = Vec::new();
    for (k, r) in refs.iter().enumerate() {
        for (f, filter) in r.filters.iter().enumerate() {
            let at = format!("{field}.backendRefs[{k}].filters[{f}]");
            if refs.len() == 1 {
                of_refs.push((at, filter));
            } else if filter.type_ == "RequestMirror" {
                diags.push(Diagnostic::warning(
                    Kind::HTTPRoute,
                    key,
                    at,
                    DiagnosticReason::GatewayUnsupported,
                    "a backendRef's RequestMirror is supported only on a rule with one backendRef; no request is mirrored",
                ));
            }
        }
    }
    for (at, filter) in of_rule.chain(of_refs) {
        if filter.type_ != "RequestMirror" {
            continue;
        }
        let field = format!("{at}.requestMirror");
        let Some(m) = &filter.request_mirror else {
            diags.push(Diagnostic::error(
                Kind::HTTPRoute,
                key,
                field,
                DiagnosticReason::GatewayUnsupported,
                "the filter's settings are missing; no request is mirrored",
            ));
            continue;
        };
        let Some(fraction) = fraction(key, &field, m, diags) else {
            continue;
        };
        let r = &m.backend_ref;
        match backend_ref(
            store,
            index,
            RouteKey {
                kind: Kind::HTTPRoute,
                key,
            },
            &format!("{field}.backendRef"),
            r,
            backends,
            diags,
        ) {
            Ok(backend) => mirrors.push(RequestMirror { backend, fraction }),
            Err(problem) => {
                unresolved.get_or_insert(problem);
            }
        }
    }
    (!mirrors.is_empty()).then(|| Arc::new(Mirrors(mirrors)))
}

/// `percent` or `fraction` (neither: every request); `None`, with a diagnostic, for a
/// value the API would refuse.
fn fraction(
    key: &ObjectKey,
    field: &str,
    m: &gateway_api::RequestMirror,
    diags: &mut Vec<Diagnostic>,
) -> Option<Fraction> {
    let mut bad = |suffix: &str, message: String| {
        diags.push(Diagnostic::error(
            Kind::HTTPRoute,
            key,
            format!("{field}{suffix}"),
            DiagnosticReason::GatewayUnsupported,
            format!("{message}; no request is mirrored"),
        ));
        None
    };
    match (m.percent, &m.fraction) {
        (None, None) => Some(Fraction::ALL),
        (Some(_), Some(_)) => bad("", "only one of percent and fraction may be set".into()),
        (Some(p), None) => match u32::try_from(p) {
            Ok(p) if p <= 100 => Some(Fraction::percent(p)),
            _ => bad(".percent", format!("percent {p} is not within 0 to 100")),
        },
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            match (u32::try_from(f.numerator), u32::try_from(denominator)) {
                (Ok(n), Ok(d)) if n <= d => match Fraction::new(n, d) {
                    Some(fraction) => Some(fraction),
                    None => bad(
                        ".fraction.denominator",
                        "the denominator must be at least 1".into(),
                    ),
                },
                _ => bad(
                    ".fraction",
                    format!(
                        "fraction {}/{denominator} is not a share between 0 and 1",
                        f.numerator
                    ),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proxy_core::pipeline::Fraction;

    use super::super::diagnostic::Severity;
    use super::super::tests::store_from_yaml;
    use super::super::{compile, CompileOptions, Compiled};
    use crate::store::{Kind, ObjectKey};

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: main, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: elsewhere}
spec: {ports: [{port: 8080}]}
"#;

    fn compiled(route: &str) -> Compiled {
        compile(
            &store_from_yaml(&format!("{BASE}---\n{route}")),
            &CompileOptions::default(),
        )
    }

    fn mirrors(c: &Compiled, path: &str) -> Vec<(String, Fraction)> {
        let t = c.config.routes.lookup_with("m.test", path, None).unwrap();
        t.policy
            .mirrors
            .iter()
            .flat_map(|m| &m.0)
            .map(|m| (m.backend.service.to_string(), m.fraction))
            .collect()
    }

    fn resolved_refs(c: &Compiled) -> String {
        c.gateway_status[&(Kind::HTTPRoute, ObjectKey::new("infra", "r"))].parents[0].conditions[1]
            .to_string()
    }

    #[test]
    fn mirrors_are_compiled_with_their_share() {
        let c = compiled(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [m.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /all}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: main, port: 8080}, percent: 20}}
    backendRefs: [{name: main, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 8080}, fraction: {numerator: 25, denominator: 50}}
    backendRefs: [{name: main, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    backendRefs: [{name: main, port: 8080}]
"#,
        );
        assert_eq!(
            mirrors(&c, "/all"),
            [
                ("shadow".to_owned(), Fraction::ALL),
                ("main".to_owned(), Fraction::percent(20))
            ]
        );
        assert_eq!(
            mirrors(&c, "/half"),
            [("shadow".to_owned(), Fraction::new(25, 50).unwrap())]
        );
        assert!(mirrors(&c, "/none").is_empty());
        assert!(c
            .config
            .routes
            .lookup_with("m.test", "/none", None)
            .unwrap()
            .policy
            .mirrors
            .is_none());
        assert!(resolved_refs(&c).starts_with("ResolvedRefs=True (ResolvedRefs"));
        assert!(c.config.backends.keys().any(|b| &*b.service == "shadow"));
    }

    #[test]
    fn an_unusable_mirror_is_left_out_and_reported() {
        let c = compiled(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [m.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cross}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: other, namespace: elsewhere, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: missing, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 101}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, fraction: {numerator: 3, denominator: 2}}}
    backendRefs: [{name: main, port: 8080}]
"#,
        );
        // The rule itself still goes to its backend.
        let t = c
            .config
            .routes
            .lookup_with("m.test", "/cross", None)
            .unwrap();
        assert_eq!(&*t.backend.service, "main");
        assert!(t.policy.mirrors.is_none());
        assert!(!t
            .policy
            .request
            .iter()
            .any(|f| matches!(f, proxy_core::pipeline::RequestFilter::NoValidBackend(_))));
        assert!(resolved_refs(&c).starts_with("ResolvedRefs=False (RefNotPermitted"));
        let said: Vec<_> = c
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.field.as_str())
            .collect();
        for field in [
            "spec.rules[0].filters[0].requestMirror.backendRef.namespace",
            "spec.rules[0].filters[1].requestMirror.backendRef",
            "spec.rules[0].filters[2].requestMirror.percent",
            "spec.rules[0].filters[3].requestMirror.fraction",
        ] {
            assert!(said.contains(&field), "{field} in {said:?}");
        }
    }

    #[test]
    fn a_backend_refs_mirror_serves_a_rule_with_that_one_backend() {
        let c = compiled(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [m.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /one}}]
    backendRefs:
    - name: main
      port: 8080
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}}}]
  - matches: [{path: {type: PathPrefix, value: /two}}]
    backendRefs:
    - name: main
      port: 8080
      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}}}]
    - {name: shadow, port: 8080}
"#,
        );
        assert_eq!(mirrors(&c, "/one"), [("shadow".to_owned(), Fraction::ALL)]);
        assert!(mirrors(&c, "/two").is_empty());
        assert!(c.diagnostics.iter().any(|d| d.severity == Severity::Warning
            && d.field == "spec.rules[1].backendRefs[0].filters[0]"));
    }

    #[test]
    fn a_mirror_in_another_namespace_needs_a_reference_grant() {
        let c = compiled(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [m.test]
  rules:
  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: other, namespace: elsewhere, port: 8080}}}
    backendRefs: [{name: main, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: elsewhere}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service}]
"#,
        );
        assert_eq!(mirrors(&c, "/"), [("other".to_owned(), Fraction::ALL)]);
        assert!(resolved_refs(&c).starts_with("ResolvedRefs=True (ResolvedRefs"));
    }
}
