//! Gateway API -> route table: the Gateways of our GatewayClasses, their HTTP listeners,
//! and the HTTPRoutes and GRPCRoutes attached to them, compiled into match rules of the
//! same route table the Ingresses fill.
//!
//! Choices worth knowing:
//! - Every HTTP listener is served on Portico's HTTP listener (`--http-addr`), whatever
//!   its `port`: the port only selects listeners for a parentRef's `port`. Each match
//!   rule carries the scope of the listener it came through (`listener_scope`), so it
//!   answers only on its protocol's listener and for the hosts its listener isolates.
//! - A host's GRPCRoute matches are tried first, then its HTTPRoute matches, each kind
//!   in its spec's precedence order (see [`Precedence`]), then its Ingress paths. A
//!   GRPCRoute match only takes gRPC calls (a POST with a `application/grpc` content
//!   type), so HTTP and gRPC share a host, as Gateway API 1.6 allows.
//! - A Gateway with addresses of its own (`gateway_addresses`) has its rules in tables
//!   of their own, one per address (`Config::routes_at`); the others' rules go into the
//!   one route table, beside the Ingresses'.
//! - Recomputed whole on every compile: it reads only the store, so the incremental
//!   compile still equals one from nothing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Method;
use http::StatusCode;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use proxy_core::config::{Backend, BackendId, BackendProtocol};
use proxy_core::http::Scheme;
use proxy_core::pipeline::{
    BackendFilters, ClientCertAuth, GatewayRedirect, GatewayRewrite, HeaderEdits, NoValidBackend,
    RedirectPath, RequestFilter, WeightedBackends,
};
use proxy_core::routes::{
    FullMatch, HostMatch, HostPattern, HostRoutes, ListenerScope, MatchRule, PathMatch,
    RouteTarget, SniScope, ValueMatch,
};
use tls::{CertSource, ParsedCert};

use super::annotations::IngressAnnotations;
use super::backends;
use super::certs::SecretCache;
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::endpoints::EndpointIndex;
use super::gateway_addresses;
use super::gateway_cors::cors_filter;
use super::gateway_mirror::rule_mirrors;
use super::gateway_tls::{self, BackendClient, FrontendAuth, ListenerValidation};
use super::listener_scope::{listener_scopes, ListenerHost};
use super::policy::{self, PolicyDefaults};
use crate::gateway_api::{
    BackendRef, GRPCRoute, GRPCRouteMatch, Gateway, HTTPRoute, HTTPRouteFilter, HTTPRouteMatch,
    HTTPRouteTimeouts, HeaderModifier, HeaderValuePair, Listener, NameValueMatch, ParentReference,
    PathModifier, RequestRedirect, RouteGroupKind, GROUP,
};
use crate::store::{Kind, ObjectKey, Store};

/// `spec.controllerName` of the GatewayClasses that are ours.
pub const GATEWAY_CONTROLLER: &str = "portico.dev/gateway-controller";

/// What the Gateway API objects add to a compile.
#[derive(Default)]
pub(super) struct GatewayRoutes {
    /// One table per host, its rules in precedence order.
    pub hosts: Vec<Arc<HostRoutes>>,
    /// The same for each address a Gateway has of its own.
    pub at_addresses: Vec<(IpAddr, Vec<Arc<HostRoutes>>)>,
    /// The Services the rules route to.
    pub backends: Vec<Backend>,
    /// The certificates of HTTPS listeners, for the SNI store.
    pub certs: Vec<CertSource>,
    /// The client certificate settings of HTTPS listeners (`tls.frontend`), by SNI host,
    /// in order: the first for a host decides.
    pub frontend: Vec<(HostPattern, Arc<FrontendAuth>)>,
    /// The usable backend client certificates of Gateways: the key their routes name,
    /// `tls.crt` and `tls.key`.
    pub backend_clients: Vec<(Arc<str>, Vec<u8>, Vec<u8>)>,
    /// The handshakes of HTTPS listeners with a hostname (see `Config::gateway_sni`).
    pub sni: Vec<SniScope>,
    pub status: GatewayApiStatus,
}

/// One status condition, as the Gateway API writes it (`type`, `status`, `reason`,
/// `message`, `observedGeneration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub(super) fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
            observed_generation,
        }
    }
}

/// `Accepted=True (Accepted, generation 3)`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status { "True" } else { "False" };
        write!(f, "{}={status} ({}", self.type_, self.reason)?;
        if let Some(g) = self.observed_generation {
            write!(f, ", generation {g}")?;
        }
        f.write_str(")")
    }
}

/// `status.listeners[]` of a Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// The route kinds it takes (its `supportedKinds`): none when it is not served;
    /// those of [`ROUTE_KINDS`] its `allowedRoutes.kinds` lists, when set.
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

/// `status.parents[]` of a route: one per parentRef to a Gateway of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentStatus {
    pub gateway: ObjectKey,
    pub section_name: Option<String>,
    /// The parentRef's `port`, when it names one.
    pub port: Option<i32>,
    pub conditions: Vec<Condition>,
}

/// Portico reads no parameters resource, so a Gateway that names one cannot be set up as
/// asked: rejected, as the spec says (`InvalidParameters`, the message returned).
fn parameters_ref(
    key: &ObjectKey,
    gw: &Gateway,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'static str, String)> {
    let params = gw.spec.rest.get("infrastructure")?.get("parametersRef")?;
    let text = |f: &str| params.get(f).and_then(|v| v.as_str()).unwrap_or_default();
    let message = format!(
        "Portico takes no parameters: {} {:?} of group {:?} cannot be used; Gateway not served",
        text("kind"),
        text("name"),
        text("group")
    );
    diags.push(Diagnostic::error(
        Kind::Gateway,
        key,
        "spec.infrastructure.parametersRef",
        DiagnosticReason::GatewayUnsupported,
        message.clone(),
    ));
    Some(("InvalidParameters", message))
}

/// Address types a Gateway may ask for: the spec's core and extended ones.
const ADDRESS_TYPES: [&str; 2] = ["IPAddress", "Hostname"];

/// Checks the types of a Gateway's `spec.addresses`: one Portico does not know refuses
/// the Gateway (`UnsupportedAddress`, with the message). Which addresses it is served at
/// is `gateway_addresses`'s to say.
fn requested_addresses(
    key: &ObjectKey,
    gw: &Gateway,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'static str, String)> {
    let list = gw.spec.rest.get("addresses")?.as_array()?;
    for (i, addr) in list.iter().enumerate() {
        let type_ = addr
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("IPAddress");
        if !ADDRESS_TYPES.contains(&type_) {
            let message = format!(
                "address type {type_:?} is not supported, only IPAddress and Hostname; Gateway not served"
            );
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                format!("spec.addresses[{i}].type"),
                DiagnosticReason::GatewayUnsupported,
                message.clone(),
            ));
            return Some(("UnsupportedAddress", message));
        }
    }
    None
}

/// The status Portico computes for one Gateway API object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
    pub parents: Vec<ParentStatus>,
    /// A Gateway's `status.addresses` when they are its own (none when it has no
    /// usable one); `None`: the addresses Portico publishes.
    pub addresses: Option<Vec<IpAddr>>,
}

/// One line: the object's conditions, each listener's and each parent's.
impl fmt::Display for ObjectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |c: &[Condition]| {
            c.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.conditions.is_empty() {
            parts.push(list(&self.conditions));
        }
        if let Some(addresses) = &self.addresses {
            let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            parts.push(format!("addresses [{}]", addresses.join(" ")));
        }
        for l in &self.listeners {
            parts.push(format!(
                "listener {:?}: attachedRoutes {}, supportedKinds [{}], {}",
                l.name,
                l.attached_routes,
                l.supported_kinds.join(" "),
                list(&l.conditions)
            ));
        }
        for p in &self.parents {
            let section = p
                .section_name
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            parts.push(format!(
                "parent {}{section}: {}",
                p.gateway,
                list(&p.conditions)
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The status of every GatewayClass, Gateway, HTTPRoute and GRPCRoute of ours.
pub type GatewayApiStatus = BTreeMap<(Kind, ObjectKey), ObjectStatus>;

/// One HTTP listener of one of our Gateways.
struct OurListener<'a> {
    gateway: &'a ObjectKey,
    listener: &'a Listener,
    /// Lower-cased; `None` matches every host.
    hostname: Option<String>,
    /// The requests its routes answer (set once the Gateway's listeners are known).
    scope: ListenerScope,
    /// What its routes' rules carry besides their scope.
    extras: ListenerExtras,
}

/// What a listener adds to the rules of the routes it takes.
#[derive(Clone, Debug, Default)]
struct ListenerExtras {
    /// Its client certificate validation: the rules check the request's connection.
    frontend: Option<Arc<FrontendAuth>>,
    /// Its Gateway's backend client certificate: the key the rules name.
    backend_client: Option<Arc<str>>,
    /// An HTTPS listener's handshakes: a request on a connection made for another
    /// listener of its Gateway is misdirected (421).
    sni: Option<SniScope>,
    /// Its Gateway's own addresses: the rules answer there and nowhere else. `None`:
    /// at the published addresses, beside the Ingresses.
    at: Option<Arc<[IpAddr]>>,
}

impl PartialEq for ListenerExtras {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Option<Arc<FrontendAuth>>, b: &Option<Arc<FrontendAuth>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same(&self.frontend, &other.frontend)
            && self.backend_client == other.backend_client
            && self.sni == other.sni
            && self.at == other.at
    }
}

impl ListenerExtras {
    /// `target` as a rule of this listener: the check that its connection was made for
    /// this listener, then its client certificate check (before any filter, as for an
    /// Ingress's), and its Gateway's backend client certificate.
    fn apply(&self, target: &mut RouteTarget) {
        if self.frontend.is_none() && self.backend_client.is_none() && self.sni.is_none() {
            return;
        }
        let policy = Arc::make_mut(&mut target.policy);
        if let Some(sni) = &self.sni {
            policy
                .request
                .insert(0, RequestFilter::Misdirected(sni.clone()));
        }
        if let Some(f) = &self.frontend {
            // After the misdirection check: a connection made for another listener
            // was judged by that listener's CA, if any.
            let at = usize::from(self.sni.is_some());
            policy.request.insert(
                at,
                RequestFilter::ClientCert(ClientCertAuth {
                    http_redirects: false,
                    inherited: false,
                    owner: Some(f.policy.source.clone()),
                }),
            );
        }
        if let Some(id) = &self.backend_client {
            policy.backend_client_cert = Some(id.clone());
        }
    }
}

/// The route kinds an HTTP or HTTPS listener takes.
pub const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// The order between the match rules of a host: GRPCRoute rules first (they take only
/// gRPC calls, so they shadow no HTTP request), then HTTPRoute rules, each in its spec's
/// order. Derived `Ord` compares the variant first.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Precedence {
    Grpc(GrpcPrecedence),
    Http(HttpPrecedence),
}

/// GRPCRoute's order between matches, as the spec lists it: the most characters in the
/// service, then in the method, then the most header matches; then the oldest route,
/// then by namespace/name, then rule and match order. (Hosts are apart already.)
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GrpcPrecedence {
    /// 0: an `Exact` method match, 1: `RegularExpression` (the spec leaves it open; an
    /// exact name is the narrower), 2: no method match.
    method_kind: u8,
    service_len: Reverse<usize>,
    method_len: Reverse<usize>,
    headers: Reverse<usize>,
    created: Option<Time>,
    route: ObjectKey,
    rule: usize,
    matched: usize,
}

/// HTTPRoute's order between match rules: the first in this order that matches a
/// request wins. Derived `Ord` compares the fields in order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HttpPrecedence {
    /// 0: Exact, 1: RegularExpression (its order is the implementation's choice; a
    /// regex before any prefix lets one win over a `/` catch-all), 2: PathPrefix.
    path_kind: u8,
    /// Longest path (or pattern) first.
    path_len: Reverse<usize>,
    /// A method match first.
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// Then the oldest route, then by namespace/name, then rule and match order.
    created: Option<Time>,
    route: ObjectKey,
    rule: usize,
    matched: usize,
}

