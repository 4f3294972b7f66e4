//! `--dns-addr`: the answers cluster DNS gives about Services, from the same store the
//! proxy serves, for a laptop without a cluster and for clients of the L4 dataplane.
//!
//! As the Kubernetes DNS specification has them, in the zone `--cluster-domain`:
//! - `SVC.NS.svc.ZONE`: A/AAAA with the clusterIPs; for a headless Service
//!   (`clusterIP: None`) the ready endpoints' addresses; CNAME to `externalName` for an
//!   ExternalName Service.
//! - `HOST.SVC.NS.svc.ZONE` for each ready endpoint of a headless Service: HOST is the
//!   endpoint's `hostname`, or its address with dashes (`10-1-2-3`).
//! - SRV `_PORT._PROTO.SVC.NS.svc.ZONE` for each named port: the Service name and port,
//!   or, headless, one per ready endpoint with its name and target port.
//! - Any other name in the zone: NXDOMAIN (NOERROR without answers for a name that has
//!   records of other types, or names below it). Names outside the zone are refused:
//!   this is no recursive resolver.
//!
//! Readiness (and `publishNotReadyAddresses`) is read as the proxy reads it, by
//! [`EndpointIndex`]. The zone is rebuilt at every publish and swapped whole, so an
//! answer never mixes two versions. The wire format is hickory-proto's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::compile::endpoints::EndpointIndex;
use crate::store::{ObjectKey, Store};

/// Seconds an answer may be cached: short, as cluster DNS's, so changes show soon.
const TTL: u32 = 5;
/// The largest UDP answer to a query without EDNS (RFC 1035).
const PLAIN_UDP: usize = 512;
/// The largest UDP answer offered with EDNS (the DNS flag day's safe size).
const EDNS_UDP: u16 = 1232;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP clients served at once; more wait in the listen queue.
const TCP_CLIENTS: usize = 256;

/// Why the DNS server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("--cluster-domain {domain:?} is not a DNS name: {reason}")]
    Domain { domain: String, reason: String },
}

/// The records of one published store.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    /// Records by owner name (lowercase, fully qualified).
    records: HashMap<String, Vec<Record>>,
    /// Every name that exists below the zone, with records or without (`NS.svc.ZONE`
    /// exists because Services below it do).
    names: HashSet<String>,
}

