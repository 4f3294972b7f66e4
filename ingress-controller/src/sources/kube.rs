//! The Kubernetes API source: one `kube::runtime::watcher` per kind, applied into the
//! [`SharedStore`].
//!
//! A watcher (re)lists with `Init .. InitApply* .. InitDone`; the listed objects are
//! buffered and swapped into the store in one update, so `compile` never sees half a list
//! and a relist after `410 Gone` or a reconnect keeps the last good objects until the new
//! list is complete. Errors are logged and retried after a short, bounded, jittered delay
//! ([`Retry`]); a `410 Gone` relists at once. Nothing here is fatal.
//!
//! Secrets are watched with a field selector that leaves out Helm releases and
//! service-account tokens: those are never used, and a cluster can hold many large ones.
//! TLS Secrets and Opaque ones (basic-auth user lists, which annotations name) come
//! through. The affinity key Secret in the controller's namespace also has a watch of
//! its own by name, so that it is read whatever `--watch-namespace` says. ConfigMaps are watched like the kinds above (for `custom-headers` and
//! `proxy-set-headers`, which may name any), and the `--configmap` one also by name, so
//! that it is read whatever `--watch-namespace` says.

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::affinity_key;
use crate::compile::{Compiled, AFFINITY_KEY_SECRET};
use crate::events::{self, EventPublisher};
use crate::gateway_api::{
    self, BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant,
};
use crate::leader::{self, LeaderOptions};
use crate::status::{self, PublishSource, StatusHandle};
use crate::store::{Kind, Object, ObjectKey, SharedStore};

/// The kinds the source always watches besides ConfigMaps; readiness waits for the first
/// full list of each (and of the ConfigMaps, and the settings ConfigMap and affinity key
/// Secret, when those are watched by name).
pub const KINDS: [Kind; 6] = [
    Kind::Ingress,
    Kind::IngressClass,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Endpoints,
    Kind::Secret,
];

/// The field manager Portico names in every write (server-side apply of status, and the
/// objects it creates or replaces), so `managedFields` show which fields are its own.
pub const FIELD_MANAGER: &str = "portico";

/// Create and replace parameters naming [`FIELD_MANAGER`].
pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..kube::api::PostParams::default()
    }
}

/// Only these Secrets are watched (see the module docs). A Secret named like the
/// affinity key is left to that key's own watch, so that one in an application's
/// namespace never sets the key.
pub const SECRET_FIELD_SELECTOR: &str = concat!(
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token,",
    "metadata.name!=portico-affinity-key"
);

/// The annotation `kubectl apply` writes holds a full copy of the object (for Secrets, the
/// key material again); nothing reads it, so it is dropped on arrival.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Clone, Debug, Default)]
pub struct KubeSourceOptions {
    /// Watch only this namespace (IngressClasses are cluster-scoped and always watched).
    /// `None` watches every namespace.
    pub watch_namespace: Option<String>,
    /// `--configmap`: this one ConfigMap is watched (whatever `watch_namespace` says).
    pub configmap: Option<ObjectKey>,
    /// The controller's namespace, where the affinity key Secret
    /// ([`AFFINITY_KEY_SECRET`]) is watched. `None`: not watched; [`start`] fills it in
    /// with the leader Lease's namespace.
    pub affinity_key_namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cause is said once, as [`ClientError::Infer`]'s.
    #[error("reading kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    /// Said in full here, without the chain of causes, which repeats itself.
    #[error(
        "no Kubernetes API to watch: not in a cluster, no --kubeconfig, and no usable \
         kubeconfig at $KUBECONFIG or ~/.kube/config: {0}. To serve a folder of manifests \
         without a cluster, pass --manifests DIR"
    )]
    Infer(String),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `--kubeconfig PATH` when given; otherwise the in-cluster service account,
/// then `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |e: kube::config::KubeconfigError| ClientError::Kubeconfig {
                path: path.to_owned(),
                reason: innermost_cause(&e),
            };
            let kc = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(_) => kube::Config::infer()
                .await
                .map_err(|e| ClientError::Infer(innermost_cause(&e)))?,
        },
    };
    Client::try_from(config).map_err(ClientError::Client)
}

