//! Services -> L4 forwarding for `--service-proxy` (the seeds' kube-proxy in user space).
//!
//! Rules, per Service port:
//! - Types `ClusterIP` (the default), `NodePort` and `LoadBalancer` are forwarded;
//!   `ExternalName` and headless (`clusterIP: None`) Services get no listener, silently,
//!   as kube-proxy gives them none.
//! - The clusterIP is listened on at `port` (the dataplane binds it only where the address
//!   is local). A Service without a clusterIP (a manifest the API server never saw) is
//!   reported and left out: there is no address to serve it on.
//! - `NodePort`/`LoadBalancer`: `nodePort` on each `--node-address`. No nodePort (no API
//!   server allocated one) is reported; the clusterIP is still served.
//! - Endpoints come from [`EndpointIndex::resolve`] (EndpointSlices by port name, else
//!   hand-written Endpoints), the same resolution HTTP backends use.
//! - `sessionAffinity: ClientIP` uses `sessionAffinityConfig.clientIP.timeoutSeconds`
//!   (default 10800, valid 1..=86400); `externalTrafficPolicy: Local` limits node-port
//!   traffic to endpoints whose `nodeName` is `--node-name`.
//! - `SCTP` ports are reported and left out. Two Services claiming one listen address
//!   (possible in a manifest folder, never through the API server): the first in
//!   namespace/name order keeps it, the other is reported.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use proxy_core::l4::{L4Service, Protocol, ServicePortId};

use super::endpoints::{EndpointIndex, EndpointSource};
use super::{CompileOptions, Diagnostic, DiagnosticReason};
use crate::store::{Kind, ObjectKey, Store};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);
/// Kubernetes' upper bound for the affinity timeout (one day).
const MAX_AFFINITY_SECONDS: i32 = 86_400;

/// The L4 services to forward, in namespace/name/port order.
pub fn compile_l4(
    store: &Store,
    endpoints: &EndpointIndex<'_>,
    opts: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Vec<L4Service> {
    let mut out = Vec::new();
    // (protocol, listen address) -> the Service port that holds it.
    let mut claimed: HashMap<(Protocol, SocketAddr), ServicePortId> = HashMap::new();
    for (key, service) in store.services.iter() {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let Some(shape) = shape(key, spec, opts, diags) else {
            continue;
        };
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let Some(mut svc) = compile_port(key, service, &shape, i, port, endpoints, opts, diags)
            else {
                continue;
            };
            let mut keep = |addr: &SocketAddr, field: String| {
                let owner = claimed
                    .entry((svc.protocol, *addr))
                    .or_insert_with(|| svc.id.clone());
                if *owner == svc.id {
                    return true;
                }
                diags.push(Diagnostic::error(
                    Kind::Service,
                    key,
                    field,
                    DiagnosticReason::ListenAddressConflict,
                    format!(
                        "{} {addr} is already served for {owner}; not forwarded here",
                        svc.protocol.as_str().to_uppercase()
                    ),
                ));
                false
            };
            if let Some(addr) = svc.cluster_addr {
                if !keep(&addr, format!("spec.ports[{i}].port")) {
                    svc.cluster_addr = None;
                }
            }
            svc.node_addrs
                .retain(|addr| keep(addr, format!("spec.ports[{i}].nodePort")));
            if svc.cluster_addr.is_some() || !svc.node_addrs.is_empty() {
                out.push(svc);
            }
        }
    }
    out
}

/// What a Service as a whole contributes to each of its ports.
struct Shape {
    /// `None`: a NodePort or LoadBalancer Service from a folder that sets none; only its
    /// node ports are forwarded.
    cluster_ip: Option<IpAddr>,
    node_ports: bool,
    external_traffic_local: bool,
    client_ip_affinity: Option<Duration>,
}

