//! The Gateway API status Portico works out, read back in either of two ways. Over a
//! manifest folder, from its log: with no API server to write status to, the binary logs
//! each object's status whenever it changes (`status: ...`, with `kind` and `object`
//! fields), and the last such line of an object is its current status. Over an API
//! server, from the objects' `status` as the binary applied it ([`from_objects`]).

use std::collections::BTreeMap;

use serde_json::Value;

/// One condition: `type`, `status`, `reason` and `observedGeneration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub generation: Option<i64>,
}

/// One entry of a Gateway's `status.listeners`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: u32,
    /// `supportedKinds`, each as `Kind` (the Gateway API group) or `group/Kind`.
    pub supported_kinds: Vec<String>,
    pub conditions: Vec<Cond>,
}

/// One entry of a route's `status.parents` (Portico's own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentStatus {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub section: Option<String>,
    pub conditions: Vec<Cond>,
}

/// The status of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerStatus>,
    pub parents: Vec<ParentStatus>,
    /// A Gateway's `status.addresses` values.
    pub addresses: Vec<String>,
}

impl ObjectStatus {
    pub fn condition(&self, type_: &str) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The parent entry for `gateway` (`namespace/name`) and `section`.
    pub fn parent(&self, gateway: &str, section: Option<&str>) -> Option<&ParentStatus> {
        self.parents
            .iter()
            .find(|p| p.gateway == gateway && p.section.as_deref() == section)
    }
}

/// `(kind, object)` to the object's latest status; `object` is `namespace/name`, or the
/// name alone for a GatewayClass.
pub type Statuses = BTreeMap<(String, String), ObjectStatus>;

/// Every object's latest status in a JSON-lines log (`--log-format json`).
pub fn from_log(log: &str) -> Statuses {
    let mut out = Statuses::new();
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let Some(text) = field("message").and_then(|m| m.strip_prefix("status:")) else {
            continue;
        };
        let (Some(kind), Some(object)) = (field("kind"), field("object")) else {
            continue;
        };
        out.insert((kind.to_owned(), object.to_owned()), parse(text.trim()));
    }
    out
}

/// The kinds whose status Portico writes.
pub const STATUS_KINDS: [&str; 5] = [
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "BackendTLSPolicy",
];