/// What was wrong with the kubeconfig, said once: kube's errors repeat their causes in
/// their own messages, so only the innermost is kept.
fn innermost_cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Everything the controller does against the API server, in one place for `main`.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    pub source: KubeSourceOptions,
    /// From `--publish-service` / `--publish-address`.
    pub publish: PublishSource,
    pub leader: Option<LeaderOptions>,
    /// How often the leader checks that the affinity key Secret exists; default
    /// [`affinity_key::RECHECK`].
    pub affinity_key_recheck: Option<std::time::Duration>,
}

/// What the publish loop reports back to the API server after each compile.
#[derive(Clone)]
pub struct ApiReporter {
    status: StatusHandle,
    events: EventPublisher,
    leader: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
    elector: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl ApiReporter {
    /// Hand over a compile's results: owned Ingresses for status, diagnostics for Events.
    /// Never blocks; the writes happen in the background, from the leader only.
    pub fn after_compile(&self, compiled: &Compiled) {
        self.status.set_owned(&compiled.owned_ingresses);
        self.status.set_gateway_status(&compiled.gateway_status);
        self.events.publish_diagnostics(&compiled.diagnostics);
    }

    /// Whether this replica currently holds the leader Lease.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// On shutdown: stop campaigning and release the leader Lease (if held), so another
    /// replica takes over status at once. Waits at most `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.stop.send_replace(true);
        let task = self
            .elector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("leader Lease not released in time");
            }
        }
    }
}