/// Compiles the Gateway API objects of the store.
pub(super) fn compile_gateway(
    store: &Store,
    defaults: &PolicyDefaults,
    secrets: Secrets<'_>,
    address_pool: &[IpNet],
    diags: &mut Vec<Diagnostic>,
) -> GatewayRoutes {
    let Secrets { previous, used } = secrets;
    let mut certs = Vec::new();
    let mut frontend: Vec<(HostPattern, Arc<FrontendAuth>)> = Vec::new();
    let mut backend_clients = Vec::new();
    let mut sni = Vec::new();
    let mut status = GatewayApiStatus::new();
    let mut ours: Vec<&str> = Vec::new();
    for (key, class) in store.gateway_classes.iter() {
        if class.spec.controller_name != GATEWAY_CONTROLLER {
            continue;
        }
        ours.push(key.name.as_str());
        let generation = class.metadata.generation;
        status
            .entry((Kind::GatewayClass, key.clone()))
            .or_default()
            .conditions = vec![Condition::new("Accepted", true, "Accepted", "", generation)];
    }
    let mut candidates: Vec<(&ObjectKey, &Gateway)> = Vec::new();
    for (key, gw) in store.gateways.iter() {
        if !ours.contains(&gw.spec.gateway_class_name.as_str()) {
            continue;
        }
        let generation = gw.metadata.generation;
        // A Gateway Portico cannot set up as asked: not served, Accepted=False with the
        // spec's reason, Programmed=False.
        if let Some((reason, message)) =
            parameters_ref(key, gw, diags).or_else(|| requested_addresses(key, gw, diags))
        {
            let conditions = vec![
                Condition::new("Accepted", false, reason, message.clone(), generation),
                Condition::new("Programmed", false, "Invalid", message, generation),
            ];
            status.insert(
                (Kind::Gateway, key.clone()),
                ObjectStatus {
                    conditions,
                    ..ObjectStatus::default()
                },
            );
            continue;
        }
        candidates.push((key, gw));
    }
    let mut addresses = gateway_addresses::assign(&candidates, address_pool, diags);
    let mut listeners: BTreeMap<&ObjectKey, Vec<OurListener<'_>>> = BTreeMap::new();
    for (key, gw) in candidates {
        let generation = gw.metadata.generation;
        let served_at = addresses
            .remove(key)
            .unwrap_or(Ok(gateway_addresses::Served::Published));
        let backend_client = gateway_tls::backend_client(store, key, gw, diags);
        let (served, listener_status) = gateway_listeners(
            store,
            key,
            gw,
            (previous, &mut *used),
            (&mut certs, &mut frontend),
            backend_client.id(),
            diags,
        );
        let (accepted, mut programmed) = if served.is_empty() {
            let message = "no listener can be served";
            (
                Condition::new("Accepted", false, "ListenersNotValid", message, generation),
                Condition::new("Programmed", false, "Invalid", message, generation),
            )
        } else {
            // Accepted, but saying that some listeners are not (as the spec's reason
            // ListenersNotValid allows with status True).
            let invalid = listener_status.iter().any(|l| {
                l.conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && !c.status)
            });
            let accepted = if invalid {
                Condition::new(
                    "Accepted",
                    true,
                    "ListenersNotValid",
                    "some listeners cannot be served",
                    generation,
                )
            } else {
                Condition::new("Accepted", true, "Accepted", "", generation)
            };
            (
                accepted,
                Condition::new("Programmed", true, "Programmed", "", generation),
            )
        };
        let mut listener_status = listener_status;
        // Without a usable address the Gateway is not served, its listeners neither.
        if let (Err((reason, message)), true) = (&served_at, programmed.status) {
            programmed = Condition::new("Programmed", false, reason, message.clone(), generation);
            for c in listener_status
                .iter_mut()
                .flat_map(|l| l.conditions.iter_mut())
                .filter(|c| c.type_ == "Programmed" && c.status)
            {
                *c = Condition::new(
                    "Programmed",
                    false,
                    "Pending",
                    "the Gateway has no usable address",
                    generation,
                );
            }
        }
        // The Gateway's own references, then a summary of its listeners'.
        let listeners_resolved = listener_status.iter().all(|l| {
            l.conditions
                .iter()
                .all(|c| c.type_ != "ResolvedRefs" || c.status)
        });
        let resolved = match &backend_client {
            BackendClient::Unusable {
                reason, message, ..
            } => Condition::new("ResolvedRefs", false, reason, message.clone(), generation),
            _ if !listeners_resolved => Condition::new(
                "ResolvedRefs",
                false,
                "ListenersNotResolved",
                "some listeners have unresolved references",
                generation,
            ),
            _ => Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation),
        };
        let mut conditions = vec![accepted, programmed, resolved];
        if gateway_tls::insecure_fallback(gw) {
            conditions.push(Condition::new(
                "InsecureFrontendValidationMode",
                true,
                "ConfigurationChanged",
                "tls.frontend lets clients without a valid certificate through (AllowInsecureFallback)",
                generation,
            ));
        }
        if let BackendClient::Usable { id, cert, key } = backend_client {
            backend_clients.push((id, cert, key));
        }
        let at = match served_at {
            Ok(gateway_addresses::Served::Published) => None,
            Ok(gateway_addresses::Served::Own(own)) => Some(own),
            // At no address: its routes attach, and are told so, but answer nowhere.
            Err(_) => Some(Arc::from([])),
        };
        status.insert(
            (Kind::Gateway, key.clone()),
            ObjectStatus {
                conditions,
                listeners: listener_status,
                parents: Vec::new(),
                addresses: at.as_deref().map(<[IpAddr]>::to_vec),
            },
        );
        let mut served = with_scopes(served);
        for l in &mut served {
            l.extras.at.clone_from(&at);
        }
        if at.as_deref().is_none_or(|a| !a.is_empty()) {
            sni.extend(
                served
                    .iter()
                    .filter_map(|l| l.extras.sni.clone())
                    .filter(|s| s.hostname.is_some()),
            );
        }
        listeners.insert(key, served);
    }
    if listeners.is_empty() {
        return GatewayRoutes {
            status,
            certs,
            frontend,
            backend_clients,
            sni,
            ..GatewayRoutes::default()
        };
    }

    // Both route kinds, oldest first: the order only decides the log's and the
    // diagnostics' order; precedence between rules is sorted below.
    let mut routes: Vec<(Option<&Time>, &ObjectKey, Kind, AnyRoute<'_>)> = Vec::new();
    for (key, route) in store.http_routes.iter() {
        let created = route.metadata.creation_timestamp.as_ref();
        routes.push((created, key, Kind::HTTPRoute, AnyRoute::Http(route)));
    }
    for (key, route) in store.grpc_routes.iter() {
        let created = route.metadata.creation_timestamp.as_ref();
        routes.push((created, key, Kind::GRPCRoute, AnyRoute::Grpc(route)));
    }
    routes.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let index = EndpointIndex::new(store);
    let mut backends: HashMap<BackendId, Backend> = HashMap::new();
    let mut rules: Vec<PlacedRule> = Vec::new();
    for (_, key, kind, route) in routes {
        let (parent_refs, hostnames, generation) = match route {
            AnyRoute::Http(r) => (
                &r.spec.parent_refs,
                &r.spec.hostnames,
                r.metadata.generation,
            ),
            AnyRoute::Grpc(r) => (
                &r.spec.parent_refs,
                &r.spec.hostnames,
                r.metadata.generation,
            ),
        };
        let this = RouteKey { kind, key };
        let (hosts, parents) = attach(store, this, parent_refs, hostnames, &listeners, diags);
        if parents.is_empty() {
            continue;
        }
        // A route host of a listener that checks client certificates is checked by SNI
        // too, beyond the listener's own names (a host left out answers 503).
        for (host, _, extras) in &hosts {
            if let (HostMatch::Host(h), Some(f)) = (host, &extras.frontend) {
                frontend.push((h.clone(), f.clone()));
            }
        }
        for p in &parents {
            if let Some(gw) = status.get_mut(&(Kind::Gateway, p.gateway.clone())) {
                for l in gw.listeners.iter_mut() {
                    if p.listeners.contains(&l.name) {
                        l.attached_routes += 1;
                    }
                }
            }
        }
        let mut ctx = RuleCtx {
            store,
            index: &index,
            route: this,
            source: format!("{kind} {key}").into(),
            defaults,
            hosts: &hosts,
            backends: &mut backends,
            unresolved: None,
            rules: &mut rules,
        };
        match route {
            AnyRoute::Http(r) => http_route_rules(&mut ctx, r, &parents, diags),
            AnyRoute::Grpc(r) => grpc_route_rules(&mut ctx, r, diags),
        }
        let resolved = match &ctx.unresolved {
            None => Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation),
            Some((reason, message)) => {
                Condition::new("ResolvedRefs", false, reason, message.clone(), generation)
            }
        };
        let parents = parents
            .into_iter()
            .map(|p| ParentStatus {
                conditions: vec![
                    Condition::new(
                        "Accepted",
                        p.reason == "Accepted",
                        p.reason,
                        p.message,
                        generation,
                    ),
                    resolved.clone(),
                ],
                gateway: p.gateway,
                section_name: p.section_name,
                port: p.port,
            })
            .collect();
        status.insert(
            (kind, key.clone()),
            ObjectStatus {
                parents,
                ..ObjectStatus::default()
            },
        );
    }
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    let mut by_host: BTreeMap<HostMatch, Vec<MatchRule>> = BTreeMap::new();
    let mut by_address: BTreeMap<IpAddr, BTreeMap<HostMatch, Vec<MatchRule>>> = BTreeMap::new();
    for (_, at, rule) in rules {
        match at {
            None => by_host.entry(rule.host.clone()).or_default().push(rule),
            Some(at) => {
                for ip in at.iter() {
                    let hosts = by_address.entry(*ip).or_default();
                    hosts
                        .entry(rule.host.clone())
                        .or_default()
                        .push(rule.clone());
                }
            }
        }
    }
    let tables = |hosts: BTreeMap<HostMatch, Vec<MatchRule>>| -> Vec<Arc<HostRoutes>> {
        hosts
            .into_iter()
            .map(|(host, rules)| HostRoutes::with_matches(host, rules))
            .collect()
    };
    GatewayRoutes {
        at_addresses: by_address
            .into_iter()
            .map(|(ip, hosts)| (ip, tables(hosts)))
            .collect(),
        hosts: tables(by_host),
        backends: backends.into_values().collect(),
        certs,
        frontend,
        backend_clients,
        sni,
        status,
    }
}

/// A route of either kind, as the store holds it.
#[derive(Clone, Copy)]
enum AnyRoute<'a> {
    Http(&'a HTTPRoute),
    Grpc(&'a GRPCRoute),
}

/// Which route: its kind and `namespace/name`, for diagnostics and ReferenceGrants.
#[derive(Clone, Copy)]
pub(super) struct RouteKey<'a> {
    pub kind: Kind,
    pub key: &'a ObjectKey,
}

/// `GRPCRoute infra/r`.
impl fmt::Display for RouteKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// A match rule with its precedence and the Gateway addresses it answers at (`None`:
/// the published ones).
type PlacedRule = (Precedence, Option<Arc<[IpAddr]>>, MatchRule);

/// What compiling one attached route's rules reads and fills.
struct RuleCtx<'a> {
    store: &'a Store,
    index: &'a EndpointIndex<'a>,
    route: RouteKey<'a>,
    /// `HTTPRoute ns/name`, naming the route in the access log.
    source: Arc<str>,
    defaults: &'a PolicyDefaults,
    /// The hosts the route serves through the listeners that took it, each with the
    /// scope of its listener and what else the listener adds.
    hosts: &'a [(HostMatch, ListenerScope, ListenerExtras)],
    backends: &'a mut HashMap<BackendId, Backend>,
    /// The first unusable backendRef's reason and message (ResolvedRefs=False).
    unresolved: Option<(&'static str, String)>,
    rules: &'a mut Vec<PlacedRule>,
}

impl RuleCtx<'_> {
    /// One match rule per host of the route.
    fn push(&mut self, precedence: Precedence, template: MatchRule) {
        for (host, scope, extras) in self.hosts {
            let mut target = template.target.clone();
            extras.apply(&mut target);
            self.rules.push((
                precedence.clone(),
                extras.at.clone(),
                MatchRule {
                    host: host.clone(),
                    listeners: scope.clone(),
                    target,
                    ..template.clone()
                },
            ));
        }
    }
}

/// `target` with a rule's filters, then those of its only backendRef (which every
/// request of the rule goes to; with several, `rule_target` gives each its own).
fn rule_filters(
    route: RouteKey<'_>,
    field: &str,
    filters: &[HTTPRouteFilter],
    backend_filters: &[HTTPRouteFilter],
    redirects: Redirects,
    target: RouteTarget,
    diags: &mut Vec<Diagnostic>,
) -> RouteTarget {
    let backend_redirects = Redirects {
        listener_port: redirects.listener_port,
        prefix: redirects.prefix.clone(),
    };
    let target = with_filters(route, field, filters, redirects, target, diags);
    with_filters(
        route,
        &format!("{field}.backendRefs[0]"),
        backend_filters,
        backend_redirects,
        target,
        diags,
    )
}

/// The filters of a rule's backendRef when it is the only one.
fn only_backend_filters<F>(refs: &[BackendRef<F>]) -> &[F] {
    match refs {
        [only] => &only.filters,
        _ => &[],
    }
}

/// An HTTPRoute's rules, into `ctx.rules`.
fn http_route_rules(
    ctx: &mut RuleCtx<'_>,
    route: &HTTPRoute,
    parents: &[Attached],
    diags: &mut Vec<Diagnostic>,
) {
    let key = ctx.route.key;
    let default_rules = [Default::default()];
    let route_rules = route.spec.rules.as_deref().unwrap_or(&default_rules);
    for (i, rule) in route_rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let target = rule_target(ctx, &field, &rule.backend_refs, None, diags);
        let mut target = with_timeouts(key, &field, rule.timeouts.as_ref(), target, diags);
        if let Some(mirrors) = rule_mirrors(
            ctx.store,
            ctx.index,
            key,
            &field,
            (&rule.filters, &rule.backend_refs),
            ctx.backends,
            &mut ctx.unresolved,
            diags,
        ) {
            Arc::make_mut(&mut target.policy).mirrors = Some(mirrors);
        }
        // Redirects name the listener's port when they keep the scheme: the first
        // listener's.
        let listener_port = parents
            .iter()
            .flat_map(|p| &p.ports)
            .next()
            .and_then(|p| u16::try_from(*p).ok())
            .unwrap_or(80);
        let default_matches = [HTTPRouteMatch::default()];
        let matches = rule.matches.as_deref().unwrap_or(&default_matches);
        // The filters, once per distinct matched prefix (ReplacePrefixMatch replaces
        // the prefix the request matched): usually one target for the whole rule.
        let mut targets: Vec<(Option<String>, RouteTarget)> = Vec::new();
        for (j, m) in matches.iter().enumerate() {
            let prefix = match &m.path {
                None => Some(String::new()),
                Some(p) if p.type_.as_deref().unwrap_or("PathPrefix") == "PathPrefix" => Some(
                    p.value
                        .as_deref()
                        .unwrap_or("/")
                        .trim_end_matches('/')
                        .to_owned(),
                ),
                Some(_) => None,
            };
            let target = match targets.iter().find(|(p, _)| *p == prefix) {
                Some((_, t)) => t.clone(),
                None => {
                    let t = rule_filters(
                        ctx.route,
                        &field,
                        &rule.filters,
                        only_backend_filters(&rule.backend_refs),
                        Redirects {
                            listener_port,
                            prefix: prefix.clone(),
                        },
                        target.clone(),
                        diags,
                    );
                    targets.push((prefix, t.clone()));
                    t
                }
            };
            let field = format!("{field}.matches[{j}]");
            if let Some((precedence, template)) =
                match_rule(key, route, i, j, m, &field, &target, diags)
            {
                ctx.push(Precedence::Http(precedence), template);
            }
        }
    }
}

/// A GRPCRoute's rules, into `ctx.rules`: each match a POST of a gRPC call to
/// `/<service>/<method>`, sent to the pods over h2c (as Ingress `backend-protocol: GRPC`).
fn grpc_route_rules(ctx: &mut RuleCtx<'_>, route: &GRPCRoute, diags: &mut Vec<Diagnostic>) {
    let key = ctx.route.key;
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let target = rule_target(
            ctx,
            &field,
            &rule.backend_refs,
            Some(BackendProtocol::Grpc),
            diags,
        );
        let filters: Vec<HTTPRouteFilter> = rule.filters.iter().map(Into::into).collect();
        let backend_filters: Vec<HTTPRouteFilter> = only_backend_filters(&rule.backend_refs)
            .iter()
            .map(Into::into)
            .collect();
        // No redirect or rewrite reaches here: those filter types are HTTPRoute's.
        let redirects = Redirects {
            listener_port: 80,
            prefix: None,
        };
        let target = rule_filters(
            ctx.route,
            &field,
            &filters,
            &backend_filters,
            redirects,
            target,
            diags,
        );
        // No matches: every gRPC call.
        let default_matches = [GRPCRouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &default_matches[..]
        } else {
            &rule.matches[..]
        };
        for (j, m) in matches.iter().enumerate() {
            let field = format!("{field}.matches[{j}]");
            let at = MatchAt {
                route,
                key,
                rule: i,
                matched: j,
            };
            if let Some((precedence, template)) = grpc_match_rule(at, m, &field, &target, diags) {
                ctx.push(Precedence::Grpc(precedence), template);
            }
        }
    }
}

/// Where a GRPCRoute match is: its route and its rule's and its own index.
struct MatchAt<'a> {
    route: &'a GRPCRoute,
    key: &'a ObjectKey,
    rule: usize,
    matched: usize,
}

/// `Content-Type` of a gRPC call: `application/grpc`, alone or with a `+format` or
/// parameters (as proxy-core's `grpc::is_grpc` recognises one).
const GRPC_CONTENT_TYPE: &str = "(?i)application/grpc([+;].*)?";

/// One GRPCRoute match as a match rule (its host filled in later) and its precedence;
/// `None`, with a diagnostic, for a match Portico cannot serve.
fn grpc_match_rule(
    at: MatchAt<'_>,
    m: &GRPCRouteMatch,
    field: &str,
    target: &RouteTarget,
    diags: &mut Vec<Diagnostic>,
) -> Option<(GrpcPrecedence, MatchRule)> {
    let mut unsupported = |suffix: &str, message: String| {
        diags.push(Diagnostic::warning(
            Kind::GRPCRoute,
            at.key,
            format!("{field}{suffix}"),
            DiagnosticReason::GatewayUnsupported,
            format!("{message}; match ignored"),
        ));
        None
    };
    let (path, method_kind, service_len, method_len) = match &m.method {
        None => (PathMatch::prefix("/"), 2, 0, 0),
        Some(mm) => {
            let service = mm.service.as_deref().filter(|s| !s.is_empty());
            let method = mm.method.as_deref().filter(|s| !s.is_empty());
            if service.is_none() && method.is_none() {
                return unsupported(
                    ".method",
                    "a method match names a service, a method or both".to_owned(),
                );
            }
            let lens = (service.map_or(0, str::len), method.map_or(0, str::len));
            match mm.type_.as_deref().unwrap_or("Exact") {
                "Exact" => {
                    for (name, value) in [("service", service), ("method", method)] {
                        if let Some(v) = value.filter(|v| v.contains('/')) {
                            return unsupported(
                                &format!(".method.{name}"),
                                format!("{v:?} contains '/', which an exact {name} may not"),
                            );
                        }
                    }
                    let path = match (service, method) {
                        (Some(s), Some(m)) => Ok(PathMatch::Exact(format!("/{s}/{m}"))),
                        (Some(s), None) => FullMatch::new(&format!("/{}/[^/]+", regex::escape(s)))
                            .map(PathMatch::Regex),
                        (None, m) => FullMatch::new(&format!(
                            "/[^/]+/{}",
                            regex::escape(m.unwrap_or_default())
                        ))
                        .map(PathMatch::Regex),
                    };
                    match path {
                        Ok(p) => (p, 0, lens.0, lens.1),
                        Err(e) => return unsupported(".method", format!("{e}")),
                    }
                }
                "RegularExpression" => {
                    // Each pattern matches the whole service or method name.
                    let mut parts = Vec::new();
                    for (name, value) in [("service", service), ("method", method)] {
                        match value {
                            None => parts.push("[^/]+".to_owned()),
                            Some(v) => match FullMatch::new(v) {
                                Ok(_) => parts.push(format!("(?:{v})")),
                                Err(e) => {
                                    return unsupported(
                                        &format!(".method.{name}"),
                                        format!("regular expression {v:?}: {e}"),
                                    )
                                }
                            },
                        }
                    }
                    match FullMatch::new(&format!("/{}/{}", parts[0], parts[1])) {
                        Ok(r) => (PathMatch::Regex(r), 1, lens.0, lens.1),
                        Err(e) => return unsupported(".method", format!("{e}")),
                    }
                }
                other => {
                    return unsupported(
                        ".method.type",
                        format!("method match type {other:?} is not supported"),
                    )
                }
            }
        }
    };
    let mut headers = match header_matches(&m.headers) {
        Ok(h) => h,
        Err((suffix, message)) => return unsupported(&suffix, message),
    };
    let precedence = GrpcPrecedence {
        method_kind,
        service_len: Reverse(service_len),
        method_len: Reverse(method_len),
        headers: Reverse(headers.len()),
        created: at.route.metadata.creation_timestamp.clone(),
        route: at.key.clone(),
        rule: at.rule,
        matched: at.matched,
    };
    // Only gRPC calls: HTTP requests on the same host go on to its HTTPRoutes and
    // Ingress paths.
    if let Ok(grpc) = FullMatch::new(GRPC_CONTENT_TYPE) {
        headers.push((http::header::CONTENT_TYPE, ValueMatch::Regex(grpc)));
    }
    Some((
        precedence,
        MatchRule {
            host: HostMatch::Any,
            path,
            method: Some(Method::POST),
            headers,
            query: Vec::new(),
            target: target.clone(),
            listeners: ListenerScope::default(),
        },
    ))
}