/// Every object's status as an API server holds it: the objects' conditions, a
/// Gateway's listeners, and a route's `parents` (a policy's `ancestors`) written by
/// `controller` (other controllers' entries are theirs). Objects with no `status` have
/// none, as objects the log never named.
pub fn from_objects<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
    controller: &str,
) -> Statuses {
    let mut out = Statuses::new();
    for obj in objects {
        let text = |v: &Value, pointer: &str| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let kind = text(obj, "/kind");
        let Some(st) = obj.get("status").filter(|s| s.is_object()) else {
            continue;
        };
        if !STATUS_KINDS.contains(&kind.as_str()) {
            continue;
        }
        let (ns, name) = (
            text(obj, "/metadata/namespace"),
            text(obj, "/metadata/name"),
        );
        // As the log names them: `namespace/name`, or the name of a cluster-scoped one.
        let object = if ns.is_empty() {
            name
        } else {
            format!("{ns}/{name}")
        };
        let list = |v: &Value, field: &str| -> Vec<Value> {
            v.get(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut status = ObjectStatus {
            conditions: api_conditions(st),
            addresses: list(st, "addresses")
                .iter()
                .map(|a| text(a, "/value"))
                .collect(),
            ..ObjectStatus::default()
        };
        for l in list(st, "listeners") {
            status.listeners.push(ListenerStatus {
                name: text(&l, "/name"),
                attached_routes: l
                    .get("attachedRoutes")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                supported_kinds: list(&l, "supportedKinds")
                    .iter()
                    .map(|k| {
                        let group = text(k, "/group");
                        let kind = text(k, "/kind");
                        if group.is_empty() || group == "gateway.networking.k8s.io" {
                            kind
                        } else {
                            format!("{group}/{kind}")
                        }
                    })
                    .collect(),
                conditions: api_conditions(&l),
            });
        }
        let (entries, reference) = if kind == "BackendTLSPolicy" {
            (list(st, "ancestors"), "ancestorRef")
        } else {
            (list(st, "parents"), "parentRef")
        };
        for p in entries {
            if p.get("controllerName").and_then(Value::as_str) != Some(controller) {
                continue;
            }
            let r = p.get(reference).cloned().unwrap_or_default();
            // An unset namespace is the object's own.
            let gw_ns = Some(text(&r, "/namespace"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| ns.clone());
            status.parents.push(ParentStatus {
                gateway: format!("{gw_ns}/{}", text(&r, "/name")),
                section: r
                    .get("sectionName")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                conditions: api_conditions(&p),
            });
        }
        out.insert((kind, object), status);
    }
    out
}

/// The `conditions` of a status (or of a listener or parent entry of one).
fn api_conditions(v: &Value) -> Vec<Cond> {
    v.get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Cond {
            type_: c
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            status: c.get("status").and_then(Value::as_str) == Some("True"),
            reason: c
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            generation: c.get("observedGeneration").and_then(Value::as_i64),
        })
        .collect()
}

/// One status line, as the binary writes it: parts joined by `; `, each the object's
/// conditions, `addresses [IP ...]`, `listener "NAME": attachedRoutes N, supportedKinds
/// [KIND ...], CONDITIONS` or `parent NS/NAME[/SECTION]: CONDITIONS`.
pub fn parse(text: &str) -> ObjectStatus {
    let mut status = ObjectStatus::default();
    for part in text.split("; ").filter(|p| !p.is_empty()) {
        if let Some(rest) = part.strip_prefix("listener \"") {
            let (name, rest) = rest.split_once("\": ").unwrap_or((rest, ""));
            let rest = rest.strip_prefix("attachedRoutes ").unwrap_or(rest);
            let (count, rest) = rest.split_once(", ").unwrap_or((rest, ""));
            let (kinds, conds) = match rest.strip_prefix("supportedKinds [") {
                Some(rest) => rest.split_once("], ").unwrap_or((rest, "")),
                None => ("", rest),
            };
            status.listeners.push(ListenerStatus {
                name: name.to_owned(),
                attached_routes: count.trim().parse().unwrap_or(0),
                supported_kinds: kinds.split_whitespace().map(str::to_owned).collect(),
                conditions: conditions(conds),
            });
        } else if let Some(rest) = part.strip_prefix("addresses [") {
            let list = rest.trim_end_matches(']');
            status.addresses = list.split_whitespace().map(str::to_owned).collect();
        } else if let Some(rest) = part.strip_prefix("parent ") {
            let (target, conds) = rest.split_once(": ").unwrap_or((rest, ""));
            let mut segments = target.splitn(3, '/');
            let ns = segments.next().unwrap_or_default();
            let name = segments.next().unwrap_or_default();
            status.parents.push(ParentStatus {
                gateway: format!("{ns}/{name}"),
                section: segments.next().map(str::to_owned),
                conditions: conditions(conds),
            });
        } else {
            status.conditions = conditions(part);
        }
    }
    status
}

/// `Type=True (Reason, generation N), Type2=False (Reason2)`.
fn conditions(text: &str) -> Vec<Cond> {
    text.split("), ")
        .filter_map(|c| {
            let c = c.trim().trim_end_matches(')');
            let (type_, rest) = c.split_once('=')?;
            let (status, rest) = rest.split_once(" (")?;
            let (reason, generation) = match rest.split_once(", generation ") {
                Some((r, g)) => (r, g.trim().parse().ok()),
                None => (rest, None),
            };
            Some(Cond {
                type_: type_.to_owned(),
                status: status == "True",
                reason: reason.to_owned(),
                generation,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_lines_of_a_json_log() {
        let log = concat!(
            r#"{"level":"INFO","message":"configuration published"}"#,
            "\n",
            r#"{"level":"INFO","message":"status: Accepted=True (Accepted, generation 1), Programmed=True (Programmed); addresses [127.0.1.1 127.0.1.2]; listener \"http\": attachedRoutes 2, supportedKinds [HTTPRoute GRPCRoute], Accepted=True (Accepted), ResolvedRefs=False (InvalidRouteKinds)","kind":"Gateway","object":"infra/gw"}"#,
            "\n",
            r#"{"level":"INFO","message":"status: parent infra/gw/http: Accepted=False (NotAllowedByListeners, generation 3); parent infra/other: Accepted=True (Accepted)","kind":"HTTPRoute","object":"app/r"}"#,
            "\nnot json\n"
        );
        let all = from_log(log);
        let gw = &all[&("Gateway".to_owned(), "infra/gw".to_owned())];
        assert_eq!(gw.condition("Accepted").unwrap().generation, Some(1));
        assert!(gw.condition("Programmed").unwrap().status);
        assert_eq!(gw.addresses, ["127.0.1.1", "127.0.1.2"]);
        let l = gw.listener("http").unwrap();
        assert_eq!(l.attached_routes, 2);
        assert_eq!(l.supported_kinds, ["HTTPRoute", "GRPCRoute"]);
        assert_eq!(l.conditions[1].reason, "InvalidRouteKinds");
        assert!(!l.conditions[1].status);
        let r = &all[&("HTTPRoute".to_owned(), "app/r".to_owned())];
        let p = r.parent("infra/gw", Some("http")).unwrap();
        assert_eq!(p.conditions[0].reason, "NotAllowedByListeners");
        assert_eq!(p.conditions[0].generation, Some(3));
        assert!(r.parent("infra/other", None).unwrap().conditions[0].status);
    }

    #[test]
    fn reads_the_status_an_api_server_holds_keeping_our_parent_entries() {
        let ours = "portico.dev/gateway-controller";
        let objects = [
            serde_json::json!({"kind": "Gateway", "metadata": {"namespace": "infra", "name": "gw"},
                "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                    "observedGeneration": 2}],
                  "addresses": [{"type": "IPAddress", "value": "127.0.1.3"}],
                  "listeners": [{"name": "http", "attachedRoutes": 2,
                    "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                      {"kind": "GRPCRoute"}, {"group": "example.com", "kind": "Other"}],
                    "conditions": [
                    {"type": "ResolvedRefs", "status": "False", "reason": "InvalidRouteKinds"}]}]}}),
            serde_json::json!({"kind": "HTTPRoute", "metadata": {"namespace": "app", "name": "r"},
                "status": {"parents": [
                  {"parentRef": {"name": "gw", "namespace": "infra", "sectionName": "http"},
                   "controllerName": ours,
                   "conditions": [{"type": "Accepted", "status": "False",
                     "reason": "NotAllowedByListeners", "observedGeneration": 3}]},
                  {"parentRef": {"name": "gw", "namespace": "infra"},
                   "controllerName": "example.com/other",
                   "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]},
                  {"parentRef": {"name": "local"}, "controllerName": ours, "conditions": []}]}}),
            serde_json::json!({"kind": "BackendTLSPolicy", "metadata": {"namespace": "infra", "name": "p"},
                "status": {"ancestors": [{"ancestorRef": {"name": "gw"}, "controllerName": ours,
                  "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}]}}),
            serde_json::json!({"kind": "GatewayClass", "metadata": {"name": "portico"},
                "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}}),
            serde_json::json!({"kind": "HTTPRoute", "metadata": {"namespace": "app", "name": "new"}}),
        ];
        let all = from_objects(&objects, ours);
        let gw = &all[&("Gateway".to_owned(), "infra/gw".to_owned())];
        assert_eq!(gw.condition("Accepted").unwrap().generation, Some(2));
        assert_eq!(gw.addresses, ["127.0.1.3"]);
        let l = gw.listener("http").unwrap();
        assert_eq!(l.attached_routes, 2);
        assert_eq!(
            l.supported_kinds,
            ["HTTPRoute", "GRPCRoute", "example.com/Other"]
        );
        assert!(!l.conditions[0].status);
        let r = &all[&("HTTPRoute".to_owned(), "app/r".to_owned())];
        assert_eq!(r.parents.len(), 2, "{r:?}");
        let p = r.parent("infra/gw", Some("http")).unwrap();
        assert_eq!(p.conditions[0].reason, "NotAllowedByListeners");
        assert_eq!(p.conditions[0].generation, Some(3));
        assert!(r.parent("app/local", None).is_some());
        let policy = &all[&("BackendTLSPolicy".to_owned(), "infra/p".to_owned())];
        assert!(policy.parent("infra/gw", None).unwrap().conditions[0].status);
        assert!(all.contains_key(&("GatewayClass".to_owned(), "portico".to_owned())));
        assert!(!all.contains_key(&("HTTPRoute".to_owned(), "app/new".to_owned())));
    }
}
