//! One `AdmissionReview`, judged: the request is read, checked to be what the webhook
//! registered for, and its Ingress compiled against the store
//! ([`compile::check_candidate`]). Nothing here does I/O.
//!
//! Errors never echo the request: a body that is not a review is refused in fixed words
//! (a JSON parser's message can quote the input), and denials speak only of the
//! candidate's own fields and of object names.

use k8s_openapi::api::networking::v1::Ingress;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::compile::{self, CompileOptions, Diagnostic, DiagnosticReason};
use crate::store::Store;

/// The only review version served (`admissionReviewVersions: ["v1"]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// Why a body gets no review back (HTTP 400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not a JSON admission.k8s.io/v1 AdmissionReview")]
    NotAReview,
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// The review of one request: the response to send back, and what it decided (for logs
/// and metrics).
#[derive(Debug)]
pub struct Reviewed {
    pub review: AdmissionReview<DynamicObject>,
    pub outcome: Outcome,
    /// Denied only for TLS Secrets the store does not hold yet: a Secret created just
    /// before the Ingress (one `kubectl apply -f` of both) may still be on its way from
    /// the API server's watch, so the review is worth repeating when the store changes.
    pub awaits_secrets: bool,
}

/// What a review decided, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Denied,
    /// A request for a kind or operation the webhook does not judge.
    Unsupported,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Unsupported => "unsupported",
        }
    }
}

/// Reviews the AdmissionReview in `body` against `store`.
pub fn review(store: &Store, opts: &CompileOptions, body: &[u8]) -> Result<Reviewed, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|_| ReviewError::NotAReview)?;
    if review.types.api_version != REVIEW_API_VERSION || review.types.kind != REVIEW_KIND {
        return Err(ReviewError::NotAReview);
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let (response, outcome, awaits_secrets) = respond(store, opts, &request);
    Ok(Reviewed {
        review: response.into_review(),
        outcome,
        awaits_secrets,
    })
}

fn respond(
    store: &Store,
    opts: &CompileOptions,
    request: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, Outcome, bool) {
    let response = AdmissionResponse::from(request);
    let kind = &request.kind;
    let is_ingress = kind.group == "networking.k8s.io"
        && kind.version == "v1"
        && kind.kind == "Ingress"
        && request.resource.resource == "ingresses"
        && request.sub_resource.is_none();
    let judged = matches!(request.operation, Operation::Create | Operation::Update);
    if !is_ingress || !judged {
        return (
            refuse(
                response,
                "Portico's admission webhook reviews only CREATE and UPDATE of networking.k8s.io/v1 ingresses",
            ),
            Outcome::Unsupported,
            false,
        );
    }
    let Some(ingress) = request
        .object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| serde_json::from_value::<Ingress>(v).ok())
    else {
        return (
            refuse(
                response,
                "the request's object is not a networking.k8s.io/v1 Ingress",
            ),
            Outcome::Unsupported,
            false,
        );
    };
    if ingress.metadata.deletion_timestamp.is_some() || unchanged(request, &ingress) {
        // Removing a finalizer, adding a label: problems that predate the update must not
        // block it (nor the deletion it may be part of).
        return (response, Outcome::Allowed, false);
    }
    let mut ingress = ingress;
    if ingress.metadata.namespace.is_none() {
        ingress.metadata.namespace = request.namespace.clone();
    }
    let verdict = compile::check_candidate(store, opts, ingress);
    let mut response = response;
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.iter().map(Diagnostic::to_string).collect());
    }
    if verdict.allowed() {
        return (response, Outcome::Allowed, false);
    }
    let awaits_secrets = verdict
        .errors
        .iter()
        .all(|d| d.reason == DiagnosticReason::SecretNotFound);
    let message = verdict
        .errors
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    (refuse(response, message), Outcome::Denied, awaits_secrets)
}

/// Whether an UPDATE leaves everything Portico reads (spec and annotations) as it was.
fn unchanged(request: &AdmissionRequest<DynamicObject>, ingress: &Ingress) -> bool {
    if request.operation != Operation::Update {
        return false;
    }
    let Some(old) = request
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| serde_json::from_value::<Ingress>(v).ok())
    else {
        return false;
    };
    old.spec == ingress.spec && old.metadata.annotations == ingress.metadata.annotations
}

