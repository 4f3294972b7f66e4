use std::net::SocketAddr;
use std::time::Duration;

use proxy_core::l4::{L4Service, Protocol, ServicePortId};

use super::super::tests::store_from_yaml;
use super::super::{compile, CompileOptions, Diagnostic, DiagnosticReason, Severity};
use super::DEFAULT_AFFINITY_TIMEOUT;

fn opts() -> CompileOptions {
    CompileOptions {
        service_proxy: true,
        node_name: Some("n1".to_owned()),
        node_addresses: vec!["127.0.20.1".parse().unwrap(), "127.0.20.2".parse().unwrap()],
        ..CompileOptions::default()
    }
}

fn run(yaml: &str, opts: &CompileOptions) -> (Vec<L4Service>, Vec<Diagnostic>) {
    let compiled = compile(&store_from_yaml(yaml), opts);
    (compiled.config.l4, compiled.diagnostics)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn id(name: &str, port: &str) -> ServicePortId {
    ServicePortId::new("default", name, port)
}

/// The seeds' kubia Service with named ports and a named targetPort, its slice carrying
/// the resolved container port.
const KUBIA: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubia}
spec:
  clusterIP: 127.0.10.1
  selector: {app: kubia}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-abc
  labels: {kubernetes.io/service-name: kubia}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [127.0.11.1]
  nodeName: n1
  targetRef: {kind: Pod, name: kubia-1}
- addresses: [127.0.11.2]
  nodeName: n2
  conditions: {ready: false}
"#;

#[test]
fn cluster_ip_service_ports_resolve_to_slice_ports() {
    let (l4, diags) = run(KUBIA, &opts());
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(l4.len(), 2);
    let http = &l4[0];
    assert_eq!(http.id, id("kubia", "http"));
    assert_eq!(http.protocol, Protocol::Tcp);
    assert_eq!(http.cluster_addr, Some(addr("127.0.10.1:80")));
    assert!(http.node_addrs.is_empty(), "ClusterIP: no node ports");
    let eps: Vec<_> = http
        .endpoints
        .iter()
        .map(|e| (e.addr, e.ready, e.node_name.as_deref()))
        .collect();
    assert_eq!(
        eps,
        vec![
            (addr("127.0.11.1:8080"), true, Some("n1")),
            (addr("127.0.11.2:8080"), false, Some("n2")),
        ]
    );
    assert_eq!(http.client_ip_affinity, None);
    assert!(!http.external_traffic_local);

    let dns = &l4[1];
    assert_eq!(dns.id, id("kubia", "dns"));
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(dns.cluster_addr, Some(addr("127.0.10.1:53")));
    assert_eq!(dns.endpoints[0].addr, addr("127.0.11.1:5353"));
}

#[test]
fn nothing_without_the_service_proxy() {
    let (l4, _) = run(KUBIA, &CompileOptions::default());
    assert!(l4.is_empty());
}

#[test]
fn node_ports_on_every_node_address_with_policy_and_affinity() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: kubia-nodeport}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 30123}
---
apiVersion: v1
kind: Service
metadata: {name: kubia-lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  sessionAffinity: ClientIP
  ports:
  - {port: 80, nodePort: 30124}
---
apiVersion: v1
kind: Service
metadata: {name: kubia-lb-no-nodeports}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 10.96.0.12
  ports:
  - {port: 80}
"#;
    let (l4, diags) = run(yaml, &opts());
    assert_eq!(l4.len(), 3);
    let np = &l4[2];
    assert_eq!(np.id, id("kubia-nodeport", "80"));
    assert_eq!(np.cluster_addr, Some(addr("10.96.0.10:80")));
    assert_eq!(
        np.node_addrs,
        vec![addr("127.0.20.1:30123"), addr("127.0.20.2:30123")]
    );
    assert!(np.external_traffic_local);
    assert_eq!(np.client_ip_affinity, Some(Duration::from_secs(5)));

    let lb = &l4[0];
    assert_eq!(lb.id, id("kubia-lb", "80"));
    assert_eq!(lb.node_addrs.len(), 2);
    assert_eq!(lb.client_ip_affinity, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert!(!lb.external_traffic_local);
    assert!(l4[1].node_addrs.is_empty());

    // Neither has slices or Endpoints: said once per Service.
    let missing: Vec<_> = diags
        .iter()
        .filter(|d| d.reason == DiagnosticReason::NoEndpoints)
        .map(|d| d.object.name.as_str())
        .collect();
    assert_eq!(
        missing,
        vec!["kubia-lb", "kubia-lb-no-nodeports", "kubia-nodeport"]
    );
    assert_eq!(diags.len(), 3, "{diags:?}");
}

#[test]
fn headless_and_external_name_get_nothing_and_no_diagnostic() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: kubia-headless}
spec:
  clusterIP: None
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: external-service}
spec:
  type: ExternalName
  externalName: someapi.somecompany.com
  ports: [{port: 80}]
