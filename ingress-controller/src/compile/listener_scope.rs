//! Which requests the routes of each Gateway listener answer: the protocol's Portico
//! listener, less the hosts that belong to a more specific listener of the same
//! Gateway (the spec's listener isolation).
//!
//! Every HTTP listener of a Gateway is served on Portico's one HTTP listener and every
//! HTTPS listener on its HTTPS listener, so listeners of one protocol compete for
//! requests whatever their `port`. A request goes to the listener whose hostname
//! matches its host most specifically: an exact name, then the longest `*.` wildcard,
//! then a listener without hostname. Listeners of other Gateways do not compete: each
//! Gateway stands for its own addresses, which Portico serves as one.

use std::sync::Arc;

use proxy_core::routes::{HostPattern, ListenerScope};

use super::gateway::intersect_one;

/// One served listener: its protocol (`HTTP` or `HTTPS`) and its lower-cased hostname.
pub(super) struct ListenerHost<'a> {
    pub protocol: &'a str,
    pub hostname: Option<&'a str>,
}

/// The scope of each listener of one Gateway, in the order given.
pub(super) fn listener_scopes(listeners: &[ListenerHost<'_>]) -> Vec<ListenerScope> {
    listeners
        .iter()
        .map(|l| {
            let yields_to: Arc<[HostPattern]> = listeners
                .iter()
                .filter(|other| other.protocol == l.protocol)
                .filter_map(|other| other.hostname)
                .filter(|other| more_specific(other, l.hostname))
                .filter_map(|other| HostPattern::parse(other).ok())
                .collect();
            ListenerScope {
                http: l.protocol == "HTTP",
                https: l.protocol == "HTTPS",
                yields_to,
            }
        })
        .collect()
}

/// Whether every host `name` matches is also matched by `than` (without hostname: every
/// host), and `name` is the narrower of the two.
fn more_specific(name: &str, than: Option<&str>) -> bool {
    let Some(than) = than else {
        return true;
    };
    // The spec's hostname intersection is the narrower of two names when one covers
    // the other.
    name != than && intersect_one(than, name).as_deref() == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yields(scope: &ListenerScope) -> Vec<String> {
        scope.yields_to.iter().map(|p| p.to_string()).collect()
    }

    /// The listeners of the conformance test `GatewayHTTPListenerIsolation`, with an
    /// HTTPS listener beside them.
    #[test]
    fn each_listener_yields_the_more_specific_ones_of_its_protocol() {
        let listeners = [
            ListenerHost {
                protocol: "HTTP",
                hostname: None,
            },
            ListenerHost {
                protocol: "HTTP",
                hostname: Some("*.example.com"),
            },
            ListenerHost {
                protocol: "HTTP",
                hostname: Some("*.foo.example.com"),
            },
            ListenerHost {
                protocol: "HTTP",
                hostname: Some("abc.foo.example.com"),
            },
            ListenerHost {
                protocol: "HTTPS",
                hostname: Some("*.foo.example.com"),
            },
            ListenerHost {
                protocol: "HTTP",
                hostname: Some("other.org"),
            },
        ];
        let scopes = listener_scopes(&listeners);
        assert_eq!(
            yields(&scopes[0]),
            [
                "*.example.com",
                "*.foo.example.com",
                "abc.foo.example.com",
                "other.org"
            ]
        );
        assert_eq!(
            yields(&scopes[1]),
            ["*.foo.example.com", "abc.foo.example.com"]
        );
        assert_eq!(yields(&scopes[2]), ["abc.foo.example.com"]);
        assert!(yields(&scopes[3]).is_empty());
        // The HTTPS listener competes with no HTTP one.
        assert!(yields(&scopes[4]).is_empty());
        assert!(scopes[4].https && !scopes[4].http);
        assert!(scopes[0].http && !scopes[0].https);
        assert!(yields(&scopes[5]).is_empty());
    }

    #[test]
    fn specificity_between_hostnames() {
        assert!(more_specific("a.b", None));
        assert!(more_specific("*.b.c", Some("*.c")));
        assert!(more_specific("a.b.c", Some("*.c")));
        assert!(!more_specific("*.c", Some("*.c")));
        assert!(!more_specific("*.c", Some("*.b.c")));
        assert!(!more_specific("xc", Some("*.c")));
        assert!(!more_specific("a.c", Some("b.c")));
        assert!(!more_specific("*.a.c", Some("a.c")));
    }
}

#[cfg(test)]
mod compile_tests {
    use proxy_core::http::Scheme;

    use super::super::tests::store_from_yaml;
    use super::super::{compile, CompileOptions, Compiled};

    const CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: infra-backend-v1, namespace: gateway-conformance-infra}
spec: {ports: [{port: 8080}]}
"#;

    /// The Gateway and routes of the conformance test `GatewayHTTPListenerIsolation`:
    /// four HTTP listeners, one route per listener matching its own path; with
    /// `route_hostnames`, each route also names the hostnames of every listener.
    fn isolation(route_hostnames: bool) -> Compiled {
        let listeners = [
            ("empty-hostname", None),
            ("wildcard-example-com", Some("*.example.com")),
            ("wildcard-foo-example-com", Some("*.foo.example.com")),
            ("abc-foo-example-com", Some("abc.foo.example.com")),
        ];
        let mut yaml = String::from(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: iso, namespace: gateway-conformance-infra}\n\
             spec:\n  gatewayClassName: portico\n  listeners:\n",
        );
        for (name, hostname) in listeners {
            let hostname = hostname
                .map(|h| format!(", hostname: {h:?}"))
                .unwrap_or_default();
            yaml.push_str(&format!(
                "  - {{name: {name}, port: 80, protocol: HTTP{hostname}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
            ));
        }
        let hostnames = if route_hostnames {
            "  hostnames: [bar.com, \"*.example.com\", \"*.foo.example.com\", abc.foo.example.com]\n"
        } else {
            ""
        };
        for (name, _) in listeners {
            yaml.push_str(&format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: {name}, namespace: gateway-conformance-infra}}\n\
                 spec:\n  parentRefs: [{{name: iso, sectionName: {name}}}]\n{hostnames}\
                 \x20 rules: [{{matches: [{{path: {{type: PathPrefix, value: /{name}}}}}], \
                 backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]\n"
            ));
        }
        compile(
            &store_from_yaml(&format!("{CLASS}{yaml}")),
            &CompileOptions::default(),
        )
    }

    fn answers(c: &Compiled, scheme: Scheme, host: &str, path: &str) -> bool {
        c.config
            .routes
            .lookup_on(scheme, host, path, None)
            .is_some()
    }

    /// The requests of the conformance test `GatewayHTTPListenerIsolation`: each host
    /// reaches the routes of its most specific listener only.
    #[test]
    fn a_request_reaches_only_its_most_specific_listener() {
        let hosts = [
            ("bar.com", "/empty-hostname"),
            ("bar.example.com", "/wildcard-example-com"),
            ("bar.foo.example.com", "/wildcard-foo-example-com"),
            ("abc.foo.example.com", "/abc-foo-example-com"),
        ];
        for route_hostnames in [false, true] {
            let c = isolation(route_hostnames);
            let file = if route_hostnames {
                "with hostnames"
            } else {
                "without hostnames"
            };
            for (host, own) in hosts {
                for (_, path) in hosts {
                    assert_eq!(
                        answers(&c, Scheme::Http, host, path),
                        path == own,
                        "{file}: {host}{path}"
                    );
                    // Every listener is HTTP: nothing answers on HTTPS.
                    assert!(
                        !answers(&c, Scheme::Https, host, path),
                        "{file}: {host}{path}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_route_of_an_https_listener_answers_on_https_only() {
        let yaml = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: missing}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  hostnames: [secure.example.com]
  rules: [{matches: [{path: {type: PathPrefix, value: /s}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {type: PathPrefix, value: /b}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing, namespace: gateway-conformance-infra}
spec:
  ingressClassName: portico
  rules:
  - host: secure.example.com
    http: {paths: [{path: /i, pathType: Prefix, backend: {service: {name: infra-backend-v1, port: {number: 8080}}}}]}
"#;
        let c = compile(
            &store_from_yaml(&format!("{CLASS}{yaml}")),
            &CompileOptions::default(),
        );
        let host = "secure.example.com";
        assert!(answers(&c, Scheme::Https, host, "/s"));
        assert!(!answers(&c, Scheme::Http, host, "/s"));
        // Attached to both listeners: answers on both.
        assert!(answers(&c, Scheme::Http, host, "/b"));
        assert!(answers(&c, Scheme::Https, host, "/b"));
        // An Ingress on the same host answers on both, as before.
        assert!(answers(&c, Scheme::Http, host, "/i"));
        assert!(answers(&c, Scheme::Https, host, "/i"));
    }
}