/// A denial, as the API server shows it: `admission webhook "..." denied the request: `
/// and the message.
fn refuse(response: AdmissionResponse, message: impl ToString) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 400;
    response.result.reason = "BadRequest".to_owned();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn store() -> Store {
        let mut store = Store::default();
        store.apply(crate::store::Object::IngressClass(
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portico"},
                "spec": {"controller": "portico.dev/ingress-controller"}
            }))
            .unwrap(),
        ));
        store.apply(crate::store::Object::Service(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]}
            }))
            .unwrap(),
        ));
        store
    }

    fn ingress(annotations: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
            "spec": {"ingressClassName": "portico", "rules": [{"host": "a.example.com",
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        })
    }

    fn request(kind: Value, resource: Value, operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": kind, "resource": resource, "operation": operation,
                "name": "web", "namespace": "default",
                "userInfo": {"username": "admin"},
                "object": object, "oldObject": null, "dryRun": false
            }
        }))
        .unwrap()
    }

    fn ingress_request(object: Value) -> Vec<u8> {
        request(
            json!({"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}),
            json!({"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"}),
            "CREATE",
            object,
        )
    }

    fn answer(body: &[u8]) -> (Value, Outcome) {
        let r = review(&store(), &CompileOptions::default(), body).expect("a review");
        (serde_json::to_value(&r.review).unwrap(), r.outcome)
    }

    #[test]
    fn allows_and_echoes_the_uid() {
        let (v, outcome) = answer(&ingress_request(ingress(json!({}))));
        assert_eq!(outcome, Outcome::Allowed);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("warnings").is_none(), "{v}");
    }

    #[test]
    fn denies_naming_the_field_and_reason() {
        let (v, outcome) = answer(&ingress_request(ingress(
            json!({"nginx.ingress.kubernetes.io/server-snippet": "lua_code_cache off;"}),
        )));
        assert_eq!(outcome, Outcome::Denied);
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 400);
        let message = v["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Ingress default/web: metadata.annotations: snippet annotation nginx.ingress.kubernetes.io/server-snippet"),
            "{message}"
        );
        assert!(!message.contains("lua_code_cache"), "{message}");
    }

    #[test]
    fn cosmetic_annotations_come_back_as_warnings() {
        let (v, outcome) = answer(&ingress_request(ingress(
            json!({"nginx.ingress.kubernetes.io/enable-access-log": "false"}),
        )));
        assert_eq!(outcome, Outcome::Allowed);
        let warnings = v["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{v}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("nginx.ingress.kubernetes.io/enable-access-log is not supported"),
            "{v}"
        );
    }

    #[test]
    fn updates_that_change_no_spec_or_annotation_pass_whatever_the_object_holds() {
        let snippet = ingress(json!({"nginx.ingress.kubernetes.io/server-snippet": "x"}));
        let update = |old: Value, new: Value| {
            let mut r: Value = serde_json::from_slice(&ingress_request(new)).unwrap();
            r["request"]["operation"] = json!("UPDATE");
            r["request"]["oldObject"] = old;
            serde_json::to_vec(&r).unwrap()
        };
        let mut labelled = snippet.clone();
        labelled["metadata"]["labels"] = json!({"team": "a"});
        labelled["metadata"]["finalizers"] = json!([]);
        assert_eq!(
            answer(&update(snippet.clone(), labelled)).1,
            Outcome::Allowed
        );
        let mut deleting = snippet.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert_eq!(
            answer(&update(snippet.clone(), deleting)).1,
            Outcome::Allowed
        );
        // Touching the spec is judged.
        let mut edited = snippet.clone();
        edited["spec"]["rules"][0]["host"] = json!("b.example.com");
        assert_eq!(answer(&update(snippet, edited)).1, Outcome::Denied);
    }

    #[test]
    fn other_kinds_operations_and_subresources_are_refused() {
        let pods = request(
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            json!({"group": "", "version": "v1", "resource": "pods"}),
            "CREATE",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}}),
        );
        let delete = request(
            json!({"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"}),
            json!({"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"}),
            "DELETE",
            Value::Null,
        );
        let mut status: Value =
            serde_json::from_slice(&ingress_request(ingress(json!({})))).unwrap();
        status["request"]["subResource"] = json!("status");
        for body in [pods, delete, serde_json::to_vec(&status).unwrap()] {
            let (v, outcome) = answer(&body);
            assert_eq!(outcome, Outcome::Unsupported, "{v}");
            assert_eq!(v["response"]["allowed"], false);
        }
    }

    #[test]
    fn what_is_not_a_v1_review_gets_no_review() {
        let opts = CompileOptions::default();
        let mut v1beta1: Value =
            serde_json::from_slice(&ingress_request(ingress(json!({})))).unwrap();
        v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
        for body in [
            b"not json".to_vec(),
            b"{\"apiVersion\": \"admission.k8s.io/v1\"}".to_vec(),
            serde_json::to_vec(&v1beta1).unwrap(),
        ] {
            assert_eq!(
                review(&store(), &opts, &body).unwrap_err(),
                ReviewError::NotAReview
            );
        }
        let empty = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#;
        assert_eq!(
            review(&store(), &opts, empty).unwrap_err(),
            ReviewError::NoRequest
        );
    }
}
