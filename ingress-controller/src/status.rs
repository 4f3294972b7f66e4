//! Writes `status.loadBalancer.ingress` of our Ingresses, from the elected leader only.
//!
//! The address comes from `--publish-address` (IPs or hostnames) or from the Service named
//! by `--publish-service`, read as ingress-nginx reads it: a LoadBalancer Service's
//! `status.loadBalancer.ingress` plus its `spec.externalIPs`; a NodePort Service's
//! `externalIPs`, else its clusterIP; a ClusterIP Service's clusterIP; an ExternalName
//! Service's external name. Until that yields an address nothing is written (existing
//! status is left alone rather than cleared).
//!
//! Each Ingress we own gets its status through the `status` subresource by server-side
//! apply as field manager `portico`, and only when its current status differs. The
//! server then records which fields are Portico's, so Portico never takes or overwrites
//! fields another writer owns. An Ingress that stops being ours and still shows our address
//! is cleared.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::watch_object;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use proxy_core::host::HostName;

use crate::compile::GatewayApiStatus;
use crate::gateway_status::{self, GatewayStatusHandle};
use crate::sources::kube::FIELD_MANAGER;
use crate::store::{ObjectKey, SharedStore};

/// One address as it appears in `status.loadBalancer.ingress`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbAddress {
    Ip(IpAddr),
    Hostname(String),
}

/// The address as written in status: the IP or the hostname.
impl std::fmt::Display for LbAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LbAddress::Ip(ip) => ip.fmt(f),
            LbAddress::Hostname(h) => f.write_str(h),
        }
    }
}

impl LbAddress {
    fn to_json(&self) -> Value {
        match self {
            LbAddress::Ip(ip) => json!({ "ip": ip.to_string() }),
            LbAddress::Hostname(h) => json!({ "hostname": h }),
        }
    }

    fn from_lb(lb: &IngressLoadBalancerIngress) -> Option<Self> {
        match (&lb.ip, &lb.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(
                IpAddr::from_str(ip)
                    .map(LbAddress::Ip)
                    .unwrap_or_else(|_| LbAddress::Hostname(ip.clone())),
            ),
            (_, Some(h)) if !h.is_empty() => Some(LbAddress::Hostname(h.clone())),
            _ => None,
        }
    }

