//! One upstream test's world: the base manifests and the test's own, with Portico's
//! GatewayClass, the TLS Secrets the upstream suite creates at set-up, and an echo
//! backend per pod of each Deployment (with the EndpointSlices a cluster would publish
//! for them), put where the [`Mode`] says: written into a manifest folder, or applied to
//! the API-server double; the real binary running over them; and the checks the upstream
//! tests make, against its answers and its status (logged over a folder, written to the
//! objects over the API server).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::exchange::{Exchange, INFRA_NS};
use super::status::{from_log, from_objects, ListenerStatus, ObjectStatus, Statuses, STATUS_KINDS};
use crate::apiserver::ApiServer;
use crate::certs::{SelfSigned, TestCa};
use crate::client::{send, ProxyAddrs, TlsTrust};
use crate::echo::{EchoServer, Identity};
use crate::harness::Controller;
use crate::manifests::parse_documents;

/// The GatewayClass the upstream manifests' `{GATEWAY_CLASS_NAME}` becomes.
pub const CLASS: &str = "portico";
/// Portico's Gateway API controller name.
pub const CONTROLLER: &str = "portico.dev/gateway-controller";
/// How long a status or an answer may take to become what the test expects. The
/// folder is complete before the binary starts, so this only absorbs a loaded machine.
pub const CONSISTENCY_TIMEOUT: Duration = Duration::from_secs(8);
/// Consecutive right answers needed, as the upstream suite's default.
pub const REQUIRED_SUCCESSES: usize = 3;

pub type Check = Result<(), String>;

/// Where a test's objects go, and where their status is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A manifest folder the binary watches (`--manifests`); status from its log.
    Folder,
    /// The API-server double the binary lists and watches (`--kubeconfig`), as the
    /// leader; status from the objects, as the binary applied it to the double.
    ApiDouble,
}

impl Mode {
    /// For reports: the ConformanceReport's `mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Folder => "manifest-folder",
            Mode::ApiDouble => "api-server-double",
        }
    }

    /// For the lines of a report.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Folder => "over a manifest folder",
            Mode::ApiDouble => "over the API-server double",
        }
    }
}

/// Where a world's objects are.
enum Objects {
    /// The folder the binary watches.
    Folder(tempfile::TempDir),
    /// The double the binary watches and writes status to; the folder holds the
    /// kubeconfig.
    Api {
        api: ApiServer,
        _kubeconfig: tempfile::TempDir,
    },
}

/// What the binary's leader election and status need to know of its pod.
const POD_ENV: [(&str, &str); 2] = [("POD_NAME", "portico-0"), ("POD_NAMESPACE", "portico")];
/// The address Gateways get in their status over the API server (what an operator
/// gives when there is no publish Service).
const PUBLISH_ADDRESS: &str = "127.0.0.1";

/// The binary's `--gateway-address-pool`: every Gateway is served at an address of its
/// own, as upstream's implementations give each its own load balancer.
pub const ADDRESS_POOL: &str = "127.0.1.0/24";

/// An address of the pool, and one outside it, for the tests' `PLACEHOLDER_USABLE_ADDRS`
/// and `PLACEHOLDER_UNUSABLE_ADDRS` (upstream's `--usable-network-addresses` and
/// `--unusable-network-addresses`).
pub const USABLE_ADDRESS: &str = "127.0.1.200";
pub const UNUSABLE_ADDRESS: &str = "192.0.2.1";

/// A running test world; backends and controller stop when it is dropped (the
/// controller first, as fields drop in order).
pub struct Ctx {
    pub controller: Controller,
    pub mode: Mode,
    objects: Objects,
    pods: Vec<EchoServer>,
    /// The EndpointSlices written for the Deployments' pods.
    slices: Vec<Value>,
    /// HTTPS answers must come with the certificate of the base Gateways' Secret, as
    /// upstream verifies it (compared whole: its `*.org` name is one webpki refuses).
    https_cert: Vec<u8>,
    /// The PEM certificate and key of each TLS Secret the suite made, by `ns/name`
    /// (what upstream's `GetTLSSecret` reads).
    tls_secrets: BTreeMap<String, (String, String)>,
    /// Progress lines, for the report of a failing test.
    pub notes: Vec<String>,
    /// Where requests go: the address of the Gateway last found accepted (upstream's
    /// `gwAddr`), on the binary's ports.
    pub at: Option<IpAddr>,
}

/// `name` in the infra namespace, unless it names its namespace (`ns/name`).
pub fn key(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{INFRA_NS}/{name}")
    }
}

