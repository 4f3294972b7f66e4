//! Ingress backends -> proxy backends: Service lookup, port resolution, endpoints,
//! ExternalName.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressBackend;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proxy_core::config::{Backend, BackendId, BackendKind, BackendProtocol};
use proxy_core::host::HostName;

use super::annotations::FIRST_PORT;
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::endpoints::{numeric_target_port, EndpointIndex, EndpointSource};
use super::hosts::{self, Fragment};
use super::{BackendField, PathField};
use crate::store::{Kind, ObjectKey, Store};

/// A Service port as an Ingress names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
    /// The Service's first port, as ingress-nginx reaches a `default-backend` Service
    /// and `--default-backend-service`.
    First,
}

/// As written: the number, or the name.
impl fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
            PortRef::First => f.write_str(FIRST_PORT),
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

/// A Service port as an Ingress names it, owned: what the cache is keyed by.
#[derive(PartialEq, Eq)]
struct RefKey {
    namespace: Box<str>,
    service: Box<str>,
    port: OwnedPort,
    cluster_ip: bool,
}

#[derive(PartialEq, Eq)]
enum OwnedPort {
    Number(i32),
    Name(Box<str>),
    First,
}

/// A Service port as an Ingress names it, borrowed from the Ingress.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RefSlot<'a> {
    namespace: &'a str,
    service: &'a str,
    port: PortRef<'a>,
    /// `service-upstream`: the Service's cluster IP instead of its endpoints.
    cluster_ip: bool,
}

// RefKey and RefSlot hash alike, so the cache is probed with a borrowed slot.
fn hash_ref<H: Hasher>(
    namespace: &str,
    service: &str,
    port: PortRef<'_>,
    cluster_ip: bool,
    h: &mut H,
) {
    cluster_ip.hash(h);
    namespace.hash(h);
    service.hash(h);
    match port {
        PortRef::Number(n) => {
            h.write_u8(0);
            h.write_i32(n);
        }
        PortRef::Name(name) => {
            h.write_u8(1);
            name.hash(h);
        }
        PortRef::First => h.write_u8(2),
    }
}

impl RefKey {
    fn slot(&self) -> RefSlot<'_> {
        RefSlot {
            namespace: &self.namespace,
            service: &self.service,
            port: match &self.port {
                OwnedPort::Number(n) => PortRef::Number(*n),
                OwnedPort::Name(name) => PortRef::Name(name),
                OwnedPort::First => PortRef::First,
            },
            cluster_ip: self.cluster_ip,
        }
    }
}

impl Hash for RefKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.slot().hash(h);
    }
}

impl Hash for RefSlot<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_ref(self.namespace, self.service, self.port, self.cluster_ip, h);
    }
}

impl hashbrown::Equivalent<RefKey> for RefSlot<'_> {
    fn equivalent(&self, key: &RefKey) -> bool {
        *self == key.slot()
    }
}

impl From<RefSlot<'_>> for RefKey {
    fn from(slot: RefSlot<'_>) -> Self {
        Self {
            namespace: slot.namespace.into(),
            service: slot.service.into(),
            port: match slot.port {
                PortRef::Number(n) => OwnedPort::Number(n),
                PortRef::Name(name) => OwnedPort::Name(name.into()),
                PortRef::First => OwnedPort::First,
            },
            cluster_ip: slot.cluster_ip,
        }
    }
}

/// The id of the backend a reference names. `service-upstream` makes a backend of its
/// own, since the same Service port without it reaches the endpoints.
pub(super) fn backend_id(
    namespace: &str,
    service: &str,
    port: &PortRef<'_>,
    cluster_ip: bool,
) -> BackendId {
    if cluster_ip {
        BackendId::new(namespace, service, &format!("{port} (service-upstream)"))
    } else {
        BackendId::new(namespace, service, &port.to_string())
    }
}

/// Where an Ingress names a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RefField {
    /// `spec.defaultBackend` (ordered first: the compile always resolved it first).
    Default,
    Path(PathField),
    /// The `default-backend` annotation.
    Annotation,
}

impl fmt::Display for RefField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefField::Default => f.write_str("spec.defaultBackend"),
            RefField::Path(p) => write!(f, "{}", BackendField(*p)),
            RefField::Annotation => f.write_str("metadata.annotations[default-backend]"),
        }
    }
}

/// One reference to a backend: which version of which Ingress, and where in it.
#[derive(Clone)]
pub(super) struct BackendRef {
    pub fragment: Arc<Fragment>,
    pub field: RefField,
}