    fn parse_ip_or_host(s: &str) -> Self {
        IpAddr::from_str(s)
            .map(LbAddress::Ip)
            .unwrap_or_else(|_| LbAddress::Hostname(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("--publish-service {0:?}: expected NAMESPACE/NAME")]
    Service(String),
    #[error("--publish-address {0:?}: {1:?} is neither an IP address nor a DNS name")]
    Address(String, String),
    #[error("--publish-service and --publish-address are mutually exclusive")]
    Both,
}

/// Where the address written into Ingress status comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PublishSource {
    /// No status is written.
    #[default]
    None,
    Addresses(Vec<LbAddress>),
    Service(ObjectKey),
}

impl PublishSource {
    /// From the `--publish-service NS/NAME` and `--publish-address A[,B...]` flags.
    pub fn from_flags(
        publish_service: Option<&str>,
        publish_address: Option<&str>,
    ) -> Result<Self, PublishError> {
        match (publish_service, publish_address) {
            (Some(_), Some(_)) => Err(PublishError::Both),
            (Some(s), None) => match s.split_once('/') {
                Some((ns, name)) if is_dns_label(ns) && !name.is_empty() && !name.contains('/') => {
                    Ok(PublishSource::Service(ObjectKey::new(ns, name)))
                }
                _ => Err(PublishError::Service(s.to_owned())),
            },
            (None, Some(list)) => {
                let mut addrs = Vec::new();
                for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let addr = LbAddress::parse_ip_or_host(part);
                    let addr = match addr {
                        // A hostname for the status must be a host name by the rule routes
                        // and certificates follow; it is written in its normal form.
                        LbAddress::Hostname(h) => match HostName::parse(&h) {
                            Ok(name) => LbAddress::Hostname(name.to_string()),
                            Err(_) => {
                                return Err(PublishError::Address(list.to_owned(), part.to_owned()))
                            }
                        },
                        ip => ip,
                    };
                    addrs.push(addr);
                }
                if addrs.is_empty() {
                    return Err(PublishError::Address(list.to_owned(), String::new()));
                }
                Ok(PublishSource::Addresses(normalize(addrs)))
            }
            (None, None) => Ok(PublishSource::None),
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn normalize(addrs: impl IntoIterator<Item = LbAddress>) -> Vec<LbAddress> {
    addrs
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The addresses a Service publishes, as ingress-nginx reads them (see the module docs).
pub fn service_addresses(svc: &Service) -> Vec<LbAddress> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let external_ips = || {
        spec.external_ips
            .iter()
            .flatten()
            .map(|ip| LbAddress::parse_ip_or_host(ip))
    };
    let cluster_ip = || {
        spec.cluster_ip
            .iter()
            .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
            .map(|ip| LbAddress::parse_ip_or_host(ip))
            .collect::<Vec<_>>()
    };
    let addrs: Vec<LbAddress> = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ExternalName" => spec
            .external_name
            .iter()
            .map(|h| LbAddress::Hostname(h.clone()))
            .collect(),
        "NodePort" => {
            let ext: Vec<_> = external_ips().collect();
            if ext.is_empty() {
                cluster_ip()
            } else {
                ext
            }
        }
        "LoadBalancer" => svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| match (&i.ip, &i.hostname) {
                (Some(ip), _) if !ip.is_empty() => Some(LbAddress::parse_ip_or_host(ip)),
                (_, Some(h)) if !h.is_empty() => Some(LbAddress::Hostname(h.clone())),
                _ => None,
            })
            .chain(external_ips())
            .collect(),
        _ => cluster_ip(),
    };
    normalize(addrs)
}

/// The publish loop tells the writer which Ingresses the latest compile owns, and the
/// Gateway API writer the status it worked out.
#[derive(Clone)]
pub struct StatusHandle {
    owned: Arc<watch::Sender<Option<BTreeSet<ObjectKey>>>>,
    gateway: GatewayStatusHandle,
}

impl StatusHandle {
    /// Record the Gateway API status of the latest compile (`Compiled::gateway_status`).
    /// Cheap; never blocks on the API.
    pub fn set_gateway_status(&self, status: &GatewayApiStatus) {
        self.gateway.set(status);
    }

    /// Record the Ingresses that are ours (`Compiled::owned_ingresses`). Cheap; never
    /// blocks on the API.
    pub fn set_owned(&self, owned: &[ObjectKey]) {
        let owned: BTreeSet<ObjectKey> = owned.iter().cloned().collect();
        self.owned.send_if_modified(|cur| {
            if cur.as_ref() == Some(&owned) {
                false
            } else {
                *cur = Some(owned);
                true
            }
        });
    }
}

/// How long the writer waits for a burst of changes to settle, and how often it retries
/// after a failed write.
const SETTLE: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(5);

/// One status writer: what it brings in line each time its input, the addresses, the
/// leadership or the store change.
pub(crate) trait StatusSync {
    type Input: Clone;

    fn store(&self) -> &SharedStore;

    /// Leadership was lost: what was written is no longer known to be current.
    fn forget(&mut self);

