//! Diagnostics as Kubernetes Events (`events.k8s.io/v1`) on the object they concern, so
//! `kubectl describe ingress NAME` shows why a rule is not served.
//!
//! Each diagnostic is published once, when it first appears after a compile; one that
//! persists across compiles is not repeated, and one that goes away and comes back is
//! published again. Only the elected leader publishes, so replicas do not repeat each
//! other. Events are created directly rather than through kube-runtime's `Recorder`,
//! whose series de-duplication keys on the reason alone and would fold two different
//! diagnostics of one object into one Event with the first message.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::compile::Diagnostic;
use crate::sources::kube::post_params;
use crate::store::{Kind, ObjectKey, SharedStore, Store};

/// `reportingController` of every Event; the same name as our IngressClass controller.
pub const REPORTING_CONTROLLER: &str = "portico.dev/ingress-controller";
/// `action` of every Event: what Portico was doing when it found the problem.
pub const ACTION: &str = "Compile";

// Limits the API server validates.
const MAX_NOTE: usize = 1024;
const MAX_REASON: usize = 128;

/// One diagnostic, as an Event will show it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventNote {
    pub kind: Kind,
    pub object: ObjectKey,
    /// `Warning`, else `Normal`.
    pub warning: bool,
    /// Short, PascalCase or snake_case identifier (the diagnostic reason).
    pub reason: String,
    /// The full human-readable text.
    pub message: String,
}

impl From<&Diagnostic> for EventNote {
    /// Every diagnostic is a problem with the object, so a `Warning`; the reason in the
    /// PascalCase Kubernetes uses for Event reasons (`service_not_found` ->
    /// `ServiceNotFound`); the note names the field, as the Event already names the object.
    fn from(d: &Diagnostic) -> Self {
        let reason = d
            .reason
            .as_str()
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let message = if d.field.is_empty() {
            d.message.clone()
        } else {
            format!("{}: {}", d.field, d.message)
        };
        EventNote {
            kind: d.kind,
            object: d.object.clone(),
            warning: true,
            reason,
            message,
        }
    }
}

/// The publish loop hands every compile's diagnostics here. Cheap; never blocks on the API.
#[derive(Clone)]
pub struct EventPublisher {
    notes: Arc<watch::Sender<Vec<EventNote>>>,
}

impl EventPublisher {
    /// The complete set of current diagnostics. Only those not in the previous set become
    /// Events.
    pub fn publish(&self, notes: Vec<EventNote>) {
        self.notes.send_if_modified(|cur| {
            if *cur == notes {
                false
            } else {
                *cur = notes;
                true
            }
        });
    }

    /// [`EventPublisher::publish`] for a compile's diagnostics.
    pub fn publish_diagnostics(&self, diagnostics: &[Diagnostic]) {
        self.publish(diagnostics.iter().map(EventNote::from).collect());
    }
}

/// Start publishing. `instance` is this replica's name (`reportingInstance`).
pub fn spawn(
    client: Client,
    store: SharedStore,
    instance: String,
    leader: watch::Receiver<bool>,
) -> EventPublisher {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(run(client, store, instance, rx, leader));
    EventPublisher {
        notes: Arc::new(tx),
    }
}

async fn run(
    client: Client,
    store: SharedStore,
    instance: String,
    mut notes: watch::Receiver<Vec<EventNote>>,
    leader: watch::Receiver<bool>,
) {
    let seq = AtomicU64::new(0);
    let mut published: HashSet<EventNote> = HashSet::new();
    while notes.changed().await.is_ok() {
        let current: HashSet<EventNote> = notes.borrow_and_update().iter().cloned().collect();
        let fresh: Vec<&EventNote> = current.difference(&published).collect();
        if *leader.borrow() && !fresh.is_empty() {
            let snapshot = store.snapshot();
            for note in fresh {
                let event = build_event(
                    note,
                    &snapshot,
                    &instance,
                    seq.fetch_add(1, Ordering::Relaxed),
                );
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                match api.create(&post_params(), &event).await {
                    Ok(_) => {
                        tracing::debug!(object = %note.object, reason = %note.reason, "Event created")
                    }
                    Err(error) => tracing::warn!(
                        object = %note.object, reason = %note.reason, %error, "creating Event"
                    ),
                }
            }
        }
        published = current;
    }
}

