//! Writes the Gateway API status the compiler works out (GatewayClass, Gateway with its
//! listeners and addresses, HTTPRoute and GRPCRoute parents) to the API server, from the elected leader
//! only, through each kind's `status` subresource by server-side apply as field manager
//! `portico`, and only when the object's current status differs.
//!
//! - Every condition carries `observedGeneration`; `lastTransitionTime` is kept from the
//!   current condition of the same type while its status stays, so an unchanged status
//!   compares equal and is not written again.
//! - A Gateway's `status.addresses` are its own (`--gateway-address-pool`), else the
//!   addresses Ingress status publishes (`--publish-service` / `--publish-address`);
//!   without any the list is left out.
//! - A route's `status.parents` (HTTPRoute's and GRPCRoute's) is an atomic list (`x-kubernetes-list-type: atomic` in
//!   the CRDs): an apply takes it whole. Portico therefore writes the entries of other
//!   controllers back as it read them, beside its own, and puts the route's
//!   `resourceVersion` in the apply, so the server refuses the write (409) when another
//!   controller changed the list meanwhile; the next round reads it again.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::compile::{Condition, GatewayApiStatus, ObjectStatus, ParentStatus, GATEWAY_CONTROLLER};
use crate::gateway_api::{BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, GROUP};
use crate::sources::kube::FIELD_MANAGER;
use crate::status::{drive, LbAddress, StatusSync};
use crate::store::{Kind, ObjectKey, SharedStore, Store};

/// The publish loop hands the writer each compile's Gateway API status.
#[derive(Clone)]
pub struct GatewayStatusHandle {
    status: Arc<watch::Sender<Option<Arc<GatewayApiStatus>>>>,
}

impl GatewayStatusHandle {
    /// Record the latest status. Cheap; never blocks on the API.
    pub fn set(&self, status: &GatewayApiStatus) {
        self.status.send_if_modified(|cur| {
            if cur.as_deref() == Some(status) {
                false
            } else {
                *cur = Some(Arc::new(status.clone()));
                true
            }
        });
    }
}

/// Start the writer. It acts only while `leader` is true, and only after the first
/// [`GatewayStatusHandle::set`].
pub fn spawn(
    client: Client,
    store: SharedStore,
    addresses: watch::Receiver<Vec<LbAddress>>,
    leader: watch::Receiver<bool>,
) -> GatewayStatusHandle {
    let (tx, rx) = watch::channel(None);
    let writer = Writer {
        client,
        store,
        written: HashMap::new(),
    };
    tokio::spawn(drive(writer, rx, addresses, leader));
    GatewayStatusHandle {
        status: Arc::new(tx),
    }
}

struct Writer {
    client: Client,
    store: SharedStore,
    /// What we last wrote per object, and its resourceVersion before that write: until
    /// the store shows a newer version, the write is assumed to be in flight.
    written: HashMap<(Kind, ObjectKey), (Value, String)>,
}

impl StatusSync for Writer {
    type Input = Arc<GatewayApiStatus>;

    fn store(&self) -> &SharedStore {
        &self.store
    }

    fn forget(&mut self) {
        self.written.clear();
    }

    async fn sync(&mut self, status: &Arc<GatewayApiStatus>, addrs: &[LbAddress]) -> bool {
        self.write_objects(status, addrs).await
    }
}

impl Writer {
    /// Bring every object in line; false if some write failed.
    async fn write_objects(&mut self, status: &GatewayApiStatus, addrs: &[LbAddress]) -> bool {
        let store = self.store.snapshot();
        let now = now();
        let mut ok = true;
        for (kind, key, want, rv) in wanted(&store, status, addrs, &now) {
            let id = (kind, key);
            if self
                .written
                .get(&id)
                .is_some_and(|(w, before)| *w == want && *before == rv)
            {
                continue;
            }
            let (kind, key) = &id;
            match self.patch(*kind, key, &want, &rv).await {
                Ok(()) => {
                    tracing::info!(kind = kind.as_str(), object = %key, "status written");
                    self.written.insert(id, (want, rv));
                }
                Err(error) => {
                    tracing::warn!(kind = kind.as_str(), object = %key, %error, "writing status");
                    ok = false;
                }
            }
        }
        ok
    }