/// Connect, then start in the background: the watches into `store` (setting `ready` once
/// synced), leader election, the status writer, the Event publisher and, on the leader,
/// the affinity key Secret's upkeep.
pub async fn start(
    opts: KubeOptions,
    store: SharedStore,
    ready: watch::Sender<bool>,
) -> Result<ApiReporter, ClientError> {
    let client = client(opts.kubeconfig.as_deref()).await?;
    let leader_opts = opts.leader.unwrap_or_else(LeaderOptions::from_env);
    let mut source = opts.source;
    // The affinity key Secret lives beside the Lease, in the controller's namespace.
    let key_namespace = source
        .affinity_key_namespace
        .get_or_insert_with(|| leader_opts.namespace.clone())
        .clone();
    tokio::spawn(run(client.clone(), store.clone(), source, ready));
    let identity = leader_opts.identity.clone();
    let (leader_tx, leader_rx) = watch::channel(false);
    tokio::spawn(affinity_key::run(
        client.clone(),
        key_namespace,
        opts.affinity_key_recheck.unwrap_or(affinity_key::RECHECK),
        leader_rx.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let elector = tokio::spawn(leader::run(client.clone(), leader_opts, leader_tx, stop_rx));
    let status = status::spawn(
        client.clone(),
        store.clone(),
        opts.publish,
        leader_rx.clone(),
    );
    let events = events::spawn(client, store, identity, leader_rx.clone());
    Ok(ApiReporter {
        status,
        events,
        leader: leader_rx,
        stop: Arc::new(stop_tx),
        elector: Arc::new(Mutex::new(Some(elector))),
    })
}

/// Watch the six kinds and every ConfigMap (and, when asked, the settings ConfigMap by
/// name and the affinity key Secret) into `store` until the process ends. `ready` turns true once every watch has
/// listed completely for the first time, and stays true across relists (the last good
/// objects keep serving meanwhile).
pub async fn run(
    client: Client,
    store: SharedStore,
    opts: KubeSourceOptions,
    ready: watch::Sender<bool>,
) {
    let ns = opts.watch_namespace.as_deref();
    let plain = watcher::Config::default();
    let affinity_key = opts
        .affinity_key_namespace
        .as_deref()
        .map(|ns| ObjectKey::new(ns, AFFINITY_KEY_SECRET));
    let gateway_api = gateway_api_served(&client).await;
    let backend_tls = gateway_api.served && backend_tls_served(&client).await;
    let mut expected: Vec<&'static str> = KINDS.iter().map(|k| watch_name(*k)).collect();
    if gateway_api.served {
        expected.extend(GATEWAY_KINDS.iter().map(|k| watch_name(*k)));
        if gateway_api.grpc_routes {
            expected.push(watch_name(Kind::GRPCRoute));
        }
    }
    if backend_tls {
        expected.push(watch_name(Kind::BackendTLSPolicy));
    }
    expected.push(CONFIGMAPS_WATCH);
    if opts.configmap.is_some() {
        expected.push(CONFIGMAP_WATCH);
    }
    if affinity_key.is_some() {
        expected.push(AFFINITY_KEY_WATCH);
    }
    let synced = Arc::new(Synced {
        done: Mutex::new(HashSet::new()),
        expected,
        ready,
    });
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        configmap = opts.configmap.as_ref().map(tracing::field::display),
        affinity_key = affinity_key.as_ref().map(tracing::field::display),
        "watching the Kubernetes API"
    );
    // The TLS Secrets' relist must leave the affinity key Secret (watched on its own) be.
    let tls_scope = match &affinity_key {
        Some(key) => Scope::AllBut(key.clone()),
        None => Scope::Kind,
    };
    let w = |kind| Watch {
        name: watch_name(kind),
        kind,
        scope: Scope::Kind,
    };
    // Named by `--configmap` / the affinity key: one object each, by field selector.
    let configmap = async {
        if let Some(key) = &opts.configmap {
            watch_kind(
                Api::<ConfigMap>::namespaced(client.clone(), &key.namespace),
                by_name(&key.name),
                Watch {
                    name: CONFIGMAP_WATCH,
                    kind: Kind::ConfigMap,
                    scope: Scope::One(key.clone()),
                },
                Object::ConfigMap,
                &store,
                &synced,
            )
            .await;
        }
    };
    let affinity = async {
        if let Some(key) = &affinity_key {
            watch_kind(
                Api::<Secret>::namespaced(client.clone(), &key.namespace),
                by_name(&key.name),
                Watch {
                    name: AFFINITY_KEY_WATCH,
                    kind: Kind::Secret,
                    scope: Scope::One(key.clone()),
                },
                Object::Secret,
                &store,
                &synced,
            )
            .await;
        }
    };
    futures::join!(
        watch_kind(
            api::<Ingress>(&client, ns),
            plain.clone(),
            w(Kind::Ingress),
            Object::Ingress,
            &store,
            &synced,
        ),
        watch_kind(
            Api::<IngressClass>::all(client.clone()),
            plain.clone(),
            w(Kind::IngressClass),
            Object::IngressClass,
            &store,
            &synced,
        ),
        watch_kind(
            api::<Service>(&client, ns),
            plain.clone(),
            w(Kind::Service),
            Object::Service,
            &store,
            &synced,
        ),
        watch_kind(
            api::<EndpointSlice>(&client, ns),
            plain.clone(),
            w(Kind::EndpointSlice),
            Object::EndpointSlice,
            &store,
            &synced,
        ),
        watch_kind(
            api::<Endpoints>(&client, ns),
            plain,
            w(Kind::Endpoints),
            Object::Endpoints,
            &store,
            &synced,
        ),
        watch_kind(
            api::<Secret>(&client, ns),
            watcher::Config::default().fields(SECRET_FIELD_SELECTOR),
            Watch {
                scope: tls_scope,
                ..w(Kind::Secret)
            },
            Object::Secret,
            &store,
            &synced,
        ),
        // Every ConfigMap but the settings one, which its own watch owns (both hold it
        // when it is in the watched namespaces; its own keeps it across this relist).
        watch_kind(
            api::<ConfigMap>(&client, ns),
            watcher::Config::default(),
            Watch {
                name: CONFIGMAPS_WATCH,
                kind: Kind::ConfigMap,
                scope: match &opts.configmap {
                    Some(key) => Scope::AllBut(key.clone()),
                    None => Scope::Kind,
                },
            },
            Object::ConfigMap,
            &store,
            &synced,
        ),
        configmap,
        affinity,
        gateway_watches(&client, ns, gateway_api, &store, &synced),
        backend_tls_watch(&client, ns, backend_tls, &store, &synced),
    );
}

/// Whether the API server serves BackendTLSPolicy (`v1`): its CRD came later than the
/// other Gateway API kinds and may be missing where they are installed.
async fn backend_tls_served(client: &Client) -> bool {
    let group = format!("{}/v1", gateway_api::GROUP);
    let served = match client.list_api_group_resources(&group).await {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "backendtlspolicies"),
        Err(error) => {
            tracing::debug!(group, %error, "API group not served");
            false
        }
    };
    if served {
        tracing::info!("watching BackendTLSPolicies");
    } else {
        tracing::info!(
            "the BackendTLSPolicy CRD (gateway.networking.k8s.io v1) is not installed; BackendTLSPolicies are not watched"
        );
    }
    served
}