impl BackendRef {
    /// The reference's Service port, if it names one.
    fn slot(&self) -> Option<RefSlot<'_>> {
        let f = &self.fragment;
        let backend = match self.field {
            RefField::Default => f.ingress.spec.as_ref()?.default_backend.as_ref()?,
            RefField::Path(p) => f.backend_at(p)?,
            RefField::Annotation => {
                let id = f.ann.default_backend.as_ref()?;
                return Some(RefSlot {
                    namespace: &f.key.namespace,
                    service: &id.service,
                    port: PortRef::First,
                    cluster_ip: false,
                });
            }
        };
        let (service, port) = reference(&f.key, backend, &self.field, &mut Vec::new())?;
        Some(RefSlot {
            namespace: &f.key.namespace,
            service,
            port,
            cluster_ip: f.ann.upstream.service_upstream,
        })
    }

    fn same(&self, other: &BackendRef) -> bool {
        Arc::ptr_eq(&self.fragment, &other.fragment) && self.field == other.field
    }
}

/// A Service port resolved, with the objects it was resolved from: while the store
/// holds the same ones, a later compile can take it as it is.
struct Resolved {
    id: BackendId,
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    endpoints: Option<Arc<Endpoints>>,
    kind: BackendKind,
    /// The Service port's `appProtocol`, as Portico speaks it.
    protocol: Option<BackendProtocol>,
    problem: Option<Problem>,
    /// What resolving it found wrong with the Service or its endpoints.
    diags: Vec<Diagnostic>,
}

impl Resolved {
    fn new(store: &Store, index: &EndpointIndex<'_>, slot: RefSlot<'_>) -> Self {
        let svc_key = ObjectKey::new(slot.namespace, slot.service);
        let mut diags = Vec::new();
        let cluster = slot
            .cluster_ip
            .then(|| cluster_endpoint(store, &svc_key, &slot.port))
            .flatten();
        if slot.cluster_ip && cluster.is_none() && store.services.contains_key(&svc_key) {
            diags.push(Diagnostic::warning(
                Kind::Service,
                &svc_key,
                "spec.clusterIP",
                DiagnosticReason::InvalidService,
                format!(
                    "service-upstream: Service {svc_key} has no cluster IP and port {} to send to (headless, ExternalName, or no such port); its endpoints are used, as in ingress-nginx",
                    slot.port
                ),
            ));
        }
        let (kind, problem) = match cluster {
            Some(addr) => (
                BackendKind::Endpoints(vec![proxy_core::config::Endpoint::ready(addr)]),
                None,
            ),
            None => resolve_service(store, index, &svc_key, &slot.port, &mut diags),
        };
        let protocol = store
            .services
            .get(&svc_key)
            .and_then(|s| find_port(s, &slot.port))
            .and_then(|p| p.app_protocol.as_deref())
            .and_then(app_protocol);
        // A request's log line says what is missing, not just that nothing is ready.
        let kind = match &problem {
            Some(p) => {
                BackendKind::Unresolved(Arc::from(p.message.trim_end_matches("; requests get 503")))
            }
            None => kind,
        };
        Self {
            id: backend_id(slot.namespace, slot.service, &slot.port, slot.cluster_ip),
            service: store.services.get(&svc_key).cloned(),
            slices: index
                .slices_of(&svc_key)
                .iter()
                .map(|(_, s)| Arc::clone(s))
                .collect(),
            endpoints: store.endpoints.get(&svc_key).cloned(),
            kind,
            protocol,
            problem,
            diags,
        }
    }

    /// Whether the store still holds the objects this was resolved from.
    fn is_current(&self, store: &Store, index: &EndpointIndex<'_>) -> bool {
        fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        let svc_key = ObjectKey::new(&self.id.namespace, &self.id.service);
        let slices = index.slices_of(&svc_key);
        same(self.service.as_ref(), store.services.get(&svc_key))
            && same(self.endpoints.as_ref(), store.endpoints.get(&svc_key))
            && slices.len() == self.slices.len()
            && slices
                .iter()
                .zip(&self.slices)
                .all(|((_, a), b)| Arc::ptr_eq(a, b))
    }
}

/// One backend: how it resolved, who routes to it, and what that adds up to.
struct BackendState {
    resolved: Resolved,
    /// Oldest Ingress first; within one, the default backend, then paths in spec order.
    refs: Vec<BackendRef>,
    /// `refs` or `resolved` changed since `built` and `diags` were worked out.
    stale: bool,
    built: Option<Arc<Backend>>,
    /// `resolved.diags`, each reference's problem, and settings conflicts.
    diags: Vec<Diagnostic>,
    /// `--default-backend-service` names it: kept without references.
    pinned: bool,
}

