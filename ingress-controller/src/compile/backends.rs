//! Ingress backends -> proxy backends: Service lookup, port resolution, endpoints,
//! ExternalName, and the per-backend settings from annotations.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::IngressBackend;
use proxy_core::config::{Backend, BackendId, BackendKind};
use proxy_core::routes::HostMatch;

use super::annotations::{BackendSettings, IngressAnnotations};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::endpoints::{numeric_target_port, EndpointIndex, EndpointSource};
use super::syntax::parse_host;
use crate::store::{Kind, ObjectKey, Store};

/// A Service port as an Ingress names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

/// As written: the number, or the name.
impl fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// Why a backend reference resolves to no endpoints, said to every Ingress that makes it.
#[derive(Clone)]
struct Problem {
    reason: DiagnosticReason,
    /// Appended to the reference's field, e.g. `.service.port.name`.
    field: &'static str,
    message: String,
}

struct Entry {
    id: BackendId,
    kind: BackendKind,
    problem: Option<Problem>,
    /// Settings of the oldest Ingress that routes here, and who that was.
    settings: Option<(BackendSettings, ObjectKey)>,
}

/// Resolves each distinct backend once per compile.
pub struct Backends<'a> {
    store: &'a Store,
    index: &'a EndpointIndex<'a>,
    /// `(namespace, service, port)` borrowed from the store -> `entries` index, so the
    /// per-path lookup allocates nothing.
    by_ref: foldhash::HashMap<(&'a str, &'a str, PortRef<'a>), usize>,
    entries: Vec<Entry>,
    /// Services already reported as having no endpoint objects.
    reported: HashSet<ObjectKey>,
}

impl<'a> Backends<'a> {
    pub fn new(store: &'a Store, index: &'a EndpointIndex<'a>) -> Self {
        Self {
            store,
            index,
            by_ref: foldhash::HashMap::default(),
            entries: Vec::new(),
            reported: HashSet::new(),
        }
    }

    /// The backend for `backend` of Ingress `key`, at `field`. `None` when the reference
    /// itself is malformed or unsupported; a missing Service or port still gives a backend
    /// (with no endpoints, so it answers 503) plus a diagnostic.
    pub fn resolve(
        &mut self,
        key: &'a ObjectKey,
        ann: &IngressAnnotations,
        backend: &'a IngressBackend,
        field: &dyn fmt::Display,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<BackendId> {
        let (service, port) = reference(key, backend, field, diags)?;
        let slot = (key.namespace.as_str(), service, port);
        let i = match self.by_ref.get(&slot) {
            Some(i) => *i,
            None => {
                let id = BackendId::new(&key.namespace, service, &port.to_string());
                let svc_key = ObjectKey::new(&key.namespace, service);
                let (kind, problem) = resolve_service(
                    self.store,
                    self.index,
                    &svc_key,
                    &port,
                    &mut self.reported,
                    diags,
                );
                self.entries.push(Entry {
                    id,
                    kind,
                    problem,
                    settings: None,
                });
                self.by_ref.insert(slot, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[i];
        if let Some(p) = &entry.problem {
            diags.push(Diagnostic::error(
                Kind::Ingress,
                key,
                format!("{field}{}", p.field),
                p.reason,
                p.message.clone(),
            ));
        }
        match &entry.settings {
            None => entry.settings = Some((ann.backend.clone(), key.clone())),
            Some((settings, owner)) if *settings != ann.backend && owner != key => {
                diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    key,
                    "metadata.annotations",
                    DiagnosticReason::BackendSettingsConflict,
                    format!(
                        "backend {} is also used by the older Ingress {owner} with different \
                         affinity or timeout annotations; the older Ingress's settings apply",
                        entry.id
                    ),
                ));
            }
            Some(_) => {}
        }
        Some(entry.id.clone())
    }

    /// The resolved backends, keyed by id.
    pub fn finish(self) -> HashMap<BackendId, Arc<Backend>> {
        self.entries
            .into_iter()
            .map(|e| {
                let settings = e.settings.map(|(s, _)| s).unwrap_or_default();
                let backend = Backend {
                    id: e.id.clone(),
                    kind: e.kind,
                    affinity: settings.affinity,
                    timeouts: settings.timeouts,
                };
                (e.id, Arc::new(backend))
            })
            .collect()
    }
}

/// The backend id a reference names, or a diagnostic if it names none.
pub(super) fn reference<'b>(
    key: &ObjectKey,
    backend: &'b IngressBackend,
    field: &dyn fmt::Display,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'b str, PortRef<'b>)> {
    let bad = |suffix: &str, reason, message: &str| {
        Diagnostic::error(
            Kind::Ingress,
            key,
            format!("{field}{suffix}"),
            reason,
            message,
        )
    };
    if backend.resource.is_some() {
        diags.push(bad(
            ".resource",
            DiagnosticReason::UnsupportedBackend,
            "resource backends are not supported, only services; path ignored",
        ));
        return None;
    }
    let Some(service) = backend.service.as_ref() else {
        diags.push(bad(
            "",
            DiagnosticReason::InvalidBackend,
            "backend names no service; path ignored",
        ));
        return None;
    };
    if service.name.is_empty() {
        diags.push(bad(
            ".service.name",
            DiagnosticReason::InvalidBackend,
            "backend service has no name; path ignored",
        ));
        return None;
    }
    let port = service.port.as_ref();
    let port_ref = match (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty()),
    ) {
        (Some(n), None) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name),
        (Some(_), Some(_)) => {
            diags.push(bad(
                ".service.port",
                DiagnosticReason::InvalidBackend,
                "backend service port sets both number and name; path ignored",
            ));
            return None;
        }
        (None, None) => {
            diags.push(bad(
                ".service.port",
                DiagnosticReason::InvalidBackend,
                "backend service port needs a number or a name; path ignored",
            ));
            return None;
        }
    };
    Some((service.name.as_str(), port_ref))
}