"#;
    let (l4, diags) = run(yaml, &opts());
    assert!(l4.is_empty());
    assert!(diags.is_empty(), "{diags:?}");
}

#[test]
fn selector_less_service_uses_hand_written_endpoints() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: external-service}
spec:
  clusterIP: 127.0.10.2
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external-service}
subsets:
- addresses: [{ip: 127.0.11.11}, {ip: 127.0.11.22}]
  ports: [{port: 8080}]
"#;
    let (l4, diags) = run(yaml, &opts());
    assert!(diags.is_empty(), "{diags:?}");
    let eps: Vec<_> = l4[0].endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(
        eps,
        vec![addr("127.0.11.11:8080"), addr("127.0.11.22:8080")]
    );
}

#[test]
fn bad_fields_are_reported_by_name() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: a-no-ip}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: b-bad-ip}
spec:
  clusterIP: 10.0.0.300
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: c-sctp}
spec:
  clusterIP: 10.0.0.3
  ports: [{name: s, port: 80, protocol: SCTP}, {name: t, port: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: d-affinity}
spec:
  clusterIP: 10.0.0.4
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: e-nodeport}
spec:
  type: NodePort
  clusterIP: 10.0.0.5
  externalTrafficPolicy: Sideways
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: f-type}
spec:
  type: Gateway
  clusterIP: 10.0.0.6
  ports: [{port: 80}]
"#;
    let (l4, diags) = run(yaml, &opts());
    let found: Vec<_> = diags
        .iter()
        .filter(|d| d.reason != DiagnosticReason::NoEndpoints)
        .map(|d| {
            (
                d.object.name.as_str(),
                d.field.as_str(),
                d.reason,
                d.severity,
            )
        })
        .collect();
    use DiagnosticReason::*;
    assert_eq!(
        found,
        vec![
            (
                "a-no-ip",
                "spec.clusterIP",
                ServiceNotForwarded,
                Severity::Warning
            ),
            (
                "b-bad-ip",
                "spec.clusterIP",
                InvalidService,
                Severity::Error
            ),
            (
                "c-sctp",
                "spec.ports[0].protocol",
                UnsupportedProtocol,
                Severity::Warning
            ),
            (
                "d-affinity",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                InvalidService,
                Severity::Error
            ),
            (
                "e-nodeport",
                "spec.externalTrafficPolicy",
                InvalidService,
                Severity::Error
            ),
            (
                "e-nodeport",
                "spec.ports[0].nodePort",
                ServiceNotForwarded,
                Severity::Warning
            ),
            ("f-type", "spec.type", InvalidService, Severity::Error),
        ]
    );
    let sctp = diags
        .iter()
        .find(|d| d.reason == UnsupportedProtocol)
        .unwrap();
    assert_eq!(
        sctp.to_string(),
        "Service default/c-sctp: spec.ports[0].protocol: protocol \"SCTP\" is not forwarded (TCP and UDP are)"
    );
    // What is still valid is still served.
    let ids: Vec<_> = l4.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        ids,
        vec![
            "default/c-sctp:t",
            "default/d-affinity:80",
            "default/e-nodeport:80"
        ]
    );
    assert_eq!(l4[1].client_ip_affinity, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert!(!l4[2].external_traffic_local);
    assert!(l4[2].node_addrs.is_empty());
}

