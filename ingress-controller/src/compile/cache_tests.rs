//! A compile that reuses an earlier one's work ([`compile_with`]) must equal a compile from
//! scratch ([`compile`]), whatever happened in between: checked over random edit sequences.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::json;

use super::tests::{generated, store_from_yaml};
use super::*;
use crate::store::{Object, Store};

/// Small deterministic generator (no seed from outside: a failure reproduces).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

const APPS: usize = 6;

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn tls_secret(name: &str, cert: &str, key: &str) -> Object {
    let data = [("tls.crt", cert), ("tls.key", key)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let mut secret: Secret = object(json!({"metadata": {"name": name, "namespace": "default"}}));
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(data);
    Object::Secret(secret)
}

/// `variant` moves what else an edit can change: the age (which claim wins), the
/// redirect and canary annotations, the default backend, and whether the Ingress is of
/// our class.
fn ingress(app: usize, secret: usize, paths: usize, variant: usize) -> Object {
    let paths: Vec<_> = (0..paths)
        .map(|p| {
            json!({"path": format!("/p{p}"), "pathType": "Prefix",
                   "backend": {"service": {"name": format!("svc-{app}"), "port": {"number": 80}}}})
        })
        .collect();
    // Every app claims `shared.example.com` too, so conflicts come and go.
    let mut annotations = serde_json::Map::new();
    if variant % 2 == 1 {
        annotations.insert("portico.dev/ssl-redirect".into(), "false".into());
    }
    if variant % 4 == 3 {
        annotations.insert("portico.dev/force-ssl-redirect".into(), "true".into());
    }
    // Regex mode reaches every path of the hosts this Ingress shares.
    if variant % 5 == 4 {
        annotations.insert("portico.dev/use-regex".into(), "true".into());
    }
    // The www twins depend on which hosts other Ingresses name.
    if variant % 3 == 1 {
        annotations.insert("portico.dev/from-to-www-redirect".into(), "true".into());
    }
    // A canary joins whichever Ingress claims its paths, or has none to join.
    if variant % 7 == 5 {
        annotations.insert("portico.dev/canary".into(), "true".into());
        annotations.insert("portico.dev/canary-weight".into(), "30".into());
    }
    // Aliases depend on which hosts other Ingresses route, and on which is older.
    if variant % 4 == 2 {
        annotations.insert(
            "portico.dev/server-alias".into(),
            format!("alias-{app}.example.com, shared-alias.example.com, app-0.example.com").into(),
        );
    }
    let class = if variant == 6 { "other" } else { "portico" };
    // Some versions leave their own host's TLS to the `tls_only` Ingress.
    let mut tls_hosts = vec!["shared.example.com".to_owned()];
    if variant < 4 {
        tls_hosts.push(format!("app-{app}.example.com"));
    }
    // Some versions set the default backend too (the oldest of those serves it).
    let default_backend = (variant % 3 == 2)
        .then(|| json!({"service": {"name": format!("svc-{app}"), "port": {"number": 80}}}));
    Object::Ingress(object(json!({
        "metadata": {"name": format!("ing-{app}"), "namespace": "default",
                     "annotations": annotations,
                     "creationTimestamp": format!("2024-01-0{}T00:00:00Z", 1 + (app + variant) % 3)},
        "spec": {
            "ingressClassName": class,
            "defaultBackend": default_backend,
            "tls": [{"hosts": tls_hosts,
                     "secretName": format!("tls-{secret}")}],
            "rules": [{"host": format!("app-{app}.example.com"), "http": {"paths": paths}},
                      {"host": "shared.example.com", "http": {"paths": paths}}]
        }
    })))
}

/// An Ingress with TLS for app `app`'s host but no rules: it decides that host's
/// redirects without naming the host in a rule.
fn tls_only(app: usize) -> Object {
    Object::Ingress(object(json!({
        "metadata": {"name": "tls-only", "namespace": "default"},
        "spec": {
            "ingressClassName": "portico",
            "tls": [{"hosts": [format!("app-{app}.example.com")], "secretName": "tls-0"}]
        }
    })))
}

fn service(app: usize, port: i32) -> Object {
    Object::Service(object(json!({
        "metadata": {"name": format!("svc-{app}"), "namespace": "default"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": port, "targetPort": 8080}]}
    })))
}

fn slice(app: usize, ready: bool) -> Object {
    Object::EndpointSlice(object(json!({
        "metadata": {"name": format!("svc-{app}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("svc-{app}")}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": [{"addresses": [format!("10.0.0.{app}")], "conditions": {"ready": ready}}]
    })))
}

/// Everything a compile produces, in a comparable form.
fn summary(c: &Compiled) -> String {
    let mut backends: Vec<_> = c.config.backends.values().collect();
    backends.sort_by(|a, b| a.id.cmp(&b.id));
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.config.routes.rules(),
        c.config.routes.regex_rules(),
        c.config.default_backend,
        backends,
        c.config.l4,
        c.certs,
        c.default_cert,
        c.diagnostics,
        c.owned_ingresses
    )
}

#[test]
fn reusing_a_cache_equals_compiling_from_scratch() {
    let (good_cert, good_key) = generated("*.example.com");
    let (other_cert, _) = generated("other.example.com");
    let mut store: Store = store_from_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\n\
         spec: {controller: portico.dev/ingress-controller}\n",
    );
    for app in 0..APPS {
        store.apply(service(app, 80));
        store.apply(slice(app, true));
        store.apply(ingress(app, app % 3, 2, 0));
    }
    let mut opts = CompileOptions::default();
    let mut cache = CompileCache::default();
    let mut rng = Lcg(7);
    let mut saw_certs = false;
    for step in 0..600 {
        let app = rng.below(APPS);
        let name = format!("tls-{}", rng.below(3));
        match rng.below(11) {
            0 => store.apply(tls_secret(&name, &good_cert, &good_key)),
            // A certificate that does not match its key.
            1 => store.apply(tls_secret(&name, &other_cert, &good_key)),
            2 => store.apply(tls_secret(&name, "not pem", &good_key)),
            3 => store.remove(Kind::Secret, &ObjectKey::new("default", &name)),
            4 => store.apply(ingress(app, rng.below(4), 1 + rng.below(3), rng.below(8))),
            5 => store.remove(
                Kind::Ingress,
                &ObjectKey::new("default", &format!("ing-{app}")),
            ),
            6 => store.apply(slice(app, rng.below(2) == 0)),
            7 => store.apply(service(app, 80 + rng.below(2) as i32)),
            8 => store.apply(tls_only(app)),
            9 => store.remove(Kind::Ingress, &ObjectKey::new("default", "tls-only")),
            _ => {
                opts.default_certificate =
                    (rng.below(2) == 0).then(|| ObjectKey::new("default", &name));
            }
        }
        let reused = compile_with(&store, &opts, &mut cache);
        let fresh = compile(&store, &opts);
        assert_eq!(summary(&reused), summary(&fresh), "after step {step}");
        saw_certs |= !fresh.certs.is_empty();
    }
    assert!(saw_certs, "the sequence never produced a certificate");
}
