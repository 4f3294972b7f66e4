//! The Kubernetes source against the API-server double: lists, watches, relists after
//! 410 Gone, dropped connections and a restarted server.

// One copy of the double, owned by the conformance crate, which runs suites over it too.
#[path = "../../conformance/src/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::ApiServer;
use ingress_controller::sources::kube::{self as source, KubeSourceOptions};
use ingress_controller::store::{ObjectKey, SharedStore, Store};
use serde_json::{json, Value};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(30);

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"ingressClassName": "portico", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })
}

fn slice(ns: &str, name: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn secret(ns: &str, name: &str, type_: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"namespace": ns, "name": name},
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
    })
}

fn seed(api: &ApiServer) {
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"namespace": "default", "name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "http", "port": 8080}]}]
    }));
    api.apply(ingress("default", "web", "a.example.com"));
    api.apply(slice("default", "web-1", &["10.0.0.1"]));
    api.apply(secret("default", "tls", "kubernetes.io/tls"));
    api.apply(secret("default", "opaque", "Opaque"));
    api.apply(secret(
        "default",
        "sh.helm.release.v1.app.v1",
        "helm.sh/release.v1",
    ));
}

struct Running {
    store: SharedStore,
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(api: &ApiServer, opts: KubeSourceOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let client = source::client(Some(&kubeconfig)).await.unwrap();
    let store = SharedStore::new();
    let (tx, ready) = watch::channel(false);
    let task = tokio::spawn(source::run(client, store.clone(), opts, tx));
    Running {
        store,
        ready,
        task,
        _dir: dir,
    }
}

/// Poll the store until `check` holds, or fail with `what`.
async fn until(store: &SharedStore, what: &str, check: impl Fn(&Store) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check(&store.snapshot()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoint_ips(s: &Store, name: &str) -> Vec<String> {
    s.endpoint_slices
        .get(&ObjectKey::new("default", name))
        .map(|es| {
            es.endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn host_of(s: &Store, name: &str) -> Option<String> {
    s.ingresses
        .get(&ObjectKey::new("default", name))?
        .spec
        .as_ref()?
        .rules
        .as_ref()?
        .first()?
        .host
        .clone()
}

async fn wait_ready(r: &mut Running) {
    tokio::time::timeout(DEADLINE, r.ready.wait_for(|v| *v))
        .await
        .expect("ready in time")
        .expect("ready sender alive");
}

/// Readiness comes after the lists; the watches open just after.
async fn wait_watches(api: &ApiServer, n: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while api.open_watches() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watches did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lists_every_kind_then_follows_watch_events() {
    let api = ApiServer::start().await;
    seed(&api);
    let mut run = start(&api, KubeSourceOptions::default()).await;
    wait_ready(&mut run).await;

    let s = run.store.snapshot();
    assert_eq!(s.ingress_classes.len(), 1);
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(host_of(&s, "web").as_deref(), Some("a.example.com"));
    assert_eq!(endpoint_ips(&s, "web-1"), ["10.0.0.1"]);
    // Only TLS Secrets are watched.
    let secrets: Vec<_> = s.secrets.keys().map(ToString::to_string).collect();
    // TLS and Opaque Secrets (basic-auth user lists); no Helm release.
    assert_eq!(secrets, ["default/opaque", "default/tls"]);
    wait_watches(&api, 6).await;

    // Every kind was listed once, then watched from the list's resourceVersion, with
    // bookmarks; Secrets with the type field selector.
    let reqs = api.requests();
    let watches: Vec<_> = reqs.iter().filter(|r| r.is_watch()).collect();
    for path in [
        "/apis/networking.k8s.io/v1/ingresses",
        "/apis/networking.k8s.io/v1/ingressclasses",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/endpoints",
        "/api/v1/secrets",
    ] {
        assert!(
            reqs.iter()
                .any(|r| r.method == "GET" && r.path == path && !r.is_watch()),
            "no list of {path}"
        );
        let w = watches
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no watch of {path}"));
        assert!(w.query.contains("allowWatchBookmarks=true"), "{}", w.query);
        assert!(w.query.contains("resourceVersion="), "{}", w.query);
    }
    let secret_watch = watches
        .iter()
        .find(|r| r.path == "/api/v1/secrets")
        .unwrap();
    assert!(
        secret_watch
            .query
            .contains("fieldSelector=type%21%3Dhelm.sh%2Frelease.v1%2Ctype%21%3Dkubernetes.io%2Fservice-account-token%2Cmetadata.name%21%3Dportico-affinity-key"),
        "{}",
        secret_watch.query
    );

    // Watch events: add, modify, delete.
    api.apply(slice("default", "web-2", &["10.0.0.2"]));
    api.apply(ingress("default", "web", "b.example.com"));
    api.bookmark();
    api.apply(slice("default", "web-1", &["10.0.0.1", "10.0.0.3"]));
    api.delete("v1", "Service", "default", "web");
    until(&run.store, "watch events applied", |s| {
        endpoint_ips(s, "web-2") == ["10.0.0.2"]
            && endpoint_ips(s, "web-1") == ["10.0.0.1", "10.0.0.3"]
            && host_of(s, "web").as_deref() == Some("b.example.com")
            && s.services.is_empty()
    })
    .await;
}

#[tokio::test]
async fn not_ready_until_every_kind_is_listed() {
    let api = ApiServer::start().await;
    seed(&api);
    // Lists of EndpointSlices fail until the failure is lifted... by failing every GET.
    api.fail_method(Some("GET"));
    let mut run = start(&api, KubeSourceOptions::default()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!*run.ready.borrow(), "ready before any list succeeded");
    assert!(run.store.snapshot().ingresses.is_empty());
    api.fail_method(None);
    wait_ready(&mut run).await;
    assert_eq!(run.store.snapshot().ingresses.len(), 1);
}

#[tokio::test]
async fn relists_after_410_gone_and_keeps_objects_meanwhile() {
    let api = ApiServer::start().await;
    seed(&api);
    let mut run = start(&api, KubeSourceOptions::default()).await;
    wait_ready(&mut run).await;

    // Changes the watches never see: the history is compacted and the watches closed, so
    // resuming from the last resourceVersion gets 410 Gone and a relist follows.
    api.stop();
    api.apply(slice("default", "web-1", &["10.0.0.9"]));
    api.delete("networking.k8s.io/v1", "Ingress", "default", "web");
    api.apply(ingress("default", "new", "new.example.com"));
    api.compact();
    // While the server is away, the store keeps the last good objects.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = run.store.snapshot();
    assert_eq!(endpoint_ips(&s, "web-1"), ["10.0.0.1"]);
    assert!(host_of(&s, "web").is_some());
    api.clear_requests();
    api.restart().await;

    until(&run.store, "relist converged", |s| {
        endpoint_ips(s, "web-1") == ["10.0.0.9"]
            && host_of(s, "web").is_none()
            && host_of(s, "new").as_deref() == Some("new.example.com")
    })
    .await;
    assert!(*run.ready.borrow(), "readiness dropped during a relist");
    // The relist was caused by 410 Gone on a resumed watch, not by a fresh start.
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .any(|r| r.is_watch() && r.path == "/apis/networking.k8s.io/v1/ingresses"),
        "no resumed watch"
    );
    assert!(
        reqs.iter()
            .any(|r| !r.is_watch() && r.path == "/apis/networking.k8s.io/v1/ingresses"),
        "no relist"
    );
}

#[tokio::test]
async fn resumes_after_dropped_watch_connections() {
    let api = ApiServer::start().await;
    seed(&api);
    let mut run = start(&api, KubeSourceOptions::default()).await;
    wait_ready(&mut run).await;
    for i in 0..3 {
        api.drop_watches();
        let ip = format!("10.0.1.{i}");
        api.apply(slice("default", "web-1", &[&ip]));
        until(&run.store, "change after a dropped watch", |s| {
            endpoint_ips(s, "web-1") == [ip.as_str()]
        })
        .await;
    }
    // Resuming from a known resourceVersion needs no relist.
    let lists = api
        .requests()
        .iter()
        .filter(|r| !r.is_watch() && r.path == "/apis/discovery.k8s.io/v1/endpointslices")
        .count();
    assert_eq!(lists, 1, "a dropped watch caused a relist");
}

#[tokio::test]
async fn watch_namespace_limits_namespaced_kinds() {
    let api = ApiServer::start().await;
    seed(&api);
    api.apply(ingress("other", "web", "other.example.com"));
    let mut run = start(
        &api,
        KubeSourceOptions {
            watch_namespace: Some("other".into()),
            ..KubeSourceOptions::default()
        },
    )
    .await;
    wait_ready(&mut run).await;
    let s = run.store.snapshot();
    let keys: Vec<_> = s.ingresses.keys().map(ToString::to_string).collect();
    assert_eq!(keys, ["other/web"]);
    // IngressClasses are cluster-scoped.
    assert_eq!(s.ingress_classes.len(), 1);
    assert!(api
        .requests()
        .iter()
        .any(|r| r.path == "/apis/networking.k8s.io/v1/namespaces/other/ingresses"));
}

/// With the Gateway API CRDs installed, their kinds are listed and watched, and readiness
/// waits for them; without, they are not asked for.
#[tokio::test]
async fn gateway_api_kinds_are_watched_when_installed() {
    let api = ApiServer::start().await;
    seed(&api);
    let route = |host: &str| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host]}
        })
    };
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "portico"},
        "spec": {"controllerName": "portico.dev/gateway-controller"}
    }));
    api.apply(route("a.example.com"));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"namespace": "default", "name": "rpc"},
        "spec": {"parentRefs": [{"name": "gw"}],
                 "rules": [{"matches": [{"method": {"service": "echo.Echo"}}]}]}
    }));

    // Not installed: nothing of the group is listed, and the source is ready without it.
    let plain = start(&api, KubeSourceOptions::default()).await;
    let mut ready = plain.ready.clone();
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .expect("ready")
        .unwrap();
    assert!(plain.store.snapshot().http_routes.is_empty());
    assert!(!api
        .requests()
        .iter()
        .any(|r| r.path.contains("/httproutes")));
    drop(plain);

    api.install_gateway_api();
    let run = start(&api, KubeSourceOptions::default()).await;
    let mut ready = run.ready.clone();
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .expect("ready")
        .unwrap();
    let s = run.store.snapshot();
    assert!(s
        .gateway_classes
        .contains_key(&ObjectKey::new("", "portico")));
    let hostnames = |s: &Store| {
        s.http_routes
            .get(&ObjectKey::new("default", "web"))
            .map(|r| r.spec.hostnames.clone())
    };
    assert_eq!(hostnames(&s), Some(vec!["a.example.com".to_owned()]));
    let rpc = s.grpc_routes.get(&ObjectKey::new("default", "rpc"));
    let service = rpc
        .and_then(|r| r.spec.rules.first())
        .and_then(|r| r.matches.first())
        .and_then(|m| m.method.as_ref())
        .and_then(|m| m.service.clone());
    assert_eq!(service.as_deref(), Some("echo.Echo"));
    // Namespaces come with the Gateway API kinds, for listeners' namespace selectors.
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team", "labels": {"shared-gateway": "yes"}}}));
    until(&run.store, "the namespace", |s| {
        s.namespaces
            .get(&ObjectKey::new("", "team"))
            .and_then(|n| n.metadata.labels.clone())
            .is_some_and(|l| l.get("shared-gateway").map(String::as_str) == Some("yes"))
    })
    .await;
    // Changes follow through the watch.
    api.apply(route("b.example.com"));
    until(&run.store, "the edited route", |s| {
        hostnames(s) == Some(vec!["b.example.com".to_owned()])
    })
    .await;
    api.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "default",
        "web",
    );
    until(&run.store, "the route deleted", |s| {
        s.http_routes.is_empty()
    })
    .await;
}