impl BackendState {
    /// Works out the backend and its diagnostics again from `refs`.
    fn rebuild(&mut self) {
        self.refs
            .sort_by(|a, b| hosts::age_order(&a.fragment, &b.fragment).then(a.field.cmp(&b.field)));
        let r = &self.resolved;
        let mut diags = r.diags.clone();
        if self.refs.is_empty() && !self.pinned {
            return;
        }
        if let (true, Some(p)) = (self.pinned, &r.problem) {
            let message = p.message.trim_end_matches("; requests get 503");
            diags.push(Diagnostic::error(
                Kind::Service,
                &ObjectKey::new(&r.id.namespace, &r.id.service),
                "",
                p.reason,
                format!("--default-backend-service: {message}; requests no rule matches get 404"),
            ));
        }
        for reference in &self.refs {
            let f = &reference.fragment;
            if let Some(p) = &r.problem {
                let (field, message) = match reference.field {
                    RefField::Annotation => (
                        reference.field.to_string(),
                        format!("default-backend: {}", p.message),
                    ),
                    _ => (format!("{}{}", reference.field, p.field), p.message.clone()),
                };
                diags.push(Diagnostic::error(
                    Kind::Ingress,
                    &f.key,
                    field,
                    p.reason,
                    message,
                ));
            }
        }
        if self.built.is_none() {
            self.built = Some(Arc::new(Backend {
                id: r.id.clone(),
                kind: r.kind.clone(),
                protocol: r.protocol,
            }));
        }
        self.diags = diags;
        self.stale = false;
    }
}

type ObjectMap<T> = BTreeMap<ObjectKey, Arc<T>>;

/// Every backend some Ingress of ours routes to, kept between compiles: a compile
/// hands in the references that came and went, and only the backends those touch (or
/// whose Service or endpoints changed) are worked out again.
#[derive(Default)]
pub struct BackendTable {
    states: hashbrown::HashMap<RefKey, BackendState, foldhash::fast::RandomState>,
    // Which versions of the store's maps `states` was resolved against. Weak: a strong
    // reference would make the store copy a whole map on its next change; a Weak keeps
    // the allocation, so its address is not reused meanwhile.
    services: Weak<ObjectMap<Service>>,
    slices: Weak<ObjectMap<EndpointSlice>>,
    endpoints: Weak<ObjectMap<Endpoints>>,
    /// The `--default-backend-service` Service, on its first port.
    pinned: Option<RefKey>,
}

impl BackendTable {
    /// Brings the table to `store`, minus `removed` and plus `added` references, with
    /// `pinned` (`--default-backend-service`: namespace and name) kept whoever refers
    /// to it.
    pub fn update(
        &mut self,
        store: &Store,
        removed: &[BackendRef],
        added: &[BackendRef],
        pinned: Option<&ObjectKey>,
    ) {
        let index = OnceCell::new();
        let index = || index.get_or_init(|| EndpointIndex::new(store));
        let unchanged = std::ptr::eq(self.services.as_ptr(), Arc::as_ptr(&store.services))
            && std::ptr::eq(self.slices.as_ptr(), Arc::as_ptr(&store.endpoint_slices))
            && std::ptr::eq(self.endpoints.as_ptr(), Arc::as_ptr(&store.endpoints));
        if !unchanged {
            for (key, state) in self.states.iter_mut() {
                if !state.resolved.is_current(store, index()) {
                    state.resolved = Resolved::new(store, index(), key.slot());
                    state.built = None;
                    state.stale = true;
                }
            }
            self.services = Arc::downgrade(&store.services);
            self.slices = Arc::downgrade(&store.endpoint_slices);
            self.endpoints = Arc::downgrade(&store.endpoints);
        }
        for gone in removed {
            let Some(slot) = gone.slot() else { continue };
            if let Some(state) = self.states.get_mut(&slot) {
                state.refs.retain(|r| !r.same(gone));
                state.stale = true;
            }
        }
        for new in added {
            let Some(slot) = new.slot() else { continue };
            match self.states.get_mut(&slot) {
                Some(state) => {
                    state.refs.push(new.clone());
                    state.stale = true;
                }
                None => {
                    let state = BackendState {
                        resolved: Resolved::new(store, index(), slot),
                        refs: vec![new.clone()],
                        stale: true,
                        built: None,
                        diags: Vec::new(),
                        pinned: false,
                    };
                    self.states.insert(RefKey::from(slot), state);
                }
            }
        }
        let slot = pinned.map(|k| RefSlot {
            namespace: &k.namespace,
            service: &k.name,
            port: PortRef::First,
            cluster_ip: false,
        });
        if self.pinned.as_ref().map(RefKey::slot) != slot {
            if let Some(state) = self.pinned.take().and_then(|k| self.states.get_mut(&k)) {
                state.pinned = false;
                state.stale = true;
            }
            if let Some(slot) = slot {
                match self.states.get_mut(&slot) {
                    Some(state) => {
                        state.pinned = true;
                        state.stale = true;
                    }
                    None => {
                        let state = BackendState {
                            resolved: Resolved::new(store, index(), slot),
                            refs: Vec::new(),
                            stale: true,
                            built: None,
                            diags: Vec::new(),
                            pinned: true,
                        };
                        self.states.insert(RefKey::from(slot), state);
                    }
                }
                self.pinned = Some(RefKey::from(slot));
            }
        }
        self.states.retain(|_, state| {
            if state.stale {
                state.rebuild();
            }
            !state.refs.is_empty() || state.pinned
        });
    }

