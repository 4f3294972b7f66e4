//! Which echo backends a manifest folder expects: every loopback address:port its
//! EndpointSlices and Endpoints name, with the Service and pod each address plays.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::echo::Identity;
use crate::manifests::{Document, ManifestError};

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Loopback backends (address -> identity) named by the documents; other addresses are
/// real cluster addresses an echo process could not bind, and are skipped.
pub fn loopback_backends(
    docs: &[Document],
) -> Result<BTreeMap<SocketAddr, Identity>, ManifestError> {
    let mut out = BTreeMap::new();
    for doc in docs {
        match (doc.api_version(), doc.kind()) {
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let slice: EndpointSlice = doc.parse_strict()?;
                let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
                let service = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .cloned()
                    .unwrap_or_default();
                let ports: Vec<u16> = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
                    .collect();
                for ep in slice.endpoints.iter().flatten() {
                    let pod = ep
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .or_else(|| ep.hostname.clone());
                    for address in &ep.addresses {
                        insert(&mut out, ns, &service, pod.as_deref(), address, &ports);
                    }
                }
            }
            ("v1", "Endpoints") => {
                let endpoints: Endpoints = doc.parse_strict()?;
                let ns = endpoints.metadata.namespace.as_deref().unwrap_or("default");
                let service = endpoints.metadata.name.clone().unwrap_or_default();
                for subset in endpoints.subsets.iter().flatten() {
                    let ports: Vec<u16> = subset
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| u16::try_from(p.port).ok())
                        .collect();
                    let all = subset
                        .addresses
                        .iter()
                        .flatten()
                        .chain(subset.not_ready_addresses.iter().flatten());
                    for addr in all {
                        let pod = addr
                            .target_ref
                            .as_ref()
                            .and_then(|r| r.name.clone())
                            .or_else(|| addr.hostname.clone());
                        insert(&mut out, ns, &service, pod.as_deref(), &addr.ip, &ports);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn insert(
    out: &mut BTreeMap<SocketAddr, Identity>,
    ns: &str,
    service: &str,
    pod: Option<&str>,
    address: &str,
    ports: &[u16],
) {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return;
    };
    if !ip.is_loopback() {
        return;
    }
    for port in ports {
        let pod = pod
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{service}-{}", address.replace(['.', ':'], "-")));
        out.entry(SocketAddr::new(ip, *port))
            .or_insert_with(|| Identity::new(ns, service, &pod));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::parse_documents;
    use std::path::Path;

    #[test]
    fn slices_and_endpoints_name_loopback_backends() {
        let docs = parse_documents(
            Path::new("x.yaml"),
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: kubia
addressType: IPv4
ports:
- name: http
  port: 18080
endpoints:
- addresses: ["127.0.0.11"]
  targetRef: {kind: Pod, name: kubia-1}
- addresses: ["10.1.2.3"]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external-service
subsets:
- addresses:
  - ip: 127.0.0.21
  ports:
  - port: 18081
"#,
        )
        .unwrap();
        let backends = loopback_backends(&docs).unwrap();
        assert_eq!(backends.len(), 2);
        let a: SocketAddr = "127.0.0.11:18080".parse().unwrap();
        assert_eq!(backends[&a], Identity::new("shop", "kubia", "kubia-1"));
        let b: SocketAddr = "127.0.0.21:18081".parse().unwrap();
        assert_eq!(
            backends[&b],
            Identity::new("default", "external-service", "external-service-127-0-0-21")
        );
    }
}
