//! What the API server would say about a manifest that typing alone lets through: a
//! required field left out (rejected), a field no such object has (`kubectl
//! --validate=strict` names it), a kind it does not know (a typo such as `kind: Ingres`).

use serde_json::Value;

/// Kinds the API server serves (with Gateway API's, which clusters commonly have): a
/// manifest of one of them that Portico does not read is skipped without a word. Portico's
/// own kinds come first, so that a typo is matched to one of them before any other.
const KNOWN_KINDS: &[&str] = &[
    "Ingress",
    "IngressClass",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Secret",
    "ConfigMap",
    "APIService",
    "BackendTLSPolicy",
    "ClusterTrustBundle",
    "DeviceClass",
    "LocalSubjectAccessReview",
    "ResourceClaim",
    "ResourceClaimTemplate",
    "ResourceSlice",
    "SelfSubjectAccessReview",
    "SelfSubjectReview",
    "SelfSubjectRulesReview",
    "StorageVersionMigration",
    "SubjectAccessReview",
    "TokenReview",
    "VolumeAttributesClass",
    "BackendTLSPolicy",
    "Binding",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "ControllerRevision",
    "CronJob",
    "CSIDriver",
    "CSINode",
    "CSIStorageCapacity",
    "CustomResourceDefinition",
    "DaemonSet",
    "Deployment",
    "Event",
    "FlowSchema",
    "GRPCRoute",
    "Gateway",
    "GatewayClass",
    "HorizontalPodAutoscaler",
    "HTTPRoute",
    "IPAddress",
    "Job",
    "Lease",
    "LimitRange",
    "List",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodDisruptionBudget",
    "PodTemplate",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ReferenceGrant",
    "ReplicaSet",
    "ReplicationController",
    "ResourceQuota",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "ServiceAccount",
    "ServiceCIDR",
    "StatefulSet",
    "StorageClass",
    "TCPRoute",
    "TLSRoute",
    "UDPRoute",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// The kinds Portico reads (the head of [`KNOWN_KINDS`]).
const READ_KINDS: usize = 7;

/// Whether `api_version` is one the API server serves itself (the core group, groups
/// without a dot such as `apps`, and `*.k8s.io` but for the `x-k8s.io` add-ons), rather
/// than a custom resource's.
fn built_in_group(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => {
            !group.contains('.') || (group.ends_with(".k8s.io") && !group.ends_with("x-k8s.io"))
        }
    }
}

/// The message for a kind Portico does not read, when it is worth one: a kind of a
/// built-in group that the API server does not have, or any kind one typo away from one
/// Portico reads. Custom resources and the built-in kinds Portico has no use for get none.
pub(super) fn unknown_kind(api_version: &str, kind: &str) -> Option<String> {
    if KNOWN_KINDS.contains(&kind) || kind.ends_with("List") {
        return None;
    }
    let closest = closest_kind(kind);
    let close_to_ours = closest.is_some_and(|(i, _)| i < READ_KINDS);
    if !built_in_group(api_version) && !close_to_ours {
        return None;
    }
    let hint = match closest {
        Some((_, k)) => format!(" (did you mean {k:?}?)"),
        None => String::new(),
    };
    Some(format!(
        "no kind {kind:?} is served in version {api_version:?}{hint}; the object is ignored"
    ))
}

/// The known kind nearest to `kind` in edit distance (case aside), if it is near enough
/// to be a typo: at most two edits, and fewer than a third of the name.
fn closest_kind(kind: &str) -> Option<(usize, &'static str)> {
    let lower = kind.to_ascii_lowercase();
    let limit = 2.min(kind.chars().count() / 3).max(1);
    KNOWN_KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let d = strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase());
            (d, i, *k)
        })
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, i, _)| (*d, *i))
        .map(|(_, i, k)| (i, k))
}

/// The first required field `value` (a manifest of `kind`, in its v1 form) leaves out, as
/// the API server rejects it: `spec.rules[0].http.paths[0].pathType: Required value: ...`.
/// Only the fields whose absence typing would hide (it fills in an empty value) and that
/// change what is served are checked.
pub(super) fn required(kind: &str, value: &Value) -> Option<String> {
    let absent = |v: Option<&Value>| v.is_none_or(Value::is_null);
    match kind {
        "Ingress" => {
            let rules = value.pointer("/spec/rules").and_then(Value::as_array)?;
            for (i, rule) in rules.iter().enumerate() {
                let Some(paths) = rule.pointer("/http/paths").and_then(Value::as_array) else {
                    continue;
                };
                for (j, path) in paths.iter().enumerate() {
                    if absent(path.get("pathType")) {
                        let at = format!("spec.rules[{i}].http.paths[{j}]");
                        return Some(format!(
                            "{at}.pathType: Required value: pathType must be specified (Exact, \
                             Prefix or ImplementationSpecific){}",
                            typo_of(path, "pathType", &at)
                        ));
                    }
                }
            }
            None
        }
        "Service" => {
            let ports = value.pointer("/spec/ports").and_then(Value::as_array)?;
            ports.iter().enumerate().find_map(|(i, p)| {
                absent(p.get("port")).then(|| format!("spec.ports[{i}].port: Required value"))
            })
        }
        "EndpointSlice" => {
            absent(value.get("addressType")).then(|| "addressType: Required value".to_owned())
        }
        "GatewayClass" => absent(value.pointer("/spec/controllerName"))
            .then(|| "spec.controllerName: Required value".to_owned()),
        "Gateway" => {
            if absent(value.pointer("/spec/gatewayClassName")) {
                return Some("spec.gatewayClassName: Required value".to_owned());
            }
            let listeners = value.pointer("/spec/listeners").and_then(Value::as_array);
            let Some(listeners) = listeners else {
                return Some("spec.listeners: Required value".to_owned());
            };
            listeners.iter().enumerate().find_map(|(i, l)| {
                ["name", "port", "protocol"].into_iter().find_map(|field| {
                    absent(l.get(field))
                        .then(|| format!("spec.listeners[{i}].{field}: Required value"))
                })
            })
        }
        "HTTPRoute" | "GRPCRoute" => {
            let refs = value
                .pointer("/spec/parentRefs")
                .and_then(Value::as_array)?;
            refs.iter().enumerate().find_map(|(i, r)| {
                absent(r.get("name")).then(|| format!("spec.parentRefs[{i}].name: Required value"))
            })
        }
        _ => None,
    }
}

