//! Ingresses in the API versions Kubernetes removed in 1.22 (`extensions/v1beta1`, served
//! until then since 1.1, and `networking.k8s.io/v1beta1`, since 1.14), read from files the
//! way the API server converted them to `networking.k8s.io/v1`:
//!
//! - `backend.serviceName` and `backend.servicePort` become `backend.service.name` and
//!   `backend.service.port.number` (an integer) or `.port.name` (a string, even one of
//!   digits, as the API server did);
//! - a path without `pathType` gets `pathType: ImplementationSpecific` (the v1beta1
//!   default);
//! - `spec.backend` becomes `spec.defaultBackend`.
//!
//! Everything else (`tls`, `rules[].host`, `ingressClassName`, annotations) has the same
//! form in both versions.

use serde_json::{Map, Value};

/// The API versions converted here.
pub(super) const VERSIONS: [&str; 2] = ["extensions/v1beta1", "networking.k8s.io/v1beta1"];

/// Rewrite a v1beta1 Ingress in place into its `networking.k8s.io/v1` form. Returns what
/// was changed, in v1 terms, for the warning; an error for a backend that cannot be
/// converted (a `servicePort` that is neither an integer nor a string).
pub(super) fn convert_ingress(value: &mut Value) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    let Value::Object(obj) = value else {
        return Err("expected an object".to_owned());
    };
    obj.insert(
        "apiVersion".to_owned(),
        Value::String("networking.k8s.io/v1".to_owned()),
    );
    let Some(Value::Object(spec)) = obj.get_mut("spec") else {
        return Ok(changes);
    };
    if let Some(mut backend) = spec.remove("backend") {
        convert_backend(&mut backend, "spec.backend", &mut changes)?;
        changes.push("spec.backend is spec.defaultBackend".to_owned());
        spec.insert("defaultBackend".to_owned(), backend);
    }
    let rules = match spec.get_mut("rules") {
        Some(Value::Array(rules)) => rules,
        _ => return Ok(changes),
    };
    let mut defaulted = 0;
    for (r, rule) in rules.iter_mut().enumerate() {
        let Some(Value::Array(paths)) = rule.pointer_mut("/http/paths") else {
            continue;
        };
        for (p, path) in paths.iter_mut().enumerate() {
            let Value::Object(path) = path else {
                continue;
            };
            if path.get("pathType").is_none_or(Value::is_null) {
                path.insert(
                    "pathType".to_owned(),
                    Value::String("ImplementationSpecific".to_owned()),
                );
                defaulted += 1;
            }
            if let Some(backend) = path.get_mut("backend") {
                let at = format!("spec.rules[{r}].http.paths[{p}].backend");
                convert_backend(backend, &at, &mut changes)?;
            }
        }
    }
    if defaulted > 0 {
        let s = if defaulted == 1 { "" } else { "s" };
        changes.push(format!(
            "pathType: ImplementationSpecific on the {defaulted} path{s} that had none"
        ));
    }
    Ok(changes)
}

/// `{serviceName, servicePort, resource}` to `{service: {name, port}, resource}`.
fn convert_backend(backend: &mut Value, at: &str, changes: &mut Vec<String>) -> Result<(), String> {
    let Value::Object(b) = backend else {
        return Ok(());
    };
    let name = b.remove("serviceName");
    let port = b.remove("servicePort");
    if name.is_none() && port.is_none() {
        return Ok(());
    }
    let name = match name {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(format!("{at}.serviceName must be a string, not {other}")),
    };
    let mut port_ref = Map::new();
    let port_text = match port {
        Some(Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => {
                port_ref.insert("number".to_owned(), Value::from(n));
                format!("port: {{number: {n}}}")
            }
            None => return Err(format!("{at}.servicePort {n} is not a port number")),
        },
        Some(Value::String(s)) => {
            let text = format!("port: {{name: {s}}}");
            port_ref.insert("name".to_owned(), Value::String(s));
            text
        }
        None | Some(Value::Null) => "port: {}".to_owned(),
        Some(other) => {
            return Err(format!(
                "{at}.servicePort must be a port number or name, not {other}"
            ))
        }
    };
    changes.push(format!(
        "{at}.service: {{name: {name}, {port_text}}} (was serviceName/servicePort)"
    ));
    let mut service = Map::new();
    service.insert("name".to_owned(), Value::String(name));
    service.insert("port".to_owned(), Value::Object(port_ref));
    b.insert("service".to_owned(), Value::Object(service));
    Ok(())
}

