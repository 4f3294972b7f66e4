//! The watched objects, as the sources last saw them. `compile` reads a snapshot of it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use tokio::sync::watch;

use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant,
};

/// `namespace/name` of an object (namespace empty for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn of<K: ResourceExt>(obj: &K) -> Self {
        Self::new(obj.namespace().as_deref().unwrap_or(""), &obj.name_any())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One watched object of any of the kinds Portico reads.
// Short-lived: moved into the store (behind an `Arc`) as soon as it is built, so boxing
// the large variants would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Endpoints(Endpoints),
    Secret(Secret),
    ConfigMap(ConfigMap),
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HTTPRoute(HTTPRoute),
    GRPCRoute(GRPCRoute),
    ReferenceGrant(ReferenceGrant),
    BackendTLSPolicy(BackendTLSPolicy),
    Namespace(Namespace),
}

/// The kinds Portico reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Endpoints,
    Secret,
    ConfigMap,
    GatewayClass,
    Gateway,
    HTTPRoute,
    GRPCRoute,
    ReferenceGrant,
    BackendTLSPolicy,
    Namespace,
}

impl Kind {
    /// The Kubernetes kind name, as in a manifest's `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTLSPolicy => "BackendTLSPolicy",
            Kind::Namespace => "Namespace",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HTTPRoute(_) => Kind::HTTPRoute,
            Object::GRPCRoute(_) => Kind::GRPCRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::BackendTLSPolicy(_) => Kind::BackendTLSPolicy,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Ingress(o) => ObjectKey::of(o),
            Object::IngressClass(o) => ObjectKey::of(o),
            Object::Service(o) => ObjectKey::of(o),
            Object::EndpointSlice(o) => ObjectKey::of(o),
            Object::Endpoints(o) => ObjectKey::of(o),
            Object::Secret(o) => ObjectKey::of(o),
            Object::ConfigMap(o) => ObjectKey::of(o),
            Object::GatewayClass(o) => ObjectKey::of(o),
            Object::Gateway(o) => ObjectKey::of(o),
            Object::HTTPRoute(o) => ObjectKey::of(o),
            Object::GRPCRoute(o) => ObjectKey::of(o),
            Object::ReferenceGrant(o) => ObjectKey::of(o),
            Object::BackendTLSPolicy(o) => ObjectKey::of(o),
            Object::Namespace(o) => ObjectKey::of(o),
        }
    }
}