async fn backend_tls_watch(
    client: &Client,
    ns: Option<&str>,
    enabled: bool,
    store: &SharedStore,
    synced: &Synced,
) {
    if !enabled {
        return;
    }
    watch_kind(
        api::<BackendTLSPolicy>(client, ns),
        watcher::Config::default(),
        Watch {
            name: watch_name(Kind::BackendTLSPolicy),
            kind: Kind::BackendTLSPolicy,
            scope: Scope::Kind,
        },
        Object::BackendTLSPolicy,
        store,
        synced,
    )
    .await;
}

/// The Gateway API kinds, watched when the API server serves them, and the Namespaces
/// (for listeners' `allowedRoutes.namespaces.selector`).
pub const GATEWAY_KINDS: [Kind; 5] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HTTPRoute,
    Kind::ReferenceGrant,
    Kind::Namespace,
];

/// Which Gateway API kinds the API server serves.
#[derive(Clone, Copy)]
struct GatewayApiServed {
    /// GatewayClass, Gateway, HTTPRoute and ReferenceGrant.
    served: bool,
    /// GRPCRoute too: its CRD may be left out of an install that has the others.
    grpc_routes: bool,
}

/// Whether the API server serves the Gateway API kinds Portico reads (their CRDs are
/// installed). Asked once at start: CRDs installed later take a restart.
async fn gateway_api_served(client: &Client) -> GatewayApiServed {
    let served = |version: &'static str, plural: &'static str| async move {
        let group = format!("{}/{version}", gateway_api::GROUP);
        match client.list_api_group_resources(&group).await {
            Ok(list) => list.resources.iter().any(|r| r.name == plural),
            Err(error) => {
                tracing::debug!(group, %error, "API group not served");
                false
            }
        }
    };
    let v1 = served("v1", "httproutes").await
        && served("v1", "gateways").await
        && served("v1", "gatewayclasses").await;
    let grants = served("v1beta1", "referencegrants").await;
    let grpc_routes = v1 && grants && served("v1", "grpcroutes").await;
    if v1 && grants {
        tracing::info!(grpc_routes, "watching the Gateway API kinds");
    } else {
        tracing::info!(
            "the Gateway API CRDs (gateway.networking.k8s.io v1 and v1beta1) are not installed; Gateway API kinds are not watched"
        );
    }
    if v1 && grants && !grpc_routes {
        tracing::info!("the GRPCRoute CRD (gateway.networking.k8s.io v1) is not installed; GRPCRoutes are not watched");
    }
    GatewayApiServed {
        served: v1 && grants,
        grpc_routes,
    }
}