/// The TLS Secrets checked by the previous compile, and those of this one.
pub(super) struct Secrets<'a> {
    pub previous: &'a SecretCache,
    pub used: &'a mut SecretCache,
}

/// The listeners of a Gateway of ours that Portico serves; the certificates of its
/// HTTPS listeners go to `certs`.
fn gateway_listeners<'a>(
    store: &Store,
    key: &'a ObjectKey,
    gw: &'a Gateway,
    secrets: (&SecretCache, &mut SecretCache),
    (certs, frontend): (
        &mut Vec<CertSource>,
        &mut Vec<(HostPattern, Arc<FrontendAuth>)>,
    ),
    backend_client: Option<&Arc<str>>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<OurListener<'a>>, Vec<ListenerStatus>) {
    let (previous, used) = secrets;
    let generation = gw.metadata.generation;
    let mut out = Vec::new();
    let mut status = Vec::new();
    let refused = |reason: &'static str, message: &str| {
        vec![
            Condition::new("Accepted", false, reason, message, generation),
            Condition::new("Programmed", false, "Invalid", message, generation),
            Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation),
            Condition::new("Conflicted", false, "NoConflicts", "", generation),
        ]
    };
    // Port, protocol and hostname of the listeners served so far.
    let mut seen: Vec<(i32, &str, Option<String>)> = Vec::new();
    for (i, listener) in gw.spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}]");
        if listener.protocol != "HTTP" && listener.protocol != "HTTPS" {
            diags.push(Diagnostic::warning(
                Kind::Gateway,
                key,
                format!("{field}.protocol"),
                DiagnosticReason::GatewayUnsupported,
                format!(
                    "listener {:?}: protocol {:?} is not supported yet, only HTTP and HTTPS; listener ignored",
                    listener.name, listener.protocol
                ),
            ));
            status.push(ListenerStatus {
                name: listener.name.clone(),
                supported_kinds: Vec::new(),
                attached_routes: 0,
                conditions: refused(
                    "UnsupportedProtocol",
                    "only HTTP and HTTPS listeners are served so far",
                ),
            });
            continue;
        }
        let hostname = listener
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase);
        if let Some(h) = &hostname {
            if HostPattern::parse(h).is_err() {
                diags.push(Diagnostic::error(
                    Kind::Gateway,
                    key,
                    format!("{field}.hostname"),
                    DiagnosticReason::InvalidHost,
                    format!(
                        "listener {:?}: hostname {h:?} is not a DNS name or *. wildcard; listener ignored",
                        listener.name
                    ),
                ));
                status.push(ListenerStatus {
                    name: listener.name.clone(),
                    supported_kinds: Vec::new(),
                    attached_routes: 0,
                    conditions: refused("Invalid", "the hostname is not a DNS name or *. wildcard"),
                });
                continue;
            }
        }
        // Two listeners on one port must agree on the protocol and differ by hostname:
        // the later of two that do not is not served.
        let clash = seen
            .iter()
            .filter(|(port, _, _)| *port == listener.port)
            .find_map(|(_, protocol, host)| {
                if *protocol != listener.protocol {
                    Some("ProtocolConflict")
                } else if *host == hostname {
                    Some("HostnameConflict")
                } else {
                    None
                }
            });
        if let Some(reason) = clash {
            let message = format!(
                "another listener on port {} has the same hostname or another protocol",
                listener.port
            );
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                field,
                DiagnosticReason::GatewayUnsupported,
                format!(
                    "listener {:?}: {message} ({reason}); listener ignored",
                    listener.name
                ),
            ));
            status.push(ListenerStatus {
                name: listener.name.clone(),
                supported_kinds: Vec::new(),
                attached_routes: 0,
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", "", generation),
                    Condition::new("Programmed", false, "Invalid", message.clone(), generation),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation),
                    Condition::new("Conflicted", true, reason, message, generation),
                ],
            });
            continue;
        }
        seen.push((listener.port, listener.protocol.as_str(), hostname.clone()));
        let mut conditions = vec![
            Condition::new("Accepted", true, "Accepted", "", generation),
            Condition::new("Programmed", true, "Programmed", "", generation),
            Condition::new("ResolvedRefs", true, "ResolvedRefs", "", generation),
            Condition::new("Conflicted", false, "NoConflicts", "", generation),
        ];
        let mut extras = ListenerExtras {
            frontend: None,
            backend_client: backend_client.cloned(),
            sni: None,
            at: None,
        };
        if listener.protocol == "HTTPS" {
            let field = format!("{field}.tls");
            let hosts: Vec<HostPattern> = hostname
                .as_deref()
                .and_then(|h| HostPattern::parse(h).ok())
                .into_iter()
                .collect();
            let found = listener_certs(store, key, listener, &field, (previous, &mut *used), diags);
            let parsed: Vec<ParsedCert> = match &found {
                Ok(found) => found.iter().map(|(_, c)| c.clone()).collect(),
                Err(_) => Vec::new(),
            };
            let validation = gateway_tls::listener_validation(store, key, gw, listener, diags);
            let sni_hosts = || gateway_tls::listener_hosts(hostname.as_deref(), &parsed);
            match validation {
                ListenerValidation::None => {}
                ListenerValidation::Usable {
                    frontend: f,
                    problem,
                } => {
                    frontend.extend(sni_hosts().into_iter().map(|h| (h, f.clone())));
                    extras.frontend = Some(f);
                    if let Some((reason, message)) = problem {
                        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "ResolvedRefs") {
                            *c = Condition::new("ResolvedRefs", false, reason, message, generation);
                        }
                    }
                }
                ListenerValidation::Unusable {
                    frontend: f,
                    reason,
                    message,
                } => {
                    // Not served, and its hosts' handshakes fail: never served without
                    // the client verification asked for.
                    frontend.extend(sni_hosts().into_iter().map(|h| (h, f.clone())));
                    let resolved = match found {
                        Err((cert_reason, cert_message)) => Condition::new(
                            "ResolvedRefs",
                            false,
                            cert_reason,
                            cert_message,
                            generation,
                        ),
                        Ok(_) => Condition::new(
                            "ResolvedRefs",
                            false,
                            reason,
                            message.clone(),
                            generation,
                        ),
                    };
                    status.push(ListenerStatus {
                        name: listener.name.clone(),
                        supported_kinds: Vec::new(),
                        attached_routes: 0,
                        conditions: vec![
                            Condition::new(
                                "Accepted",
                                false,
                                "NoValidCACertificate",
                                message.clone(),
                                generation,
                            ),
                            Condition::new("Programmed", false, "Invalid", message, generation),
                            resolved,
                            Condition::new("Conflicted", false, "NoConflicts", "", generation),
                        ],
                    });
                    continue;
                }
            }
            match found {
                Ok(found) => certs.extend(found.into_iter().map(|(name, cert)| CertSource {
                    name,
                    hosts: hosts.clone(),
                    cert: Ok(cert),
                })),
                Err((reason, message)) => {
                    // Still accepted and its routes attached, as an Ingress with a broken
                    // Secret: its hosts are served with the default certificate.
                    conditions = vec![
                        Condition::new("Accepted", true, "Accepted", "", generation),
                        Condition::new("Programmed", false, "Invalid", message.clone(), generation),
                        Condition::new("ResolvedRefs", false, reason, message, generation),
                        Condition::new("Conflicted", false, "NoConflicts", "", generation),
                    ];
                }
            }
        }
        // `allowedRoutes.kinds`: HTTPRoute and GRPCRoute are served; another listed kind
        // is the spec's InvalidRouteKinds.
        let kinds = listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.kinds.as_ref());
        let ours = |k: &RouteGroupKind| ROUTE_KINDS.iter().any(|r| is_kind(k, r));
        let supported_kinds: Vec<&'static str> = ROUTE_KINDS
            .into_iter()
            .filter(|r| kinds.is_none_or(|k| k.iter().any(|k| is_kind(k, r))))
            .collect();
        if let Some(other) = kinds.and_then(|k| k.iter().find(|k| !ours(k))) {
            let message = format!(
                "route kind {:?} of group {:?} is not supported, only HTTPRoute and GRPCRoute",
                other.kind,
                other.group.as_deref().unwrap_or(GROUP)
            );
            diags.push(Diagnostic::warning(
                Kind::Gateway,
                key,
                format!("{field}.allowedRoutes.kinds"),
                DiagnosticReason::GatewayUnsupported,
                format!("listener {:?}: {message}", listener.name),
            ));
            // A certificate problem, said first, stays the condition's reason.
            if let Some(c) = conditions
                .iter_mut()
                .find(|c| c.type_ == "ResolvedRefs" && c.status)
            {
                *c = Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    message,
                    generation,
                );
            }
        }
        status.push(ListenerStatus {
            name: listener.name.clone(),
            supported_kinds,
            attached_routes: 0,
            conditions,
        });
        out.push(OurListener {
            gateway: key,
            listener,
            hostname,
            scope: ListenerScope::default(),
            extras,
        });
    }
    (out, status)
}

/// The listeners with the scope of each: which requests their routes answer.
fn with_scopes(mut served: Vec<OurListener<'_>>) -> Vec<OurListener<'_>> {
    let hosts: Vec<ListenerHost<'_>> = served
        .iter()
        .map(|l| ListenerHost {
            protocol: &l.listener.protocol,
            hostname: l.hostname.as_deref(),
        })
        .collect();
    let scopes = listener_scopes(&hosts);
    for (l, scope) in served.iter_mut().zip(scopes) {
        if l.listener.protocol == "HTTPS" {
            l.extras.sni = Some(SniScope {
                hostname: l
                    .hostname
                    .as_deref()
                    .and_then(|h| HostPattern::parse(h).ok()),
                yields_to: scope.yields_to.clone(),
            });
        }
        l.scope = scope;
    }
    served
}

/// The key pairs an HTTPS listener's `tls.certificateRefs` name (`namespace/name` and the
/// pair), or the spec's reason and a message when one cannot be used: each problem is
/// also a diagnostic.
fn listener_certs(
    store: &Store,
    key: &ObjectKey,
    listener: &Listener,
    field: &str,
    secrets: (&SecretCache, &mut SecretCache),
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<(String, ParsedCert)>, (&'static str, String)> {
    let (previous, used) = secrets;
    let mut problem: Option<(&'static str, String)> = None;
    let mut bad =
        |diags: &mut Vec<Diagnostic>, suffix: String, reason: &'static str, message: String| {
            let message = format!("listener {:?}: {message} ({reason})", listener.name);
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                format!("{field}{suffix}"),
                DiagnosticReason::CertificateRefInvalid,
                format!("{message}; its hosts get the default certificate"),
            ));
            problem.get_or_insert((reason, message));
        };
    let tls = listener.tls.as_ref();
    if tls
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m != "Terminate")
    {
        bad(
            diags,
            ".mode".into(),
            "InvalidCertificateRef",
            "an HTTPS listener terminates TLS; only mode Terminate is served".into(),
        );
    }
    let refs = tls.map(|t| t.certificate_refs.as_slice()).unwrap_or(&[]);
    if refs.is_empty() {
        bad(
            diags,
            ".certificateRefs".into(),
            "InvalidCertificateRef",
            "an HTTPS listener needs a certificateRef".into(),
        );
    }
    let mut found = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let suffix = format!(".certificateRefs[{i}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if !group.is_empty() || kind != "Secret" {
            bad(
                diags,
                suffix,
                "InvalidCertificateRef",
                format!("kind {kind:?} of group {group:?} is not supported, only Secrets"),
            );
            continue;
        }
        let namespace = r.namespace.as_deref().unwrap_or(&key.namespace);
        if namespace != key.namespace
            && !granted_to(
                store,
                "Gateway",
                &key.namespace,
                namespace,
                "Secret",
                &r.name,
            )
        {
            bad(
                diags,
                format!("{suffix}.namespace"),
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {namespace:?} lets Gateways of {:?} use Secret {:?}",
                    key.namespace, r.name
                ),
            );
            continue;
        }
        let secret = ObjectKey::new(namespace, &r.name);
        match &*previous.load(store, &secret, used) {
            Ok((parsed, _)) => found.push((secret.to_string(), parsed.clone())),
            Err((_, message)) => bad(
                diags,
                suffix,
                "InvalidCertificateRef",
                format!("Secret {secret}: {message}"),
            ),
        }
    }
    match problem {
        Some(p) => Err(p),
        None => Ok(found),
    }
}

/// A parentRef of a route to a Gateway of ours, as judged.
struct Attached {
    gateway: ObjectKey,
    section_name: Option<String>,
    port: Option<i32>,
    /// The listeners that accepted the route.
    listeners: Vec<String>,
    /// Their ports.
    ports: Vec<i32>,
    /// Accepted, or why not (the spec's reason).
    reason: &'static str,
    message: String,
}

/// The hosts a route serves through the listeners its parentRefs attach it to, each
/// with the scope of the listener it came through, and how each parentRef to a Gateway
/// of ours fared (a refused one also gets a diagnostic).
fn attach(
    store: &Store,
    route: RouteKey<'_>,
    parent_refs: &[ParentReference],
    hostnames: &[String],
    listeners: &BTreeMap<&ObjectKey, Vec<OurListener<'_>>>,
    diags: &mut Vec<Diagnostic>,
) -> (
    Vec<(HostMatch, ListenerScope, ListenerExtras)>,
    Vec<Attached>,
) {
    let key = route.key;
    let mut hosts: Vec<(HostMatch, ListenerScope, ListenerExtras)> = Vec::new();
    let mut parents = Vec::new();
    let route_hostnames: Vec<String> = hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
    for (i, parent) in parent_refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let group = parent.group.as_deref().unwrap_or(GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GROUP || kind != "Gateway" {
            // Another kind of parent (a Service, for mesh): not ours to judge.
            continue;
        }
        let namespace = parent.namespace.as_deref().unwrap_or(&key.namespace);
        let gw_key = ObjectKey::new(namespace, &parent.name);
        let Some(gw_listeners) = listeners.get(&gw_key) else {
            continue;
        };
        let mut why = (
            "NoMatchingParent",
            "no listener of the Gateway matches its sectionName or port",
        );
        let mut accepted_by = Vec::new();
        let mut ports = Vec::new();
        for l in gw_listeners {
            if parent
                .section_name
                .as_deref()
                .is_some_and(|s| s != l.listener.name)
            {
                continue;
            }
            if parent.port.is_some_and(|p| p != l.listener.port) {
                continue;
            }
            if !allowed(store, route, l) {
                why = (
                    "NotAllowedByListeners",
                    "no listener of the Gateway allows routes of its namespace and kind",
                );
                continue;
            }
            let common = intersect(l.hostname.as_deref(), &route_hostnames);
            if common.is_empty() {
                why = (
                    "NoMatchingListenerHostname",
                    "no hostname in common with a listener of the Gateway",
                );
                continue;
            }
            accepted_by.push(l.listener.name.clone());
            ports.push(l.listener.port);
            for h in common {
                let host = match h {
                    None => HostMatch::Any,
                    Some(h) => match HostMatch::parse(Some(&h)) {
                        Ok(host) => host,
                        Err(e) => {
                            diags.push(Diagnostic::error(
                                route.kind,
                                key,
                                "spec.hostnames",
                                DiagnosticReason::InvalidHost,
                                format!("hostname {h:?}: {e}; ignored"),
                            ));
                            continue;
                        }
                    },
                };
                let scoped = (host, l.scope.clone(), l.extras.clone());
                if !hosts.contains(&scoped) {
                    hosts.push(scoped);
                }
            }
            tracing::debug!(kind = route.kind.as_str(), route = %key, gateway = %l.gateway, listener = %l.listener.name, "route attached");
        }
        let (reason, message) = if accepted_by.is_empty() {
            let message = format!("Gateway {gw_key}: {} ({}); not attached", why.1, why.0);
            diags.push(Diagnostic::error(
                route.kind,
                key,
                field,
                DiagnosticReason::RouteNotAccepted,
                message.clone(),
            ));
            (why.0, message)
        } else {
            ("Accepted", String::new())
        };
        parents.push(Attached {
            gateway: gw_key,
            section_name: parent.section_name.clone(),
            port: parent.port,
            listeners: accepted_by,
            ports,
            reason,
            message,
        });
    }
    (hosts, parents)
}