fn shape(
    key: &ObjectKey,
    spec: &ServiceSpec,
    opts: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Option<Shape> {
    let node_ports = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => false,
        "NodePort" => true,
        // `allocateLoadBalancerNodePorts: false` leaves a LoadBalancer without node ports.
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        "ExternalName" => return None,
        other => {
            diags.push(Diagnostic::error(
                Kind::Service,
                key,
                "spec.type",
                DiagnosticReason::InvalidService,
                format!("unknown Service type {other:?}; not forwarded"),
            ));
            return None;
        }
    };
    let cluster_ip = match spec.cluster_ip.as_deref() {
        Some("None") => return None,
        None | Some("") => {
            let (message, forwarded) = if node_ports && !opts.node_addresses.is_empty() {
                (
                    "no clusterIP (the API server assigns one; in a manifest folder, set it); \
                     only its node ports are forwarded",
                    true,
                )
            } else {
                (
                    "no clusterIP (the API server assigns one; in a manifest folder, set it); \
                     not forwarded",
                    false,
                )
            };
            diags.push(Diagnostic::warning(
                Kind::Service,
                key,
                "spec.clusterIP",
                DiagnosticReason::ServiceNotForwarded,
                message,
            ));
            if !forwarded {
                return None;
            }
            None
        }
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                diags.push(Diagnostic::error(
                    Kind::Service,
                    key,
                    "spec.clusterIP",
                    DiagnosticReason::InvalidService,
                    format!("{ip:?} is not an IP address; not forwarded"),
                ));
                return None;
            }
        },
    };
    let external_traffic_local = match spec.external_traffic_policy.as_deref() {
        None | Some("Cluster") => false,
        Some("Local") => {
            if node_ports && opts.node_name.is_none() {
                diags.push(Diagnostic::warning(
                    Kind::Service,
                    key,
                    "spec.externalTrafficPolicy",
                    DiagnosticReason::ServiceNotForwarded,
                    "Local, but no --node-name is set: no endpoint counts as local and \
                     node-port connections are refused",
                ));
            }
            true
        }
        Some(other) => {
            diags.push(Diagnostic::error(
                Kind::Service,
                key,
                "spec.externalTrafficPolicy",
                DiagnosticReason::InvalidService,
                format!("unknown policy {other:?}; using Cluster"),
            ));
            false
        }
    };
    let client_ip_affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => Some(affinity_timeout(key, spec, diags)),
        Some(other) => {
            diags.push(Diagnostic::error(
                Kind::Service,
                key,
                "spec.sessionAffinity",
                DiagnosticReason::InvalidService,
                format!("unknown session affinity {other:?}; using None"),
            ));
            None
        }
    };
    Some(Shape {
        cluster_ip,
        node_ports,
        external_traffic_local,
        client_ip_affinity,
    })
}

fn affinity_timeout(key: &ObjectKey, spec: &ServiceSpec, diags: &mut Vec<Diagnostic>) -> Duration {
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match seconds {
        None => DEFAULT_AFFINITY_TIMEOUT,
        Some(s) if (1..=MAX_AFFINITY_SECONDS).contains(&s) => Duration::from_secs(s as u64),
        Some(s) => {
            diags.push(Diagnostic::error(
                Kind::Service,
                key,
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                DiagnosticReason::InvalidService,
                format!(
                    "{s} is outside 1..={MAX_AFFINITY_SECONDS}; using {}",
                    DEFAULT_AFFINITY_TIMEOUT.as_secs()
                ),
            ));
            DEFAULT_AFFINITY_TIMEOUT
        }
    }
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

#[allow(clippy::too_many_arguments)]
fn compile_port(
    key: &ObjectKey,
    service: &Service,
    shape: &Shape,
    i: usize,
    port: &ServicePort,
    endpoints: &EndpointIndex<'_>,
    opts: &CompileOptions,
    diags: &mut Vec<Diagnostic>,
) -> Option<L4Service> {
    let protocol = match port.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some(other) => {
            diags.push(Diagnostic::warning(
                Kind::Service,
                key,
                format!("spec.ports[{i}].protocol"),
                DiagnosticReason::UnsupportedProtocol,
                format!("protocol {other:?} is not forwarded (TCP and UDP are)"),
            ));
            return None;
        }
    };
    let Some(number) = valid_port(port.port) else {
        diags.push(Diagnostic::error(
            Kind::Service,
            key,
            format!("spec.ports[{i}].port"),
            DiagnosticReason::InvalidService,
            format!("{} is not a port number; not forwarded", port.port),
        ));
        return None;
    };
    let port_label = match port.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => number.to_string(),
    };
    let id = ServicePortId::new(&key.namespace, &key.name, &port_label);

    let mut node_addrs = Vec::new();
    if shape.node_ports {
        match port.node_port.map(valid_port) {
            Some(Some(node_port)) => node_addrs.extend(
                opts.node_addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, node_port)),
            ),
            Some(None) => diags.push(Diagnostic::error(
                Kind::Service,
                key,
                format!("spec.ports[{i}].nodePort"),
                DiagnosticReason::InvalidService,
                format!(
                    "{:?} is not a port number; node port not served",
                    port.node_port
                ),
            )),
            None => diags.push(Diagnostic::warning(
                Kind::Service,
                key,
                format!("spec.ports[{i}].nodePort"),
                DiagnosticReason::ServiceNotForwarded,
                "no nodePort (the API server assigns one; in a manifest folder, set it); \
                 only the clusterIP is served",
            )),
        }
    }

    let (eps, source) = endpoints.resolve(key, service, port, diags);
    if source == EndpointSource::Missing {
        diags.push(Diagnostic::warning(
            Kind::Service,
            key,
            "",
            DiagnosticReason::NoEndpoints,
            "no EndpointSlices or Endpoints; L4 connections are refused",
        ));
    }
    Some(L4Service {
        id,
        protocol,
        cluster_addr: shape.cluster_ip.map(|ip| SocketAddr::new(ip, number)),
        node_addrs,
        endpoints: eps,
        external_traffic_local: shape.external_traffic_local,
        client_ip_affinity: shape.client_ip_affinity,
    })
}

#[cfg(test)]
mod tests;