async fn gateway_watches(
    client: &Client,
    ns: Option<&str>,
    enabled: GatewayApiServed,
    store: &SharedStore,
    synced: &Synced,
) {
    if !enabled.served {
        return;
    }
    let w = |kind| Watch {
        name: watch_name(kind),
        kind,
        scope: Scope::Kind,
    };
    let plain = watcher::Config::default();
    futures::join!(
        watch_kind(
            Api::<GatewayClass>::all(client.clone()),
            plain.clone(),
            w(Kind::GatewayClass),
            Object::GatewayClass,
            store,
            synced,
        ),
        watch_kind(
            api::<Gateway>(client, ns),
            plain.clone(),
            w(Kind::Gateway),
            Object::Gateway,
            store,
            synced,
        ),
        watch_kind(
            api::<HTTPRoute>(client, ns),
            plain.clone(),
            w(Kind::HTTPRoute),
            Object::HTTPRoute,
            store,
            synced,
        ),
        async {
            if enabled.grpc_routes {
                watch_kind(
                    api::<GRPCRoute>(client, ns),
                    plain.clone(),
                    w(Kind::GRPCRoute),
                    Object::GRPCRoute,
                    store,
                    synced,
                )
                .await;
            }
        },
        watch_kind(
            api::<ReferenceGrant>(client, ns),
            plain.clone(),
            w(Kind::ReferenceGrant),
            Object::ReferenceGrant,
            store,
            synced,
        ),
        // Cluster-wide, whatever --watch-namespace says: a selector names namespaces by
        // their labels.
        watch_kind(
            Api::<Namespace>::all(client.clone()),
            plain.clone(),
            w(Kind::Namespace),
            Object::Namespace,
            store,
            synced,
        ),
    );
}

/// Readiness label of the watch of the settings ConfigMap.
const CONFIGMAP_WATCH: &str = "ConfigMap";
/// Readiness label of the watch of every ConfigMap.
const CONFIGMAPS_WATCH: &str = "ConfigMaps";
/// Readiness label of the watch of the affinity key Secret.
const AFFINITY_KEY_WATCH: &str = "affinity key Secret";

fn watch_name(kind: Kind) -> &'static str {
    match kind {
        Kind::ConfigMap => CONFIGMAP_WATCH,
        other => other.as_str(),
    }
}

/// A watch of a single object, by name.
fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Which watches have completed their first list.
struct Synced {
    done: Mutex<HashSet<&'static str>>,
    expected: Vec<&'static str>,
    ready: watch::Sender<bool>,
}

impl Synced {
    fn mark(&self, watch: &'static str) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if done.insert(watch) {
            tracing::info!(watch, "initial list synced");
            if self.expected.iter().all(|w| done.contains(w)) {
                tracing::info!("all kinds synced; ready");
                self.ready.send_replace(true);
            }
        }
    }
}

/// What a relist replaces in the store.
#[derive(Clone, Debug)]
enum Scope {
    /// Every object of the kind: the only watch of its kind.
    Kind,
    /// Every object of the kind but this one, which another watch owns.
    AllBut(ObjectKey),
    /// This one object.
    One(ObjectKey),
}

/// One watch: its readiness label, the kind it fills and what its relists replace.
struct Watch {
    name: &'static str,
    kind: Kind,
    scope: Scope,
}

async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    watch: Watch,
    wrap: fn(K) -> Object,
    store: &SharedStore,
    synced: &Synced,
) where
    K: Resource + ResourceExt + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let Watch { name, kind, scope } = watch;
    let mut events = watcher(api.clone(), config.clone()).boxed();
    let mut retry = Retry::default();
    // The objects of a list in progress; swapped into the store whole on InitDone.
    let mut listing: Vec<Object> = Vec::new();
    while let Some(event) = events.next().await {
        if event.is_ok() {
            retry.reset();
        }
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(obj)) => listing.push(wrap(trim(obj))),
            Ok(Event::InitDone) => {
                let objects = std::mem::take(&mut listing);
                tracing::debug!(watch = name, count = objects.len(), "list complete");
                store.update(|s| {
                    match &scope {
                        Scope::Kind => s.clear(kind),
                        Scope::AllBut(keep) => s.clear_except(kind, keep),
                        Scope::One(key) => s.remove(kind, key),
                    }
                    for obj in objects {
                        s.apply(obj);
                    }
                });
                synced.mark(name);
            }
            Ok(Event::Apply(obj)) => {
                tracing::debug!(watch = name, object = %ObjectKey::of(&obj), "applied");
                let obj = wrap(trim(obj));
                store.update(|s| s.apply(obj));
            }
            Ok(Event::Delete(obj)) => {
                let key = ObjectKey::of(&obj);
                tracing::debug!(watch = name, object = %key, "deleted");
                store.update(|s| s.remove(kind, &key));
            }
            Err(error) => match retry.after(&error) {
                // Our resourceVersion is gone from the server's history (compaction, or a
                // restarted server): a new watcher lists afresh, at once. The watcher would
                // relist by itself after a 410 event, but not after a 410 answer to the
                // watch request, and only after a backoff.
                None => {
                    tracing::warn!(watch = name, %error, "resourceVersion expired; relisting");
                    events = watcher(api.clone(), config.clone()).boxed();
                }
                Some(delay) => {
                    tracing::warn!(watch = name, %error, ?delay, "watch error; retrying");
                    tokio::time::sleep(delay).await;
                }
            },
        }
    }
    tracing::error!(watch = name, "watch stream ended");
}