/// Whether the listener takes routes of this kind from the route's namespace.
fn allowed(store: &Store, route: RouteKey<'_>, l: &OurListener<'_>) -> bool {
    let allowed = l.listener.allowed_routes.as_ref();
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref()) {
        if !kinds.iter().any(|k| is_kind(k, route.kind.as_str())) {
            return false;
        }
    }
    let route = route.key;
    let from = allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same");
    match from {
        "All" => true,
        "Same" => route.namespace == l.gateway.namespace,
        "Selector" => {
            let selector = allowed
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.as_ref());
            // The API server labels every Namespace `kubernetes.io/metadata.name` (1.22+),
            // so selectors rely on it; a Namespace written in a folder lacks it.
            let labels = store
                .namespaces
                .get(&ObjectKey::new("", &route.namespace))
                .map(|n| {
                    let mut labels = n.metadata.labels.clone().unwrap_or_default();
                    labels
                        .entry(NAMESPACE_NAME_LABEL.to_owned())
                        .or_insert_with(|| route.namespace.clone());
                    labels
                });
            // No selector, or a namespace not (yet) seen: nothing is known to match.
            selector.is_some_and(|s| selects(s, labels.as_ref()))
        }
        _ => false,
    }
}

/// Whether `k` names the route kind `kind` of the Gateway API group.
fn is_kind(k: &RouteGroupKind, kind: &str) -> bool {
    k.kind == kind && k.group.as_deref().unwrap_or(GROUP) == GROUP
}

/// The label the API server puts on every Namespace, with its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Whether a label selector selects an object with these labels (`matchLabels` and
/// every `matchExpressions` requirement; an empty selector selects everything).
fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            match e.operator.as_str() {
                "In" => get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => get(&e.key).is_some(),
                "DoesNotExist" => get(&e.key).is_none(),
                // An operator the API server would refuse: selects nothing.
                _ => false,
            }
        })
}

/// The hostnames a route serves through a listener: the spec's intersection. `None`
/// stands for every host (neither side names one). Empty: nothing in common.
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<Option<String>> {
    match (listener, route.is_empty()) {
        (None, true) => vec![None],
        (None, false) => route.iter().cloned().map(Some).collect(),
        (Some(l), true) => vec![Some(l.to_owned())],
        (Some(l), false) => route
            .iter()
            .filter_map(|r| intersect_one(l, r))
            .map(Some)
            .collect(),
    }
}

/// The more specific of two hostnames when one covers the other; a `*.` wildcard covers
/// every name below its suffix.
pub(super) fn intersect_one(listener: &str, route: &str) -> Option<String> {
    let below = |name: &str, suffix: &str| {
        name.len() > suffix.len() + 1
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
    };
    match (listener.strip_prefix("*."), route.strip_prefix("*.")) {
        (None, None) => (listener == route).then(|| route.to_owned()),
        (Some(ls), None) => below(route, ls).then(|| route.to_owned()),
        (None, Some(rs)) => below(listener, rs).then(|| listener.to_owned()),
        (Some(ls), Some(rs)) => {
            if ls == rs || below(rs, ls) {
                Some(route.to_owned())
            } else if below(ls, rs) {
                Some(listener.to_owned())
            } else {
                None
            }
        }
    }
}

/// Where a rule's requests go: its valid backends (weighted ones drawn in proportion),
/// or a target answering 500 (UNAVAILABLE to a gRPC call) when it has none. `protocol`:
/// how the pods are spoken to (gRPC for a GRPCRoute); `None` leaves it to the Service
/// port's `appProtocol`.
fn rule_target<F: Clone + Into<HTTPRouteFilter>>(
    ctx: &mut RuleCtx<'_>,
    field: &str,
    refs: &[BackendRef<F>],
    protocol: Option<BackendProtocol>,
    diags: &mut Vec<Diagnostic>,
) -> RouteTarget {
    let key = ctx.route.key;
    let source = &ctx.source;
    let mut policy = policy::route_policy(
        &IngressAnnotations {
            ssl_redirect: Some(false),
            backend_protocol: protocol,
            ..IngressAnnotations::default()
        },
        ctx.defaults,
        false,
        "/",
        None,
    );
    // Each reference with its weight and its own filters; `None` for an invalid one,
    // whose share of the requests gets 500, as the spec requires.
    let mut shares: Vec<(Option<BackendId>, u32, Option<Arc<BackendFilters>>)> = Vec::new();
    for (k, r) in refs.iter().enumerate() {
        let field = format!("{field}.backendRefs[{k}]");
        let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
        // The filters of a rule's only backendRef run as the rule's (`rule_filters`);
        // with several, each goes with its backend's draw.
        let own = match (refs.len(), r.filters.is_empty()) {
            (1, _) | (_, true) => None,
            _ => match backend_filters(ctx.route, &field, &r.filters, diags) {
                Some(f) => Some(Arc::new(f)),
                None => {
                    shares.push((None, weight, None));
                    continue;
                }
            },
        };
        match backend_ref(
            ctx.store,
            ctx.index,
            ctx.route,
            &field,
            r,
            ctx.backends,
            diags,
        ) {
            Ok(id) => shares.push((Some(id), weight, own)),
            Err(problem) => {
                // The first problem names the route's ResolvedRefs condition.
                ctx.unresolved.get_or_insert(problem);
                shares.push((None, weight, None));
            }
        }
    }
    shares.retain(|(_, w, _)| *w > 0);
    let first_valid = shares.iter().find_map(|(id, _, _)| id.clone());
    let backend = match (first_valid, shares.as_slice()) {
        (None, _) => {
            policy.request = vec![RequestFilter::NoValidBackend(NoValidBackend(
                format!("{source} {field}: no valid backendRefs").into(),
            ))];
            BackendId::new(&key.namespace, &key.name, "")
        }
        (Some(only), [(_, _, None)]) => only,
        (Some(first), _) => {
            policy.weighted = WeightedBackends::with_filters(
                shares,
                format!("{source} {field}: an invalid backendRef's share").into(),
            )
            .map(Arc::new);
            first
        }
    };
    RouteTarget {
        backend,
        policy: Arc::new(policy),
        source: source.clone(),
    }
}

/// The own filters of one of several backendRefs of a rule: header modifiers, which run
/// only for the requests drawn to it. `None` (each problem reported) when one cannot be
/// served there, so that its share fails closed rather than going out unfiltered.
fn backend_filters<F: Clone + Into<HTTPRouteFilter>>(
    route: RouteKey<'_>,
    field: &str,
    filters: &[F],
    diags: &mut Vec<Diagnostic>,
) -> Option<BackendFilters> {
    let mut out = BackendFilters::default();
    let mut closed = false;
    for (f, filter) in filters.iter().enumerate() {
        let filter: HTTPRouteFilter = filter.clone().into();
        let field = format!("{field}.filters[{f}]");
        match filter.type_.as_str() {
            "RequestHeaderModifier" => {
                let field = format!("{field}.requestHeaderModifier");
                let modifier = filter.request_header_modifier.as_ref();
                merge_edits(
                    &mut out.request,
                    header_edits(route, &field, modifier, diags),
                );
            }
            "ResponseHeaderModifier" => {
                let field = format!("{field}.responseHeaderModifier");
                let modifier = filter.response_header_modifier.as_ref();
                merge_edits(
                    &mut out.response,
                    header_edits(route, &field, modifier, diags),
                );
            }
            "RequestMirror" => diags.push(Diagnostic::warning(
                route.kind,
                route.key,
                format!("{field}.type"),
                DiagnosticReason::GatewayUnsupported,
                "filter type \"RequestMirror\" is not supported yet; ignored",
            )),
            other => {
                diags.push(Diagnostic::error(
                    route.kind,
                    route.key,
                    format!("{field}.type"),
                    DiagnosticReason::GatewayUnsupported,
                    format!(
                        "filter type {other:?} is not supported on one of several backendRefs; \
                         its share of the requests answers 500 (UNAVAILABLE to gRPC calls)"
                    ),
                ));
                closed = true;
            }
        }
    }
    (!closed).then_some(out)
}

/// `target` with the rule's `timeouts`: the shorter of `request` and `backendRequest`
/// bounds the connect to a pod and the wait for its answer's head (then each wait
/// between reads of its body), so an answer later than that is a 504. `0s` is no bound
/// of its own (the defaults stay).
fn with_timeouts(
    key: &ObjectKey,
    field: &str,
    timeouts: Option<&HTTPRouteTimeouts>,
    mut target: RouteTarget,
    diags: &mut Vec<Diagnostic>,
) -> RouteTarget {
    let Some(t) = timeouts else {
        return target;
    };
    let mut bound: Option<Duration> = None;
    for (name, value) in [
        ("request", &t.request),
        ("backendRequest", &t.backend_request),
    ] {
        let Some(value) = value else {
            continue;
        };
        match parse_duration(value) {
            Some(d) if d.is_zero() => {}
            Some(d) => bound = Some(bound.map_or(d, |b| b.min(d))),
            None => diags.push(Diagnostic::error(
                Kind::HTTPRoute,
                key,
                format!("{field}.timeouts.{name}"),
                DiagnosticReason::GatewayUnsupported,
                format!("{value:?} is not a duration such as 10s, 500ms or 1m30s; ignored"),
            )),
        }
    }
    if let Some(d) = bound {
        let policy = Arc::make_mut(&mut target.policy);
        policy.timeouts.read = d;
        policy.timeouts.connect = policy.timeouts.connect.min(d);
    }
    target
}

/// A Gateway API duration: one to four numbers of up to five digits, each followed by
/// `h`, `m`, `s` or `ms`.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(n * 3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 1)
        } else {
            return None;
        };
        total += unit;
        rest = &rest[len..];
        parts += 1;
    }
    (parts > 0 && parts <= 4).then_some(total)
}

/// `target` with the rule's filters in its policy. A filter Portico does not support
/// yet is left out with a warning.
fn with_filters(
    route: RouteKey<'_>,
    field: &str,
    filters: &[HTTPRouteFilter],
    redirects: Redirects,
    mut target: RouteTarget,
    diags: &mut Vec<Diagnostic>,
) -> RouteTarget {
    if filters.is_empty() {
        return target;
    }
    let key = route.key;
    let policy = Arc::make_mut(&mut target.policy);
    let mut cors = None;
    for (f, filter) in filters.iter().enumerate() {
        let field = format!("{field}.filters[{f}]");
        match filter.type_.as_str() {
            "CORS" if route.kind == Kind::HTTPRoute => {
                let field = format!("{field}.cors");
                let problem = match (&filter.cors, cors.is_some()) {
                    (None, _) => "the filter's settings are missing; filter ignored",
                    (Some(_), true) => "a rule takes one CORS filter; this one is ignored",
                    (Some(c), false) => {
                        cors = Some(cors_filter(route, &field, c, diags));
                        continue;
                    }
                };
                diags.push(Diagnostic::error(
                    route.kind,
                    key,
                    field,
                    DiagnosticReason::GatewayUnsupported,
                    problem,
                ));
            }
            "RequestHeaderModifier" => {
                let edits = header_edits(
                    route,
                    &format!("{field}.requestHeaderModifier"),
                    filter.request_header_modifier.as_ref(),
                    diags,
                );
                merge_edits(&mut policy.upstream_headers.edits, edits);
            }
            "ResponseHeaderModifier" => {
                let edits = header_edits(
                    route,
                    &format!("{field}.responseHeaderModifier"),
                    filter.response_header_modifier.as_ref(),
                    diags,
                );
                merge_edits(&mut policy.response_edits, edits);
            }
            // HTTPRoute's only: for a GRPCRoute they fall to the unsupported types below.
            "RequestRedirect" if route.kind == Kind::HTTPRoute => {
                let field = format!("{field}.requestRedirect");
                if let Some(r) = redirect(
                    key,
                    &field,
                    filter.request_redirect.as_ref(),
                    &redirects,
                    diags,
                ) {
                    // Before the 500 of a rule without backends: a redirect answers.
                    policy.request.insert(0, RequestFilter::GatewayRedirect(r));
                }
            }
            "URLRewrite" if route.kind == Kind::HTTPRoute => {
                let field = format!("{field}.urlRewrite");
                let Some(r) = filter.url_rewrite.as_ref() else {
                    diags.push(Diagnostic::error(
                        route.kind,
                        key,
                        field,
                        DiagnosticReason::GatewayUnsupported,
                        "the filter's settings are missing; filter ignored",
                    ));
                    continue;
                };
                if let Some(host) = &r.hostname {
                    match rewrite_host(host) {
                        Some(v) => policy.upstream_headers.host = Some(v),
                        None => diags.push(Diagnostic::error(
                            route.kind,
                            key,
                            format!("{field}.hostname"),
                            DiagnosticReason::GatewayUnsupported,
                            format!("hostname {host:?} is not a DNS name; not rewritten"),
                        )),
                    }
                }
                if let Some(p) = &r.path {
                    if let Some(path) =
                        path_modifier(key, &format!("{field}.path"), p, &redirects, diags)
                    {
                        policy
                            .request
                            .push(RequestFilter::GatewayRewrite(GatewayRewrite { path }));
                    }
                }
            }
            // Compiled with the rule's backends (`gateway_mirror`), for HTTPRoutes.
            "RequestMirror" if route.kind == Kind::HTTPRoute => {}
            // Leaving out a copy of the traffic changes nothing the client sees.
            "RequestMirror" => diags.push(Diagnostic::warning(
                route.kind,
                key,
                format!("{field}.type"),
                DiagnosticReason::GatewayUnsupported,
                "filter type \"RequestMirror\" is not supported on this route kind; ignored",
            )),
            // Any other (an ExtensionRef, an authentication filter) may guard
            // the route: fail closed, as the spec asks for an unresolved ExtensionRef.
            other => {
                diags.push(Diagnostic::error(
                    route.kind,
                    key,
                    format!("{field}.type"),
                    DiagnosticReason::GatewayUnsupported,
                    format!("filter type {other:?} is not supported; the rule answers 500 (UNAVAILABLE to gRPC calls)"),
                ));
                policy.request.insert(
                    0,
                    RequestFilter::NoValidBackend(NoValidBackend(
                        format!("{route} {field}: filter type {other:?} is not supported").into(),
                    )),
                );
            }
        }
    }
    // First: a preflight is answered before a redirect or a rule's 500, and the CORS
    // fields reach whatever answers an actual request.
    if let Some(cors) = cors {
        policy
            .request
            .insert(0, RequestFilter::Cors(Box::new(cors)));
    }
    target
}

/// Adds a header modifier's edits to those already set (a rule's, then its backendRef's).
fn merge_edits(slot: &mut Option<Arc<HeaderEdits>>, edits: HeaderEdits) {
    match slot {
        None => *slot = Some(Arc::new(edits)),
        Some(have) => {
            let have = Arc::make_mut(have);
            have.set.extend(edits.set);
            have.add.extend(edits.add);
            have.remove.extend(edits.remove);
        }
    }
}

/// What a rule's redirect needs to know of where the rule is attached and what it matches.
struct Redirects {
    listener_port: u16,
    /// The rule's only path match, when it is a prefix (`ReplacePrefixMatch` needs it):
    /// without a trailing slash.
    prefix: Option<String>,
}

/// A RequestRedirect filter, or `None` (with a diagnostic) when it cannot be served.
fn redirect(
    key: &ObjectKey,
    field: &str,
    r: Option<&RequestRedirect>,
    redirects: &Redirects,
    diags: &mut Vec<Diagnostic>,
) -> Option<GatewayRedirect> {
    let mut bad = |suffix: &str, message: String| {
        diags.push(Diagnostic::error(
            Kind::HTTPRoute,
            key,
            format!("{field}{suffix}"),
            DiagnosticReason::GatewayUnsupported,
            format!("{message}; filter ignored"),
        ));
        None
    };
    let Some(r) = r else {
        return bad("", "the filter's settings are missing".to_owned());
    };
    let code = r.status_code.unwrap_or(302);
    let code = match code {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(code as u16).ok()?,
        other => {
            return bad(
                ".statusCode",
                format!("status code {other} is not a redirect code"),
            )
        }
    };
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some("http") => Some(Scheme::Http),
        Some("https") => Some(Scheme::Https),
        Some(other) => return bad(".scheme", format!("scheme {other:?} is not http or https")),
    };
    let port = match r.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => return bad(".port", format!("port {p} is not a port number")),
        },
    };
    let path = match &r.path {
        None => None,
        Some(p) => Some(path_modifier(
            key,
            &format!("{field}.path"),
            p,
            redirects,
            diags,
        )?),
    };
    Some(GatewayRedirect {
        code,
        scheme,
        hostname: r.hostname.clone(),
        port,
        listener_port: redirects.listener_port,
        path,
    })
}