/// The lookup key of a name: lowercase text, fully qualified.
fn key(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

impl Zone {
    fn empty(origin: &Name) -> Self {
        Self {
            origin: origin.clone(),
            records: HashMap::new(),
            names: HashSet::new(),
        }
    }

    /// The records of every Service in `store`.
    pub fn build(store: &Store, origin: &Name) -> Self {
        let index = EndpointIndex::new(store);
        let mut zone = Self::empty(origin);
        for (svc_key, service) in store.services.iter() {
            zone.add_service(&index, svc_key, service);
        }
        zone
    }

    /// `LABEL.` under `parent`, if it makes a DNS name.
    fn child(label: &str, parent: &Name) -> Option<Name> {
        Name::from_ascii(label).ok()?.append_domain(parent).ok()
    }

    /// `name` and every name between it and the zone exist, with records or without.
    fn exists(&mut self, name: &Name) {
        let mut name = name.clone();
        while name.num_labels() > self.origin.num_labels() {
            self.names.insert(key(&name));
            name = name.base_name();
        }
    }

    fn add(&mut self, name: &Name, rdata: RData) {
        let record = Record::from_rdata(name.clone(), TTL, rdata);
        self.exists(name);
        let records = self.records.entry(key(name)).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
    }

    fn add_address(&mut self, name: &Name, ip: IpAddr) {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.add(name, rdata);
    }

    fn add_service(&mut self, index: &EndpointIndex<'_>, svc_key: &ObjectKey, service: &Service) {
        // Names and namespaces are single labels; one with a dot would land elsewhere.
        let labels = [svc_key.name.as_str(), svc_key.namespace.as_str()];
        let base = labels
            .iter()
            .all(|l| !l.is_empty() && !l.contains('.'))
            .then(|| format!("{}.{}.svc", svc_key.name, svc_key.namespace))
            .and_then(|text| Self::child(&text, &self.origin));
        let Some(base) = base else {
            tracing::debug!(service = %svc_key, "Service name makes no DNS name; no records");
            return;
        };
        // A Service's name exists even with nothing to answer (no clusterIP set in a
        // manifest folder, no ready endpoint): NOERROR without answers, not NXDOMAIN.
        self.exists(&base);
        let Some(spec) = service.spec.as_ref() else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .map(|n| n.trim_end_matches('.'))
                .filter(|n| !n.is_empty())
                .and_then(|n| Name::from_ascii(format!("{n}.")).ok());
            match target {
                Some(target) => self.add(&base, RData::CNAME(CNAME(target))),
                None => {
                    tracing::debug!(service = %svc_key, "ExternalName is not a DNS name; no record")
                }
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec.ports.as_deref().unwrap_or_default();
        if headless {
            let ready: Vec<_> = index
                .addresses(svc_key, service)
                .into_iter()
                .filter(|a| a.ready)
                .collect();
            // Each endpoint's own name, and the port it listens on for each Service port.
            let mut hosts: BTreeMap<IpAddr, Name> = BTreeMap::new();
            for a in &ready {
                self.add_address(&base, a.ip);
                let label = match &a.hostname {
                    Some(h) => h.clone(),
                    None => a.ip.to_string().replace(['.', ':'], "-"),
                };
                if let Some(host) = Self::child(&label, &base) {
                    self.add_address(&host, a.ip);
                    hosts.insert(a.ip, host);
                }
            }
            for port in ports {
                let Some(srv) = srv_name(port, &base) else {
                    continue;
                };
                // Readiness is judged above; here only each endpoint's port is wanted.
                let (endpoints, _) = index.resolve(svc_key, service, port, &mut Vec::new());
                let weight = u16::try_from(100 / hosts.len().max(1)).unwrap_or(1).max(1);
                for ep in &endpoints {
                    if let Some(host) = hosts.get(&ep.addr.ip()) {
                        let rdata = SRV::new(0, weight, ep.addr.port(), host.clone());
                        self.add(&srv, RData::SRV(rdata));
                    }
                }
            }
        } else {
            let ips = cluster_ips(service);
            for ip in &ips {
                self.add_address(&base, *ip);
            }
            if ips.is_empty() {
                return;
            }
            for port in ports {
                let (Some(srv), Ok(number)) = (srv_name(port, &base), u16::try_from(port.port))
                else {
                    continue;
                };
                self.add(&srv, RData::SRV(SRV::new(0, 100, number, base.clone())));
            }
        }
    }

    /// The answer to `request`.
    pub fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_UDP);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response;
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        response.add_query(query.clone());
        let name = query.name();
        if query.query_class() != DNSClass::IN || !self.origin.zone_of(name) {
            response.metadata.response_code = ResponseCode::Refused;
            return response;
        }
        response.metadata.authoritative = true;
        let owner = key(name);
        let qtype = query.query_type();
        match self.records.get(&owner) {
            Some(records) => {
                // A CNAME is the name's only record: it answers every type.
                let cname = records
                    .iter()
                    .find(|r| r.record_type() == RecordType::CNAME);
                let answers: Vec<&Record> = match cname {
                    Some(c) => vec![c],
                    None => records
                        .iter()
                        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                        .collect(),
                };
                for r in &answers {
                    if let RData::SRV(srv) = &r.data {
                        for extra in self.records.get(&key(&srv.target)).into_iter().flatten() {
                            if !response.additionals.contains(extra) {
                                response.add_additional(extra.clone());
                            }
                        }
                    }
                }
                if answers.is_empty() {
                    response.add_authority(self.soa());
                }
                response.add_answers(answers.into_iter().cloned());
            }
            None if *name == self.origin || self.names.contains(&owner) => {
                if *name == self.origin && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    response.add_answer(self.soa());
                } else {
                    response.add_authority(self.soa());
                }
            }
            None => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(self.soa());
            }
        }
        response
    }

    /// The zone's SOA, for negative answers (its minimum is how long they may be cached).
    fn soa(&self) -> Record {
        let ns = Self::child("ns.dns", &self.origin).unwrap_or_else(|| self.origin.clone());
        let mbox = Self::child("hostmaster", &self.origin).unwrap_or_else(|| self.origin.clone());
        let soa = SOA::new(ns, mbox, 1, 7200, 1800, 86400, TTL);
        Record::from_rdata(self.origin.clone(), TTL, RData::SOA(soa))
    }
}