    async fn patch(
        &self,
        kind: Kind,
        key: &ObjectKey,
        status: &Value,
        rv: &str,
    ) -> Result<(), kube::Error> {
        let mut metadata = json!({ "name": key.name });
        if !key.namespace.is_empty() {
            metadata["namespace"] = json!(key.namespace);
        }
        // The atomic parents list: written only over the version it was read from.
        if matches!(
            kind,
            Kind::HTTPRoute | Kind::GRPCRoute | Kind::BackendTLSPolicy
        ) && !rv.is_empty()
        {
            metadata["resourceVersion"] = json!(rv);
        }
        let body = json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": kind.as_str(),
            "metadata": metadata,
            "status": status,
        });
        // Forced: these fields are ours to publish even when another manager (an
        // earlier controller, `kubectl`) last wrote them.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        match kind {
            Kind::GatewayClass => {
                let api: Api<GatewayClass> = Api::all(self.client.clone());
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            Kind::Gateway => {
                let api: Api<Gateway> = Api::namespaced(self.client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            Kind::GRPCRoute => {
                let api: Api<GRPCRoute> = Api::namespaced(self.client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            Kind::BackendTLSPolicy => {
                let api: Api<BackendTLSPolicy> =
                    Api::namespaced(self.client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            _ => {
                let api: Api<HTTPRoute> = Api::namespaced(self.client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
        }
    }
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// The status to apply to each object whose current status differs from what Portico
/// works out: `(kind, object, status, resourceVersion)`. Routes that no longer attach to
/// a Gateway of ours but still show our entries get them taken out.
pub fn wanted(
    store: &Store,
    status: &GatewayApiStatus,
    addrs: &[LbAddress],
    now: &Value,
) -> Vec<(Kind, ObjectKey, Value, String)> {
    let mut out = Vec::new();
    let mut push = |kind: Kind, key: &ObjectKey, current: Option<&Value>, want: Value, rv| {
        if !covers(current, &want) {
            out.push((kind, key.clone(), want, rv));
        }
    };
    for ((kind, key), st) in status {
        match kind {
            Kind::GatewayClass => {
                let Some(obj) = store.gateway_classes.get(key) else {
                    continue;
                };
                let current = obj.status.as_ref();
                let want = json!({ "conditions": conditions(&st.conditions, current, now) });
                push(*kind, key, current, want, rv_of(&obj.metadata));
            }
            Kind::Gateway => {
                let Some(obj) = store.gateways.get(key) else {
                    continue;
                };
                let current = obj.status.as_ref();
                let want = gateway_status(st, current, addrs, now);
                push(*kind, key, current, want, rv_of(&obj.metadata));
            }
            Kind::HTTPRoute | Kind::GRPCRoute => {
                let Some((current, meta)) = route_of(store, *kind, key) else {
                    continue;
                };
                let want = json!({ "parents": parents(key, &st.parents, current, now) });
                push(*kind, key, current, want, rv_of(meta));
            }
            Kind::BackendTLSPolicy => {
                let Some(obj) = store.backend_tls_policies.get(key) else {
                    continue;
                };
                let current = obj.status.as_ref();
                let want = json!({ "ancestors": ancestors(key, &st.parents, current, now) });
                push(*kind, key, current, want, rv_of(&obj.metadata));
            }
            _ => {}
        }
    }
    let routes = (store.http_routes.iter())
        .map(|(k, r)| (Kind::HTTPRoute, k, r.status.as_ref(), &r.metadata))
        .chain(
            (store.grpc_routes.iter())
                .map(|(k, r)| (Kind::GRPCRoute, k, r.status.as_ref(), &r.metadata)),
        );
    for (kind, key, current, meta) in routes {
        if status.contains_key(&(kind, key.clone())) {
            continue;
        }
        let shown = current
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(is_ours));
        if shown {
            let want = json!({ "parents": parents(key, &[], current, now) });
            push(kind, key, current, want, rv_of(meta));
        }
    }
    out
}

/// A route's current status and metadata, for either route kind.
fn route_of<'a>(
    store: &'a Store,
    kind: Kind,
    key: &ObjectKey,
) -> Option<(
    Option<&'a Value>,
    &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
)> {
    match kind {
        Kind::HTTPRoute => store
            .http_routes
            .get(key)
            .map(|r| (r.status.as_ref(), &r.metadata)),
        Kind::GRPCRoute => store
            .grpc_routes
            .get(key)
            .map(|r| (r.status.as_ref(), &r.metadata)),
        _ => None,
    }
}

fn rv_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// Whether every field of `want` is already in `current` as it is.
fn covers(current: Option<&Value>, want: &Value) -> bool {
    current.is_some_and(|c| same(c, want))
}

/// Condition types Portico writes. One of them that a status shows but Portico no
/// longer wants (`InsecureFrontendValidationMode` once the mode is back to
/// `AllowValidOnly`) is to be taken out by the next apply.
const OUR_CONDITIONS: [&str; 6] = [
    "Accepted",
    "Programmed",
    "ResolvedRefs",
    "Conflicted",
    "SupportedVersion",
    "InsecureFrontendValidationMode",
];

/// `current` shows `want`: an object's fields as wanted (others ignored); a list of
/// conditions (a map keyed by `type` in the CRDs) holding each wanted condition and no
/// other of Portico's types, as other writers may add their own types; a list of
/// listener statuses (keyed by `name`) with exactly the wanted names; any other list
/// (atomic in the CRDs) equal.
fn same(current: &Value, want: &Value) -> bool {
    let keyed = |list: &[Value], key: &str, other: &str| {
        !list.is_empty()
            && list
                .iter()
                .all(|v| v.get(key).is_some_and(Value::is_string) && v.get(other).is_some())
    };
    let find = |list: &[Value], key: &str, wanted: &Value| -> bool {
        let id = wanted.get(key);
        list.iter()
            .find(|c| c.get(key) == id)
            .is_some_and(|c| same(c, wanted))
    };
    match (current, want) {
        (Value::Object(c), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| c.get(k).is_some_and(|cv| same(cv, v))),
        (Value::Array(c), Value::Array(w)) if keyed(w, "type", "lastTransitionTime") => {
            let unwanted = |ci: &Value| {
                let type_ = ci.get("type");
                OUR_CONDITIONS.iter().any(|t| type_ == Some(&json!(t)))
                    && !w.iter().any(|wi| wi.get("type") == type_)
            };
            w.iter().all(|wi| find(c, "type", wi)) && !c.iter().any(unwanted)
        }
        (Value::Array(c), Value::Array(w)) if keyed(w, "name", "attachedRoutes") => {
            c.len() == w.len() && w.iter().all(|wi| find(c, "name", wi))
        }
        _ => current == want,
    }
}

fn is_ours(parent: &Value) -> bool {
    parent.get("controllerName").and_then(Value::as_str) == Some(GATEWAY_CONTROLLER)
}

/// Conditions as the API writes them; `current` is the object's (or listener's, or
/// parent's) current status holding `conditions`.
fn conditions(list: &[Condition], current: Option<&Value>, now: &Value) -> Value {
    let before = current
        .and_then(|c| c.get("conditions"))
        .and_then(Value::as_array);
    Value::Array(
        list.iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                // Kept while the condition's status stays.
                let since = before
                    .into_iter()
                    .flatten()
                    .find(|b| {
                        b.get("type").and_then(Value::as_str) == Some(c.type_)
                            && b.get("status").and_then(Value::as_str) == Some(status)
                    })
                    .and_then(|b| b.get("lastTransitionTime"))
                    .cloned()
                    .unwrap_or_else(|| now.clone());
                let mut m = Map::new();
                m.insert("type".into(), json!(c.type_));
                m.insert("status".into(), json!(status));
                m.insert("reason".into(), json!(c.reason));
                m.insert("message".into(), json!(c.message));
                if let Some(g) = c.observed_generation {
                    m.insert("observedGeneration".into(), json!(g));
                }
                m.insert("lastTransitionTime".into(), since);
                Value::Object(m)
            })
            .collect(),
    )
}

fn gateway_status(
    st: &ObjectStatus,
    current: Option<&Value>,
    addrs: &[LbAddress],
    now: &Value,
) -> Value {
    let current_listeners = current
        .and_then(|c| c.get("listeners"))
        .and_then(Value::as_array);
    let listeners: Vec<Value> = st
        .listeners
        .iter()
        .map(|l| {
            let before = current_listeners
                .into_iter()
                .flatten()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(&l.name));
            let kinds: Vec<Value> = l
                .supported_kinds
                .iter()
                .map(|k| json!({ "group": GROUP, "kind": k }))
                .collect();
            json!({
                "name": l.name,
                "supportedKinds": kinds,
                "attachedRoutes": l.attached_routes,
                "conditions": conditions(&l.conditions, before, now),
            })
        })
        .collect();
    let mut out = json!({
        "conditions": conditions(&st.conditions, current, now),
        "listeners": listeners,
    });
    let own: Vec<LbAddress>;
    let addrs = match &st.addresses {
        Some(list) => {
            own = list.iter().copied().map(LbAddress::Ip).collect();
            &own
        }
        None => addrs,
    };
    if !addrs.is_empty() {
        out["addresses"] = Value::Array(
            addrs
                .iter()
                .map(|a| match a {
                    LbAddress::Ip(ip) => json!({ "type": "IPAddress", "value": ip.to_string() }),
                    LbAddress::Hostname(h) => json!({ "type": "Hostname", "value": h }),
                })
                .collect(),
        );
    }
    out
}

/// `status.parents` of a route: the entries of other controllers as they are, then ours.
fn parents(
    route: &ObjectKey,
    ours: &[ParentStatus],
    current: Option<&Value>,
    now: &Value,
) -> Value {
    let before: Vec<&Value> = current
        .and_then(|c| c.get("parents"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut list: Vec<Value> = before
        .iter()
        .filter(|p| !is_ours(p))
        .map(|p| (*p).clone())
        .collect();
    for p in ours {
        let mut parent_ref = json!({
            "group": GROUP,
            "kind": "Gateway",
            "namespace": p.gateway.namespace,
            "name": p.gateway.name,
        });
        if let Some(s) = &p.section_name {
            parent_ref["sectionName"] = json!(s);
        }
        if let Some(port) = p.port {
            parent_ref["port"] = json!(port);
        }
        let previous = before
            .iter()
            .find(|b| is_ours(b) && same_ref(b.get("parentRef"), &parent_ref, route))
            .copied();
        list.push(json!({
            "parentRef": parent_ref,
            "controllerName": GATEWAY_CONTROLLER,
            "conditions": conditions(&p.conditions, previous, now),
        }));
    }
    Value::Array(list)
}

/// A policy's `status.ancestors` (a Gateway API PolicyStatus): the same entries as a
/// route's `status.parents`, with `ancestorRef` for `parentRef`, written the same way.
fn ancestors(
    policy: &ObjectKey,
    ours: &[ParentStatus],
    current: Option<&Value>,
    now: &Value,
) -> Value {
    let rename = |list: Option<&Value>, from: &str, to: &str| -> Value {
        let renamed = list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|entry| match entry {
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, v)| {
                            (if k == from { to.to_owned() } else { k.clone() }, v.clone())
                        })
                        .collect(),
                ),
                other => other.clone(),
            })
            .collect();
        Value::Array(renamed)
    };
    let as_parents = current
        .map(|c| json!({ "parents": rename(c.get("ancestors"), "ancestorRef", "parentRef") }));
    let list = parents(policy, ours, as_parents.as_ref(), now);
    rename(Some(&list), "parentRef", "ancestorRef")
}