/// A redirect's or rewrite's path modifier, or `None` (with a diagnostic) when it cannot
/// be served.
fn path_modifier(
    key: &ObjectKey,
    field: &str,
    p: &PathModifier,
    redirects: &Redirects,
    diags: &mut Vec<Diagnostic>,
) -> Option<RedirectPath> {
    let mut bad = |message: String| {
        diags.push(Diagnostic::error(
            Kind::HTTPRoute,
            key,
            field,
            DiagnosticReason::GatewayUnsupported,
            format!("{message}; filter ignored"),
        ));
        None
    };
    let valid = |v: &str| v.is_empty() || (v.starts_with('/') && v.parse::<http::Uri>().is_ok());
    match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(full), _) if valid(full) && !full.contains('?') => {
            Some(RedirectPath::Full(if full.is_empty() {
                "/".to_owned()
            } else {
                full.clone()
            }))
        }
        ("ReplacePrefixMatch", _, Some(replacement))
            if valid(replacement) && !replacement.contains('?') =>
        {
            match &redirects.prefix {
                Some(matched) => Some(RedirectPath::Prefix {
                    matched: matched.clone(),
                    replacement: replacement.clone(),
                }),
                None => bad("ReplacePrefixMatch needs a PathPrefix match".to_owned()),
            }
        }
        ("ReplaceFullPath" | "ReplacePrefixMatch", Some(v), _)
        | ("ReplacePrefixMatch", _, Some(v)) => bad(format!(
            "path {v:?} is not an absolute path without a query"
        )),
        (other, _, _) => bad(format!("path modifier {other:?} is incomplete")),
    }
}

/// A URLRewrite hostname as the upstream `Host`: a DNS name, no wildcard.
fn rewrite_host(host: &str) -> Option<HeaderValue> {
    let lower = host.to_ascii_lowercase();
    if lower.starts_with('*') || HostPattern::parse(&lower).is_err() {
        return None;
    }
    HeaderValue::from_str(&lower).ok()
}

/// A header modifier's edits; fields that are not valid headers are left out.
fn header_edits(
    route: RouteKey<'_>,
    field: &str,
    modifier: Option<&HeaderModifier>,
    diags: &mut Vec<Diagnostic>,
) -> HeaderEdits {
    let key = route.key;
    let mut edits = HeaderEdits::default();
    let Some(m) = modifier else {
        diags.push(Diagnostic::error(
            route.kind,
            key,
            field,
            DiagnosticReason::GatewayUnsupported,
            "the filter's settings are missing; filter does nothing",
        ));
        return edits;
    };
    let mut pairs =
        |list: &[HeaderValuePair], what: &str, out: &mut Vec<(HeaderName, HeaderValue)>| {
            for (i, pair) in list.iter().enumerate() {
                match (
                    HeaderName::from_bytes(pair.name.as_bytes()),
                    HeaderValue::from_str(&pair.value),
                ) {
                    (Ok(n), Ok(v)) => out.push((n, v)),
                    _ => diags.push(Diagnostic::error(
                        route.kind,
                        key,
                        format!("{field}.{what}[{i}]"),
                        DiagnosticReason::GatewayUnsupported,
                        format!(
                            "{:?}: {:?} is not a valid header; ignored",
                            pair.name, pair.value
                        ),
                    )),
                }
            }
        };
    pairs(&m.set, "set", &mut edits.set);
    pairs(&m.add, "add", &mut edits.add);
    for (i, name) in m.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => edits.remove.push(n),
            Err(_) => diags.push(Diagnostic::error(
                route.kind,
                key,
                format!("{field}.remove[{i}]"),
                DiagnosticReason::GatewayUnsupported,
                format!("{name:?} is not a valid header name; ignored"),
            )),
        }
    }
    edits
}

/// The backend a backendRef names, when it can be used.
pub(super) fn backend_ref<F>(
    store: &Store,
    index: &EndpointIndex<'_>,
    route: RouteKey<'_>,
    field: &str,
    r: &BackendRef<F>,
    backends: &mut HashMap<BackendId, Backend>,
    diags: &mut Vec<Diagnostic>,
) -> Result<BackendId, (&'static str, String)> {
    let key = route.key;
    // Said as a diagnostic, and returned with the spec's reason for the route's status.
    let bad = |diags: &mut Vec<Diagnostic>, suffix: &str, reason: &'static str, message: String| {
        let message = format!("{message} ({reason}); backend ignored");
        diags.push(Diagnostic::error(
            route.kind,
            key,
            format!("{field}{suffix}"),
            DiagnosticReason::BackendRefInvalid,
            message.clone(),
        ));
        Err((reason, message))
    };
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return bad(
            diags,
            ".kind",
            "InvalidKind",
            format!("backend kind {kind:?} of group {group:?} is not supported, only Services"),
        );
    }
    let Some(port) = r.port else {
        return bad(
            diags,
            ".port",
            "BackendNotFound",
            "a Service backend needs a port".to_owned(),
        );
    };
    let namespace = r.namespace.as_deref().unwrap_or(&key.namespace);
    if namespace != key.namespace
        && !granted_to(
            store,
            route.kind.as_str(),
            &key.namespace,
            namespace,
            "Service",
            &r.name,
        )
    {
        return bad(
            diags,
            ".namespace",
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace:?} lets {}s of {:?} reach Service {:?}",
                route.kind, key.namespace, r.name
            ),
        );
    }
    let (backend, problem) =
        backends::resolve_number(store, index, namespace, &r.name, port, diags);
    if let Some((_, message)) = problem {
        return bad(
            diags,
            "",
            "BackendNotFound",
            message.trim_end_matches("; requests get 503").to_owned(),
        );
    }
    let id = backend.id.clone();
    backends.entry(id.clone()).or_insert(backend);
    Ok(id)
}

/// Whether a ReferenceGrant in `to_namespace` lets objects of kind `from_kind` (of the
/// Gateway API group) in `from_namespace` refer to the core object `to_kind` `name`.
pub(super) fn granted_to(
    store: &Store,
    from_kind: &str,
    from_namespace: &str,
    to_namespace: &str,
    to_kind: &str,
    name: &str,
) -> bool {
    store
        .reference_grants
        .iter()
        .filter(|(k, _)| k.namespace == to_namespace)
        .any(|(_, g)| {
            g.spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_namespace)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
}

/// A value match of a header or query parameter (`RegularExpression`: the whole value,
/// as paths).
fn value_match(type_: Option<&str>, value: &str) -> Result<ValueMatch, String> {
    match type_.unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(value.into())),
        "RegularExpression" => FullMatch::new(value)
            .map(ValueMatch::Regex)
            .map_err(|e| format!("regular expression {value:?}: {e}")),
        other => Err(format!("match type {other:?} is not supported")),
    }
}

/// A match's header conditions (HTTPRoute's and GRPCRoute's alike), or the field suffix
/// (`.headers[1].name`) and what is wrong with it.
fn header_matches(
    list: &[NameValueMatch],
) -> Result<Vec<(HeaderName, ValueMatch)>, (String, String)> {
    let mut headers: Vec<(HeaderName, ValueMatch)> = Vec::new();
    for (h, header) in list.iter().enumerate() {
        let Ok(name) = HeaderName::from_bytes(header.name.as_bytes()) else {
            return Err((
                format!(".headers[{h}].name"),
                format!("{:?} is not a valid header name", header.name),
            ));
        };
        let exact = header.type_.as_deref().unwrap_or("Exact") == "Exact";
        if exact && HeaderValue::from_str(&header.value).is_err() {
            return Err((
                format!(".headers[{h}].value"),
                format!("{:?} is not a valid header value", header.value),
            ));
        }
        let value = value_match(header.type_.as_deref(), &header.value)
            .map_err(|message| (format!(".headers[{h}]"), message))?;
        // The first match of a name counts; later ones are ignored, as the spec says.
        if !headers.iter().any(|(n, _)| *n == name) {
            headers.push((name, value));
        }
    }
    Ok(headers)
}

/// One match of a rule as a match rule (its host filled in later) and its precedence;
/// `None`, with a diagnostic, for a match Portico cannot serve.
#[allow(clippy::too_many_arguments)]
fn match_rule(
    key: &ObjectKey,
    route: &HTTPRoute,
    rule: usize,
    matched: usize,
    m: &HTTPRouteMatch,
    field: &str,
    target: &RouteTarget,
    diags: &mut Vec<Diagnostic>,
) -> Option<(HttpPrecedence, MatchRule)> {
    let mut unsupported = |suffix: &str, message: String| {
        diags.push(Diagnostic::warning(
            Kind::HTTPRoute,
            key,
            format!("{field}{suffix}"),
            DiagnosticReason::GatewayUnsupported,
            format!("{message}; match ignored"),
        ));
        None
    };
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix");
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.as_deref())
        .unwrap_or("/");
    if !value.starts_with('/') {
        return unsupported(".path.value", format!("path {value:?} is not absolute"));
    }
    let (path, path_kind) = match path_type {
        "Exact" => (PathMatch::Exact(value.to_owned()), 0),
        // Between the two, as most implementations order them; see `Precedence`.
        "RegularExpression" => match FullMatch::new(value) {
            Ok(r) => (PathMatch::Regex(r), 1),
            Err(e) => {
                return unsupported(".path.value", format!("regular expression {value:?}: {e}"))
            }
        },
        "PathPrefix" => (PathMatch::prefix(value), 2),
        other => {
            return unsupported(
                ".path.type",
                format!("path type {other:?} is not supported yet"),
            )
        }
    };
    let headers = match header_matches(&m.headers) {
        Ok(h) => h,
        Err((suffix, message)) => return unsupported(&suffix, message),
    };
    let mut query: Vec<(String, ValueMatch)> = Vec::new();
    for (q, param) in m.query_params.iter().enumerate() {
        let value = match value_match(param.type_.as_deref(), &param.value) {
            Ok(v) => v,
            Err(message) => return unsupported(&format!(".queryParams[{q}]"), message),
        };
        if !query.iter().any(|(n, _)| *n == param.name) {
            query.push((param.name.clone(), value));
        }
    }
    let method = match m.method.as_deref() {
        None => None,
        Some(method) => match Method::from_bytes(method.as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => return unsupported(".method", format!("method {method:?} is not valid")),
        },
    };
    let precedence = HttpPrecedence {
        path_kind,
        path_len: Reverse(value.len()),
        no_method: method.is_none(),
        headers: Reverse(headers.len()),
        query: Reverse(query.len()),
        created: route.metadata.creation_timestamp.clone(),
        route: key.clone(),
        rule,
        matched,
    };
    Some((
        precedence,
        MatchRule {
            host: HostMatch::Any,
            path,
            method,
            headers,
            query,
            listeners: ListenerScope::default(),
            target: target.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations() {
        let d = |s| parse_duration(s);
        assert_eq!(d("10s"), Some(Duration::from_secs(10)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("1h2m3s4ms"), Some(Duration::from_millis(3_723_004)));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        for bad in ["", "10", "1.5s", "s", "123456s", "1d", "1s1s1s1s1s", "-1s"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostname_intersection_follows_the_spec() {
        let s = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let got = |l: Option<&str>, r: &[&str]| intersect(l, &s(r));
        assert_eq!(got(None, &[]), vec![None]);
        assert_eq!(
            got(Some("a.example.com"), &[]),
            vec![Some("a.example.com".into())]
        );
        assert_eq!(
            got(None, &["a.example.com"]),
            vec![Some("a.example.com".into())]
        );
        assert_eq!(
            got(
                Some("*.example.com"),
                &["a.example.com", "b.other.org", "x.y.example.com"]
            ),
            vec![Some("a.example.com".into()), Some("x.y.example.com".into())]
        );
        assert_eq!(
            got(Some("very.specific.com"), &["*.specific.com"]),
            vec![Some("very.specific.com".into())]
        );
        assert_eq!(
            got(Some("*.example.com"), &["example.com"]),
            Vec::<Option<String>>::new()
        );
        assert_eq!(
            got(Some("*.example.com"), &["*.a.example.com"]),
            vec![Some("*.a.example.com".into())]
        );
        assert_eq!(got(Some("a.com"), &["b.com"]), Vec::<Option<String>>::new());
    }
}

#[cfg(test)]
mod compile_tests {
    use super::super::diagnostic::Severity;
    use super::super::tests::store_from_yaml;
    use super::super::{compile, CompileOptions, Compiled};
    use crate::store::Kind;
    use proxy_core::pipeline::RequestFilter;

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - {name: same, port: 80, protocol: HTTP}
  - name: all
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

    fn services(ns: &str, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: {ns}}}\nspec: {{ports: [{{port: 8080}}]}}\n"
                )
            })
            .collect()
    }

    /// The fields the compile step reported on objects of `kind`, with their severity.
    fn fields_said(c: &Compiled, kind: Kind) -> Vec<(&str, Severity)> {
        c.diagnostics
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| (d.field.as_str(), d.severity))
            .collect()
    }

    fn compiled(extra: &str) -> Compiled {
        let text = format!(
            "{BASE}{}{}{extra}",
            services("infra", &["v1", "v2", "v3", "v4", "v5"]),
            services("app", &["a1", "a2"])
        );
        compile(&store_from_yaml(&text), &CompileOptions::default())
    }

    fn route(
        c: &Compiled,
        method: &str,
        host: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let parts = b.body(()).unwrap().into_parts().0;
        let path = uri.split('?').next().unwrap();
        let t = c.config.routes.lookup_with(host, path, Some(&parts))?;
        if t.policy
            .request
            .iter()
            .any(|f| matches!(f, RequestFilter::NoValidBackend(_)))
        {
            return Some("500".into());
        }
        Some(t.backend.service.to_string())
    }

    /// The fields the diagnostics about objects of `kind` name.
    fn fields_of(c: &Compiled, kind: Kind) -> Vec<&str> {
        c.diagnostics
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.field.as_str())
            .collect()
    }

    fn get(c: &Compiled, host: &str, uri: &str) -> Option<String> {
        route(c, "GET", host, uri, &[])
    }

    /// The spec's order between rules: Exact path, longest prefix, method, most
    /// headers, most query parameters; then the oldest route.
    #[test]
    fn matches_follow_the_spec_precedence() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /v2/exact}}]
    backendRefs: [{name: v3, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
      method: POST
    backendRefs: [{name: v4, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
      headers: [{name: version, value: two}, {name: color, value: red}]
    - queryParams: [{name: animal, value: whale}]
    backendRefs: [{name: v5, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: infra, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: v3, port: 8080}]
"#,
        );
        assert_eq!(get(&c, "any.test", "/").as_deref(), Some("v1"));
        assert_eq!(get(&c, "any.test", "/v2/x").as_deref(), Some("v2"));
        assert_eq!(get(&c, "any.test", "/v2x").as_deref(), Some("v1"));
        assert_eq!(get(&c, "any.test", "/v2/exact").as_deref(), Some("v3"));
        assert_eq!(
            route(&c, "POST", "any.test", "/v2", &[]).as_deref(),
            Some("v4")
        );
        assert_eq!(
            route(&c, "GET", "a", "/x", &[("version", "two")]).as_deref(),
            Some("v2")
        );
        let both = [("version", "two"), ("color", "red")];
        assert_eq!(route(&c, "GET", "a", "/v2", &both).as_deref(), Some("v5"));
        assert_eq!(route(&c, "POST", "a", "/v2", &both).as_deref(), Some("v4"));
        assert_eq!(get(&c, "a", "/?animal=whale").as_deref(), Some("v5"));
        assert_eq!(get(&c, "a", "/?animal=dolphin").as_deref(), Some("v1"));
        let said: Vec<_> = c
            .diagnostics
            .iter()
            .filter(|d| matches!(d.kind, Kind::HTTPRoute | Kind::Gateway))
            .collect();
        assert!(said.is_empty(), "{said:?}");
    }

    #[test]
    fn listeners_admit_namespaces_and_intersect_hostnames() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wide, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [foo.example.com, bar.other.org]
  rules: [{backendRefs: [{name: a1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-only, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: same}]
  rules: [{backendRefs: [{name: a2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-class, namespace: infra}
spec:
  parentRefs: [{name: theirs}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "foo.example.com", "/").as_deref(), Some("a1"));
        // Not in the listener's hostname.
        assert_eq!(get(&c, "bar.other.org", "/"), None);
        // From another namespace than the Gateway's: the `same` listener refuses it.
        assert_eq!(get(&c, "other.test", "/"), None);
        let refused: Vec<_> = c
            .diagnostics
            .iter()
            .filter(|d| d.kind == Kind::HTTPRoute)
            .map(|d| (d.object.to_string(), d.field.clone()))
            .collect();
        assert_eq!(
            refused,
            vec![("app/same-only".to_owned(), "spec.parentRefs[0]".to_owned())]
        );
    }

    #[test]
    fn cross_namespace_backends_need_a_reference_grant() {
        let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grant.test]
  rules:
  - matches: [{path: {value: /a1}}]
    backendRefs: [{name: a1, namespace: app, port: 8080}]
  - matches: [{path: {value: /a2}}]
    backendRefs: [{name: a2, namespace: app, port: 8080}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: nope, port: 8080}]
"#;
        let c = compiled(route);
        assert_eq!(get(&c, "grant.test", "/a1").as_deref(), Some("500"));
        assert_eq!(get(&c, "grant.test", "/none").as_deref(), Some("500"));
        assert_eq!(get(&c, "grant.test", "/missing").as_deref(), Some("500"));
        let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: a1}]
"#;
        let c = compiled(&format!("{route}{grant}"));
        assert_eq!(get(&c, "grant.test", "/a1").as_deref(), Some("a1"));
        assert_eq!(get(&c, "grant.test", "/a2").as_deref(), Some("500"));
        let fields = fields_of(&c, Kind::HTTPRoute);
        assert_eq!(
            fields,
            vec![
                "spec.rules[1].backendRefs[0].namespace",
                "spec.rules[3].backendRefs[0]"
            ]
        );
    }

    #[test]
    fn status_conditions_with_observed_generation() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed, namespace: infra, generation: 4}
