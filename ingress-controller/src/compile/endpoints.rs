//! Service port -> endpoints, from EndpointSlices (preferred) or hand-written `v1/Endpoints`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointSubset, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proxy_core::Endpoint;

use super::diagnostic::{Diagnostic, DiagnosticReason};
use crate::store::{Kind, ObjectKey, Store};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The annotation that asked for `publishNotReadyAddresses` before the field existed.
pub const TOLERATE_UNREADY_ANNOTATION: &str =
    "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// Whether `service` wants its not-ready endpoints used as ready ones
/// (`spec.publishNotReadyAddresses: true`, or the older annotation set to "true").
pub fn publishes_not_ready(service: &Service) -> bool {
    let field = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
        .is_some_and(|v| v == "true");
    field || annotation
}

/// One endpoint address of a Service, for DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAddress {
    pub ip: IpAddr,
    /// `hostname` of the endpoint (a StatefulSet pod's name under its headless Service).
    pub hostname: Option<String>,
    /// Ready, or published as ready (see [`publishes_not_ready`]).
    pub ready: bool,
}

/// Where a Service port's endpoints came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    EndpointSlices,
    Endpoints,
    /// Neither exists for the Service.
    Missing,
}

/// EndpointSlices grouped by `(namespace, service-name label)`, built once per compile so
/// each lookup is a hash probe instead of a scan.
pub struct EndpointIndex<'a> {
    store: &'a Store,
    slices: foldhash::HashMap<(&'a str, &'a str), Vec<SliceEntry<'a>>>,
}

/// One EndpointSlice in the index, with its key.
pub type SliceEntry<'a> = (&'a ObjectKey, &'a Arc<EndpointSlice>);

impl<'a> EndpointIndex<'a> {
    pub fn new(store: &'a Store) -> Self {
        let mut slices: foldhash::HashMap<_, Vec<_>> = foldhash::HashMap::default();
        // BTreeMap order: slices of one Service end up sorted by name, so output is stable.
        for (key, slice) in store.endpoint_slices.iter() {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            slices
                .entry((key.namespace.as_str(), service.as_str()))
                .or_default()
                .push((key, slice));
        }
        Self { store, slices }
    }

    /// The EndpointSlices of the Service named `key`, sorted by name.
    pub fn slices_of<'s>(&'s self, key: &'s ObjectKey) -> &'s [SliceEntry<'s>] {
        self.slices
            .get(&(key.namespace.as_str(), key.name.as_str()))
            .map_or(&[], Vec::as_slice)
    }

    /// Endpoints of one port of `service` (named `key`), sorted by address, deduplicated.
    /// Problems with individual addresses are pushed to `diags` and those addresses skipped.
    pub fn resolve(
        &self,
        key: &ObjectKey,
        service: &Service,
        port: &ServicePort,
        diags: &mut Vec<Diagnostic>,
    ) -> (Vec<Endpoint>, EndpointSource) {
        let (mut endpoints, source) = self.listed(key, service, port, diags);
        // In a cluster the EndpointSlice controller marks every endpoint of such a Service
        // ready; hand-written slices and Endpoints (a manifest folder) are taken the same
        // way, so both sources serve alike, L7 and L4.
        if publishes_not_ready(service) {
            for ep in &mut endpoints {
                ep.ready = true;
            }
        }
        (endpoints, source)
    }

    /// Every endpoint address of `service` (named `key`), whatever the port, with its
    /// hostname and readiness read as [`EndpointIndex::resolve`] reads them: what cluster
    /// DNS answers for a headless Service. Sorted by address, each once; addresses that
    /// are not IPs are left out (`resolve` reports them).
    pub fn addresses(&self, key: &ObjectKey, service: &Service) -> Vec<EndpointAddress> {
        let mut out: BTreeMap<IpAddr, EndpointAddress> = BTreeMap::new();
        let mut add = |ip: &str, hostname: Option<&String>, ready: bool| {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                return;
            };
            let entry = out.entry(ip).or_insert(EndpointAddress {
                ip,
                hostname: None,
                ready,
            });
            entry.ready |= ready;
            if entry.hostname.is_none() {
                entry.hostname = hostname.filter(|h| !h.is_empty()).cloned();
            }
        };
        let slices = self.slices_of(key);
        if !slices.is_empty() {
            for (_, slice) in slices.iter().filter(|(_, s)| s.address_type != "FQDN") {
                for ep in slice.endpoints.iter().flatten() {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if let Some(ip) = ep.addresses.first() {
                        add(ip, ep.hostname.as_ref(), ready);
                    }
                }
            }
        } else if let Some(endpoints) = self.store.endpoints.get(key) {
            for subset in endpoints.subsets.iter().flatten() {
                for a in subset.addresses.iter().flatten() {
                    add(&a.ip, a.hostname.as_ref(), true);
                }
                for a in subset.not_ready_addresses.iter().flatten() {
                    add(&a.ip, a.hostname.as_ref(), false);
                }
            }
        }
        let tolerate = publishes_not_ready(service);
        out.into_values()
            .map(|mut a| {
                a.ready |= tolerate;
                a
            })
            .collect()
    }

    /// [`EndpointIndex::resolve`], with readiness as the endpoint lists give it.
    fn listed(
        &self,
        key: &ObjectKey,
        service: &Service,
        port: &ServicePort,
        diags: &mut Vec<Diagnostic>,
    ) -> (Vec<Endpoint>, EndpointSource) {
        let mut out = BTreeMap::new();
        let slices = self.slices_of(key);
        if !slices.is_empty() {
            for (slice_key, slice) in slices {
                from_slice(slice_key, slice, service, port, &mut out, diags);
            }
            return (out.into_values().collect(), EndpointSource::EndpointSlices);
        }
        if let Some(endpoints) = self.store.endpoints.get(key) {
            for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
                from_subset(key, i, subset, service, port, &mut out, diags);
            }
            return (out.into_values().collect(), EndpointSource::Endpoints);
        }
        (Vec::new(), EndpointSource::Missing)
    }
}