/// An [`Object`] already behind the `Arc` the store keeps, so a source that holds on to
/// its objects (the file source) shares them with the store instead of keeping a copy.
#[derive(Clone, Debug)]
pub enum SharedObject {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Endpoints(Arc<Endpoints>),
    Secret(Arc<Secret>),
    ConfigMap(Arc<ConfigMap>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HTTPRoute(Arc<HTTPRoute>),
    GRPCRoute(Arc<GRPCRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    BackendTLSPolicy(Arc<BackendTLSPolicy>),
    Namespace(Arc<Namespace>),
}

impl From<Object> for SharedObject {
    fn from(obj: Object) -> Self {
        match obj {
            Object::Ingress(o) => SharedObject::Ingress(Arc::new(o)),
            Object::IngressClass(o) => SharedObject::IngressClass(Arc::new(o)),
            Object::Service(o) => SharedObject::Service(Arc::new(o)),
            Object::EndpointSlice(o) => SharedObject::EndpointSlice(Arc::new(o)),
            Object::Endpoints(o) => SharedObject::Endpoints(Arc::new(o)),
            Object::Secret(o) => SharedObject::Secret(Arc::new(o)),
            Object::ConfigMap(o) => SharedObject::ConfigMap(Arc::new(o)),
            Object::GatewayClass(o) => SharedObject::GatewayClass(Arc::new(o)),
            Object::Gateway(o) => SharedObject::Gateway(Arc::new(o)),
            Object::HTTPRoute(o) => SharedObject::HTTPRoute(Arc::new(o)),
            Object::GRPCRoute(o) => SharedObject::GRPCRoute(Arc::new(o)),
            Object::ReferenceGrant(o) => SharedObject::ReferenceGrant(Arc::new(o)),
            Object::BackendTLSPolicy(o) => SharedObject::BackendTLSPolicy(Arc::new(o)),
            Object::Namespace(o) => SharedObject::Namespace(Arc::new(o)),
        }
    }
}

impl SharedObject {
    pub fn kind(&self) -> Kind {
        match self {
            SharedObject::Ingress(_) => Kind::Ingress,
            SharedObject::IngressClass(_) => Kind::IngressClass,
            SharedObject::Service(_) => Kind::Service,
            SharedObject::EndpointSlice(_) => Kind::EndpointSlice,
            SharedObject::Endpoints(_) => Kind::Endpoints,
            SharedObject::Secret(_) => Kind::Secret,
            SharedObject::ConfigMap(_) => Kind::ConfigMap,
            SharedObject::GatewayClass(_) => Kind::GatewayClass,
            SharedObject::Gateway(_) => Kind::Gateway,
            SharedObject::HTTPRoute(_) => Kind::HTTPRoute,
            SharedObject::GRPCRoute(_) => Kind::GRPCRoute,
            SharedObject::ReferenceGrant(_) => Kind::ReferenceGrant,
            SharedObject::BackendTLSPolicy(_) => Kind::BackendTLSPolicy,
            SharedObject::Namespace(_) => Kind::Namespace,
        }
    }

    /// A copy of the object itself.
    pub fn to_object(&self) -> Object {
        match self {
            SharedObject::Ingress(o) => Object::Ingress((**o).clone()),
            SharedObject::IngressClass(o) => Object::IngressClass((**o).clone()),
            SharedObject::Service(o) => Object::Service((**o).clone()),
            SharedObject::EndpointSlice(o) => Object::EndpointSlice((**o).clone()),
            SharedObject::Endpoints(o) => Object::Endpoints((**o).clone()),
            SharedObject::Secret(o) => Object::Secret((**o).clone()),
            SharedObject::ConfigMap(o) => Object::ConfigMap((**o).clone()),
            SharedObject::GatewayClass(o) => Object::GatewayClass((**o).clone()),
            SharedObject::Gateway(o) => Object::Gateway((**o).clone()),
            SharedObject::HTTPRoute(o) => Object::HTTPRoute((**o).clone()),
            SharedObject::GRPCRoute(o) => Object::GRPCRoute((**o).clone()),
            SharedObject::ReferenceGrant(o) => Object::ReferenceGrant((**o).clone()),
            SharedObject::BackendTLSPolicy(o) => Object::BackendTLSPolicy((**o).clone()),
            SharedObject::Namespace(o) => Object::Namespace((**o).clone()),
        }
    }

    /// Whether both are the very same allocation (so certainly equal).
    pub fn ptr_eq(&self, other: &SharedObject) -> bool {
        match (self, other) {
            (SharedObject::Ingress(a), SharedObject::Ingress(b)) => Arc::ptr_eq(a, b),
            (SharedObject::IngressClass(a), SharedObject::IngressClass(b)) => Arc::ptr_eq(a, b),
            (SharedObject::Service(a), SharedObject::Service(b)) => Arc::ptr_eq(a, b),
            (SharedObject::EndpointSlice(a), SharedObject::EndpointSlice(b)) => Arc::ptr_eq(a, b),
            (SharedObject::Endpoints(a), SharedObject::Endpoints(b)) => Arc::ptr_eq(a, b),
            (SharedObject::Secret(a), SharedObject::Secret(b)) => Arc::ptr_eq(a, b),
            (SharedObject::ConfigMap(a), SharedObject::ConfigMap(b)) => Arc::ptr_eq(a, b),
            (SharedObject::GatewayClass(a), SharedObject::GatewayClass(b)) => Arc::ptr_eq(a, b),
            (SharedObject::Gateway(a), SharedObject::Gateway(b)) => Arc::ptr_eq(a, b),
            (SharedObject::HTTPRoute(a), SharedObject::HTTPRoute(b)) => Arc::ptr_eq(a, b),
            (SharedObject::GRPCRoute(a), SharedObject::GRPCRoute(b)) => Arc::ptr_eq(a, b),
            (SharedObject::ReferenceGrant(a), SharedObject::ReferenceGrant(b)) => Arc::ptr_eq(a, b),
            (SharedObject::BackendTLSPolicy(a), SharedObject::BackendTLSPolicy(b)) => {
                Arc::ptr_eq(a, b)
            }
            (SharedObject::Namespace(a), SharedObject::Namespace(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Every object of every kind, keyed by `namespace/name`. Ordered maps keep `compile`
/// deterministic. Each map sits behind an `Arc` and is copied on write only while a
/// snapshot still shares it, so a snapshot costs seven reference counts rather than a copy
/// of tens of thousands of keys.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub ingresses: Arc<BTreeMap<ObjectKey, Arc<Ingress>>>,
    pub ingress_classes: Arc<BTreeMap<ObjectKey, Arc<IngressClass>>>,
    pub services: Arc<BTreeMap<ObjectKey, Arc<Service>>>,
    pub endpoint_slices: Arc<BTreeMap<ObjectKey, Arc<EndpointSlice>>>,
    pub endpoints: Arc<BTreeMap<ObjectKey, Arc<Endpoints>>>,
    pub secrets: Arc<BTreeMap<ObjectKey, Arc<Secret>>>,
    /// Only the one named by `--configmap` (and, from a folder, any in it).
    pub config_maps: Arc<BTreeMap<ObjectKey, Arc<ConfigMap>>>,
    pub gateway_classes: Arc<BTreeMap<ObjectKey, Arc<GatewayClass>>>,
    pub gateways: Arc<BTreeMap<ObjectKey, Arc<Gateway>>>,
    pub http_routes: Arc<BTreeMap<ObjectKey, Arc<HTTPRoute>>>,
    pub grpc_routes: Arc<BTreeMap<ObjectKey, Arc<GRPCRoute>>>,
    pub reference_grants: Arc<BTreeMap<ObjectKey, Arc<ReferenceGrant>>>,
    pub backend_tls_policies: Arc<BTreeMap<ObjectKey, Arc<BackendTLSPolicy>>>,
    /// Read for Gateway listeners' `allowedRoutes.namespaces.selector`, with the
    /// Gateway API kinds.
    pub namespaces: Arc<BTreeMap<ObjectKey, Arc<Namespace>>>,
}

impl Store {
    /// Insert or replace an object.
    pub fn apply(&mut self, obj: Object) {
        let key = obj.key();
        match obj {
            Object::Ingress(o) => {
                Arc::make_mut(&mut self.ingresses).insert(key, Arc::new(o));
            }
            Object::IngressClass(o) => {
                Arc::make_mut(&mut self.ingress_classes).insert(key, Arc::new(o));
            }
            Object::Service(o) => {
                Arc::make_mut(&mut self.services).insert(key, Arc::new(o));
            }
            Object::EndpointSlice(o) => {
                Arc::make_mut(&mut self.endpoint_slices).insert(key, Arc::new(o));
            }
            Object::Endpoints(o) => {
                Arc::make_mut(&mut self.endpoints).insert(key, Arc::new(o));
            }
            Object::Secret(o) => {
                Arc::make_mut(&mut self.secrets).insert(key, Arc::new(o));
            }
            Object::ConfigMap(o) => {
                Arc::make_mut(&mut self.config_maps).insert(key, Arc::new(o));
            }
            Object::GatewayClass(o) => {
                Arc::make_mut(&mut self.gateway_classes).insert(key, Arc::new(o));
            }
            Object::Gateway(o) => {
                Arc::make_mut(&mut self.gateways).insert(key, Arc::new(o));
            }
            Object::HTTPRoute(o) => {
                Arc::make_mut(&mut self.http_routes).insert(key, Arc::new(o));
            }
            Object::GRPCRoute(o) => {
                Arc::make_mut(&mut self.grpc_routes).insert(key, Arc::new(o));
            }
            Object::ReferenceGrant(o) => {
                Arc::make_mut(&mut self.reference_grants).insert(key, Arc::new(o));
            }
            Object::BackendTLSPolicy(o) => {
                Arc::make_mut(&mut self.backend_tls_policies).insert(key, Arc::new(o));
            }
            Object::Namespace(o) => {
                Arc::make_mut(&mut self.namespaces).insert(key, Arc::new(o));
            }
        }
    }

    /// Insert or replace an object, sharing its `Arc`.
    pub fn apply_shared(&mut self, key: ObjectKey, obj: SharedObject) {
        match obj {
            SharedObject::Ingress(o) => drop(Arc::make_mut(&mut self.ingresses).insert(key, o)),
            SharedObject::IngressClass(o) => {
                drop(Arc::make_mut(&mut self.ingress_classes).insert(key, o))
            }
            SharedObject::Service(o) => drop(Arc::make_mut(&mut self.services).insert(key, o)),
            SharedObject::EndpointSlice(o) => {
                drop(Arc::make_mut(&mut self.endpoint_slices).insert(key, o))
            }
            SharedObject::Endpoints(o) => drop(Arc::make_mut(&mut self.endpoints).insert(key, o)),
            SharedObject::Secret(o) => drop(Arc::make_mut(&mut self.secrets).insert(key, o)),
            SharedObject::ConfigMap(o) => drop(Arc::make_mut(&mut self.config_maps).insert(key, o)),
            SharedObject::GatewayClass(o) => {
                drop(Arc::make_mut(&mut self.gateway_classes).insert(key, o))
            }
            SharedObject::Gateway(o) => drop(Arc::make_mut(&mut self.gateways).insert(key, o)),
            SharedObject::HTTPRoute(o) => drop(Arc::make_mut(&mut self.http_routes).insert(key, o)),
            SharedObject::GRPCRoute(o) => drop(Arc::make_mut(&mut self.grpc_routes).insert(key, o)),
            SharedObject::ReferenceGrant(o) => {
                drop(Arc::make_mut(&mut self.reference_grants).insert(key, o))
            }
            SharedObject::BackendTLSPolicy(o) => {
                drop(Arc::make_mut(&mut self.backend_tls_policies).insert(key, o))
            }
            SharedObject::Namespace(o) => drop(Arc::make_mut(&mut self.namespaces).insert(key, o)),
        }
    }

    /// Remove an object; removing one that is not there is not an error.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::Ingress => drop(Arc::make_mut(&mut self.ingresses).remove(key)),
            Kind::IngressClass => drop(Arc::make_mut(&mut self.ingress_classes).remove(key)),
            Kind::Service => drop(Arc::make_mut(&mut self.services).remove(key)),
            Kind::EndpointSlice => drop(Arc::make_mut(&mut self.endpoint_slices).remove(key)),
            Kind::Endpoints => drop(Arc::make_mut(&mut self.endpoints).remove(key)),
            Kind::Secret => drop(Arc::make_mut(&mut self.secrets).remove(key)),
            Kind::ConfigMap => drop(Arc::make_mut(&mut self.config_maps).remove(key)),
            Kind::GatewayClass => drop(Arc::make_mut(&mut self.gateway_classes).remove(key)),
            Kind::Gateway => drop(Arc::make_mut(&mut self.gateways).remove(key)),
            Kind::HTTPRoute => drop(Arc::make_mut(&mut self.http_routes).remove(key)),
            Kind::GRPCRoute => drop(Arc::make_mut(&mut self.grpc_routes).remove(key)),
            Kind::ReferenceGrant => drop(Arc::make_mut(&mut self.reference_grants).remove(key)),
            Kind::BackendTLSPolicy => {
                drop(Arc::make_mut(&mut self.backend_tls_policies).remove(key))
            }
            Kind::Namespace => drop(Arc::make_mut(&mut self.namespaces).remove(key)),
        }
    }

    /// Drop every object of `kind` but `keep`: a relist of the kind, when `keep` is
    /// watched on its own (the affinity key Secret beside the TLS Secrets).
    pub fn clear_except(&mut self, kind: Kind, keep: &ObjectKey) {
        fn keep_only<V: Clone>(map: &mut Arc<BTreeMap<ObjectKey, V>>, keep: &ObjectKey) {
            let kept = map.get_key_value(keep).map(|(k, v)| (k.clone(), v.clone()));
            *map = Arc::new(kept.into_iter().collect());
        }
        match kind {
            Kind::Ingress => keep_only(&mut self.ingresses, keep),
            Kind::IngressClass => keep_only(&mut self.ingress_classes, keep),
            Kind::Service => keep_only(&mut self.services, keep),
            Kind::EndpointSlice => keep_only(&mut self.endpoint_slices, keep),
            Kind::Endpoints => keep_only(&mut self.endpoints, keep),
            Kind::Secret => keep_only(&mut self.secrets, keep),
            Kind::ConfigMap => keep_only(&mut self.config_maps, keep),
            Kind::GatewayClass => keep_only(&mut self.gateway_classes, keep),
            Kind::Gateway => keep_only(&mut self.gateways, keep),
            Kind::HTTPRoute => keep_only(&mut self.http_routes, keep),
            Kind::GRPCRoute => keep_only(&mut self.grpc_routes, keep),
            Kind::ReferenceGrant => keep_only(&mut self.reference_grants, keep),
            Kind::BackendTLSPolicy => keep_only(&mut self.backend_tls_policies, keep),
            Kind::Namespace => keep_only(&mut self.namespaces, keep),
        }
    }

    /// Drop every object of `kind` (a relist replaces the whole kind).
    pub fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Ingress => self.ingresses = Arc::default(),
            Kind::IngressClass => self.ingress_classes = Arc::default(),
            Kind::Service => self.services = Arc::default(),
            Kind::EndpointSlice => self.endpoint_slices = Arc::default(),
            Kind::Endpoints => self.endpoints = Arc::default(),
            Kind::Secret => self.secrets = Arc::default(),
            Kind::ConfigMap => self.config_maps = Arc::default(),
            Kind::GatewayClass => self.gateway_classes = Arc::default(),
            Kind::Gateway => self.gateways = Arc::default(),
            Kind::HTTPRoute => self.http_routes = Arc::default(),
            Kind::GRPCRoute => self.grpc_routes = Arc::default(),
            Kind::ReferenceGrant => self.reference_grants = Arc::default(),
            Kind::BackendTLSPolicy => self.backend_tls_policies = Arc::default(),
            Kind::Namespace => self.namespaces = Arc::default(),
        }
    }
}

/// The store shared between the sources (writers) and the compile loop (reader). Every
/// change bumps a revision that the compile loop waits on, so bursts of changes coalesce
/// into one recompile.
#[derive(Clone)]
pub struct SharedStore {
    store: Arc<Mutex<Store>>,
    revision: Arc<watch::Sender<u64>>,
}

impl Default for SharedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedStore {
    pub fn new() -> Self {
        Self {
            store: Arc::new(Mutex::new(Store::default())),
            revision: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A writer that panicked left a consistent map behind (each op is one insert or
        // remove), so the poisoned data is still usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the store under its lock, then wake the compile loop.
    pub fn update(&self, f: impl FnOnce(&mut Store)) {
        f(&mut self.lock());
        self.revision.send_modify(|r| *r += 1);
    }

    /// A copy of the current objects for `compile`.
    pub fn snapshot(&self) -> Store {
        self.lock().clone()
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}