    /// The `--default-backend-service` backend, once it is in the table.
    pub fn pinned_id(&self) -> Option<BackendId> {
        let key = self.pinned.as_ref()?;
        Some(self.states.get(&key.slot())?.resolved.id.clone())
    }

    /// The backend `reference` resolves to, once it is in the table.
    pub fn id_of(&self, reference: &BackendRef) -> Option<BackendId> {
        let slot = reference.slot()?;
        Some(self.states.get(&slot)?.resolved.id.clone())
    }

    /// The backends, keyed by id.
    pub fn backends(&self) -> foldhash::HashMap<BackendId, Arc<Backend>> {
        self.states
            .values()
            .filter_map(|s| Some((s.resolved.id.clone(), s.built.clone()?)))
            .collect()
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.states.values().flat_map(|s| &s.diags)
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
        PortRef::First => true,
    })
}

/// The ports `service` has, as a reader fixing an Ingress needs them:
/// `80 ("http", targetPort 8080, nodePort 30080)`.
fn port_list(service: &Service) -> String {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref());
    let list: Vec<String> = ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let mut about = Vec::new();
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                about.push(format!("{name:?}"));
            }
            match &p.target_port {
                Some(IntOrString::Int(n)) => about.push(format!("targetPort {n}")),
                Some(IntOrString::String(s)) => about.push(format!("targetPort {s:?}")),
                None => {}
            }
            if let Some(n) = p.node_port {
                about.push(format!("nodePort {n}"));
            }
            if about.is_empty() {
                p.port.to_string()
            } else {
                format!("{} ({})", p.port, about.join(", "))
            }
        })
        .collect();
    if list.is_empty() {
        "it has no ports".to_owned()
    } else {
        format!("its ports: {}", list.join(", "))
    }
}

/// When `n` is not a port of `service` but its targetPort or nodePort: which port to
/// name instead.
fn port_mixup(service: &Service, n: i32) -> Option<String> {
    let ports = service.spec.as_ref()?.ports.as_deref()?;
    ports.iter().find_map(|p| {
        if p.target_port == Some(IntOrString::Int(n)) {
            Some(format!(
                "; {n} is the targetPort (the pods' port) of Service port {}: an Ingress names \
                 the Service port, so use port number {}",
                p.port, p.port
            ))
        } else if p.node_port == Some(n) {
            Some(format!(
                "; {n} is the nodePort of Service port {}: an Ingress names the Service port, \
                 so use port number {}",
                p.port, p.port
            ))
        } else {
            None
        }
    })
}

fn port_missing(svc_key: &ObjectKey, service: &Service, port: &PortRef<'_>) -> Problem {
    let ports = port_list(service);
    let (field, message) = match port {
        PortRef::Number(n) => (
            ".service.port.number",
            format!(
                "service {:?} has no port {n} ({ports}){}; requests get 503",
                svc_key.name,
                port_mixup(service, *n).unwrap_or_default()
            ),
        ),
        PortRef::Name(name) => (
            ".service.port.name",
            format!(
                "service {:?} has no port named {name:?} ({ports}); requests get 503",
                svc_key.name
            ),
        ),
        PortRef::First => (
            ".service.port",
            format!("service {:?} has no ports", svc_key.name),
        ),
    };
    Problem {
        reason: DiagnosticReason::ServicePortNotFound,
        field,
        message,
    }
}

/// A Service port's `appProtocol` (KEP-3726's standard values, and the plain `https`
/// and `http` that IANA names): how requests reach it when the route does not say.
/// Other values are left to the route (HTTP/1.1).
fn app_protocol(value: &str) -> Option<BackendProtocol> {
    match value {
        "kubernetes.io/h2c" => Some(BackendProtocol::H2c),
        "kubernetes.io/ws" | "http" => Some(BackendProtocol::Http),
        "kubernetes.io/wss" | "https" => Some(BackendProtocol::Https),
        _ => None,
    }
}