/// When `object` has an unknown field one typo away from the `wanted` one, a hint naming
/// it (`pathTyp` for `pathType`): the field is then missing only because it is misspelt.
fn typo_of(object: &Value, wanted: &str, at: &str) -> String {
    let Some(map) = object.as_object() else {
        return String::new();
    };
    map.keys()
        .find(|k| k.as_str() != wanted && strsim::damerau_levenshtein(k, wanted) <= 2)
        .map(|k| format!("; there is an unknown field \"{at}.{k}\": a typo of it?"))
        .unwrap_or_default()
}

/// Pushes to `out` the path of every field of `text` (the manifest as written) that
/// `kept` (the same object typed and written back) does not have. Fields set to null are
/// not counted: typing drops them, and the API server takes them as unset.
pub(super) fn unknown_fields(text: &Value, kept: &Value, at: &mut String, out: &mut Vec<String>) {
    match (text, kept) {
        (Value::Object(text), Value::Object(kept)) => {
            for (key, value) in text {
                let len = at.len();
                if !at.is_empty() {
                    at.push('.');
                }
                at.push_str(key);
                match kept.get(key) {
                    Some(k) => unknown_fields(value, k, at, out),
                    None if value.is_null() => {}
                    None => out.push(at.clone()),
                }
                at.truncate(len);
            }
        }
        (Value::Array(text), Value::Array(kept)) => {
            for (i, (value, k)) in text.iter().zip(kept).enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                unknown_fields(value, k, at, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_kinds_are_named_with_the_closest_kind() {
        let m = unknown_kind("networking.k8s.io/v1", "Ingres").unwrap();
        assert!(m.contains(r#"did you mean "Ingress"?"#), "{m}");
        let m = unknown_kind("v1", "service").unwrap();
        assert!(m.contains(r#"did you mean "Service"?"#), "{m}");
        let m = unknown_kind("apps/v1", "Deploymnet").unwrap();
        assert!(m.contains(r#"did you mean "Deployment"?"#), "{m}");
        // Unknown and like nothing: still said, without a guess.
        let m = unknown_kind("v1", "Frobnicator").unwrap();
        assert!(!m.contains("did you mean"), "{m}");
        // Known kinds Portico does not read, lists, and custom resources: nothing.
        assert_eq!(unknown_kind("apps/v1", "Deployment"), None);
        assert_eq!(unknown_kind("v1", "ServiceList"), None);
        assert_eq!(unknown_kind("cert-manager.io/v1", "Certificate"), None);
        // A custom resource one typo from a kind Portico reads is still worth a word.
        assert!(unknown_kind("example.com/v1", "Ingres").is_some());
    }

    #[test]
    fn unknown_fields_are_named_by_path() {
        let text: Value = serde_json::json!({
            "metadata": {"name": "a", "creationTimestamp": null},
            "sepc": {"x": 1},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathTyp": "Prefix"}]}}]}
        });
        let kept: Value = serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": ""}]}}]}
        });
        let mut out = Vec::new();
        unknown_fields(&text, &kept, &mut String::new(), &mut out);
        assert_eq!(out, ["sepc", "spec.rules[0].http.paths[0].pathTyp"]);
    }

    #[test]
    fn a_missing_path_type_is_required() {
        let v: Value = serde_json::json!({
            "spec": {"rules": [{"http": {"paths": [
                {"path": "/", "pathType": "Prefix"},
                {"path": "/b"}
            ]}}]}
        });
        assert_eq!(
            required("Ingress", &v).unwrap(),
            "spec.rules[0].http.paths[1].pathType: Required value: pathType must be \
             specified (Exact, Prefix or ImplementationSpecific)"
        );
        let typo: Value = serde_json::json!({
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathTyp": "Prefix"}]}}]}
        });
        assert!(
            required("Ingress", &typo).unwrap().ends_with(
                "; there is an unknown field \"spec.rules[0].http.paths[0].pathTyp\": a typo of it?"
            ),
            "{:?}",
            required("Ingress", &typo)
        );
        let v: Value = serde_json::json!({"spec": {"ports": [{"name": "http"}]}});
        assert_eq!(
            required("Service", &v).unwrap(),
            "spec.ports[0].port: Required value"
        );
        assert_eq!(required("Service", &serde_json::json!({"spec": {}})), None);
    }
}