    /// Bring every object in line; false if some write failed (tried again after
    /// [`RETRY`]).
    fn sync(
        &mut self,
        input: &Self::Input,
        addrs: &[LbAddress],
    ) -> impl std::future::Future<Output = bool> + Send;
}

/// Runs a status writer: after each burst of changes settles, the leader brings the
/// objects in line; a failed write is retried. Fixed addresses (or none) may have no
/// sender left: the last value stands.
pub(crate) async fn drive<W: StatusSync>(
    mut writer: W,
    mut input: watch::Receiver<Option<W::Input>>,
    mut addresses: watch::Receiver<Vec<LbAddress>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut revision = writer.store().subscribe();
    let mut retry = false;
    let mut addresses_open = true;
    loop {
        let wait = async {
            if retry {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = input.changed() => if r.is_err() { return },
            r = addresses.changed(), if addresses_open => addresses_open = r.is_ok(),
            r = leader.changed() => if r.is_err() { return },
            r = revision.changed() => if r.is_err() { return },
            () = wait => {}
        }
        tokio::time::sleep(SETTLE).await;
        // Mark everything seen before deciding, so an unchanged input does not wake the
        // loop again.
        revision.mark_unchanged();
        let is_leader = *leader.borrow_and_update();
        let current = input.borrow_and_update().clone();
        let addrs = addresses.borrow_and_update().clone();
        if !is_leader {
            writer.forget();
            retry = false;
            continue;
        }
        let Some(current) = current else {
            continue;
        };
        retry = !writer.sync(&current, &addrs).await;
    }
}

/// Start the status writers: Ingress status (only with a publish source), and Gateway
/// API status (with the same addresses, if any). They act only while `leader` is true,
/// and only after the first [`StatusHandle::set_owned`] or
/// [`StatusHandle::set_gateway_status`].
pub fn spawn(
    client: Client,
    store: SharedStore,
    publish: PublishSource,
    leader: watch::Receiver<bool>,
) -> StatusHandle {
    let (owned_tx, owned_rx) = watch::channel(None);
    // Fixed addresses: the writer holds the sender so the channel stays open.
    let (addresses, fixed) = match publish {
        PublishSource::None => {
            tracing::info!(
                "no --publish-service or --publish-address: Ingress status is not written"
            );
            (None, None)
        }
        PublishSource::Addresses(a) => {
            let (tx, rx) = watch::channel(a);
            (Some(rx), Some(tx))
        }
        PublishSource::Service(key) => (Some(watch_publish_service(client.clone(), key)), None),
    };
    // Gateways get the same addresses; none without a publish source.
    let gateway_addresses = match &addresses {
        Some(rx) => rx.clone(),
        None => watch::channel(Vec::new()).1,
    };
    let gateway = gateway_status::spawn(
        client.clone(),
        store.clone(),
        gateway_addresses,
        leader.clone(),
    );
    if let Some(addresses) = addresses {
        let writer = Writer {
            client,
            store,
            written: HashMap::new(),
            _fixed: fixed,
        };
        tokio::spawn(drive(writer, owned_rx, addresses, leader));
    }
    StatusHandle {
        owned: Arc::new(owned_tx),
        gateway,
    }
}

fn watch_publish_service(client: Client, key: ObjectKey) -> watch::Receiver<Vec<LbAddress>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let api: Api<Service> = Api::namespaced(client, &key.namespace);
        let mut events = watch_object(api, &key.name).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Some(svc)) => {
                    let addrs = service_addresses(&svc);
                    if addrs.is_empty() {
                        tracing::info!(service = %key, "publish Service has no address yet");
                    }
                    tx.send_if_modified(|cur| std::mem::replace(cur, addrs) != *cur);
                }
                Ok(None) => {
                    tracing::warn!(service = %key, "publish Service not found");
                    tx.send_if_modified(|cur| std::mem::take(cur) != *cur);
                }
                Err(error) => {
                    tracing::warn!(service = %key, %error, "watching the publish Service")
                }
            }
        }
    });
    rx
}

struct Writer {
    client: Client,
    store: SharedStore,
    /// What we last wrote per Ingress, and the Ingress's resourceVersion before that write:
    /// until the store shows a newer version, the write is assumed to be in flight.
    written: HashMap<ObjectKey, (Vec<LbAddress>, String)>,
    _fixed: Option<watch::Sender<Vec<LbAddress>>>,
}

impl StatusSync for Writer {
    type Input = BTreeSet<ObjectKey>;

    fn store(&self) -> &SharedStore {
        &self.store
    }

    fn forget(&mut self) {
        self.written.clear();
    }

    async fn sync(&mut self, owned: &BTreeSet<ObjectKey>, addrs: &[LbAddress]) -> bool {
        // With no address yet there is nothing to publish.
        addrs.is_empty() || self.write_ingresses(owned, addrs).await
    }
}