/// A Service that is not in the Ingress's namespace: where Services of that name are.
fn elsewhere(store: &Store, svc_key: &ObjectKey) -> String {
    let found: Vec<&str> = store
        .services
        .keys()
        .filter(|k| k.name == svc_key.name && k.namespace != svc_key.namespace)
        .map(|k| k.namespace.as_str())
        .collect();
    match found.as_slice() {
        [] => String::new(),
        [ns] => format!(
            "; a Service {:?} exists in namespace {ns:?}, but an Ingress reaches only \
             Services in its own namespace: move the Ingress to {ns:?}",
            svc_key.name
        ),
        many => format!(
            "; Services {:?} exist in namespaces {many:?}, but an Ingress reaches only \
             Services in its own namespace",
            svc_key.name
        ),
    }
}

const NO_ENDPOINTS: BackendKind = BackendKind::Endpoints(Vec::new());

/// `service-upstream`: the Service's cluster IP and port (a port name looked up among
/// the Service's ports, a number taken as written), as ingress-nginx's
/// `getServiceClusterEndpoint`. `None` for a Service without one (missing, headless,
/// `ExternalName`): its endpoints are used instead, as ingress-nginx falls back to them.
fn cluster_endpoint(
    store: &Store,
    svc_key: &ObjectKey,
    port: &PortRef<'_>,
) -> Option<std::net::SocketAddr> {
    let service = store.services.get(svc_key)?;
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let ip: std::net::IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let port = match port {
        PortRef::Number(n) => *n,
        PortRef::Name(_) | PortRef::First => find_port(service, port)?.port,
    };
    Some(std::net::SocketAddr::new(ip, u16::try_from(port).ok()?))
}

fn resolve_service(
    store: &Store,
    index: &EndpointIndex<'_>,
    svc_key: &ObjectKey,
    port: &PortRef<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (BackendKind, Option<Problem>) {
    let Some(service) = store.services.get(svc_key) else {
        let problem = Problem {
            reason: DiagnosticReason::ServiceNotFound,
            field: ".service.name",
            message: format!(
                "service {:?} not found in namespace {:?}{}; requests get 503",
                svc_key.name,
                svc_key.namespace,
                elsewhere(store, svc_key)
            ),
        };
        return (NO_ENDPOINTS, Some(problem));
    };
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return external_name(svc_key, service, port);
    }
    let Some(service_port) = find_port(service, port) else {
        return (NO_ENDPOINTS, Some(port_missing(svc_key, service, port)));
    };
    let (endpoints, source) = index.resolve(svc_key, service, service_port, diags);
    // Said once per backend; the compile drops the repeats of a Service's other ports.
    if source == EndpointSource::Missing {
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
    } else if !endpoints.is_empty() && endpoints.iter().all(|e| !e.ready) {
        // Said when the configuration loads, not only when a request gets its 503.
        diags.push(Diagnostic::warning(
            Kind::Service,
            svc_key,
            "",
            DiagnosticReason::NoReadyEndpoints,
            format!(
                "none of its endpoints is ready ({} listed, each with conditions.ready: \
                 false); requests get 503 until one is",
                endpoints.len()
            ),
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
    let host = match raw.map(HostName::parse) {
        Some(Ok(h)) => h,
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
        (None, PortRef::Name(_) | PortRef::First) => None,
    };
    match number {
        Some(port) => (
            BackendKind::ExternalName {
                host: host.into(),
                port,
            },
            None,
        ),
        None => (NO_ENDPOINTS, Some(port_missing(svc_key, service, port))),
    }
}

/// A Service port named by number, resolved on its own (Gateway API `backendRefs`, which
/// the Ingress reference cache does not track): the backend, and why it has no
/// endpoints when it has none. Ingress paths naming the same Service port get the same
/// backend id, so both share one backend.
pub(super) fn resolve_number(
    store: &Store,
    index: &EndpointIndex<'_>,
    namespace: &str,
    service: &str,
    port: i32,
    diags: &mut Vec<Diagnostic>,
) -> (Backend, Option<(DiagnosticReason, String)>) {
    let resolved = Resolved::new(
        store,
        index,
        RefSlot {
            namespace,
            service,
            port: PortRef::Number(port),
            cluster_ip: false,
        },
    );
    diags.extend(resolved.diags);
    let backend = Backend {
        id: resolved.id,
        kind: resolved.kind,
        protocol: resolved.protocol,
    };
    (backend, resolved.problem.map(|p| (p.reason, p.message)))
}
