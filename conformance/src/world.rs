//! The state of one scenario and its steps: the upstream suite's steps, plus the few
//! Portico's own scenarios add (backends with not-ready pods, selector-less Services,
//! IngressClasses, cookies).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use rustls::RootCertStore;
use serde_json::{json, Value};

use crate::certs::SelfSigned;
use crate::client::{self, Captured, ProxyAddrs, Request, TlsTrust};
use crate::cluster::Cluster;
use crate::echo::{EchoServer, Identity};
use crate::gherkin_run::{capture, Step};

/// Our class and controller, as the install manifests name them.
pub const CLASS: &str = "portico";
pub const CONTROLLER: &str = "portico.dev/ingress-controller";
/// How long the controller may take to reflect a change on a loaded machine.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

const SYNC_NS: &str = "portico-sync";
const SYNC_HOST: &str = "sync.portico.test";

pub type StepResult = Result<(), String>;

/// A pod of a backend: an echo listener and whether its endpoint is ready.
struct Pod {
    server: EchoServer,
    ready: bool,
}

/// A backend Service and its pods.
struct Backend {
    port_name: String,
    port: i32,
    selectorless: bool,
    pods: Vec<Pod>,
}

/// One scenario's state.
pub struct World<C: Cluster> {
    cluster: C,
    namespace: Option<String>,
    ingress: Option<Value>,
    backends: BTreeMap<String, Backend>,
    certs: BTreeMap<String, SelfSigned>,
    last: Option<Captured>,
    many: Vec<Captured>,
    cookies: BTreeMap<String, String>,
    dirty: BTreeSet<String>,
    generation: u32,
    sync_pod: Option<EchoServer>,
}