impl Writer {
    /// Bring every Ingress in line; false if some write failed.
    async fn write_ingresses(&mut self, owned: &BTreeSet<ObjectKey>, addrs: &[LbAddress]) -> bool {
        let ingresses = self.store.snapshot().ingresses;
        self.written.retain(|k, _| ingresses.contains_key(k));
        let mut ok = true;
        for (key, ing) in ingresses.iter() {
            let current = current_addresses(ing);
            let want = if owned.contains(key) {
                addrs.to_vec()
            } else if !current.is_empty() && current == addrs {
                // No longer ours, still showing our address.
                Vec::new()
            } else {
                continue;
            };
            if current == want {
                continue;
            }
            let rv = ing.resource_version().unwrap_or_default();
            if self
                .written
                .get(key)
                .is_some_and(|(w, before)| *w == want && *before == rv)
            {
                continue;
            }
            match self.patch(key, &want).await {
                Ok(()) => {
                    let addresses = want
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    tracing::info!(ingress = %key, addresses, "Ingress status updated");
                    self.written.insert(key.clone(), (want, rv));
                }
                Err(error) => {
                    tracing::warn!(ingress = %key, %error, "updating Ingress status");
                    ok = false;
                }
            }
        }
        ok
    }

    async fn patch(&self, key: &ObjectKey, want: &[LbAddress]) -> Result<(), kube::Error> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &key.namespace);
        // An empty list (not an absent one) also clears addresses we never owned: the list
        // is atomic, so the forced apply takes it whole.
        let ingress = Value::Array(want.iter().map(LbAddress::to_json).collect());
        let body = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": { "name": key.name, "namespace": key.namespace },
            "status": { "loadBalancer": { "ingress": ingress } },
        });
        // Forced: the address list is ours to publish even when another manager (an
        // earlier controller, `kubectl`) last wrote it.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&key.name, &params, &Patch::Apply(&body))
            .await
            .map(drop)
    }
}

fn current_addresses(ing: &Ingress) -> Vec<LbAddress> {
    normalize(
        ing.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(LbAddress::from_lb),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::from_value;

    #[test]
    fn parses_publish_flags() {
        assert_eq!(
            PublishSource::from_flags(Some("portico/portico"), None),
            Ok(PublishSource::Service(ObjectKey::new("portico", "portico")))
        );
        assert_eq!(
            PublishSource::from_flags(None, Some("10.0.0.2, lb.example.com,10.0.0.1")),
            Ok(PublishSource::Addresses(vec![
                LbAddress::Ip("10.0.0.1".parse().unwrap()),
                LbAddress::Ip("10.0.0.2".parse().unwrap()),
                LbAddress::Hostname("lb.example.com".into()),
            ]))
        );
        assert_eq!(
            PublishSource::from_flags(None, None),
            Ok(PublishSource::None)
        );
        assert!(matches!(
            PublishSource::from_flags(Some("no-slash"), None),
            Err(PublishError::Service(_))
        ));
        assert!(matches!(
            PublishSource::from_flags(None, Some("bad_host!")),
            Err(PublishError::Address(_, _))
        ));
        assert_eq!(
            PublishSource::from_flags(Some("a/b"), Some("1.2.3.4")),
            Err(PublishError::Both)
        );
    }

    fn svc(v: Value) -> Service {
        from_value(v).unwrap()
    }

    #[test]
    fn service_addresses_follow_ingress_nginx() {
        let ip = |s: &str| LbAddress::Ip(s.parse().unwrap());
        let lb = svc(json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5", "externalIPs": ["192.0.2.9"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}
        }));
        assert_eq!(
            service_addresses(&lb),
            [
                ip("192.0.2.9"),
                ip("203.0.113.7"),
                LbAddress::Hostname("lb.example.com".into())
            ]
        );
        let pending_lb = svc(json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5"}}));
        assert!(service_addresses(&pending_lb).is_empty());
        let np = svc(json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5"}}));
        assert_eq!(service_addresses(&np), [ip("10.96.0.5")]);
        let np_ext = svc(
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "externalIPs": ["192.0.2.1"]}}),
        );
        assert_eq!(service_addresses(&np_ext), [ip("192.0.2.1")]);
        let cip = svc(json!({"spec": {"clusterIP": "10.96.0.6"}}));
        assert_eq!(service_addresses(&cip), [ip("10.96.0.6")]);
        let headless = svc(json!({"spec": {"clusterIP": "None"}}));
        assert!(service_addresses(&headless).is_empty());
        let ext =
            svc(json!({"spec": {"type": "ExternalName", "externalName": "edge.example.com"}}));
        assert_eq!(
            service_addresses(&ext),
            [LbAddress::Hostname("edge.example.com".into())]
        );
    }
}
