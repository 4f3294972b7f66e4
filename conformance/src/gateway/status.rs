//! The Gateway API status Portico works out for a manifest folder, read back from its
//! log: with no API server to write status to, the binary logs each object's status
//! whenever it changes (`status: ...`, with `kind` and `object` fields), and the last
//! such line of an object is its current status.

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

/// One status line, as the binary writes it: parts joined by `; `, each the object's
/// conditions, `listener "NAME": attachedRoutes N, CONDITIONS` or
/// `parent NS/NAME[/SECTION]: CONDITIONS`.
pub fn parse(text: &str) -> ObjectStatus {
    let mut status = ObjectStatus::default();
    for part in text.split("; ").filter(|p| !p.is_empty()) {
        if let Some(rest) = part.strip_prefix("listener \"") {
            let (name, rest) = rest.split_once("\": ").unwrap_or((rest, ""));
            let rest = rest.strip_prefix("attachedRoutes ").unwrap_or(rest);
            let (count, conds) = rest.split_once(", ").unwrap_or((rest, ""));
            status.listeners.push(ListenerStatus {
                name: name.to_owned(),
                attached_routes: count.trim().parse().unwrap_or(0),
                conditions: conditions(conds),
            });
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
            r#"{"level":"INFO","message":"status: Accepted=True (Accepted, generation 1), Programmed=True (Programmed); listener \"http\": attachedRoutes 2, Accepted=True (Accepted), ResolvedRefs=False (InvalidRouteKinds)","kind":"Gateway","object":"infra/gw"}"#,
            "\n",
            r#"{"level":"INFO","message":"status: parent infra/gw/http: Accepted=False (NotAllowedByListeners, generation 3); parent infra/other: Accepted=True (Accepted)","kind":"HTTPRoute","object":"app/r"}"#,
            "\nnot json\n"
        );
        let all = from_log(log);
        let gw = &all[&("Gateway".to_owned(), "infra/gw".to_owned())];
        assert_eq!(gw.condition("Accepted").unwrap().generation, Some(1));
        assert!(gw.condition("Programmed").unwrap().status);
        let l = gw.listener("http").unwrap();
        assert_eq!(l.attached_routes, 2);
        assert_eq!(l.conditions[1].reason, "InvalidRouteKinds");
        assert!(!l.conditions[1].status);
        let r = &all[&("HTTPRoute".to_owned(), "app/r".to_owned())];
        let p = r.parent("infra/gw", Some("http")).unwrap();
        assert_eq!(p.conditions[0].reason, "NotAllowedByListeners");
        assert_eq!(p.conditions[0].generation, Some(3));
        assert!(r.parent("infra/other", None).unwrap().conditions[0].status);
    }
}