/// `_NAME._PROTO.` under `base` for a named port; unnamed ports have no SRV record.
fn srv_name(port: &k8s_openapi::api::core::v1::ServicePort, base: &Name) -> Option<Name> {
    let name = port.name.as_deref().filter(|n| !n.is_empty())?;
    let proto = port
        .protocol
        .as_deref()
        .unwrap_or("TCP")
        .to_ascii_lowercase();
    Zone::child(&format!("_{name}._{proto}"), base)
}

/// `spec.clusterIPs` (or `spec.clusterIP`), the addresses that parse.
fn cluster_ips(service: &Service) -> Vec<IpAddr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    listed.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The DNS server: the current zone, swapped at each publish, and its listeners.
pub struct DnsServer {
    origin: Name,
    zone: ArcSwap<Zone>,
    /// Set at the first update: until the store has been loaded and published, every
    /// name would look absent, and a negative answer gets cached; SERVFAIL is retried.
    loaded: std::sync::atomic::AtomicBool,
}

impl DnsServer {
    /// A server for the zone `domain` (`cluster.local`), with no records until the first
    /// [`DnsServer::update`].
    pub fn new(domain: &str) -> Result<Arc<Self>, DnsError> {
        let bad = |reason: String| DnsError::Domain {
            domain: domain.to_owned(),
            reason,
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(bad("empty".to_owned()));
        }
        let origin = Name::from_ascii(format!("{trimmed}."))
            .map_err(|e| bad(e.to_string()))?
            .to_lowercase();
        Ok(Arc::new(Self {
            zone: ArcSwap::from_pointee(Zone::empty(&origin)),
            origin,
            loaded: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Answer from `store` from now on.
    pub fn update(&self, store: &Store) {
        let zone = Zone::build(store, &self.origin);
        tracing::debug!(names = zone.records.len(), "DNS zone updated");
        self.zone.store(Arc::new(zone));
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The wire answer to the wire query `bytes`. Over UDP it is at most 512 bytes, or
    /// what the query's EDNS allows up to 1232; a longer one is cut to its header and
    /// question and marked truncated, so the client asks again over TCP. `None` for input
    /// too short to answer at all.
    pub fn respond(&self, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let response = match Message::from_vec(bytes) {
            Ok(request) => {
                let mut response = self.zone.load().answer(&request);
                if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
                    response.answers.clear();
                    response.authorities.clear();
                    response.additionals.clear();
                    response.metadata.authoritative = false;
                    response.metadata.response_code = ResponseCode::ServFail;
                }
                if let Some(q) = request.queries.first() {
                    tracing::debug!(
                        name = %q.name(),
                        qtype = %q.query_type(),
                        rcode = %response.metadata.response_code,
                        answers = response.answers.len(),
                        "DNS query"
                    );
                }
                let limit = if !udp {
                    usize::from(u16::MAX)
                } else if let Some(edns) = &request.edns {
                    usize::from(edns.max_payload().clamp(512, EDNS_UDP))
                } else {
                    PLAIN_UDP
                };
                match response.to_vec() {
                    Ok(wire) if wire.len() <= limit => return Some(wire),
                    Ok(_) => response.truncate(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode a DNS answer");
                        let mut failed = response.truncate();
                        failed.metadata.truncation = false;
                        failed.metadata.response_code = ResponseCode::ServFail;
                        failed
                    }
                }
            }
            Err(_) => {
                let id = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            }
        };
        response.to_vec().ok()
    }

    /// Answer queries arriving on `socket` until the process ends.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    // An ICMP error for an earlier answer, surfaced here on some systems.
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            };
            if let Some(answer) = self.respond(&buf[..n], true) {
                if let Err(e) = socket.send_to(&answer, peer).await {
                    tracing::debug!(error = %e, %peer, "DNS UDP answer not sent");
                }
            }
        }
    }

    /// Accept TCP clients on `listener` until the process ends; each may send several
    /// length-prefixed queries (RFC 7766).
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CLIENTS));
        loop {
            // A slot before accepting: idle clients cannot pile up without bound.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let server = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = server.serve_connection(stream).await {
                            tracing::debug!(error = %e, %peer, "DNS TCP connection ended");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                // Idle, or closed between queries: the ordinary end of a connection.
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let Some(answer) = self.respond(&query, false) else {
                return Ok(());
            };
            let Ok(n) = u16::try_from(answer.len()) else {
                return Ok(());
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&answer);
            stream.write_all(&framed).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;
    use crate::sources::files::{parse, Format};

    fn zone(yaml: &str) -> Zone {
        let mut store = Store::default();
        for obj in parse(std::path::Path::new("m.yaml"), Format::Yaml, yaml).unwrap() {
            store.apply(obj);
        }
        Zone::build(&store, &Name::from_ascii("cluster.local.").unwrap())
    }

    fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
        let mut request = Message::query();
        request.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        zone.answer(&request)
    }

    fn rdata(m: &Message) -> Vec<String> {
        let mut out: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        out.sort();
        out
    }

    const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: kubia}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: kubia-headless}