spec:
  gatewayClassName: portico
  listeners:
  - {name: web, port: 80, protocol: HTTP}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: infra, generation: 2}
spec:
  parentRefs: [{name: mixed, sectionName: web}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refused, namespace: app, generation: 7}
spec:
  parentRefs: [{name: mixed, namespace: infra}]
  rules: [{backendRefs: [{name: a1, kind: Pod, port: 8080}]}]
"#,
        );
        let of = |kind, ns: &str, name: &str| {
            c.gateway_status
                .get(&(kind, crate::store::ObjectKey::new(ns, name)))
                .map(|s| s.to_string())
        };
        assert_eq!(
            of(Kind::GatewayClass, "", "portico").as_deref(),
            Some("Accepted=True (Accepted)")
        );
        assert_eq!(of(Kind::GatewayClass, "", "other"), None);
        assert_eq!(
            of(Kind::Gateway, "infra", "mixed").as_deref(),
            Some(
                "Accepted=True (ListenersNotValid, generation 4), Programmed=True (Programmed, generation 4), \
                 ResolvedRefs=True (ResolvedRefs, generation 4); \
                 listener \"web\": attachedRoutes 1, supportedKinds [HTTPRoute GRPCRoute], \
                 Accepted=True (Accepted, generation 4), \
                 Programmed=True (Programmed, generation 4), ResolvedRefs=True (ResolvedRefs, generation 4), \
                 Conflicted=False (NoConflicts, generation 4); \
                 listener \"tcp\": attachedRoutes 0, supportedKinds [], \
                 Accepted=False (UnsupportedProtocol, generation 4), \
                 Programmed=False (Invalid, generation 4), ResolvedRefs=True (ResolvedRefs, generation 4), \
                 Conflicted=False (NoConflicts, generation 4)"
            )
        );
        assert_eq!(
            of(Kind::HTTPRoute, "infra", "ok").as_deref(),
            Some(
                "parent infra/mixed/web: Accepted=True (Accepted, generation 2), \
                 ResolvedRefs=True (ResolvedRefs, generation 2)"
            )
        );
        assert_eq!(
            of(Kind::HTTPRoute, "app", "refused").as_deref(),
            Some(
                "parent infra/mixed: Accepted=False (NotAllowedByListeners, generation 7), \
                 ResolvedRefs=False (InvalidKind, generation 7)"
            )
        );
    }

    #[test]
    fn regular_expression_paths_match_whole_paths_before_prefixes() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [re.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /v1/exact}}]
    backendRefs: [{name: v3, port: 8080}]
  - matches: [{path: {type: RegularExpression, value: "/(?=look)"}}]
    backendRefs: [{name: v4, port: 8080}]
"#,
        );
        assert_eq!(get(&c, "re.test", "/v1/users").as_deref(), Some("v2"));
        assert_eq!(get(&c, "re.test", "/v1/exact").as_deref(), Some("v3"));
        assert_eq!(get(&c, "re.test", "/x/v1/users").as_deref(), Some("v1"));
        assert_eq!(get(&c, "re.test", "/V1/users").as_deref(), Some("v1"));
        let fields = fields_of(&c, Kind::HTTPRoute);
        assert_eq!(fields, vec!["spec.rules[3].matches[0].path.value"]);
    }

    #[test]
    fn unsupported_filters_fail_closed_and_a_mirror_keeps_the_rule() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [f.test]
  rules:
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: v2, port: 8080}}}]
    backendRefs: [{name: v1, port: 8080}]
"#,
        );
        assert_eq!(get(&c, "f.test", "/ext").as_deref(), Some("500"));
        assert_eq!(get(&c, "f.test", "/mirror").as_deref(), Some("v1"));
        let said = fields_said(&c, Kind::HTTPRoute);
        assert_eq!(
            said,
            vec![("spec.rules[0].filters[0].type", Severity::Error)]
        );
        let mirrored = c.config.routes.lookup_with("f.test", "/mirror", None);
        assert!(mirrored.is_some_and(|t| t.policy.mirrors.is_some()));
    }

    #[test]
    fn a_cors_filter_runs_first_and_bad_settings_are_named() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [c.test]
  rules:
  - matches: [{path: {value: /cors}}]
    filters:
    - {type: RequestRedirect, requestRedirect: {hostname: elsewhere.test}}
    - type: CORS
      cors: {allowOrigins: ["https://*.foo.com", "foo.com"], allowMethods: [GET]}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {value: /twice}}]
    filters:
    - {type: CORS, cors: {allowOrigins: ["*"]}}
    - {type: CORS, cors: {allowOrigins: ["https://a.com"]}}
    - {type: CORS}
    backendRefs: [{name: v1, port: 8080}]
"#,
        );
        let policy = |path: &str| {
            c.config
                .routes
                .lookup_with("c.test", path, None)
                .expect("route")
                .policy
                .clone()
        };
        let p = policy("/cors");
        let RequestFilter::Cors(cors) = &p.request[0] else {
            panic!("{:?}", p.request)
        };
        assert!(matches!(p.request[1], RequestFilter::GatewayRedirect(_)));
        assert_eq!(cors.allow_methods, "GET");
        let p = policy("/twice");
        let cors: Vec<_> = p
            .request
            .iter()
            .filter_map(|f| match f {
                RequestFilter::Cors(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(cors.len(), 1);
        assert_eq!(cors[0].origins, proxy_core::pipeline::CorsOrigins::Any);
        let said = fields_said(&c, Kind::HTTPRoute);
        assert_eq!(
            said,
            vec![
                (
                    "spec.rules[0].filters[1].cors.allowOrigins[1]",
                    Severity::Error
                ),
                ("spec.rules[1].filters[1].cors", Severity::Error),
                ("spec.rules[1].filters[2].cors", Severity::Error),
            ]
        );
        // The route stays accepted, as with other invalid filter settings.
        let route =
            &c.gateway_status[&(Kind::HTTPRoute, crate::store::ObjectKey::new("infra", "r"))];
        let conditions: Vec<String> = route.parents[0]
            .conditions
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert!(conditions[0].starts_with("Accepted=True"), "{conditions:?}");
    }

    #[test]
    fn listener_route_kinds_other_than_httproute_are_invalid() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kinds, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: grpc-only
    port: 80
    protocol: HTTP
    hostname: a.example.com
    allowedRoutes: {kinds: [{kind: GRPCRoute}]}
  - name: mixed
    port: 80
    protocol: HTTP
    hostname: b.example.com
    allowedRoutes: {kinds: [{kind: HTTPRoute}, {group: example.com, kind: HTTPRoute}]}
  - {name: plain, port: 80, protocol: HTTP, hostname: c.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp-only, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: tcp, port: 9000, protocol: TCP}]
"#,
        );
        let gw = &c.gateway_status[&(
            Kind::Gateway,
            crate::store::ObjectKey::new("infra", "kinds"),
        )];
        let conditions = |name: &str| {
            c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", name))]
                .conditions
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            conditions("kinds"),
            [
                "Accepted=True (Accepted)",
                "Programmed=True (Programmed)",
                // The spec's summary of the listeners' ResolvedRefs.
                "ResolvedRefs=False (ListenersNotResolved)"
            ]
        );
        // Only a TCP listener: not accepted.
        assert_eq!(
            conditions("tcp-only"),
            [
                "Accepted=False (ListenersNotValid)",
                "Programmed=False (Invalid)",
                "ResolvedRefs=True (ResolvedRefs)"
            ]
        );
        let summary: Vec<(Vec<&str>, String)> = gw
            .listeners
            .iter()
            .map(|l| {
                let refs = l
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "ResolvedRefs")
                    .unwrap();
                (
                    l.supported_kinds.clone(),
                    format!("{}/{}", refs.status, refs.reason),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec!["GRPCRoute"], "true/ResolvedRefs".to_owned()),
                (vec!["HTTPRoute"], "false/InvalidRouteKinds".to_owned()),
                (
                    vec!["HTTPRoute", "GRPCRoute"],
                    "true/ResolvedRefs".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn wildcard_hostnames_match_any_number_of_labels() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: all}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nearer, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: all}]
  hostnames: ["*.b.example.com"]
  rules: [{matches: [{path: {value: /only}}], backendRefs: [{name: v2, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "a.example.com", "/").as_deref(), Some("v1"));
        assert_eq!(get(&c, "x.a.example.com", "/").as_deref(), Some("v1"));
        assert_eq!(get(&c, "x.y.z.example.com", "/").as_deref(), Some("v1"));
        // The nearest wildcard first; what it does not match falls to the wider one.
        assert_eq!(get(&c, "a.b.example.com", "/only").as_deref(), Some("v2"));
        assert_eq!(get(&c, "x.a.b.example.com", "/only").as_deref(), Some("v2"));
        assert_eq!(get(&c, "a.b.example.com", "/else").as_deref(), Some("v1"));
        assert_eq!(get(&c, "example.com", "/"), None);
    }

    #[test]
    fn regular_expression_header_and_query_matches() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [hq.test]
  rules:
  - backendRefs: [{name: v1, port: 8080}]
  - matches: [{headers: [{type: RegularExpression, name: version, value: "v[0-9]+"}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{queryParams: [{type: RegularExpression, name: id, value: "[a-f]+"}]}]
    backendRefs: [{name: v3, port: 8080}]
  - matches: [{headers: [{type: RegularExpression, name: bad, value: "(?=x)"}]}]
    backendRefs: [{name: v4, port: 8080}]
"#,
        );
        assert_eq!(
            route(&c, "GET", "hq.test", "/", &[("version", "v42")]).as_deref(),
            Some("v2")
        );
        assert_eq!(
            route(&c, "GET", "hq.test", "/", &[("version", "v42x")]).as_deref(),
            Some("v1")
        );
        assert_eq!(get(&c, "hq.test", "/?id=cafe").as_deref(), Some("v3"));
        assert_eq!(get(&c, "hq.test", "/?id=coffee").as_deref(), Some("v1"));
        let fields = fields_of(&c, Kind::HTTPRoute);
        assert_eq!(fields, vec!["spec.rules[3].matches[0].headers[0]"]);
    }

    #[test]
    fn listeners_admit_namespaces_by_selector() {
        let c = compiled(
            r#"
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {gateway-conformance: web}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: sel, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: sel.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {gateway-conformance: backend}
          matchExpressions: [{key: gateway-conformance, operator: NotIn, values: [web]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: app}
spec:
  parentRefs: [{name: sel, namespace: infra}]
  rules: [{backendRefs: [{name: a1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refused, namespace: other}
spec:
  parentRefs: [{name: sel, namespace: infra}]
  hostnames: [sel.example.com]
  rules: [{matches: [{path: {value: /other}}], backendRefs: [{name: a1, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "sel.example.com", "/").as_deref(), Some("a1"));
        let status = |ns: &str, name: &str| {
            c.gateway_status[&(Kind::HTTPRoute, crate::store::ObjectKey::new(ns, name))].parents[0]
                .conditions[0]
                .reason
        };
        assert_eq!(status("app", "ok"), "Accepted");
        assert_eq!(status("other", "refused"), "NotAllowedByListeners");
    }

    #[test]
    fn selectors_see_the_namespace_name_label_the_api_server_sets() {
        let c = compiled(
            r#"
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: sel, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: sel.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {kubernetes.io/metadata.name: app}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: app}
spec:
  parentRefs: [{name: sel, namespace: infra}]
  rules: [{backendRefs: [{name: a1, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "sel.example.com", "/").as_deref(), Some("a1"));
        let gw = &c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", "sel"))];
        assert_eq!(gw.listeners[0].attached_routes, 1);
    }

    #[test]
    fn a_gateway_asking_for_parameters_is_rejected() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: params, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: params.example.com}]
  infrastructure:
    parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: params}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "params.example.com", "/"), None);
        let st = &c.gateway_status[&(
            Kind::Gateway,
            crate::store::ObjectKey::new("infra", "params"),
        )];
        assert_eq!(
            st.conditions[0].to_string(),
            "Accepted=False (InvalidParameters)"
        );
        assert!(c
            .diagnostics
            .iter()
            .any(|d| d.field == "spec.infrastructure.parametersRef"));
    }

    /// An address of a type Portico does not know refuses the Gateway. Without
    /// `--gateway-address-pool`, one asked for without a value is the published one, and
    /// one asked for by value cannot be had: the Gateway is accepted but not served.
    #[test]
    fn requested_addresses_are_refused_by_type_or_value() {
        let gateway = |addresses: &str| {
            compiled(&format!(
                r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: addr, namespace: infra}}
spec:
  gatewayClassName: portico
  addresses: {addresses}
  listeners: [{{name: http, port: 80, protocol: HTTP, hostname: addr.example.com}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: addr}}]
  rules: [{{backendRefs: [{{name: v1, port: 8080}}]}}]
"#
            ))
        };
        let status = |c: &Compiled| {
            c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", "addr"))]
                .clone()
        };
        let c = gateway(r#"[{type: test/fake-invalid-type, value: "x"}, {value: 10.0.0.9}]"#);
        assert_eq!(get(&c, "addr.example.com", "/"), None);
        let accepted = status(&c).conditions[0].to_string();
        assert!(
            accepted.starts_with("Accepted=False (UnsupportedAddress"),
            "{accepted}"
        );
        assert!(c
            .diagnostics
            .iter()
            .any(|d| d.field == "spec.addresses[0].type"));

        let c = gateway("[{type: IPAddress}, {type: Hostname}]");
        assert!(get(&c, "addr.example.com", "/").is_some());
        assert_eq!(status(&c).addresses, None, "the published addresses");
        assert!(status(&c).conditions[1]
            .to_string()
            .starts_with("Programmed=True"));

        let c = gateway("[{type: IPAddress}, {value: 10.0.0.9}]");
        assert_eq!(get(&c, "addr.example.com", "/"), None);
        let st = status(&c);
        assert!(
            st.conditions[0].to_string().starts_with("Accepted=True"),
            "{st}"
        );
        assert!(
            st.conditions[1]
                .to_string()
                .starts_with("Programmed=False (AddressNotUsable"),
            "{st}"
        );
        assert_eq!(st.addresses, Some(Vec::new()));
        assert!(c.diagnostics.iter().any(|d| d.field == "spec.addresses[1]"));
    }

    /// With a pool, each Gateway is served at an address of its own, by its own table:
    /// the shared one (the Ingresses' and the published addresses') has none of its
    /// rules, and no other Gateway's rule answers at its address.
    #[test]
    fn gateways_with_addresses_of_their_own_have_their_own_tables() {
        let text = format!(
            "{BASE}{}{}",
            services("infra", &["v1", "v2"]),
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: one, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: two, namespace: infra, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  gatewayClassName: portico
  addresses: [{value: 127.0.1.9}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r1, namespace: infra}
spec:
  parentRefs: [{name: one}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r2, namespace: infra}
spec:
  parentRefs: [{name: two}]
  rules: [{backendRefs: [{name: v2, port: 8080}]}]
"#
        );
        let opts = CompileOptions {
            gateway_address_pool: vec!["127.0.1.0/24".parse().unwrap()],
            ..CompileOptions::default()
        };
        let c = compile(&store_from_yaml(&text), &opts);
        let addresses = |name: &str| {
            c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", name))]
                .addresses
                .clone()
                .unwrap_or_default()
        };
        let at = |name: &str| {
            let [ip] = addresses(name)[..] else {
                panic!("{name}: {:?}", addresses(name));
            };
            c.config.routes_at[&ip]
                .lookup("any.example.com", "/")
                .map(|t| t.backend.to_string())
                .unwrap_or_default()
        };
        assert!(c.config.routes.lookup("any.example.com", "/").is_none());
        assert_eq!(
            addresses("two"),
            ["127.0.1.9".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(at("one").contains("v1"), "{}", at("one"));
        assert!(at("two").contains("v2"), "{}", at("two"));
        assert_ne!(addresses("one"), addresses("two"));
    }

    #[test]
    fn weighted_backends_share_a_rule() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [w.test]
  rules:
  - backendRefs:
    - {name: v1, port: 8080, weight: 1}
    - {name: v2, port: 8080, weight: 0}
    - {name: missing, port: 8080, weight: 1}
    - {name: v3, port: 8080, weight: 2}
    - {name: v4, port: 8080}
"#,
        );
        let t = c.config.routes.lookup_with("w.test", "/", None).unwrap();
        let w = t.policy.weighted.as_ref().expect("weighted backends");
        assert_eq!(w.total(), 5);
        let picks: Vec<String> = (1..=5)
            .map(|n| {
                w.pick(|_| n)
                    .map_or("500".into(), |b| b.service.to_string())
            })
            .collect();
        // The missing Service's share answers 500.
        assert_eq!(picks, ["v1", "500", "v3", "v3", "v4"]);
        for p in picks.iter().filter(|p| *p != "500") {
            assert!(c.config.backends.keys().any(|id| &*id.service == p), "{p}");
        }
    }

    #[test]
    fn url_rewrite_sets_the_path_and_the_upstream_host() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [rw.test]
  rules:
  - matches: [{path: {value: /prefix/}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: One.Example.org
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /one/}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /exact}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {value: /bad}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: "*.example.org", path: {type: ReplaceFullPath, replaceFullPath: "x?y"}}
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{path: {value: /one}}, {path: {value: /two/}}, {headers: [{name: x, value: y}]}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: v1, port: 8080}]
"#,
        );
        // Each match of a rule replaces the prefix it matched.
        let matched = |path: &str, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().uri(path);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let parts = b.body(()).unwrap().into_parts().0;
            let t = c
                .config
                .routes
                .lookup_with("rw.test", path, Some(&parts))
                .unwrap();
            t.policy
                .request
                .iter()
                .find_map(|f| match f {
                    RequestFilter::GatewayRewrite(proxy_core::pipeline::GatewayRewrite {
                        path: proxy_core::pipeline::RedirectPath::Prefix { matched, .. },
                    }) => Some(matched.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(matched("/one/a", &[]), "/one");
        assert_eq!(matched("/two/a", &[]), "/two");
        assert_eq!(matched("/zzz", &[("x", "y")]), "");
        let t = c
            .config
            .routes
            .lookup_with("rw.test", "/prefix/a", None)
            .unwrap();
        assert_eq!(
            t.policy.upstream_headers.host.as_ref().unwrap(),
            "one.example.org"
        );
        assert!(t.policy.request.iter().any(|f| matches!(
            f,
            RequestFilter::GatewayRewrite(proxy_core::pipeline::GatewayRewrite {
                path: proxy_core::pipeline::RedirectPath::Prefix { matched, replacement }
            }) if matched == "/prefix" && replacement == "/one/"
        )));
        let bad = c
            .config
            .routes
            .lookup_with("rw.test", "/bad", None)
            .unwrap();
        assert!(bad.policy.upstream_headers.host.is_none());
        assert!(!bad
            .policy
            .request
            .iter()
            .any(|f| matches!(f, RequestFilter::GatewayRewrite(_))));
        let fields = fields_of(&c, Kind::HTTPRoute);
        assert_eq!(
            fields,
            vec![
                "spec.rules[1].filters[0].urlRewrite.path",
                "spec.rules[2].filters[0].urlRewrite.hostname",
                "spec.rules[2].filters[0].urlRewrite.path",
            ]
        );
    }

    /// A `kubernetes.io/tls` Secret with a generated certificate for `host`.
    fn tls_secret(ns: &str, name: &str, host: &str) -> String {
        let (cert, key) = super::super::tests::generated(host);
        let b64 = |v: &str| {
            serde_json::to_value(k8s_openapi::ByteString(v.as_bytes().to_vec()))
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        };
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&cert),
            b64(&key)
        )
    }

    const HTTPS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: infra, generation: 3}