/// The warning for a converted Ingress.
pub(super) fn warning(api_version: &str, name: &str, changes: &[String]) -> String {
    let mut text = format!(
        "Ingress {name}: apiVersion {api_version} is deprecated and was removed in \
         Kubernetes 1.22; read as networking.k8s.io/v1 the way the API server converted \
         it. Write it as apiVersion: networking.k8s.io/v1"
    );
    for change in changes {
        text.push_str("; ");
        text.push_str(change);
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_notes_kubia_ingress_converts_as_the_api_server_did() {
        let mut v = json!({
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "kubia"},
            "spec": {
                "backend": {"serviceName": "default-http", "servicePort": "http"},
                "tls": [{"hosts": ["kubia.example.com"], "secretName": "tls-secret"}],
                "rules": [{
                    "host": "kubia.example.com",
                    "http": {"paths": [
                        {"path": "/", "backend": {"serviceName": "kubia-nodeport", "servicePort": 80}},
                        {"path": "/x", "pathType": "Exact", "backend": {"serviceName": "x", "servicePort": "web"}},
                        {"path": "/r", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
                    ]}
                }, {"host": "no-http.example.com"}]
            }
        });
        let changes = convert_ingress(&mut v).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "kubia"},
                "spec": {
                    "defaultBackend": {"service": {"name": "default-http", "port": {"name": "http"}}},
                    "tls": [{"hosts": ["kubia.example.com"], "secretName": "tls-secret"}],
                    "rules": [{
                        "host": "kubia.example.com",
                        "http": {"paths": [
                            {"path": "/", "pathType": "ImplementationSpecific",
                             "backend": {"service": {"name": "kubia-nodeport", "port": {"number": 80}}}},
                            {"path": "/x", "pathType": "Exact",
                             "backend": {"service": {"name": "x", "port": {"name": "web"}}}},
                            {"path": "/r", "pathType": "ImplementationSpecific",
                             "backend": {"resource": {"kind": "Bucket", "name": "b"}}}
                        ]}
                    }, {"host": "no-http.example.com"}]
                }
            })
        );
        let text = warning("extensions/v1beta1", "default/kubia", &changes);
        for want in [
            "apiVersion extensions/v1beta1 is deprecated and was removed in Kubernetes 1.22",
            "apiVersion: networking.k8s.io/v1",
            "spec.rules[0].http.paths[0].backend.service: {name: kubia-nodeport, port: {number: 80}}",
            "spec.rules[0].http.paths[1].backend.service: {name: x, port: {name: web}}",
            "spec.backend is spec.defaultBackend",
            "pathType: ImplementationSpecific on the 2 paths that had none",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
    }

    #[test]
    fn a_digit_string_port_is_a_name_and_odd_ports_are_errors() {
        // IntOrString: a quoted "80" was a port name to the API server too.
        let mut v = json!({"spec": {"backend": {"serviceName": "a", "servicePort": "80"}}});
        convert_ingress(&mut v).unwrap();
        assert_eq!(
            v.pointer("/spec/defaultBackend/service/port"),
            Some(&json!({"name": "80"}))
        );
        for bad in [json!(1.5), json!(true), json!([80]), json!(1u64 << 40)] {
            let mut v = json!({"spec": {"backend": {"serviceName": "a", "servicePort": bad}}});
            let e = convert_ingress(&mut v).unwrap_err();
            assert!(e.contains("spec.backend.servicePort"), "{e}");
        }
        let mut v = json!({"spec": {"backend": {"serviceName": 7, "servicePort": 80}}});
        assert!(convert_ingress(&mut v).unwrap_err().contains("serviceName"));
    }

    #[test]
    fn an_ingress_without_spec_only_changes_version() {
        let mut v = json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress", "metadata": {"name": "a"}});
        assert_eq!(convert_ingress(&mut v).unwrap(), Vec::<String>::new());
        assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
    }
}