fn api_version_kind(kind: Kind) -> (&'static str, &'static str) {
    let api_version = match kind {
        Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
        Kind::EndpointSlice => "discovery.k8s.io/v1",
        Kind::Service | Kind::Endpoints | Kind::Secret | Kind::ConfigMap | Kind::Namespace => "v1",
        Kind::GatewayClass
        | Kind::Gateway
        | Kind::HTTPRoute
        | Kind::GRPCRoute
        | Kind::BackendTLSPolicy => "gateway.networking.k8s.io/v1",
        Kind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
    };
    (api_version, kind.as_str())
}

/// uid and resourceVersion of the object, when the store has it.
fn identity(store: &Store, kind: Kind, key: &ObjectKey) -> (Option<String>, Option<String>) {
    fn of<K: ResourceExt>(o: Option<&Arc<K>>) -> (Option<String>, Option<String>) {
        o.map(|o| (o.uid(), o.resource_version()))
            .unwrap_or_default()
    }
    match kind {
        Kind::Ingress => of(store.ingresses.get(key)),
        Kind::IngressClass => of(store.ingress_classes.get(key)),
        Kind::Service => of(store.services.get(key)),
        Kind::EndpointSlice => of(store.endpoint_slices.get(key)),
        Kind::Endpoints => of(store.endpoints.get(key)),
        Kind::Secret => of(store.secrets.get(key)),
        Kind::ConfigMap => of(store.config_maps.get(key)),
        Kind::GatewayClass => of(store.gateway_classes.get(key)),
        Kind::Gateway => of(store.gateways.get(key)),
        Kind::HTTPRoute => of(store.http_routes.get(key)),
        Kind::GRPCRoute => of(store.grpc_routes.get(key)),
        Kind::ReferenceGrant => of(store.reference_grants.get(key)),
        Kind::BackendTLSPolicy => of(store.backend_tls_policies.get(key)),
        Kind::Namespace => of(store.namespaces.get(key)),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The Event for one note. Cluster-scoped objects get their Events in `default`, as
/// kubectl looks for them there.
pub fn build_event(note: &EventNote, store: &Store, instance: &str, seq: u64) -> Event {
    let (api_version, kind) = api_version_kind(note.kind);
    let (uid, resource_version) = identity(store, note.kind, &note.object);
    let namespace = if note.object.namespace.is_empty() {
        "default".to_owned()
    } else {
        note.object.namespace.clone()
    };
    let now = Timestamp::now();
    // Unique per object and moment, like client-go's names; `seq` separates events made
    // within the same nanosecond tick.
    let name = format!(
        "{}.{:x}",
        note.object.name,
        (now.as_nanosecond() as u128).wrapping_add(u128::from(seq))
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(ACTION.to_owned()),
        reason: Some(truncate(&note.reason, MAX_REASON)),
        note: Some(truncate(&note.message, MAX_NOTE)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.to_owned()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(truncate(instance, MAX_REASON)),
        regarding: Some(ObjectReference {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
            name: Some(note.object.name.clone()),
            namespace: (!note.object.namespace.is_empty()).then(|| note.object.namespace.clone()),
            uid,
            resource_version,
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::DiagnosticReason;

    #[test]
    fn diagnostic_to_note() {
        let d = Diagnostic::error(
            Kind::Ingress,
            &ObjectKey::new("default", "web"),
            "spec.rules[0].http.paths[0].backend.service.name",
            DiagnosticReason::ServiceNotFound,
            "service \"x\" not found",
        );
        let n = EventNote::from(&d);
        assert_eq!(n.reason, "ServiceNotFound");
        assert_eq!(
            n.message,
            "spec.rules[0].http.paths[0].backend.service.name: service \"x\" not found"
        );
        assert!(n.warning);
        assert_eq!(n.object, ObjectKey::new("default", "web"));
    }

    #[test]
    fn event_names_the_object_and_respects_limits() {
        let note = EventNote {
            kind: Kind::IngressClass,
            object: ObjectKey::new("", "portico"),
            warning: true,
            reason: "R".repeat(200),
            message: "é".repeat(1000),
        };
        let ev = build_event(&note, &Store::default(), "pod-1", 0);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        assert!(ev.metadata.name.as_deref().unwrap().starts_with("portico."));
        assert_eq!(ev.reason.as_deref().map(str::len), Some(MAX_REASON));
        let text = ev.note.unwrap();
        assert!(
            text.len() <= MAX_NOTE && text.len() > MAX_NOTE - 2,
            "{}",
            text.len()
        );
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let r = ev.regarding.unwrap();
        assert_eq!(r.kind.as_deref(), Some("IngressClass"));
        assert_eq!(r.api_version.as_deref(), Some("networking.k8s.io/v1"));
        assert_eq!(r.namespace, None);
        assert_eq!(
            ev.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );
    }
}