impl Ctx {
    /// Put the objects of `test_files` (below `root`'s `tests/`, beside `base/`) where
    /// `mode` says, start the backends and the binary.
    pub async fn start(root: &Path, test_files: &[&str], mode: Mode) -> Result<Self, String> {
        let mut texts = vec![root.join("base/manifests.yaml")];
        texts.extend(test_files.iter().map(|f| root.join("tests").join(f)));
        let mut docs = Vec::new();
        for path in &texts {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?
                .replace("{GATEWAY_CLASS_NAME}", CLASS)
                .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER)
                .replace("PLACEHOLDER_USABLE_ADDRS", USABLE_ADDRESS)
                .replace("PLACEHOLDER_UNUSABLE_ADDRS", UNUSABLE_ADDRESS);
            let parsed = parse_documents(path, &text).map_err(|e| e.to_string())?;
            docs.extend(parsed.into_iter().map(|d| d.value));
        }
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": CLASS},
            "spec": {"controllerName": CONTROLLER},
        }));
        let (secrets, https_cert, serving) = suite_secrets()?;
        docs.extend(secrets);
        let (pods, slices) = backends(&docs, &serving).await?;
        let tls_secrets = serving
            .secrets
            .iter()
            .map(|((ns, name), pems)| (format!("{ns}/{name}"), pems.clone()))
            .collect();
        docs.extend(slices.iter().cloned());

        let dir = tempfile::tempdir().map_err(|e| format!("creating the folder: {e}"))?;
        let (objects, controller) = match mode {
            Mode::Folder => {
                for (i, doc) in docs.iter().enumerate() {
                    write_doc(dir.path(), i, doc)?;
                }
                let args = vec![
                    "--manifests".to_owned(),
                    dir.path().display().to_string(),
                    "--gateway-address-pool".to_owned(),
                    ADDRESS_POOL.to_owned(),
                    "--log-format".to_owned(),
                    "json".to_owned(),
                ];
                let controller = Controller::start_bound(&args, &[], true)
                    .await
                    .map_err(|e| e.to_string())?;
                (Objects::Folder(dir), controller)
            }
            Mode::ApiDouble => {
                let api = ApiServer::start().await;
                // Served as once the CRDs are installed.
                api.install_gateway_api();
                for doc in docs {
                    api.try_apply(doc)?;
                }
                let kubeconfig = api.write_kubeconfig(dir.path());
                let args = vec![
                    "--kubeconfig".to_owned(),
                    kubeconfig.display().to_string(),
                    "--publish-address".to_owned(),
                    PUBLISH_ADDRESS.to_owned(),
                    "--gateway-address-pool".to_owned(),
                    ADDRESS_POOL.to_owned(),
                    "--log-format".to_owned(),
                    "json".to_owned(),
                ];
                let controller = Controller::start_bound(&args, &POD_ENV, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let objects = Objects::Api {
                    api,
                    _kubeconfig: dir,
                };
                (objects, controller)
            }
        };
        Ok(Self {
            controller,
            mode,
            objects,
            pods,
            slices,
            https_cert,
            tls_secrets,
            notes: Vec::new(),
            at: None,
        })
    }

    /// The PEM certificate and key of a TLS Secret the suite made (`name` in the infra
    /// namespace, or `ns/name`), as upstream's `GetTLSSecret`.
    pub fn tls_secret(&self, name: &str) -> Result<(String, String), String> {
        self.tls_secrets
            .get(&key(name))
            .cloned()
            .ok_or_else(|| format!("the suite made no TLS Secret {name}"))
    }

    /// Replace (or add) one object, as `kubectl apply` of an edit would.
    pub fn apply(&self, doc: &Value) -> Check {
        let dir = match &self.objects {
            Objects::Folder(dir) => dir.path(),
            Objects::Api { api, .. } => return api.try_apply(doc.clone()).map(drop),
        };
        let text = serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?;
        let suffix = format!("{}.yaml", doc_name(doc));
        // The object's own file, so that no second definition of it appears.
        let existing = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(&suffix) && !n.starts_with('.'));
        let name = existing.unwrap_or_else(|| format!("zz-{suffix}"));
        // Written aside and renamed, so the watcher never reads half a file.
        let staged = dir.join(format!(".{name}"));
        std::fs::write(&staged, text).map_err(|e| e.to_string())?;
        std::fs::rename(&staged, dir.join(name)).map_err(|e| e.to_string())
    }

    /// The requests (`path?query`) the pods of a Deployment have answered so far: what
    /// upstream reads from their logs.
    pub fn received_by(&self, namespace: &str, deployment: &str) -> Vec<String> {
        self.pods
            .iter()
            .filter(|p| p.identity().namespace == namespace && p.identity().service == deployment)
            .flat_map(|p| p.received())
            .collect()
    }

    /// The EndpointSlices written for a Service's pods.
    pub fn slices_of(&self, namespace: &str, service: &str) -> Vec<Value> {
        self.slices
            .iter()
            .filter(|s| {
                str_at(s, "/metadata/namespace") == namespace
                    && str_at(s, "/metadata/labels/kubernetes.io~1service-name") == service
            })
            .cloned()
            .collect()
    }

    /// The object the folder (or the API server) holds for `kind` and `ns/name`, for
    /// edits.
    pub fn object(&self, kind: &str, object: &str) -> Result<Value, String> {
        let dir = match &self.objects {
            Objects::Folder(dir) => dir.path(),
            Objects::Api { api, .. } => {
                let (api_version, ns, name) = api_ref(api, kind, object)?;
                return api
                    .get(&api_version, kind, &ns, &name)
                    .ok_or_else(|| format!("no {kind} {object} in the API server"));
            }
        };
        for doc in read_folder(dir)? {
            let (k, o) = (
                doc.get("kind").and_then(Value::as_str).unwrap_or_default(),
                format!(
                    "{}/{}",
                    doc.pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("default"),
                    doc.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            );
            if k == kind && o == key(object) {
                return Ok(doc);
            }
        }
        Err(format!("no {kind} {object} in the folder"))
    }

    /// Remove an object's file(s) from the folder (or the object from the API server).
    pub fn delete(&self, kind: &str, object: &str) -> Check {
        let dir = match &self.objects {
            Objects::Folder(dir) => dir.path(),
            Objects::Api { api, .. } => {
                let (api_version, ns, name) = api_ref(api, kind, object)?;
                api.delete(&api_version, kind, &ns, &name);
                return Ok(());
            }
        };
        let wanted = doc_file_stem(kind, &key(object));
        let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!("{wanted}.yaml")) {
                std::fs::remove_file(entry.path()).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Every object's current status: the last the binary logged over a folder, the one
    /// it applied to the objects over the API server.
    pub fn statuses(&self) -> Statuses {
        match &self.objects {
            Objects::Folder(_) => from_log(&self.controller.log()),
            Objects::Api { api, .. } => {
                let objects: Vec<Value> = STATUS_KINDS
                    .iter()
                    .filter_map(|kind| Some(api.list(&api.served(kind)?.0, kind)))
                    .flatten()
                    .collect();
                from_objects(&objects, CONTROLLER)
            }
        }
    }

    /// Wait until `f` holds of the status.
    pub async fn wait_status(&mut self, what: &str, f: impl Fn(&Statuses) -> Check) -> Check {
        let deadline = Instant::now() + CONSISTENCY_TIMEOUT;
        loop {
            let result = f(&self.statuses());
            match result {
                Ok(()) => {
                    self.notes.push(format!("ok: {what}"));
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(format!("{what}: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The upstream `GatewayAndHTTPRoutesMustBeAccepted`: every listener of the Gateway
    /// Accepted, Programmed and ResolvedRefs, and each route with a parent entry of
    /// ours for the Gateway that is Accepted (upstream compares neither the entry's
    /// sectionName nor the number of entries).
    pub async fn accepted(&mut self, gateway: &str, routes: &[&str]) -> Check {
        self.accepted_kind(gateway, "HTTPRoute", routes).await
    }

    /// [`Ctx::accepted`] for routes of `kind` (upstream `GatewayAndRoutesMustBeAccepted`).
    pub async fn accepted_kind(&mut self, gateway: &str, kind: &str, routes: &[&str]) -> Check {
        let gw = key(gateway);
        self.wait_status(
            &format!("Gateway {gw} and {kind}s {routes:?} accepted"),
            |all| {
                let st = object(all, "Gateway", &gw)?;
                if st.listeners.is_empty() {
                    return Err("the Gateway has no listener status".into());
                }
                if st.addresses.is_empty() {
                    return Err("the Gateway has no address".into());
                }
                for l in &st.listeners {
                    for t in ["Accepted", "Programmed", "ResolvedRefs"] {
                        holds(&l.conditions, t, true, None)
                            .map_err(|e| format!("listener {}: {e}", l.name))?;
                    }
                }
                for route in routes {
                    let r = object(all, kind, &key(route))?;
                    let accepted = r.parents.iter().any(|p| {
                        p.gateway == gw
                            && holds(&p.conditions, "Accepted", true, Some("Accepted")).is_ok()
                    });
                    if !accepted {
                        return Err(format!(
                            "route {route} has no Accepted parent entry for {gw}: {r:?}"
                        ));
                    }
                }
                Ok(())
            },
        )
        .await?;
        self.go_to(gateway)
    }

    /// Send the requests that follow to the Gateway's (first) address.
    pub fn go_to(&mut self, gateway: &str) -> Check {
        let gw = key(gateway);
        let all = self.statuses();
        let first = object(&all, "Gateway", &gw)?.addresses.first().cloned();
        let ip = first
            .and_then(|a| a.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("Gateway {gw} has no IP address in its status"))?;
        self.at = Some(ip);
        Ok(())
    }

    /// Where requests go: the binary's ports at the current Gateway's address.
    pub fn proxy(&self) -> ProxyAddrs {
        let mut addrs = self.controller.proxy;
        if let Some(ip) = self.at {
            addrs.http.set_ip(ip);
            addrs.https.set_ip(ip);
        }
        addrs
    }

    /// The route's parent entry for the Gateway (and section) has the condition.
    pub async fn route_condition(
        &mut self,
        route: &str,
        gateway: &str,
        section: Option<&str>,
        type_: &str,
        status: bool,
        reason: Option<&str>,
    ) -> Check {
        self.parent_condition("HTTPRoute", route, gateway, section, type_, status, reason)
            .await
    }

    /// The policy's ancestor entry for the Gateway has the condition (upstream
    /// `BackendTLSPolicyMustHaveCondition`).
    pub async fn policy_condition(
        &mut self,
        policy: &str,
        gateway: &str,
        type_: &str,
        status: bool,
        reason: Option<&str>,
    ) -> Check {
        self.parent_condition(
            "BackendTLSPolicy",
            policy,
            gateway,
            None,
            type_,
            status,
            reason,
        )
        .await
    }

    /// The route's (or policy's) parent entry for the Gateway (and section) has the
    /// condition.
    #[allow(clippy::too_many_arguments)]
    pub async fn parent_condition(
        &mut self,
        kind: &str,
        route: &str,
        gateway: &str,
        section: Option<&str>,
        type_: &str,
        status: bool,
        reason: Option<&str>,
    ) -> Check {
        let (r, gw) = (key(route), key(gateway));
        self.wait_status(
            &format!("{kind} {r} parent {gw}: {type_}={status} ({reason:?})"),
            |all| {
                let st = object(all, kind, &r)?;
                // As upstream: any entry for the Gateway, unless a section is named.
                let entries: Vec<_> = st
                    .parents
                    .iter()
                    .filter(|p| {
                        p.gateway == gw && (section.is_none() || p.section.as_deref() == section)
                    })
                    .collect();
                if entries.is_empty() {
                    return Err(format!("no parent entry for {gw} {section:?}: {st:?}"));
                }
                let mut last = Ok(());
                for p in entries {
                    last = holds(&p.conditions, type_, status, reason);
                    if last.is_ok() {
                        break;
                    }
                }
                last
            },
        )
        .await
    }

    /// The upstream `HTTPRouteMustHaveResolvedRefsConditionsTrue`.
    pub async fn resolved(&mut self, route: &str, gateway: &str) -> Check {
        self.route_condition(
            route,
            gateway,
            None,
            "ResolvedRefs",
            true,
            Some("ResolvedRefs"),
        )
        .await
    }

    /// The route has no parent entry that is Accepted (upstream
    /// `HTTPRouteMustHaveNoAcceptedParents`).
    pub async fn no_accepted_parents(&mut self, route: &str) -> Check {
        let r = key(route);
        self.wait_status(&format!("HTTPRoute {r} has no accepted parent"), |all| {
            let Some(st) = all.get(&("HTTPRoute".to_owned(), r.clone())) else {
                return Ok(());
            };
            for p in &st.parents {
                if holds(&p.conditions, "Accepted", true, None).is_ok() {
                    return Err(format!("parent {} is Accepted", p.gateway));
                }
            }
            Ok(())
        })
        .await
    }

    /// No listener of the Gateway counts an attached route (upstream
    /// `GatewayMustHaveZeroRoutes`).
    pub async fn zero_routes(&mut self, gateway: &str) -> Check {
        let gw = key(gateway);
        self.wait_status(&format!("Gateway {gw} has no attached routes"), |all| {
            let st = object(all, "Gateway", &gw)?;
            match st.listeners.iter().find(|l| l.attached_routes != 0) {
                Some(l) => Err(format!(
                    "listener {} has {} attached routes",
                    l.name, l.attached_routes
                )),
                None => Ok(()),
            }
        })
        .await
    }

    /// Waits until `check` holds for the Gateway's listener `name`.
    async fn wait_listener(
        &mut self,
        gateway: &str,
        name: &str,
        what: &str,
        check: impl Fn(&ListenerStatus) -> Check,
    ) -> Check {
        let gw = key(gateway);
        self.wait_status(&format!("Gateway {gw} listener {name}: {what}"), |all| {
            let st = object(all, "Gateway", &gw)?;
            let l = st
                .listener(name)
                .ok_or_else(|| format!("no listener {name} in {st:?}"))?;
            check(l)
        })
        .await
    }

    /// A listener's attached routes and conditions.
    pub async fn listener(
        &mut self,
        gateway: &str,
        name: &str,
        attached: Option<u32>,
        conditions: &[(&str, bool, Option<&str>)],
    ) -> Check {
        let what = format!("attachedRoutes {attached:?}, {conditions:?}");
        self.wait_listener(gateway, name, &what, |l| {
            if let Some(n) = attached {
                if l.attached_routes != n {
                    return Err(format!(
                        "attachedRoutes {}, expected {n}",
                        l.attached_routes
                    ));
                }
            }
            for (t, s, r) in conditions {
                holds(&l.conditions, t, *s, *r)?;
            }
            Ok(())
        })
        .await
    }

    /// A listener's `supportedKinds`, as upstream compares them: none when `kinds` is
    /// empty, else at least those.
    pub async fn supported_kinds(&mut self, gateway: &str, name: &str, kinds: &[&str]) -> Check {
        let what = format!("supportedKinds {kinds:?}");
        self.wait_listener(gateway, name, &what, |l| {
            let have = &l.supported_kinds;
            if kinds.is_empty() && !have.is_empty() {
                return Err(format!("supportedKinds {have:?}, expected none"));
            }
            match kinds.iter().find(|k| !have.iter().any(|s| s == *k)) {
                Some(k) => Err(format!("{k} not in supportedKinds {have:?}")),
                None => Ok(()),
            }
        })
        .await
    }

    /// A condition of the Gateway itself.
    pub async fn gateway_condition(
        &mut self,
        gateway: &str,
        type_: &str,
        status: bool,
        reason: Option<&str>,
    ) -> Check {
        let gw = key(gateway);
        self.wait_status(
            &format!("Gateway {gw}: {type_}={status} ({reason:?})"),
            |all| {
                holds(
                    &object(all, "Gateway", &gw)?.conditions,
                    type_,
                    status,
                    reason,
                )
            },
        )
        .await
    }

    /// Send the request until it gets the expected answer [`REQUIRED_SUCCESSES`] times
    /// in a row (the upstream "eventually consistent" rule), within the timeout.
    pub async fn expect(&mut self, ex: &Exchange) -> Check {
        self.expect_within(ex, CONSISTENCY_TIMEOUT).await
    }

    /// [`Ctx::expect`] with its own time limit.
    pub async fn expect_within(&mut self, ex: &Exchange, limit: Duration) -> Check {
        let deadline = Instant::now() + limit;
        let mut streak = 0;
        loop {
            let result = match self.send(ex).await {
                Ok(got) => ex.check(&got),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    streak += 1;
                    if streak >= REQUIRED_SUCCESSES {
                        self.notes.push(format!("ok: {}", ex.describe()));
                        return Ok(());
                    }
                }
                Err(e) => {
                    streak = 0;
                    if Instant::now() > deadline {
                        return Err(format!("{}: {e}", ex.describe()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Upstream's `MakeTLSRequestAndExpectEventuallyConsistentResponse`: [`Ctx::expect`],
    /// then, when the request offers a client certificate, the gateway must have asked
    /// for it.
    pub async fn expect_tls(&mut self, ex: &Exchange) -> Check {
        if let Some(id) = &ex.identity {
            id.reset();
        }
        self.expect(ex).await?;
        match &ex.identity {
            Some(id) if !id.was_asked() => Err(format!(
                "{}: the client certificate was not asked for during the handshake",
                ex.describe()
            )),
            _ => Ok(()),
        }
    }

    /// Upstream's `MakeTLSRequestAndExpectFailureResponse`: one request, which must not
    /// get an answer (the handshake or the exchange fails); when it offers a client
    /// certificate, the gateway must have asked for it.
    pub async fn expect_failure(&mut self, ex: &Exchange) -> Check {
        if let Some(id) = &ex.identity {
            id.reset();
        }
        if let Ok(got) = self.send(ex).await {
            return Err(format!(
                "{}: expected the request to fail, got status {}",
                ex.describe(),
                got.status
            ));
        }
        if let Some(id) = &ex.identity {
            if !id.was_asked() {
                return Err(format!(
                    "{}: the client certificate was not asked for during the handshake",
                    ex.describe()
                ));
            }
        }
        self.notes.push(format!("ok: {} failed", ex.describe()));
        Ok(())
    }

    /// A client identity from a TLS Secret the suite made.
    pub fn identity(
        &self,
        secret: &str,
    ) -> Result<std::sync::Arc<crate::client::ClientIdentity>, String> {
        let (cert, key) = self.tls_secret(secret)?;
        crate::client::ClientIdentity::from_pem(&cert, &key)
    }

    /// Send the request once; its answer must be the expected one (upstream's check with
    /// one required success, as its percentage tests use).
    pub async fn expect_once(&self, ex: &Exchange) -> Check {
        let got = self.send(ex).await?;
        ex.check(&got)
            .map_err(|e| format!("{}: {e}", ex.describe()))
    }

    /// Send the request once, checked as [`Ctx::expect_once`]; what the backend echoed.
    pub async fn echo_once(&self, ex: &Exchange) -> Result<crate::echo::Echo, String> {
        let got = self.send(ex).await?;
        ex.check(&got)
            .map_err(|e| format!("{}: {e}", ex.describe()))?;
        got.echo().map_err(|e| e.to_string())
    }

    /// Send one request; over HTTPS, the certificate must be the suite's.
    async fn send(&self, ex: &Exchange) -> Result<crate::client::Captured, String> {
        let got = send(self.proxy(), &ex.request(), &TlsTrust::Insecure)
            .await
            .map_err(|e| e.to_string())?;
        if ex.scheme == "https" && got.peer_cert.as_deref() != Some(self.https_cert.as_slice()) {
            return Err("the HTTPS listener served another certificate than the Gateway's".into());
        }
        Ok(got)
    }

    /// Send `ex` `n` times; each backend's share of the answers must be within
    /// `tolerance` of its weight (upstream `TestWeightedDistribution`).
    pub async fn weights(
        &mut self,
        ex: &Exchange,
        n: usize,
        want: &[(&str, f64)],
        tolerance: f64,
    ) -> Check {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let got = self.send(ex).await?;
            ex.check(&got)?;
            let pod = got.echo().map_err(|e| e.to_string())?.pod;
            let backend = want
                .iter()
                .find(|(b, _)| pod.starts_with(b))
                .map(|(b, _)| (*b).to_owned())
                .unwrap_or(pod);
            *counts.entry(backend).or_default() += 1;
        }
        let share = |b: &str| counts.get(b).copied().unwrap_or(0) as f64 / n as f64;
        for (backend, weight) in want {
            let got = share(backend);
            if (got - weight).abs() > tolerance || (*weight == 0.0 && got > 0.0) {
                return Err(format!(
                    "{backend} got {:.3} of {n} requests, expected {weight} ± {tolerance}: {counts:?}",
                    got
                ));
            }
        }
        self.notes.push(format!("ok: weights {counts:?}"));
        Ok(())
    }

    /// Every exchange; all failures reported together.
    pub async fn expect_all(&mut self, exchanges: &[Exchange]) -> Check {
        let mut failures = Vec::new();
        // The folder does not change while they run: once one has failed for the full
        // time, the configuration is what it is, and the others need not wait as long.
        let mut limit = CONSISTENCY_TIMEOUT;
        for ex in exchanges {
            if let Err(e) = self.expect_within(ex, limit).await {
                failures.push(e);
                limit = Duration::from_secs(1);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n      "))
        }
    }
}

/// `apiVersion`, namespace and name in the API server of `kind` `object` (`ns/name`, or a
/// name; a cluster-scoped kind's namespace is ignored, as the folder has it `default`).
fn api_ref(api: &ApiServer, kind: &str, object: &str) -> Result<(String, String, String), String> {
    let (api_version, namespaced) = api
        .served(kind)
        .ok_or_else(|| format!("the API server does not serve {kind}"))?;
    let k = key(object);
    let (ns, name) = k.split_once('/').unwrap_or(("", &k));
    let ns = if namespaced { ns } else { "" };
    Ok((api_version, ns.to_owned(), name.to_owned()))
}

/// The status of `kind` `object`, or why there is none.
pub fn object<'a>(all: &'a Statuses, kind: &str, object: &str) -> Result<&'a ObjectStatus, String> {
    all.get(&(kind.to_owned(), object.to_owned()))
        .ok_or_else(|| format!("no status for {kind} {object}"))
}

/// `conditions` has `type_` with `status` (and `reason`, when given).
pub fn holds(
    conditions: &[super::status::Cond],
    type_: &str,
    status: bool,
    reason: Option<&str>,
) -> Check {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .ok_or_else(|| format!("no {type_} condition among {conditions:?}"))?;
    if c.status != status || reason.is_some_and(|r| r != c.reason) {
        let s = |b: bool| if b { "True" } else { "False" };
        return Err(format!(
            "{type_}={} ({}), expected {}{}",
            s(c.status),
            c.reason,
            s(status),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    }
    Ok(())
}

/// What a pod may mount: the TLS Secrets (PEM certificate and key) and the CA
/// ConfigMaps (PEM), by `(namespace, name)`.
#[derive(Default)]
struct Serving {
    secrets: BTreeMap<(String, String), (String, String)>,
    cas: BTreeMap<(String, String), String>,
}

/// The Secrets and ConfigMaps the upstream suite creates at set-up that these tests
/// use: self-signed certificates for the names it gives them; the CA
/// `tls-checks-ca-certificate`, the serving certificate it issued to the TLS backends
/// (`tls-checks-certificate`) and the client certificate it issued
/// (`tls-checks-client-certificate`), and the unrelated CA `mismatch-ca-certificate`;
/// the CAs of client certificates for Gateways' frontend validation
/// (`tls-validity-checks-ca-certificate`, `tls-validity-checks-per-port-ca-certificate`,
/// each with a client certificate it issued, and `web-backend-cm` in the web backend
/// namespace); the certificate (DER) the base HTTPS Gateway serves; and what the TLS
/// backends mount.
fn suite_secrets() -> Result<(Vec<Value>, Vec<u8>, Serving), String> {
    let specs: [(&str, &str, &[&str]); 2] = [
        ("gateway-conformance-web-backend", "certificate", &["*"]),
        (
            INFRA_NS,
            "tls-validity-checks-certificate",
            &["*", "*.org", "*.wildcard.org"],
        ),
    ];
    let mut out = Vec::new();
    let mut https_cert = Vec::new();
    for (ns, name, hosts) in specs {
        let cert = SelfSigned::generate(hosts).map_err(|e| e.to_string())?;
        out.push(serde_json::to_value(cert.to_secret(ns, name)).map_err(|e| e.to_string())?);
        if name == "tls-validity-checks-certificate" {
            https_cert = cert.cert_der.clone();
        }
    }
    let ca_map = |name: &str, pem: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": INFRA_NS},
            "data": {"ca.crt": pem},
        })
    };
    let mut serving = Serving::default();
    let web_backend = TestCa::generate("web-backend-ca").map_err(|e| e.to_string())?;
    let mut web_map = ca_map("web-backend-cm", &web_backend.cert_pem);
    web_map["metadata"]["namespace"] = json!("gateway-conformance-web-backend");
    out.push(web_map);
    for (ca_name, client_name) in [
        (
            "tls-validity-checks-ca-certificate",
            "tls-validity-checks-client-certificate",
        ),
        (
            "tls-validity-checks-per-port-ca-certificate",
            "tls-validity-checks-per-port-client-certificate",
        ),
    ] {
        let ca = TestCa::generate(ca_name).map_err(|e| e.to_string())?;
        out.push(ca_map(ca_name, &ca.cert_pem));
        let (cert, key) = ca.issue_client().map_err(|e| e.to_string())?;
        let secret = crate::certs::tls_secret(INFRA_NS, client_name, &cert, &key);
        out.push(serde_json::to_value(secret).map_err(|e| e.to_string())?);
        serving
            .secrets
            .insert((INFRA_NS.to_owned(), client_name.to_owned()), (cert, key));
    }
    let ca = TestCa::generate("tls-checks-ca").map_err(|e| e.to_string())?;
    out.push(ca_map("tls-checks-ca-certificate", &ca.cert_pem));
    serving.cas.insert(
        (INFRA_NS.to_owned(), "tls-checks-ca-certificate".to_owned()),
        ca.cert_pem.clone(),
    );
    let (client_cert, client_key) = ca.issue_client().map_err(|e| e.to_string())?;
    let secret = crate::certs::tls_secret(
        INFRA_NS,
        "tls-checks-client-certificate",
        &client_cert,
        &client_key,
    );
    out.push(serde_json::to_value(secret).map_err(|e| e.to_string())?);
    serving.secrets.insert(
        (
            INFRA_NS.to_owned(),
            "tls-checks-client-certificate".to_owned(),
        ),
        (client_cert, client_key),
    );
    let mismatch = TestCa::generate("mismatch-ca").map_err(|e| e.to_string())?;
    out.push(ca_map("mismatch-ca-certificate", &mismatch.cert_pem));
    let (cert, key) = ca
        .issue(&[
            "abc.example.com",
            "spiffe://abc.example.com/test-identity",
            "other.example.com",
        ])
        .map_err(|e| e.to_string())?;
    let secret = crate::certs::tls_secret(INFRA_NS, "tls-checks-certificate", &cert, &key);
    out.push(serde_json::to_value(secret).map_err(|e| e.to_string())?);
    serving.secrets.insert(
        (INFRA_NS.to_owned(), "tls-checks-certificate".to_owned()),
        (cert, key),
    );
    Ok((out, https_cert, serving))
}

/// The server config of the Secret a Deployment's pods mount, when one of [`Serving`]
/// (echo-basic serves TLS with it); with `TLS_CLIENT_CACERTS` set, checking client
/// certificates against the CA ConfigMap they mount, as echo-basic then does.
fn tls_of(
    deploy: &Value,
    serving: &Serving,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    let ns = str_at(deploy, "/metadata/namespace");
    let volumes = deploy
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some((cert, key)) = volumes
        .iter()
        .filter_map(|v| v.pointer("/secret/secretName").and_then(Value::as_str))
        .find_map(|name| serving.secrets.get(&(ns.to_owned(), name.to_owned())))
    else {
        return Ok(None);
    };
    let client_ca = if has_env(deploy, "TLS_CLIENT_CACERTS") {
        volumes
            .iter()
            .filter_map(|v| v.pointer("/configMap/name").and_then(Value::as_str))
            .find_map(|name| serving.cas.get(&(ns.to_owned(), name.to_owned())))
    } else {
        None
    };
    crate::certs::server_config_for_clients(cert, key, client_ca.map(String::as_str))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A fresh loopback address per pod, in a range of its own (the process id spreads
/// concurrent test processes apart).
fn pod_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 32) * 2048;
        let (b, c, d) = (200 + ((n >> 16) % 50) as u8, (n >> 8) as u8, n as u8);
        if d != 0 && d != 255 {
            return IpAddr::V4(Ipv4Addr::new(127, b, c, d));
        }
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// An echo listener per pod and target port of every Deployment a Service selects,
/// and an EndpointSlice per Service and pod, as the EndpointSlice controller would
/// publish them (ready, with the Service's port names and the pod's ports).
async fn backends(
    docs: &[Value],
    serving: &Serving,
) -> Result<(Vec<EchoServer>, Vec<Value>), String> {
    let deployments: Vec<&Value> = docs
        .iter()
        .filter(|d| str_at(d, "/kind") == "Deployment")
        .collect();
    // (namespace, deployment) -> its pods' names and addresses.
    let mut pods: BTreeMap<(String, String), Vec<(String, IpAddr)>> = BTreeMap::new();
    // (pod address, target port) -> the echo listener's address.
    let mut listeners: BTreeMap<(IpAddr, u16), SocketAddr> = BTreeMap::new();
    let mut servers = Vec::new();
    let mut slices = Vec::new();
    for svc in docs.iter().filter(|d| str_at(d, "/kind") == "Service") {
        let ns = str_at(svc, "/metadata/namespace").to_owned();
        let name = str_at(svc, "/metadata/name").to_owned();
        let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        let Some(deploy) = deployments.iter().find(|d| {
            str_at(d, "/metadata/namespace") == ns
                && d.pointer("/spec/template/metadata/labels")
                    .and_then(Value::as_object)
                    .is_some_and(|labels| {
                        !selector.is_empty()
                            && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
        }) else {
            continue;
        };
        let deploy_name = str_at(deploy, "/metadata/name").to_owned();
        let replicas = deploy
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .min(8);
        let entry = pods
            .entry((ns.clone(), deploy_name.clone()))
            .or_insert_with(|| {
                let hash = format!("{:x}", rand::random::<u32>() % 0xfffff);
                (0..replicas)
                    .map(|i| (format!("{deploy_name}-{hash}-{i}"), pod_ip()))
                    .collect()
            });
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (pod, ip) in entry.clone() {
            let mut slice_ports = Vec::new();
            for port in &ports {
                let target = match port.get("targetPort") {
                    Some(Value::Number(n)) => n.as_u64(),
                    // A named port: the pod's container port of that name.
                    Some(Value::String(s)) => container_port(deploy, s),
                    _ => port.get("port").and_then(Value::as_u64),
                };
                let Some(target) = target.and_then(|t| u16::try_from(t).ok()) else {
                    continue;
                };
                let addr = match listeners.get(&(ip, target)) {
                    Some(a) => *a,
                    None => {
                        let (at, who) = (
                            SocketAddr::new(ip, 0),
                            Identity::new(&ns, &deploy_name, &pod),
                        );
                        let server = if is_grpc_echo(deploy) {
                            EchoServer::start_grpc(at, who).await
                        } else {
                            EchoServer::start(at, who, tls_of(deploy, serving)?).await
                        }
                        .map_err(|e| e.to_string())?;
                        let a = server.addr();
                        listeners.insert((ip, target), a);
                        servers.push(server);
                        a
                    }
                };
                let mut p = json!({"port": addr.port(), "protocol": "TCP"});
                if let Some(n) = port.get("name") {
                    p["name"] = n.clone();
                }
                if let Some(a) = port.get("appProtocol") {
                    p["appProtocol"] = a.clone();
                }
                slice_ports.push(p);
            }
            slices.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-{pod}"),
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": slice_ports,
                "endpoints": [{
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
                }],
            }));
        }
    }
    Ok((servers, slices))
}

/// Whether the pods run echo-basic as its gRPC echo service (`GRPC_ECHO_SERVER` set).
fn is_grpc_echo(deploy: &Value) -> bool {
    has_env(deploy, "GRPC_ECHO_SERVER")
}

/// Whether a container of the pods sets environment variable `name`.
fn has_env(deploy: &Value, name: &str) -> bool {
    deploy
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("env").and_then(Value::as_array).into_iter().flatten())
        .any(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn container_port(deploy: &Value, name: &str) -> Option<u64> {
    deploy
        .pointer("/spec/template/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("containerPort")?
        .as_u64()
}

fn doc_file_stem(kind: &str, object: &str) -> String {
    format!(
        "{}--{}",
        kind.to_ascii_lowercase(),
        object.replace('/', "--")
    )
}

fn doc_name(doc: &Value) -> String {
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    doc_file_stem(
        str_at(doc, "/kind"),
        &format!("{ns}/{}", str_at(doc, "/metadata/name")),
    )
}

/// One file per object, so an object the test makes invalid on purpose does not take
/// the others of its file down with it.
fn write_doc(dir: &Path, index: usize, doc: &Value) -> Check {
    let text = serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{index:03}-{}.yaml", doc_name(doc)));
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn read_folder(dir: &Path) -> Result<Vec<Value>, String> {
    crate::manifests::read_dir(dir)
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| e.to_string())
}