/// Whether a parentRef read back (with the server's defaults, or without them) names the
/// same parent as one Portico writes.
fn same_ref(read: Option<&Value>, ours: &Value, route: &ObjectKey) -> bool {
    let Some(read) = read else {
        return false;
    };
    let field = |v: &Value, k: &str, default: Value| v.get(k).cloned().unwrap_or(default);
    let defaults = [
        ("group", json!(GROUP)),
        ("kind", json!("Gateway")),
        ("namespace", json!(route.namespace)),
        ("name", Value::Null),
        ("sectionName", Value::Null),
        ("port", Value::Null),
    ];
    defaults
        .into_iter()
        .all(|(k, d)| field(read, k, d.clone()) == field(ours, k, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time_while_the_status_stays() {
        let c = |status| Condition {
            type_: "Accepted",
            status,
            reason: "Accepted",
            message: String::new(),
            observed_generation: Some(2),
        };
        let now = json!("2030-01-01T00:00:00Z");
        let current = json!({"conditions": [{"type": "Accepted", "status": "True",
            "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
        let kept = conditions(&[c(true)], Some(&current), &now);
        assert_eq!(kept[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(kept[0]["observedGeneration"], 2);
        let changed = conditions(&[c(false)], Some(&current), &now);
        assert_eq!(changed[0]["lastTransitionTime"], now);
        assert_eq!(changed[0]["status"], "False");
    }

    #[test]
    fn parents_keep_other_controllers_entries() {
        let route = ObjectKey::new("app", "r");
        let theirs = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/other",
            "conditions": []});
        let stale = json!({"parentRef": {"name": "old"}, "controllerName": GATEWAY_CONTROLLER,
            "conditions": []});
        let current = json!({"parents": [theirs, stale]});
        let ours = ParentStatus {
            gateway: ObjectKey::new("infra", "gw"),
            section_name: Some("http".into()),
            port: None,
            conditions: Vec::new(),
        };
        let got = parents(&route, &[ours], Some(&current), &json!("t"));
        assert_eq!(
            got,
            json!([theirs, {
                "parentRef": {"group": GROUP, "kind": "Gateway", "namespace": "infra",
                              "name": "gw", "sectionName": "http"},
                "controllerName": GATEWAY_CONTROLLER,
                "conditions": [],
            }])
        );
        assert!(covers(
            Some(&json!({"parents": got.clone(), "x": 1})),
            &json!({"parents": got})
        ));
    }

    #[test]
    fn policy_ancestors_are_written_as_route_parents_are() {
        let policy = ObjectKey::new("app", "tls");
        let theirs = json!({"ancestorRef": {"name": "gw"}, "controllerName": "example.com/other",
            "conditions": []});
        let previous = json!({"ancestorRef": {"group": GROUP, "kind": "Gateway",
            "namespace": "infra", "name": "gw"}, "controllerName": GATEWAY_CONTROLLER,
            "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "then"}]});
        let current = json!({"ancestors": [theirs, previous]});
        let ours = ParentStatus {
            gateway: ObjectKey::new("infra", "gw"),
            section_name: None,
            port: None,
            conditions: vec![Condition {
                type_: "Accepted",
                status: true,
                reason: "Accepted",
                message: String::new(),
                observed_generation: None,
            }],
        };
        let got = ancestors(&policy, &[ours], Some(&current), &json!("now"));
        assert_eq!(got[0], theirs);
        assert_eq!(
            got[1]["ancestorRef"],
            json!({"group": GROUP, "kind": "Gateway", "namespace": "infra", "name": "gw"})
        );
        assert_eq!(got[1]["controllerName"], GATEWAY_CONTROLLER);
        // The condition kept its transition time: the entry was recognised as ours.
        assert_eq!(got[1]["conditions"][0]["lastTransitionTime"], "then");
        assert!(got[1].get("parentRef").is_none());
    }

    #[test]
    fn other_writers_conditions_do_not_make_a_difference() {
        let ours = json!({"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "", "lastTransitionTime": "t"});
        let theirs = json!({"type": "example.com/Policy", "status": "True", "reason": "Ok",
            "message": "", "lastTransitionTime": "t"});
        let listener = |conditions: Value| {
            json!({"name": "http", "attachedRoutes": 1,
            "supportedKinds": [], "conditions": conditions})
        };
        let want = json!({"conditions": [ours], "listeners": [listener(json!([ours]))]});
        let current = json!({"conditions": [theirs, ours],
            "listeners": [listener(json!([ours, theirs]))]});
        assert!(covers(Some(&current), &want));
        // A changed condition, a listener gone or added, another address: different.
        let changed = json!({"conditions": [{"type": "Accepted", "status": "False",
            "reason": "Accepted", "message": "", "lastTransitionTime": "t"}],
            "listeners": [listener(json!([ours]))]});
        assert!(!covers(Some(&changed), &want));
        let extra = json!({"conditions": [ours],
            "listeners": [listener(json!([ours])), {"name": "old", "attachedRoutes": 0}]});
        assert!(!covers(Some(&extra), &want));
        let with_addr = json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.1"}]});
        let two = json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.1"},
            {"type": "IPAddress", "value": "10.0.0.2"}]});
        assert!(!covers(Some(&two), &with_addr));
        assert!(!covers(None, &want));
        // One of Portico's own condition types no longer wanted: different, so that the
        // next apply takes it out.
        let insecure = json!({"type": "InsecureFrontendValidationMode", "status": "True",
            "reason": "ConfigurationChanged", "message": "", "lastTransitionTime": "t"});
        let stale = json!({"conditions": [ours, insecure],
            "listeners": [listener(json!([ours]))]});
        assert!(!covers(Some(&stale), &want));
    }

    #[test]
    fn a_grpcroute_no_longer_attached_loses_only_our_entry() {
        let theirs = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/other",
            "conditions": []});
        let ours = json!({"parentRef": {"name": "gw"}, "controllerName": GATEWAY_CONTROLLER,
            "conditions": []});
        let mut store = Store::default();
        let mut route = GRPCRoute {
            status: Some(json!({"parents": [theirs, ours]})),
            ..GRPCRoute::default()
        };
        route.metadata.namespace = Some("app".into());
        route.metadata.name = Some("rpc".into());
        route.metadata.resource_version = Some("7".into());
        store.apply(crate::store::Object::GRPCRoute(route));
        let out = wanted(&store, &GatewayApiStatus::new(), &[], &json!("t"));
        assert_eq!(out.len(), 1, "{out:?}");
        let (kind, key, want, rv) = &out[0];
        assert_eq!(*kind, Kind::GRPCRoute);
        assert_eq!(*key, ObjectKey::new("app", "rpc"));
        assert_eq!(*want, json!({"parents": [theirs]}));
        assert_eq!(rv, "7");
    }
}