fn find_port<'s>(service: &'s Service, port: &PortRef<'_>) -> Option<&'s ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_deref()?;
    ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(*name),
    })
}

fn port_missing(svc_key: &ObjectKey, port: &PortRef<'_>) -> Problem {
    let (field, message) = match port {
        PortRef::Number(n) => (
            ".service.port.number",
            format!(
                "service {:?} has no port {n}; requests get 503",
                svc_key.name
            ),
        ),
        PortRef::Name(name) => (
            ".service.port.name",
            format!(
                "service {:?} has no port named {name:?}; requests get 503",
                svc_key.name
            ),
        ),
    };
    Problem {
        reason: DiagnosticReason::ServicePortNotFound,
        field,
        message,
    }
}

const NO_ENDPOINTS: BackendKind = BackendKind::Endpoints(Vec::new());

fn resolve_service(
    store: &Store,
    index: &EndpointIndex<'_>,
    svc_key: &ObjectKey,
    port: &PortRef<'_>,
    reported: &mut HashSet<ObjectKey>,
    diags: &mut Vec<Diagnostic>,
) -> (BackendKind, Option<Problem>) {
    let Some(service) = store.services.get(svc_key) else {
        let problem = Problem {
            reason: DiagnosticReason::ServiceNotFound,
            field: ".service.name",
            message: format!(
                "service {:?} not found in namespace {:?}; requests get 503",
                svc_key.name, svc_key.namespace
            ),
        };
        return (NO_ENDPOINTS, Some(problem));
    };
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return external_name(svc_key, service, port);
    }
    let Some(service_port) = find_port(service, port) else {
        return (NO_ENDPOINTS, Some(port_missing(svc_key, port)));
    };
    let (endpoints, source) = index.resolve(svc_key, service, service_port, diags);
    if source == EndpointSource::Missing && reported.insert(svc_key.clone()) {
        let hint = if spec
            .and_then(|s| s.selector.as_ref())
            .is_none_or(|s| s.is_empty())
        {
            "a Service without a selector needs hand-written Endpoints or EndpointSlices"
        } else {
            "the EndpointSlice controller has not published any yet"
        };
        diags.push(Diagnostic::warning(
            Kind::Service,
            svc_key,
            "",
            DiagnosticReason::NoEndpoints,
            format!("no EndpointSlices or Endpoints ({hint}); requests get 503"),
        ));
    }
    (BackendKind::Endpoints(endpoints), None)
}

/// An `ExternalName` Service: its DNS name at the Service's (numeric target) port. Such
/// Services often list no ports, so a port number the Service does not list is used as is.
fn external_name(
    svc_key: &ObjectKey,
    service: &Service,
    port: &PortRef<'_>,
) -> (BackendKind, Option<Problem>) {
    let raw = service
        .spec
        .as_ref()
        .and_then(|s| s.external_name.as_deref());
    let host = match parse_host(raw) {
        Ok(HostMatch::Exact(h)) => h,
        _ => {
            let problem = Problem {
                reason: DiagnosticReason::InvalidExternalName,
                field: ".service.name",
                message: format!(
                    "ExternalName service {:?} has no valid spec.externalName ({:?}); requests get 503",
                    svc_key.name,
                    raw.unwrap_or("")
                ),
            };
            return (NO_ENDPOINTS, Some(problem));
        }
    };
    let number = match (find_port(service, port), port) {
        (Some(p), _) => numeric_target_port(p),
        (None, PortRef::Number(n)) => u16::try_from(*n).ok().filter(|p| *p != 0),
        (None, PortRef::Name(_)) => None,
    };
    match number {
        Some(port) => (
            BackendKind::ExternalName {
                host: host.into(),
                port,
            },
            None,
        ),
        None => (NO_ENDPOINTS, Some(port_missing(svc_key, port))),
    }
}