spec:
  gatewayClassName: portico
  listeners:
  - name: ok
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: missing
    port: 443
    protocol: HTTPS
    hostname: missing.example.com
    tls: {certificateRefs: [{kind: Secret, group: "", name: nope}]}
  - name: cross
    port: 443
    protocol: HTTPS
    hostname: cross.example.com
    tls: {certificateRefs: [{name: app-cert, namespace: app}]}
  - name: no-refs
    port: 443
    protocol: HTTPS
    hostname: none.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: secure, sectionName: ok}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
"#;

    #[test]
    fn https_listeners_take_certificates_from_secrets() {
        let secrets = format!(
            "{}{}",
            tls_secret("infra", "cert", "secure.example.com"),
            tls_secret("app", "app-cert", "cross.example.com")
        );
        let c = compiled(&format!("{HTTPS}{secrets}"));
        let certs: Vec<_> = c
            .certs
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            certs,
            vec![("infra/cert", vec!["secure.example.com".to_owned()])]
        );
        assert!(c.cert_store.resolve(Some("secure.example.com")).is_some());
        // Attached to an HTTPS listener only: answers on Portico's HTTPS listener only.
        assert_eq!(get(&c, "secure.example.com", "/"), None);
        let https = c.config.routes.lookup_on(
            proxy_core::http::Scheme::Https,
            "secure.example.com",
            "/",
            None,
        );
        assert_eq!(
            https.map(|t| t.backend.service.to_string()).as_deref(),
            Some("v1")
        );
        let listener = |name: &str| {
            c.gateway_status[&(
                Kind::Gateway,
                crate::store::ObjectKey::new("infra", "secure"),
            )]
                .listeners
                .iter()
                .find(|l| l.name == name)
                .unwrap()
                .conditions
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        assert_eq!(
            listener("ok"),
            "Accepted=True (Accepted, generation 3), Programmed=True (Programmed, generation 3), \
             ResolvedRefs=True (ResolvedRefs, generation 3), Conflicted=False (NoConflicts, generation 3)"
        );
        let refs = |name: &str| {
            let all = listener(name);
            let from = &all[all.find("ResolvedRefs").unwrap()..];
            from[..from.find(')').unwrap() + 1].to_owned()
        };
        assert_eq!(
            refs("missing"),
            "ResolvedRefs=False (InvalidCertificateRef, generation 3)"
        );
        assert_eq!(
            refs("cross"),
            "ResolvedRefs=False (RefNotPermitted, generation 3)"
        );
        assert_eq!(
            refs("no-refs"),
            "ResolvedRefs=False (InvalidCertificateRef, generation 3)"
        );
        let fields = fields_of(&c, Kind::Gateway);
        assert_eq!(
            fields,
            vec![
                "spec.listeners[1].tls.certificateRefs[0]",
                "spec.listeners[2].tls.certificateRefs[0].namespace",
                "spec.listeners[3].tls.certificateRefs",
            ]
        );

        // A ReferenceGrant for Gateways of infra opens the Secret of app.
        let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
"#;
        let c = compiled(&format!("{HTTPS}{secrets}{grant}"));
        assert!(c.certs.iter().any(|c| c.name == "app/app-cert"
            && c.hosts
                .iter()
                .map(|h| h.to_string())
                .eq(["cross.example.com"])));
    }

    /// A gRPC call (a POST with a gRPC content type) to `path`, with more headers.
    fn call(c: &Compiled, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut all = vec![("content-type", "application/grpc")];
        all.extend_from_slice(headers);
        route(c, "POST", host, path, &all)
    }

    fn route_status(c: &Compiled, kind: Kind, ns: &str, name: &str) -> Vec<String> {
        c.gateway_status[&(kind, crate::store::ObjectKey::new(ns, name))]
            .parents
            .iter()
            .flat_map(|p| p.conditions.iter().map(|c| c.to_string()))
            .collect()
    }

    /// GRPCRoute's order: exact before regular expression, then the longest service,
    /// then the longest method, then the most header matches, then the oldest route.
    #[test]
    fn grpc_method_matches_follow_the_spec_precedence() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{method: {method: Other}}]
    backendRefs: [{name: v3, port: 8080}]
  - matches: [{method: {type: RegularExpression, service: "echo[.].*", method: "Stream.*"}}]
    backendRefs: [{name: v4, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}, {headers: [{name: a, value: b}, {name: c, value: d}]}]
    backendRefs: [{name: v5, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: newer, namespace: infra, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: echo.Echo, method: Unary}}]
    backendRefs: [{name: v3, port: 8080}]
  - matches: [{method: {service: echo.Echo, method: Unary}, headers: [{name: version, value: two}]}]
    backendRefs: [{name: v4, port: 8080}]
"#,
        );
        let at = |path: &str| call(&c, "grpc.test", path, &[]);
        // Service and method beat the service alone; the older of two equal matches wins.
        assert_eq!(at("/echo.Echo/Unary").as_deref(), Some("v1"));
        // ... unless the newer has more header matches.
        assert_eq!(
            call(&c, "grpc.test", "/echo.Echo/Unary", &[("version", "two")]).as_deref(),
            Some("v4")
        );
        assert_eq!(at("/echo.Echo/Bidi").as_deref(), Some("v2"));
        // An exact service beats a regular expression.
        assert_eq!(at("/echo.Echo/StreamOut").as_deref(), Some("v2"));
        assert_eq!(at("/echo.Other/StreamOut").as_deref(), Some("v4"));
        assert_eq!(at("/echoXOther/StreamOut"), None);
        // The method alone: any service.
        assert_eq!(at("/x.Y/Other").as_deref(), Some("v3"));
        assert_eq!(at("/x.Y/Other/more"), None);
        assert_eq!(
            call(&c, "grpc.test", "/x.Y/Z", &[("version", "two")]).as_deref(),
            Some("v5")
        );
        assert_eq!(
            call(&c, "grpc.test", "/x.Y/Z", &[("a", "b"), ("c", "d")]).as_deref(),
            Some("v5")
        );
        assert_eq!(at("/x.Y/Z"), None);
        // Only gRPC calls: a GET, or a POST of another content type, is not one.
        assert_eq!(
            route(
                &c,
                "GET",
                "grpc.test",
                "/echo.Echo/Unary",
                &[("content-type", "application/grpc")]
            ),
            None
        );
        assert_eq!(
            route(
                &c,
                "POST",
                "grpc.test",
                "/echo.Echo/Unary",
                &[("content-type", "application/json")]
            ),
            None
        );
        assert_eq!(
            route(
                &c,
                "POST",
                "grpc.test",
                "/echo.Echo/Unary",
                &[("content-type", "application/grpc+proto")]
            )
            .as_deref(),
            Some("v1")
        );
        // Pods are spoken to over h2c.
        let parts = http::Request::builder()
            .method("POST")
            .uri("/echo.Echo/Unary")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let t = c
            .config
            .routes
            .lookup_with("grpc.test", "/echo.Echo/Unary", Some(&parts))
            .unwrap();
        assert_eq!(
            t.policy.protocol,
            Some(proxy_core::config::BackendProtocol::Grpc)
        );
        assert_eq!(&*t.source, "GRPCRoute infra/g");
        assert_eq!(
            route_status(&c, Kind::GRPCRoute, "infra", "g"),
            [
                "Accepted=True (Accepted)",
                "ResolvedRefs=True (ResolvedRefs)"
            ]
        );
    }

    #[test]
    fn grpc_routes_share_hosts_and_listeners_with_http_routes() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  hostnames: [mix.test]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: same}]
  hostnames: [mix.test]
  rules: [{backendRefs: [{name: v2, port: 8080}]}]
"#,
        );
        assert_eq!(get(&c, "mix.test", "/").as_deref(), Some("v1"));
        assert_eq!(call(&c, "mix.test", "/a.B/C", &[]).as_deref(), Some("v2"));
        assert_eq!(
            route(
                &c,
                "POST",
                "mix.test",
                "/a.B/C",
                &[("content-type", "text/plain")]
            )
            .as_deref(),
            Some("v1")
        );
        for (kind, name) in [(Kind::HTTPRoute, "web"), (Kind::GRPCRoute, "rpc")] {
            assert_eq!(
                route_status(&c, kind, "infra", name),
                [
                    "Accepted=True (Accepted)",
                    "ResolvedRefs=True (ResolvedRefs)"
                ],
                "{name}"
            );
        }
        let gw = &c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", "gw"))];
        let same = gw.listeners.iter().find(|l| l.name == "same").unwrap();
        assert_eq!(same.attached_routes, 2);
        assert_eq!(same.supported_kinds, ["HTTPRoute", "GRPCRoute"]);
    }

    #[test]
    fn grpc_routes_attach_by_kind_hostname_and_namespace() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-only, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: only.example.com
    allowedRoutes: {kinds: [{kind: HTTPRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: refused, namespace: infra}
spec:
  parentRefs: [{name: http-only}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: elsewhere, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: all}]
  hostnames: [grpc.example.org]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: wild, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: all}]
  hostnames: [grpc.example.org, "*.api.example.com"]
  rules: [{backendRefs: [{name: a1, port: 8080}]}]
"#,
        );
        assert_eq!(
            route_status(&c, Kind::GRPCRoute, "infra", "refused")[0],
            "Accepted=False (NotAllowedByListeners)"
        );
        assert_eq!(
            route_status(&c, Kind::GRPCRoute, "infra", "elsewhere")[0],
            "Accepted=False (NoMatchingListenerHostname)"
        );
        assert_eq!(call(&c, "only.example.com", "/a.B/C", &[]), None);
        // The listener's `*.example.com` and the route's names intersect.
        assert_eq!(
            call(&c, "x.api.example.com", "/a.B/C", &[]).as_deref(),
            Some("a1")
        );
        assert_eq!(call(&c, "grpc.example.org", "/a.B/C", &[]), None);
        let gw = &c.gateway_status[&(
            Kind::Gateway,
            crate::store::ObjectKey::new("infra", "http-only"),
        )];
        assert_eq!(gw.listeners[0].supported_kinds, ["HTTPRoute"]);
        assert_eq!(gw.listeners[0].attached_routes, 0);
        let fields: Vec<_> = c
            .diagnostics
            .iter()
            .filter(|d| d.kind == Kind::GRPCRoute)
            .map(|d| (d.object.to_string(), d.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("infra/elsewhere".to_owned(), "spec.parentRefs[0]"),
                ("infra/refused".to_owned(), "spec.parentRefs[0]"),
            ]
        );
    }

    #[test]
    fn grpc_backend_refs_filters_and_bad_matches() {
        let c = compiled(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: grpc-only, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: a1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [b.test]
  rules:
  - matches: [{method: {service: s.Missing}}]
    backendRefs: [{name: nope, port: 8080}]
  - matches: [{method: {service: s.Cross}}]
    backendRefs: [{name: a1, namespace: app, port: 8080}]
  - matches: [{method: {service: s.Closed}}]
    backendRefs: [{name: a2, namespace: app, port: 8080}]
  - matches: [{method: {service: s.Split}}]
    backendRefs:
    - {name: v1, port: 8080, weight: 3}
    - name: v2
      port: 8080
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
    - name: v3
      port: 8080
      filters:
      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-b, value: "3"}]}}
      - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-secret]}}
  - matches: [{method: {service: s.Edit}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-rule, value: "1"}]}
    backendRefs:
    - name: v1
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-backend, value: "1"}]}}]
  - matches: [{method: {service: s.Ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
    backendRefs: [{name: v1, port: 8080}]
  - matches: [{method: {service: s.Redirect}}]
    filters: [{type: RequestRedirect}]
    backendRefs: [{name: v1, port: 8080}]
  - matches:
    - method: {type: Exact}
    - method: {service: a/b, method: M}
    - method: {type: RegularExpression, service: "(?=x)"}
    - method: {type: Prefix, service: s}
    - {method: {service: s.Ok}, headers: [{name: "bad name", value: x}]}
    backendRefs: [{name: v1, port: 8080}]
"#,
        );
        let at = |service: &str| call(&c, "b.test", &format!("/{service}/M"), &[]);
        assert_eq!(at("s.Missing").as_deref(), Some("500"));
        assert_eq!(at("s.Cross").as_deref(), Some("a1"));
        assert_eq!(at("s.Closed").as_deref(), Some("500"));
        assert_eq!(at("s.Ext").as_deref(), Some("500"));
        assert_eq!(at("s.Redirect").as_deref(), Some("500"));
        assert_eq!(at("s.Ok"), None);
        let target = |service: &str| {
            let path = format!("/{service}/M");
            let parts = http::Request::builder()
                .method("POST")
                .uri(&path)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            c.config
                .routes
                .lookup_with("b.test", &path, Some(&parts))
                .unwrap()
                .clone()
        };
        // One of several backends runs its own header filters; one whose filter cannot
        // be served fails closed: its share answers an error.
        let split = target("s.Split");
        let w = split.policy.weighted.as_ref().expect("weighted");
        assert_eq!(w.total(), 5);
        let picks: Vec<String> = (1..=5)
            .map(|n| {
                w.pick(|_| n)
                    .map_or("500".into(), |b| b.service.to_string())
            })
            .collect();
        assert_eq!(picks, ["v1", "v1", "v1", "500", "v3"]);
        assert_eq!(w.pick_filtered(|_| 1).unwrap().1, None);
        let own = w.pick_filtered(|_| 5).unwrap().1.expect("v3's filters");
        let request = own.request.as_ref().expect("request edits");
        assert_eq!(request.set[0].0.as_str(), "x-b");
        let response = own.response.as_ref().expect("response edits");
        assert_eq!(response.remove[0].as_str(), "x-secret");
        assert!(split.policy.upstream_headers.edits.is_none());
        // The only backend's filters run after the rule's.
        let edit = target("s.Edit");
        let edits = edit.policy.upstream_headers.edits.as_ref().expect("edits");
        assert_eq!(edits.set.len(), 1);
        assert_eq!(edits.add.len(), 1);
        assert_eq!(edits.add[0].0.as_str(), "x-backend");
        assert_eq!(
            route_status(&c, Kind::GRPCRoute, "infra", "r"),
            [
                "Accepted=True (Accepted)",
                "ResolvedRefs=False (BackendNotFound)"
            ]
        );
        let fields = fields_of(&c, Kind::GRPCRoute);
        assert_eq!(
            fields,
            [
                "spec.rules[0].backendRefs[0]",
                "spec.rules[2].backendRefs[0].namespace",
                "spec.rules[3].backendRefs[1].filters[0].type",
                "spec.rules[5].filters[0].type",
                "spec.rules[6].filters[0].type",
                "spec.rules[7].matches[0].method",
                "spec.rules[7].matches[1].method.service",
                "spec.rules[7].matches[2].method.service",
                "spec.rules[7].matches[3].method.type",
                "spec.rules[7].matches[4].headers[0].name",
            ]
        );
    }

    /// A CA certificate (PEM) as a ConfigMap's `ca.crt`, indented for a YAML block.
    fn ca_config_map(ns: &str, name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata:\n  ca.crt: |\n{indented}"
        )
    }

    fn gateway_of<'a>(c: &'a Compiled, name: &str) -> &'a super::ObjectStatus {
        &c.gateway_status[&(Kind::Gateway, crate::store::ObjectKey::new("infra", name))]
    }

    /// A listener's conditions, `Type=Status (Reason)` each.
    fn listener_says(c: &Compiled, gw: &str, name: &str) -> Vec<String> {
        gateway_of(c, gw)
            .listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .conditions
            .iter()
            .map(|c| {
                let s = if c.status { "True" } else { "False" };
                format!("{}={s} ({})", c.type_, c.reason)
            })
            .collect()
    }

    const FRONTEND: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mtls, namespace: infra}