fn port_name(name: &Option<String>) -> &str {
    name.as_deref().unwrap_or("")
}

/// The port to use when an endpoint list names no port at all: a numeric `targetPort`,
/// else the Service port itself (Kubernetes defaults `targetPort` to `port`).
pub fn numeric_target_port(port: &ServicePort) -> Option<u16> {
    match &port.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0),
        Some(IntOrString::String(s)) => s.parse::<u16>().ok().filter(|p| *p != 0),
        None => u16::try_from(port.port).ok().filter(|p| *p != 0),
    }
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Adds `ep`, keeping one entry per address; a ready copy beats a not-ready one (an
/// address can sit in two slices while the slice controller moves it).
fn insert(out: &mut BTreeMap<SocketAddr, Endpoint>, ep: Endpoint) {
    match out.get(&ep.addr) {
        Some(existing) if existing.ready || !ep.ready => {}
        _ => {
            out.insert(ep.addr, ep);
        }
    }
}

fn from_slice(
    key: &ObjectKey,
    slice: &EndpointSlice,
    service: &Service,
    port: &ServicePort,
    out: &mut BTreeMap<SocketAddr, Endpoint>,
    diags: &mut Vec<Diagnostic>,
) {
    let wanted = port_name(&port.name);
    let number = match slice.ports.as_deref() {
        // No ports listed: hand-written slices of selector-less Services often omit them.
        None | Some([]) => numeric_target_port(port),
        Some(ports) => match ports.iter().find(|p| port_name(&p.name) == wanted) {
            Some(p) => p.port.and_then(valid_port),
            None => single_port_fallback(service, ports.len(), || ports[0].port),
        },
    };
    let Some(number) = number else {
        return;
    };
    if slice.address_type == "FQDN" {
        diags.push(Diagnostic::warning(
            Kind::EndpointSlice,
            key,
            "addressType",
            DiagnosticReason::InvalidEndpoint,
            "FQDN EndpointSlices are not supported, ignored",
        ));
        return;
    }
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        // All addresses of one endpoint are fungible; Kubernetes consumers use the first.
        let Some(addr) = ep.addresses.first() else {
            continue;
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            diags.push(Diagnostic::error(
                Kind::EndpointSlice,
                key,
                format!("endpoints[{i}].addresses[0]"),
                DiagnosticReason::InvalidEndpoint,
                format!("{addr:?} is not an IP address, endpoint ignored"),
            ));
            continue;
        };
        let conditions = ep.conditions.as_ref();
        insert(
            out,
            Endpoint {
                addr: SocketAddr::new(ip, number),
                ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                node_name: ep.node_name.as_deref().map(Arc::from),
                pod: ep
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .map(Arc::from),
            },
        );
    }
}

/// A Service with exactly one port whose endpoint list has exactly one port: they are
/// the same port even when the hand-written names differ.
fn single_port_fallback(
    service: &Service,
    listed: usize,
    only: impl FnOnce() -> Option<i32>,
) -> Option<u16> {
    let service_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map_or(0, Vec::len);
    if service_ports == 1 && listed == 1 {
        only().and_then(valid_port)
    } else {
        None
    }
}

fn from_subset(
    key: &ObjectKey,
    index: usize,
    subset: &EndpointSubset,
    service: &Service,
    port: &ServicePort,
    out: &mut BTreeMap<SocketAddr, Endpoint>,
    diags: &mut Vec<Diagnostic>,
) {
    let wanted = port_name(&port.name);
    let number = match subset.ports.as_deref() {
        None | Some([]) => numeric_target_port(port),
        Some(ports) => match ports.iter().find(|p| port_name(&p.name) == wanted) {
            Some(p) => valid_port(p.port),
            None => single_port_fallback(service, ports.len(), || Some(ports[0].port)),
        },
    };
    let Some(number) = number else {
        return;
    };
    let lists = [
        ("addresses", subset.addresses.as_deref(), true),
        (
            "notReadyAddresses",
            subset.not_ready_addresses.as_deref(),
            false,
        ),
    ];
    for (field, addresses, ready) in lists {
        for (i, a) in addresses.into_iter().flatten().enumerate() {
            let Ok(ip) = a.ip.parse::<IpAddr>() else {
                diags.push(Diagnostic::error(
                    Kind::Endpoints,
                    key,
                    format!("subsets[{index}].{field}[{i}].ip"),
                    DiagnosticReason::InvalidEndpoint,
                    format!("{:?} is not an IP address, endpoint ignored", a.ip),
                ));
                continue;
            };
            insert(
                out,
                Endpoint {
                    addr: SocketAddr::new(ip, number),
                    ready,
                    terminating: false,
                    node_name: a.node_name.as_deref().map(Arc::from),
                    pod: a
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.as_deref())
                        .map(Arc::from),
                },
            );
        }
    }
}