#[test]
fn local_policy_without_node_name_is_reported() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: NodePort
  clusterIP: 10.0.0.7
  externalTrafficPolicy: Local
  ports: [{port: 80, nodePort: 30080}]
"#;
    let o = CompileOptions {
        node_name: None,
        ..opts()
    };
    let (l4, diags) = run(yaml, &o);
    assert_eq!(l4.len(), 1);
    assert!(diags.iter().any(|d| d.field == "spec.externalTrafficPolicy"
        && d.reason == DiagnosticReason::ServiceNotForwarded));
}

#[test]
fn a_listen_address_claimed_twice_goes_to_the_first_service() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: one}
spec:
  type: NodePort
  clusterIP: 10.0.0.8
  ports: [{port: 80, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: two}
spec:
  type: NodePort
  clusterIP: 10.0.0.9
  ports: [{port: 80, nodePort: 30080}, {port: 81, nodePort: 30080, protocol: UDP}]
"#;
    let (l4, diags) = run(yaml, &opts());
    let conflicts: Vec<_> = diags
        .iter()
        .filter(|d| d.reason == DiagnosticReason::ListenAddressConflict)
        .map(|d| (d.object.name.as_str(), d.field.as_str()))
        .collect();
    // One per node address, on the TCP port only (UDP 30080 is a different socket).
    assert_eq!(
        conflicts,
        vec![
            ("two", "spec.ports[0].nodePort"),
            ("two", "spec.ports[0].nodePort")
        ]
    );
    assert_eq!(l4[0].node_addrs.len(), 2);
    assert!(l4[1].node_addrs.is_empty());
    assert_eq!(l4[1].cluster_addr, Some(addr("10.0.0.9:80")));
    assert_eq!(l4[2].protocol, Protocol::Udp);
    assert_eq!(l4[2].node_addrs.len(), 2);
}

/// publishNotReadyAddresses (or the older annotation): every endpoint forwarded, as the
/// EndpointSlice controller would have marked it ready.
#[test]
fn publish_not_ready_addresses_forwards_to_every_endpoint() {
    let ready = |yaml: &str| {
        let (l4, _) = run(yaml, &opts());
        l4[0]
            .endpoints
            .iter()
            .map(|e| (e.addr, e.ready))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ready(KUBIA),
        [
            (addr("127.0.11.1:8080"), true),
            (addr("127.0.11.2:8080"), false)
        ]
    );
    let field = KUBIA.replace(
        "  selector: {app: kubia}\n",
        "  selector: {app: kubia}\n  publishNotReadyAddresses: true\n",
    );
    let annotation = KUBIA.replace(
        "metadata: {name: kubia}\n",
        "metadata:\n  name: kubia\n  annotations:\n    \
         service.alpha.kubernetes.io/tolerate-unready-endpoints: \"true\"\n",
    );
    for yaml in [field, annotation] {
        assert_eq!(
            ready(&yaml),
            [
                (addr("127.0.11.1:8080"), true),
                (addr("127.0.11.2:8080"), true)
            ]
        );
    }
}

/// A NodePort Service from a folder that sets no clusterIP: its node ports still serve.
#[test]
fn a_node_port_service_without_cluster_ip_serves_its_node_ports() {
    let yaml = KUBIA
        .replace("  clusterIP: 127.0.10.1\n", "  type: NodePort\n")
        .replace(
            "{name: http, port: 80, targetPort: http}",
            "{name: http, port: 80, targetPort: http, nodePort: 30080}",
        )
        .replace(
            "{name: dns, port: 53, targetPort: 5353, protocol: UDP}",
            "{name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}",
        );
    let (l4, diags) = run(&yaml, &opts());
    assert_eq!(l4.len(), 2, "{diags:?}");
    assert_eq!(l4[0].cluster_addr, None);
    assert_eq!(
        l4[0].node_addrs,
        [addr("127.0.20.1:30080"), addr("127.0.20.2:30080")]
    );
    assert!(
        diags.iter().any(|d| d.field == "spec.clusterIP"
            && d.message.contains("only its node ports are forwarded")),
        "{diags:?}"
    );
}