/// Drop what nothing reads, to keep the store small.
fn trim<K: ResourceExt>(mut obj: K) -> K {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
    obj
}

/// The first retry delay after a watch error.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest retry delay. Retries are cheap for the API server (one connection attempt or
/// one list per kind), and a long delay is time the routes go stale after an outage: an
/// object created just after the server came back must be served within seconds.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// When a watch retries after an error: at once after the first `410 Gone` (a relist),
/// otherwise after a delay doubling from [`RETRY_FIRST`] to [`RETRY_MAX`], each drawn
/// uniformly from its upper half so that many replicas do not come back in step. Any
/// successful event starts over.
#[derive(Debug)]
struct Retry {
    ceiling: Duration,
    /// A relist after 410 has been started and nothing has succeeded since: another 410
    /// waits like any error rather than relisting in a tight loop.
    relisted: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            ceiling: RETRY_FIRST,
            relisted: false,
        }
    }
}

impl Retry {
    fn reset(&mut self) {
        *self = Retry::default();
    }

    /// `None`: relist now; `Some(delay)`: wait, then let the watcher retry.
    fn after(&mut self, error: &watcher::Error) -> Option<Duration> {
        if is_gone(error) && !self.relisted {
            self.relisted = true;
            return None;
        }
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(RETRY_MAX);
        let half = ceiling / 2;
        Some(half + half.mul_f64(rand::random::<f64>()))
    }
}

/// Whether the error says the watch's resourceVersion is no longer in the server's history.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(status) if status.code == 410)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone() -> watcher::Error {
        let status =
            kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        watcher::Error::WatchError(Box::new(status))
    }

    fn refused() -> watcher::Error {
        watcher::Error::NoResourceVersion
    }

    #[test]
    fn retries_are_bounded_and_jittered() {
        let mut retry = Retry::default();
        let delays: Vec<Duration> = (0..20).filter_map(|_| retry.after(&refused())).collect();
        assert_eq!(delays.len(), 20);
        assert!(delays[0] >= RETRY_FIRST / 2 && delays[0] <= RETRY_FIRST);
        for d in &delays {
            assert!(*d <= RETRY_MAX, "{d:?}");
        }
        // Long outages settle in the upper half of the ceiling.
        assert!(delays[19] >= RETRY_MAX / 2, "{:?}", delays[19]);
    }

    #[test]
    fn gone_relists_at_once_but_not_in_a_loop() {
        let mut retry = Retry::default();
        for _ in 0..6 {
            retry.after(&refused());
        }
        assert_eq!(
            retry.after(&gone()),
            None,
            "410 after an outage relists at once"
        );
        assert!(
            retry.after(&gone()).is_some(),
            "a second 410 in a row waits"
        );
        retry.reset();
        assert_eq!(retry.after(&gone()), None);
        assert!(retry.after(&refused()).unwrap() <= RETRY_MAX);
    }

    #[test]
    fn the_secret_selector_leaves_the_affinity_key_to_its_own_watch() {
        assert!(SECRET_FIELD_SELECTOR.ends_with(&format!("metadata.name!={AFFINITY_KEY_SECRET}")));
    }
}