spec:
  gatewayClassName: portico
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{kind: ConfigMap, group: "", name: default-ca}]
      perPort:
      - port: 8443
        tls:
          validation:
            caCertificateRefs: [{kind: ConfigMap, group: "", name: port-ca}]
      - port: 7443
        tls:
          validation:
            caCertificateRefs: [{kind: ConfigMap, group: "", name: nope}]
      - port: 6443
        tls:
          validation:
            caCertificateRefs: [{kind: Service, group: "", name: v1}]
      - port: 5443
        tls:
          validation:
            caCertificateRefs: [{kind: ConfigMap, group: "", name: app-ca, namespace: app}]
      - port: 4443
        tls:
          validation:
            caCertificateRefs:
            - {kind: ConfigMap, group: "", name: default-ca}
            - {kind: ConfigMap, group: "", name: nope}
  listeners:
  - {name: plain, port: 80, protocol: HTTP}
  - name: default
    port: 443
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: per-port
    port: 8443
    protocol: HTTPS
    hostname: b.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: unresolved
    port: 7443
    protocol: HTTPS
    hostname: c.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: invalid-kind
    port: 6443
    protocol: HTTPS
    hostname: d.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: grant-missing
    port: 5443
    protocol: HTTPS
    hostname: e.example.com
    tls: {certificateRefs: [{name: cert}]}
  - name: partly
    port: 4443
    protocol: HTTPS
    hostname: f.example.com
    tls: {certificateRefs: [{name: cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: mtls}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
"#;

    fn frontend_compiled(mode: &str) -> Compiled {
        let yaml = FRONTEND.replace(
            "        validation:\n          caCertificateRefs: [{kind: ConfigMap, group: \"\", name: default-ca}]",
            &format!("        validation:\n          mode: {mode}\n          caCertificateRefs: [{{kind: ConfigMap, group: \"\", name: default-ca}}]"),
        );
        compiled(&format!(
            "{yaml}{}{}{}{}",
            tls_secret("infra", "cert", "a.example.com"),
            ca_config_map("infra", "default-ca"),
            ca_config_map("infra", "port-ca"),
            ca_config_map("app", "app-ca"),
        ))
    }

    /// `tls.frontend`: the default validation or the listener port's, asked for by the
    /// listener's hosts in the handshake and required there (AllowValidOnly), each
    /// route of the listener checking its connection; unusable references set the
    /// spec's reasons, and a listener with no usable CA is not served while its host's
    /// handshakes fail.
    #[test]
    fn frontend_validation_is_asked_by_listener_host_and_fails_closed() {
        let c = frontend_compiled("AllowValidOnly");
        let ok = [
            "Accepted=True (Accepted)",
            "Programmed=True (Programmed)",
            "ResolvedRefs=True (ResolvedRefs)",
            "Conflicted=False (NoConflicts)",
        ];
        assert_eq!(listener_says(&c, "mtls", "default"), ok);
        assert_eq!(listener_says(&c, "mtls", "per-port"), ok);
        assert_eq!(listener_says(&c, "mtls", "plain"), ok);
        for (listener, reason) in [
            ("unresolved", "InvalidCACertificateRef"),
            ("invalid-kind", "InvalidCACertificateKind"),
            ("grant-missing", "RefNotPermitted"),
        ] {
            assert_eq!(
                listener_says(&c, "mtls", listener),
                [
                    "Accepted=False (NoValidCACertificate)".to_owned(),
                    "Programmed=False (Invalid)".to_owned(),
                    format!("ResolvedRefs=False ({reason})"),
                    "Conflicted=False (NoConflicts)".to_owned(),
                ],
                "{listener}"
            );
        }
        // One of two references usable: served with it, the other reported.
        assert_eq!(
            listener_says(&c, "mtls", "partly"),
            [
                "Accepted=True (Accepted)",
                "Programmed=True (Programmed)",
                "ResolvedRefs=False (InvalidCACertificateRef)",
                "Conflicted=False (NoConflicts)",
            ]
        );
        let gw = gateway_of(&c, "mtls");
        assert!(gw
            .conditions
            .iter()
            .all(|c| c.type_ != "InsecureFrontendValidationMode"));
        assert!(gw
            .conditions
            .iter()
            .any(|c| c.type_ == "ResolvedRefs" && !c.status && c.reason == "ListenersNotResolved"));
        let mut fields: Vec<&str> = fields_of(&c, Kind::Gateway)
            .into_iter()
            .filter(|f| f.starts_with("spec.tls"))
            .collect();
        fields.dedup();
        assert_eq!(
            fields,
            [
                "spec.tls.frontend.perPort[1].tls.validation",
                "spec.tls.frontend.perPort[1].tls.validation.caCertificateRefs[0]",
                "spec.tls.frontend.perPort[2].tls.validation",
                "spec.tls.frontend.perPort[2].tls.validation.caCertificateRefs[0]",
                "spec.tls.frontend.perPort[3].tls.validation",
                "spec.tls.frontend.perPort[3].tls.validation.caCertificateRefs[0]",
                "spec.tls.frontend.perPort[4].tls.validation.caCertificateRefs[1]",
            ]
        );
        // The handshakes of each listener's host: its own CA, refused there when
        // invalid; none with a CA for the unusable listeners.
        let by_host = |host: &str| {
            c.client_auth
                .iter()
                .find(|(h, _)| h.to_string() == host)
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| panic!("no client certificates for {host}"))
        };
        for host in ["a.example.com", "b.example.com", "f.example.com"] {
            assert!(by_host(host).refuses_in_handshake(), "{host}");
        }
        assert!(!by_host("a.example.com").same_as(&by_host("b.example.com")));
        let nobody = tls::ClientAuth::refusing_all();
        for host in ["c.example.com", "d.example.com", "e.example.com"] {
            assert!(by_host(host).same_as(&nobody), "{host}");
        }
        assert!(c
            .client_auth
            .iter()
            .all(|(h, _)| !h.to_string().contains("plain")));
        // Each route of a validating listener checks its connection, under its
        // listener's settings; the plain HTTP listener's does not.
        let checks = |scheme, host: &str| {
            let t = c.config.routes.lookup_on(scheme, host, "/", None).unwrap();
            t.policy.request.iter().find_map(|f| match f {
                RequestFilter::ClientCert(a) => Some(a.owner.clone()),
                _ => None,
            })
        };
        use proxy_core::http::Scheme;
        let owner = checks(Scheme::Https, "b.example.com").flatten().unwrap();
        assert_eq!(
            &*owner,
            "Gateway infra/mtls spec.tls.frontend.perPort[0].tls.validation"
        );
        let (_, policy) = c.config.client_auth.get("b.example.com").unwrap();
        assert_eq!(policy.source, owner);
        assert_eq!(policy.verify, proxy_core::pipeline::VerifyClient::On);
        assert_eq!(checks(Scheme::Http, "b.example.com"), None);
        // The unusable listeners take no route.
        assert!(c
            .config
            .routes
            .lookup_on(Scheme::Https, "c.example.com", "/", None)
            .is_none());
    }

    #[test]
    fn frontend_insecure_fallback_asks_without_refusing() {
        let c = frontend_compiled("AllowInsecureFallback");
        let gw = gateway_of(&c, "mtls");
        let insecure = gw
            .conditions
            .iter()
            .find(|c| c.type_ == "InsecureFrontendValidationMode")
            .unwrap();
        assert!(insecure.status);
        assert_eq!(insecure.reason, "ConfigurationChanged");
        let (_, auth) = c
            .client_auth
            .iter()
            .find(|(h, _)| h.to_string() == "a.example.com")
            .unwrap();
        assert!(!auth.refuses_in_handshake());
        assert_eq!(auth.mode(), proxy_core::pipeline::VerifyClient::Optional);
        let (_, policy) = c.config.client_auth.get("a.example.com").unwrap();
        assert_eq!(policy.verify, proxy_core::pipeline::VerifyClient::Off);
        // The per-port listener's own mode stays AllowValidOnly.
        let (_, per_port) = c
            .client_auth
            .iter()
            .find(|(h, _)| h.to_string() == "b.example.com")
            .unwrap();
        assert!(per_port.refuses_in_handshake());
    }

    /// An Ingress asked first for a host's client certificates: a Gateway listener's
    /// routes there answer 503 (their check names the listener's settings), and the
    /// Gateway is told.
    #[test]
    fn frontend_validation_of_a_host_an_ingress_claimed_is_refused() {
        let ca = ca_config_map("infra", "default-ca");
        let c = compiled(&format!(
            r#"{FRONTEND}{}{ca}
---
apiVersion: v1
kind: Secret
metadata: {{name: ingress-ca, namespace: infra}}
data: {{ca.crt: {}}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portico}}
spec: {{controller: portico.dev/ingress-controller}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: infra
  annotations: {{nginx.ingress.kubernetes.io/auth-tls-secret: infra/ingress-ca}}
spec:
  ingressClassName: portico
  rules:
  - host: a.example.com
    http: {{paths: [{{path: /ing, pathType: Prefix, backend: {{service: {{name: v2, port: {{number: 8080}}}}}}}}]}}
"#,
            tls_secret("infra", "cert", "a.example.com"),
            {
                let pem = ca.split("ca.crt: |\n").nth(1).unwrap();
                let pem: String = pem.lines().map(|l| format!("{}\n", l.trim())).collect();
                serde_json::to_value(k8s_openapi::ByteString(pem.into_bytes()))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        ));
        let (_, policy) = c.config.client_auth.get("a.example.com").unwrap();
        assert_eq!(&*policy.source, "infra/web");
        assert!(c.diagnostics.iter().any(|d| d.kind == Kind::Gateway
            && d.field == "spec.tls.frontend"
            && d.message.contains("already checks client certificates")));
    }

    const BACKEND_CLIENT: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: client, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: ok.example.com}]
  tls:
    backend:
      clientCertificateRef: {group: "", kind: Secret, name: client-cert}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: broken.example.com}]
  tls:
    backend:
      clientCertificateRef: {name: nope}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: elsewhere.example.com}]
  tls:
    backend:
      clientCertificateRef: {name: app-cert, namespace: app}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wrong-kind, namespace: infra}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: kind.example.com}]
  tls:
    backend:
      clientCertificateRef: {group: "", kind: ConfigMap, name: client-cert}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: client}, {name: broken}, {name: gw, sectionName: same}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: p, namespace: infra}
spec:
  targetRefs: [{group: "", kind: Service, name: v1}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: backend-ca}]
    hostname: v1.example.com
"#;

    /// `tls.backend.clientCertificateRef`: the Gateway's routes name its certificate,
    /// and each BackendTLSPolicy setting is made again presenting it; an unusable one
    /// sets the Gateway's ResolvedRefs with the spec's reason, and its routes name a
    /// certificate with no settings (their requests to TLS backends fail).
    #[test]
    fn backend_client_certificates_go_through_backend_tls_policies() {
        let c = compiled(&format!(
            "{BACKEND_CLIENT}{}{}{}",
            tls_secret("infra", "client-cert", "client"),
            tls_secret("app", "app-cert", "client"),
            ca_config_map("infra", "backend-ca"),
        ));
        let resolved = |gw: &str| {
            let c = gateway_of(&c, gw)
                .conditions
                .iter()
                .find(|c| c.type_ == "ResolvedRefs")
                .unwrap();
            (c.status, c.reason)
        };
        assert_eq!(resolved("client"), (true, "ResolvedRefs"));
        assert_eq!(resolved("broken"), (false, "InvalidClientCertificateRef"));
        assert_eq!(resolved("elsewhere"), (false, "RefNotPermitted"));
        assert_eq!(
            resolved("wrong-kind"),
            (false, "InvalidClientCertificateRef")
        );
        assert_eq!(resolved("gw"), (true, "ResolvedRefs"));
        for gw in ["broken", "elsewhere", "wrong-kind"] {
            let accepted = gateway_of(&c, gw)
                .conditions
                .iter()
                .find(|c| c.type_ == "Accepted")
                .unwrap();
            assert!(accepted.status, "{gw}");
        }
        assert_eq!(
            fields_of(&c, Kind::Gateway),
            vec!["spec.tls.backend.clientCertificateRef"; 3]
        );
        let client_of = |host: &str| {
            c.config
                .routes
                .lookup_on(proxy_core::http::Scheme::Http, host, "/", None)
                .unwrap()
                .policy
                .backend_client_cert
                .clone()
        };
        let id = client_of("ok.example.com").unwrap();
        assert!(id.starts_with("Gateway infra/client client certificate infra/client-cert"));
        let policy_key = c.config.backend_tls.values().next().unwrap();
        let with = &c.config.backend_client_certs[&id][policy_key];
        assert!(c.config.upstream_tls.contains_key(with));
        assert_ne!(with, policy_key);
        // The broken one's routes name a certificate that has no settings.
        let broken = client_of("broken.example.com").unwrap();
        assert!(!c.config.backend_client_certs.contains_key(&broken));
        // Through a Gateway without one: the policy's own setting.
        assert_eq!(client_of("any.test"), None);
    }

    /// Each HTTPS rule checks that its connection was made for its listener (421
    /// otherwise), and the listeners with a hostname are listed for requests no rule
    /// takes; HTTP rules check nothing.
    #[test]
    fn https_rules_check_their_listeners_handshakes() {
        let c = compiled(&format!(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: multi, namespace: infra}}
spec:
  gatewayClassName: portico
  listeners:
  - {{name: any, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: wild, port: 443, protocol: HTTPS, hostname: "*.w.test", tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: exact, port: 443, protocol: HTTPS, hostname: a.w.test, tls: {{certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: multi}}, {{name: gw, sectionName: same}}]
  hostnames: [b.w.test]
  rules: [{{backendRefs: [{{name: v1, port: 8080}}]}}]
{}"#,
            tls_secret("infra", "cert", "w.test")
        ));
        use proxy_core::http::Scheme;
        let t = c
            .config
            .routes
            .lookup_on(Scheme::Https, "b.w.test", "/", None)
            .unwrap();
        let RequestFilter::Misdirected(scope) = &t.policy.request[0] else {
            panic!("{:?}", t.policy.request);
        };
        assert!(scope.admits("b.w.test"));
        assert!(!scope.admits("a.w.test"), "the exact listener's");
        assert!(!scope.admits("other.test"));
        let http = c
            .config
            .routes
            .lookup_on(Scheme::Http, "b.w.test", "/", None)
            .unwrap();
        assert!(!http
            .policy
            .request
            .iter()
            .any(|f| matches!(f, RequestFilter::Misdirected(_))));
        let named: Vec<String> = c
            .config
            .gateway_sni
            .iter()
            .map(|s| s.hostname.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(named, ["*.w.test", "a.w.test"]);
    }
}