spec:
  clusterIP: None
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-headless-1
  labels: {kubernetes.io/service-name: kubia-headless}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
  hostname: kubia-0
- addresses: [10.1.0.2]
- addresses: [10.1.0.3]
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: external-service, namespace: web}
spec:
  type: ExternalName
  externalName: api.somecompany.com
";

    #[test]
    fn services_answer_as_cluster_dns_does() {
        let z = zone(SERVICES);
        let m = ask(&z, "kubia.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(rdata(&m), ["10.96.0.10"]);

        // Headless: the ready endpoints only; each by its hostname or dashed address.
        let m = ask(
            &z,
            "KUBIA-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&m), ["10.1.0.1", "10.1.0.2"]);
        let m = ask(
            &z,
            "kubia-0.kubia-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&m), ["10.1.0.1"]);
        let m = ask(
            &z,
            "10-1-0-2.kubia-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&m), ["10.1.0.2"]);

        let m = ask(
            &z,
            "_http._tcp.kubia.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(rdata(&m), ["0 100 80 kubia.default.svc.cluster.local."]);
        assert_eq!(m.additionals.len(), 1);
        let m = ask(
            &z,
            "_http._tcp.kubia-headless.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            rdata(&m),
            [
                "0 50 8080 10-1-0-2.kubia-headless.default.svc.cluster.local.",
                "0 50 8080 kubia-0.kubia-headless.default.svc.cluster.local."
            ]
        );

        let m = ask(&z, "external-service.web.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&m), ["api.somecompany.com."]);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn missing_names_are_nxdomain_and_others_refused() {
        let z = zone(SERVICES);
        let m = ask(&z, "nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "SOA for negative caching");
        // A name with other records, or with names below it: no error, no answer.
        let m = ask(&z, "kubia.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask(&z, "default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let m = ask(&z, "example.com.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn publish_not_ready_addresses_puts_every_endpoint_in_dns() {
        let text = SERVICES.replace(
            "  clusterIP: None\n",
            "  clusterIP: None\n  publishNotReadyAddresses: true\n",
        );
        let z = zone(&text);
        let m = ask(
            &z,
            "kubia-headless.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdata(&m), ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
    }

    #[test]
    fn dual_stack_services_answer_aaaa_too() {
        let z = zone(
            "apiVersion: v1\nkind: Service\nmetadata: {name: dual}\nspec:\n  \
             clusterIP: 10.96.0.20\n  clusterIPs: [10.96.0.20, \"fd00::20\"]\n  ports: [{port: 80}]\n",
        );
        let m = ask(&z, "dual.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdata(&m), ["fd00::20"]);
        let m = ask(&z, "dual.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&m), ["10.96.0.20"]);
        // An unnamed port has no SRV record; the name below the Service does not exist.
        let m = ask(
            &z,
            "_http._tcp.dual.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn nothing_is_denied_before_the_first_publish() {
        let server = DnsServer::new("cluster.local").unwrap();
        let mut request = Message::query();
        let name = Name::from_ascii("kubia.default.svc.cluster.local.").unwrap();
        request.add_query(Query::query(name, RecordType::A));
        let wire = request.to_vec().unwrap();
        let rcode = |answer: Vec<u8>| Message::from_vec(&answer).unwrap().metadata.response_code;
        assert_eq!(
            rcode(server.respond(&wire, true).unwrap()),
            ResponseCode::ServFail
        );
        server.update(&Store::default());
        assert_eq!(
            rcode(server.respond(&wire, true).unwrap()),
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let server = DnsServer::new("cluster.local").unwrap();
        assert_eq!(server.respond(&[1], true), None);
        let answer = server.respond(&[0x12, 0x34, 0xff], true).unwrap();
        let m = Message::from_vec(&answer).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(DnsServer::new("").is_err());
        assert!(DnsServer::new("bad..domain").is_err());
    }
}