/// A fresh loopback address for each pod, so pods differ by IP as in a cluster. The
/// process id spreads concurrent test processes over different ranges.
fn next_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 64) * 4096;
        let (b, c, d) = (1 + ((n >> 16) % 250) as u8, (n >> 8) as u8, n as u8);
        if d != 0 && d != 255 {
            return IpAddr::V4(Ipv4Addr::new(127, b, c, d));
        }
    }
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl<C: Cluster> World<C> {
    /// A world on `cluster`, with our IngressClass (the default class, as the upstream
    /// suite's Ingresses name no class) applied and the controller started.
    pub async fn new(mut cluster: C) -> Result<Self, String> {
        cluster
            .apply(ingress_class(CLASS, CONTROLLER, true))
            .map_err(|e| e.to_string())?;
        cluster.start().await.map_err(|e| e.to_string())?;
        Ok(Self {
            cluster,
            namespace: None,
            ingress: None,
            backends: BTreeMap::new(),
            certs: BTreeMap::new(),
            last: None,
            many: Vec::new(),
            cookies: BTreeMap::new(),
            dirty: BTreeSet::new(),
            generation: 0,
            sync_pod: None,
        })
    }

    fn proxy(&mut self) -> Result<ProxyAddrs, String> {
        self.cluster
            .controller()
            .map(|c| c.proxy)
            .ok_or_else(|| "the controller is not running".to_owned())
    }

    fn apply(&mut self, obj: Value) -> StepResult {
        if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
            self.dirty.insert(kind.to_owned());
        }
        self.cluster.apply(obj).map_err(|e| e.to_string())
    }

    fn ns(&self) -> Result<String, String> {
        self.namespace
            .clone()
            .ok_or_else(|| "no namespace yet: a step must create one first".to_owned())
    }

    fn log_tail(&mut self) -> String {
        self.cluster
            .controller()
            .map(|c| c.log_tail())
            .unwrap_or_default()
    }

    /// Run one step.
    pub async fn step(&mut self, step: &Step) -> StepResult {
        let t = step.text.as_str();
        let doc = || {
            step.docstring
                .clone()
                .ok_or_else(|| "this step needs a doc string".to_owned())
        };
        let table = || {
            step.table
                .clone()
                .ok_or_else(|| "this step needs a data table".to_owned())
        };
        if t == "a new random namespace" {
            return self.new_namespace();
        }
        if let Some(c) = capture(r#"an Ingress resource named "{}" with this spec:"#, t) {
            let spec: Value = yaml(&doc()?)?;
            let ns = self.ns()?;
            let obj = json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": c[0], "namespace": ns},
                "spec": spec,
            });
            return self.create_ingress(obj).await;
        }
        if t == "an Ingress resource in a new random namespace" {
            self.new_namespace()?;
            return self.create_ingress(yaml(&doc()?)?).await;
        }
        if t == "an Ingress resource" {
            return self.create_ingress(yaml(&doc()?)?).await;
        }
        if let Some(c) = capture(
            r#"a self-signed TLS secret named "{}" for the "{}" hostname"#,
            t,
        ) {
            let ns = self.ns()?;
            let cert = SelfSigned::generate(&[c[1].as_str()]).map_err(|e| e.to_string())?;
            let secret =
                serde_json::to_value(cert.to_secret(&ns, &c[0])).map_err(|e| e.to_string())?;
            self.apply(with_type_meta(secret, "v1", "Secret"))?;
            self.certs.insert(c[0].clone(), cert);
            return Ok(());
        }
        if t == "The Ingress status shows the IP address or FQDN where it is exposed" {
            return self.status_shows_address().await;
        }
        if t == "The Ingress status should not contain the IP address or FQDN" {
            return self.status_has_no_address().await;
        }
        if let Some(c) = capture(
            r#"The backend deployment "{}" for the ingress resource is scaled to {n}"#,
            t,
        ) {
            let n: usize = c[1].parse().map_err(|_| "bad replica count")?;
            return self.scale(&c[0], n, 0).await;
        }
        if let Some(c) = capture(r#"I send a "{}" request to http://"{}"/"{}""#, t) {
            let method = parse_method(&c[0])?;
            let req = Request::new(method, "http", &c[1], &c[2]);
            return self.send_one(req).await;
        }
        if let Some(c) = capture(r#"I send a "{}" request to "{}""#, t) {
            let req = Request::parse(parse_method(&c[0])?, &c[1]).map_err(|e| e.to_string())?;
            return self.send_one(req).await;
        }
        if let Some(c) = capture(r#"I send {n} requests to "{}" keeping cookies"#, t) {
            return self.send_many(&c[0], &c[1], true).await;
        }
        if let Some(c) = capture(r#"I send {n} requests to "{}""#, t) {
            return self.send_many(&c[0], &c[1], false).await;
        }
        if let Some(c) = capture("the response status-code must be {n}", t) {
            let got = self.last()?.status.as_u16().to_string();
            return expect_eq("response status code", &c[0], &got, self.last_body());
        }
        if let Some(c) = capture(r#"the response must be served by the "{}" service"#, t) {
            let echo = self.last_echo()?;
            let ns = self.ns()?;
            expect_eq("serving service", &c[0], &echo.service, self.last_body())?;
            return expect_eq("serving namespace", &ns, &echo.namespace, self.last_body());
        }
        if let Some(c) = capture(r#"the response proto must be "{}""#, t) {
            let got = self.last()?.proto.clone();
            return expect_eq("response proto", &c[0], &got, self.last_body());
        }
        if t == "the response headers must contain <key> with matching <value>" {
            let headers = self.last()?.headers.clone();
            return check_table(&table()?, |key| {
                headers
                    .get_all(key)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect()
            });
        }
        if let Some(c) = capture(r#"the request method must be "{}""#, t) {
            let echo = self.last_echo()?;
            return expect_eq("request method", &c[0], &echo.method, self.last_body());
        }
        if let Some(c) = capture(r#"the request path must be "{}""#, t) {
            let want = if c[0].starts_with('/') {
                c[0].clone()
            } else {
                format!("/{}", c[0])
            };
            let echo = self.last_echo()?;
            return expect_eq("request path", &want, &echo.path, self.last_body());
        }
        if let Some(c) = capture(r#"the request proto must be "{}""#, t) {
            let echo = self.last_echo()?;
            return expect_eq("request proto", &c[0], &echo.proto, self.last_body());
        }
        if let Some(c) = capture(r#"the request host must be "{}""#, t) {
            let echo = self.last_echo()?;
            return expect_eq("request host", &c[0], &echo.host, self.last_body());
        }
        if t == "the request headers must contain <key> with matching <value>" {
            let echo = self.last_echo()?;
            return check_table(&table()?, |key| echo.header(key).to_vec());
        }
        if let Some(c) = capture(r#"the secure connection must verify the "{}" hostname"#, t) {
            let last = self.last()?;
            if last.verified_host.as_deref() != Some(c[0].as_str()) {
                return Err(format!(
                    "expected the certificate to be verified for {:?}, verified for {:?}",
                    c[0], last.verified_host
                ));
            }
            let served = last.peer_cert.clone().unwrap_or_default();
            if !self.certs.values().any(|cert| cert.cert_der == served) {
                return Err(
                    "the server presented a certificate from no Secret of this scenario".into(),
                );
            }
            return Ok(());
        }
        if let Some(c) = capture(
            "all the responses status-code must be {n} and the response body should contain the IP address of {n} different Kubernetes pods",
            t,
        ) {
            self.all_status(&c[0])?;
            let ips: BTreeSet<String> = self
                .many_echoes()?
                .iter()
                .map(|e| client::strip_port(&e.pod_addr).to_owned())
                .collect();
            return expect_eq("number of different pod IPs", &c[1], &ips.len().to_string(), "");
        }
        // Portico's own steps.
        if let Some(c) = capture(r#"an IngressClass "{}" for the controller "{}""#, t) {
            return self.apply(ingress_class(&c[0], &c[1], false));
        }
        if let Some(c) = capture(r#"the IngressClass "{}" is the default class"#, t) {
            return self.apply(ingress_class(&c[0], CONTROLLER, true));
        }
        if let Some(c) = capture(r#"the IngressClass "{}" is not the default class"#, t) {
            return self.apply(ingress_class(&c[0], CONTROLLER, false));
        }
        if let Some(c) = capture(
            r#"a backend service "{}" with {n} ready pods and {n} not-ready pods"#,
            t,
        ) {
            let (ready, not_ready) = (num(&c[1])?, num(&c[2])?);
            return self
                .backend(&c[0], "http", 8080, false, ready, not_ready)
                .await;
        }
        if let Some(c) = capture(r#"a backend service "{}" with {n} ready pods"#, t) {
            return self
                .backend(&c[0], "http", 8080, false, num(&c[1])?, 0)
                .await;
        }
        if let Some(c) = capture(
            r#"a backend service "{}" with port {n} named "{}" and {n} ready pods"#,
            t,
        ) {
            let port: i32 = c[1].parse().map_err(|_| "bad port")?;
            return self
                .backend(&c[0], &c[2], port, false, num(&c[3])?, 0)
                .await;
        }
        if let Some(c) = capture(
            r#"a selector-less service "{}" with {n} hand-written endpoints"#,
            t,
        ) {
            return self.backend(&c[0], "", 80, true, num(&c[1])?, 0).await;
        }
        if let Some(c) = capture(r#"the request must be answered by "{}""#, t) {
            let last = self.last()?;
            if c[0] == "404" || c[0] == "503" {
                let got = last.status.as_u16().to_string();
                return expect_eq("response status code", &c[0], &got, self.last_body());
            }
            let got = last.status.as_u16().to_string();
            expect_eq("response status code", "200", &got, self.last_body())?;
            let echo = self.last_echo()?;
            return expect_eq("serving service", &c[0], &echo.service, self.last_body());
        }
        if let Some(c) = capture("all the responses status-code must be {n}", t) {
            return self.all_status(&c[0]);
        }
        if let Some(c) = capture("the responses must come from {n} different pods", t) {
            let pods: BTreeSet<String> = self.many_echoes()?.into_iter().map(|e| e.pod).collect();
            return expect_eq(
                "number of different pods",
                &c[0],
                &pods.len().to_string(),
                "",
            );
        }
        if t == "no response must come from a not-ready pod" {
            let not_ready: BTreeSet<String> = self
                .backends
                .values()
                .flat_map(|b| b.pods.iter())
                .filter(|p| !p.ready)
                .map(|p| p.server.identity().pod.clone())
                .collect();
            for echo in self.many_echoes()? {
                if not_ready.contains(&echo.pod) {
                    return Err(format!("not-ready pod {} answered a request", echo.pod));
                }
            }
            return Ok(());
        }
        if t == "all the responses must come from the same pod" {
            let pods: BTreeSet<String> = self.many_echoes()?.into_iter().map(|e| e.pod).collect();
            return expect_eq("number of different pods", "1", &pods.len().to_string(), "");
        }
        if let Some(c) = capture(r#"the first response must set the cookie "{}""#, t) {
            let first = self.many.first().ok_or("no responses")?;
            let found = first.set_cookies().iter().any(|c2| {
                c2.split(';')
                    .next()
                    .and_then(|kv| kv.split_once('='))
                    .map(|(k, _)| k.trim())
                    == Some(c[0].as_str())
            });
            return if found {
                Ok(())
            } else {
                Err(format!(
                    "no Set-Cookie {} in {:?}",
                    c[0],
                    first.set_cookies()
                ))
            };
        }
        Err(format!("no step matches {:?}", step.text))
    }

    fn new_namespace(&mut self) -> StepResult {
        let ns = format!("conformance-{}", random_suffix(8));
        self.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        self.namespace = Some(ns);
        Ok(())
    }

    /// Create the Ingress in the scenario's namespace, and an echo backend (one pod) for
    /// every Service it names that the scenario has not made itself, as the upstream
    /// suite deploys one per referenced Service.
    async fn create_ingress(&mut self, mut obj: Value) -> StepResult {
        let ns = self.ns()?;
        obj["metadata"]["namespace"] = json!(ns);
        let mut refs: Vec<Value> = Vec::new();
        if let Some(b) = obj.pointer("/spec/defaultBackend/service") {
            refs.push(b.clone());
        }
        for rule in obj
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for path in rule
                .pointer("/http/paths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(b) = path.pointer("/backend/service") {
                    refs.push(b.clone());
                }
            }
        }
        for r in refs {
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if name.is_empty() || self.backends.contains_key(&name) {
                continue;
            }
            let port_name = r
                .pointer("/port/name")
                .and_then(Value::as_str)
                .unwrap_or("http")
                .to_owned();
            let port = r
                .pointer("/port/number")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(8080);
            self.backend(&name, &port_name, port, false, 1, 0).await?;
        }
        self.ingress = Some(obj.clone());
        self.apply(obj)
    }

    /// Start pods and write the Service and its endpoints.
    async fn backend(
        &mut self,
        service: &str,
        port_name: &str,
        port: i32,
        selectorless: bool,
        ready: usize,
        not_ready: usize,
    ) -> StepResult {
        let ns = self.ns()?;
        let mut backend = Backend {
            port_name: port_name.to_owned(),
            port,
            selectorless,
            pods: Vec::new(),
        };
        add_pods(&mut backend.pods, &ns, service, ready, true).await?;
        add_pods(&mut backend.pods, &ns, service, not_ready, false).await?;
        self.backends.insert(service.to_owned(), backend);
        self.write_backend(service)
    }

    fn write_backend(&mut self, service: &str) -> StepResult {
        let ns = self.ns()?;
        let b = self.backends.get(service).ok_or("no such backend")?;
        let mut port = json!({"port": b.port, "targetPort": 3000, "protocol": "TCP"});
        if !b.port_name.is_empty() {
            port["name"] = json!(b.port_name);
        }
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": ns},
            "spec": {"ports": [port]},
        });
        if !b.selectorless {
            svc["spec"]["selector"] = json!({"app": service});
        }
        let target = b
            .pods
            .first()
            .map(|p| p.server.addr().port())
            .unwrap_or(3000);
        let objs = if b.selectorless {
            let ready: Vec<Value> = b
                .pods
                .iter()
                .filter(|p| p.ready)
                .map(|p| json!({"ip": p.server.addr().ip().to_string()}))
                .collect();
            let not_ready: Vec<Value> = b
                .pods
                .iter()
                .filter(|p| !p.ready)
                .map(|p| json!({"ip": p.server.addr().ip().to_string()}))
                .collect();
            let mut subset =
                json!({"addresses": ready, "ports": [{"port": target, "protocol": "TCP"}]});
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            vec![
                svc,
                json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": service, "namespace": ns},
                    "subsets": [subset],
                }),
            ]
        } else {
            vec![
                svc,
                endpoint_slice(&ns, service, &b.port_name, target, &b.pods),
            ]
        };
        for obj in objs {
            self.apply(obj)?;
        }
        Ok(())
    }

    async fn scale(&mut self, service: &str, ready: usize, not_ready: usize) -> StepResult {
        let ns = self.ns()?;
        let b = self
            .backends
            .get_mut(service)
            .ok_or_else(|| format!("no backend deployment {service:?} in this scenario"))?;
        let have = b.pods.iter().filter(|p| p.ready).count();
        if ready > have {
            add_pods(&mut b.pods, &ns, service, ready - have, true).await?;
        } else {
            let mut drop_n = have - ready;
            b.pods.retain(|p| {
                if p.ready && drop_n > 0 {
                    drop_n -= 1;
                    false
                } else {
                    true
                }
            });
        }
        add_pods(&mut b.pods, &ns, service, not_ready, false).await?;
        self.write_backend(service)
    }

    /// Wait until the controller reflects every object written so far.
    ///
    /// A sentinel Ingress, Service, EndpointSlice and selector-less Endpoints are rewritten
    /// with a new generation each time (the route's path and the Service port's name), so
    /// the sentinel route answers only once the controller has seen this write of each
    /// kind; each kind's watch (or the folder) is ordered, so it has seen the scenario's
    /// earlier writes of that kind too. A Secret written since the last sync adds a fresh
    /// sentinel certificate that must be served.
    async fn sync(&mut self) -> StepResult {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let secrets = self.dirty.contains("Secret");
        self.dirty.clear();
        self.generation += 1;
        let g = self.generation;
        if self.sync_pod.is_none() {
            let pod = EchoServer::start(
                SocketAddr::new(next_ip(), 0),
                Identity::new(SYNC_NS, "sync", "sync"),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
            self.sync_pod = Some(pod);
        }
        let addr = self
            .sync_pod
            .as_ref()
            .map(EchoServer::addr)
            .ok_or("no sync pod")?;
        let port_name = format!("p{g}");
        let pods = [json!({"addresses": [addr.ip().to_string()], "conditions": {"ready": true}})];
        let mut objs = vec![
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "sync", "namespace": SYNC_NS},
                   "spec": {"selector": {"app": "sync"}, "ports": [{"name": port_name, "port": 80}]}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "sync-1", "namespace": SYNC_NS,
                                "labels": {"kubernetes.io/service-name": "sync"}},
                   "addressType": "IPv4",
                   "ports": [{"name": port_name, "port": addr.port(), "protocol": "TCP"}],
                   "endpoints": pods}),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "sync-ep", "namespace": SYNC_NS},
                   "spec": {"ports": [{"name": port_name, "port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": "sync-ep", "namespace": SYNC_NS},
                   "subsets": [{"addresses": [{"ip": addr.ip().to_string()}],
                                "ports": [{"name": port_name, "port": addr.port(), "protocol": "TCP"}]}]}),
        ];
        let cert = if secrets {
            let cert = SelfSigned::generate(&[SYNC_HOST]).map_err(|e| e.to_string())?;
            let secret = serde_json::to_value(cert.to_secret(SYNC_NS, "sync-tls"))
                .map_err(|e| e.to_string())?;
            objs.push(with_type_meta(secret, "v1", "Secret"));
            Some(cert)
        } else {
            None
        };
        let path = |p: String, svc: &str| {
            json!({"path": p, "pathType": "Exact",
            "backend": {"service": {"name": svc, "port": {"name": port_name}}}})
        };
        let mut ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            // Plain-HTTP checks must reach the backend even when the sentinel has TLS.
            "metadata": {"name": "sync", "namespace": SYNC_NS,
                         "annotations": {"portico.dev/ssl-redirect": "false"}},
            "spec": {"ingressClassName": CLASS, "rules": [{"host": SYNC_HOST, "http": {"paths": [
                path(format!("/g{g}"), "sync"), path(format!("/g{g}/ep"), "sync-ep")]}}]}
        });
        if cert.is_some() {
            ingress["spec"]["tls"] = json!([{"hosts": [SYNC_HOST], "secretName": "sync-tls"}]);
        }
        objs.push(ingress);
        for obj in objs {
            self.cluster.apply(obj).map_err(|e| e.to_string())?;
        }

        let proxy = self.proxy()?;
        let mut checks = vec![
            (
                Request::new(Method::GET, "http", SYNC_HOST, &format!("/g{g}")),
                TlsTrust::Insecure,
            ),
            (
                Request::new(Method::GET, "http", SYNC_HOST, &format!("/g{g}/ep")),
                TlsTrust::Insecure,
            ),
        ];
        if let Some(cert) = &cert {
            checks.push((
                Request::new(Method::GET, "https", SYNC_HOST, &format!("/g{g}")),
                TlsTrust::Roots(cert.roots()),
            ));
        }
        let deadline = Instant::now() + SYNC_TIMEOUT;
        for (req, trust) in checks {
            loop {
                let got = client::send(proxy, &req, &trust).await;
                let ok = matches!(&got, Ok(c) if c.status == 200
                    && c.echo().map(|e| e.namespace == SYNC_NS).unwrap_or(false));
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    let last = match got {
                        Ok(c) => format!(
                            "status {} body {}",
                            c.status,
                            String::from_utf8_lossy(&c.body)
                        ),
                        Err(e) => e.to_string(),
                    };
                    return Err(format!(
                        "the controller did not reflect the scenario's objects within {SYNC_TIMEOUT:?} \
                         ({} {}://{SYNC_HOST}{} last answered: {last}); controller log:\n{}",
                        req.method, req.scheme, req.path_and_query, self.log_tail()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    fn ingress_name(&self) -> Result<(String, String), String> {
        let ing = self.ingress.as_ref().ok_or("no Ingress in this scenario")?;
        let get = |p: &str| {
            ing.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Ok((get("/metadata/namespace"), get("/metadata/name")))
    }

    async fn status_shows_address(&mut self) -> StepResult {
        self.sync().await?;
        let (ns, name) = self.ingress_name()?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            match self.cluster.ingress_status(&ns, &name).map_err(|e| e.to_string())? {
                // The manifest folder has no status: the controller being ready with the
                // scenario's objects loaded is what "exposed" means there.
                None => {
                    let ready = match self.cluster.controller() {
                        Some(c) => c.readyz().await,
                        None => None,
                    };
                    return match ready {
                        Some(200) => Ok(()),
                        other => Err(format!("/readyz answered {other:?}, expected 200")),
                    };
                }
                Some(addrs) if !addrs.is_empty() => return Ok(()),
                Some(_) if Instant::now() > deadline => {
                    return Err(format!(
                        "Ingress {ns}/{name} has no status.loadBalancer.ingress after {SYNC_TIMEOUT:?}; controller log:\n{}",
                        self.log_tail()
                    ))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn status_has_no_address(&mut self) -> StepResult {
        self.sync().await?;
        let (ns, name) = self.ingress_name()?;
        match self
            .cluster
            .ingress_status(&ns, &name)
            .map_err(|e| e.to_string())?
        {
            Some(addrs) => {
                // The sentinel's own status shows the status writer has run since.
                let deadline = Instant::now() + SYNC_TIMEOUT;
                loop {
                    let sentinel = self
                        .cluster
                        .ingress_status(SYNC_NS, "sync")
                        .map_err(|e| e.to_string())?;
                    if sentinel.is_some_and(|a| !a.is_empty()) {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err("the controller wrote no Ingress status at all".into());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let addrs = self
                    .cluster
                    .ingress_status(&ns, &name)
                    .map_err(|e| e.to_string())?
                    .unwrap_or(addrs);
                if addrs.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "Ingress {ns}/{name} is not ours but its status shows {addrs:?}"
                    ))
                }
            }
            // No status in a manifest folder: "not exposed" means none of its hosts route.
            None => {
                let hosts: Vec<String> = self
                    .ingress
                    .as_ref()
                    .and_then(|i| i.pointer("/spec/rules"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("host").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                let proxy = self.proxy()?;
                for host in hosts {
                    let got = client::send(
                        proxy,
                        &Request::new(Method::GET, "http", &host, "/"),
                        &TlsTrust::Insecure,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    if got.status != 404 {
                        return Err(format!(
                            "host {host} of an Ingress that is not ours answered {}",
                            got.status
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    async fn send_one(&mut self, mut req: Request) -> StepResult {
        self.sync().await?;
        let proxy = self.proxy()?;
        if !self.cookies.is_empty() {
            req = req.header("cookie", &cookie_header(&self.cookies));
        }
        self.last = Some(self.fetch(proxy, req).await?);
        Ok(())
    }

    /// Send `req` and follow redirects, as the upstream suite's Go client does.
    async fn fetch(&self, proxy: ProxyAddrs, mut req: Request) -> Result<Captured, String> {
        for _ in 0..=client::MAX_REDIRECTS {
            let trust = self.trust(&req);
            let got = client::send(proxy, &req, &trust)
                .await
                .map_err(|e| e.to_string())?;
            match client::follow_redirect(&req, &got, proxy) {
                Some(next) => req = next,
                None => return Ok(got),
            }
        }
        Err(format!("stopped after {} redirects", client::MAX_REDIRECTS))
    }

    async fn send_many(&mut self, count: &str, url: &str, keep_cookies: bool) -> StepResult {
        self.sync().await?;
        let n = num(count)?;
        let proxy = self.proxy()?;
        self.many.clear();
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..n {
            let mut req = Request::get(url).map_err(|e| e.to_string())?;
            if keep_cookies && !jar.is_empty() {
                req = req.header("cookie", &cookie_header(&jar));
            }
            let got = self.fetch(proxy, req).await?;
            if keep_cookies {
                for c in got.set_cookies() {
                    if let Some((k, v)) = c.split(';').next().and_then(|kv| kv.split_once('=')) {
                        jar.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
            }
            self.many.push(got);
        }
        Ok(())
    }

    fn trust(&self, req: &Request) -> TlsTrust {
        if req.scheme != "https" {
            return TlsTrust::Insecure;
        }
        let mut roots = RootCertStore::empty();
        for cert in self.certs.values() {
            let _ = roots.add(rustls::pki_types::CertificateDer::from(
                cert.cert_der.clone(),
            ));
        }
        TlsTrust::Roots(Arc::new(roots))
    }

    fn last(&self) -> Result<&Captured, String> {
        self.last
            .as_ref()
            .ok_or_else(|| "no request was sent".to_owned())
    }

    fn last_body(&self) -> &str {
        self.last
            .as_ref()
            .and_then(|c| std::str::from_utf8(&c.body).ok())
            .unwrap_or("")
    }

    fn last_echo(&self) -> Result<crate::echo::Echo, String> {
        self.last()?.echo().map_err(|e| e.to_string())
    }

    fn many_echoes(&self) -> Result<Vec<crate::echo::Echo>, String> {
        if self.many.is_empty() {
            return Err("no requests were sent".into());
        }
        self.many
            .iter()
            .map(|c| c.echo().map_err(|e| e.to_string()))
            .collect()
    }

    fn all_status(&self, want: &str) -> StepResult {
        if self.many.is_empty() {
            return Err("no requests were sent".into());
        }
        for (i, c) in self.many.iter().enumerate() {
            let got = c.status.as_u16().to_string();
            if got != want {
                return Err(format!(
                    "response {} of {} had status {got}, expected {want}: {}",
                    i + 1,
                    self.many.len(),
                    String::from_utf8_lossy(&c.body)
                ));
            }
        }
        Ok(())
    }
}

async fn add_pods(
    pods: &mut Vec<Pod>,
    ns: &str,
    service: &str,
    n: usize,
    ready: bool,
) -> StepResult {
    for _ in 0..n {
        // Every pod of a Service listens on the same port, on its own address.
        let port = pods.first().map(|p| p.server.addr().port()).unwrap_or(0);
        let mut tries = 0;
        let server = loop {
            let identity = Identity::new(ns, service, &format!("{service}-{}", random_suffix(5)));
            match EchoServer::start(SocketAddr::new(next_ip(), port), identity, None).await {
                Ok(s) => break s,
                Err(e) if tries > 20 => return Err(e.to_string()),
                Err(_) => tries += 1,
            }
        };
        pods.push(Pod { server, ready });
    }
    Ok(())
}

fn endpoint_slice(ns: &str, service: &str, port_name: &str, port: u16, pods: &[Pod]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({
                "addresses": [p.server.addr().ip().to_string()],
                "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p.server.identity().pod},
            })
        })
        .collect();
    let mut port_obj = json!({"port": port, "protocol": "TCP"});
    if !port_name.is_empty() {
        port_obj["name"] = json!(port_name);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-slice"),
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [port_obj],
        "endpoints": endpoints,
    })
}

/// An IngressClass, optionally marked as the cluster's default.
pub fn ingress_class(name: &str, controller: &str, default: bool) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": name,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": default.to_string()},
        },
        "spec": {"controller": controller},
    })
}

fn with_type_meta(mut obj: Value, api_version: &str, kind: &str) -> Value {
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj
}

fn yaml(text: &str) -> Result<Value, String> {
    serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML in doc string: {e}"))
}

fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))
}

fn num(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a count: {s:?}"))
}

fn cookie_header(jar: &BTreeMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn expect_eq(what: &str, want: &str, got: &str, body: &str) -> StepResult {
    if want == got {
        Ok(())
    } else if body.is_empty() {
        Err(format!("expected {what} {want:?}, got {got:?}"))
    } else {
        let body: String = body.chars().take(600).collect();
        Err(format!(
            "expected {what} {want:?}, got {got:?}; response body:\n{body}"
        ))
    }
}

/// A `| key | value |` table: every key must be present, with the value unless it is `*`.
fn check_table(table: &[Vec<String>], get: impl Fn(&str) -> Vec<String>) -> StepResult {
    for row in table.iter().skip(1) {
        let (Some(key), Some(value)) = (row.first(), row.get(1)) else {
            return Err(format!("table row {row:?} needs a key and a value"));
        };
        let values = get(key);
        if values.is_empty() {
            return Err(format!("header {key} is missing"));
        }
        if value != "*" && !values.iter().any(|v| v == value) {
            return Err(format!("header {key} is {values:?}, expected {value:?}"));
        }
    }
    Ok(())
}

/// Run one scenario in a fresh world on `cluster`.
pub async fn run_scenario<C: Cluster>(
    cluster: Result<C, String>,
    scenario: crate::gherkin_run::Scenario,
) -> crate::gherkin_run::Outcome {
    let result = async {
        let mut world = World::new(cluster?).await?;
        for step in &scenario.steps {
            world.step(step).await.map_err(|e| {
                format!(
                    "{}:{}: {} {}\n{e}",
                    scenario.file.display(),
                    step.line,
                    step.keyword,
                    step.text
                )
            })?;
        }
        Ok::<(), String>(())
    }
    .await;
    crate::gherkin_run::Outcome {
        scenario,
        error: result.err(),
    }
}
