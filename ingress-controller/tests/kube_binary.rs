//! The real binary against the API-server double: routing follows API objects, readiness
//! waits for the initial lists, 410 Gone / dropped watches / a vanished API server keep the
//! last good config and an outage ends in seconds, Ingress status is applied (server-side)
//! through the status subresource, and a burst of
//! EndpointSlice changes costs a handful of reloads.

// One copy of the double, owned by the conformance crate, which runs suites over it too.
#[path = "../../conformance/src/apiserver.rs"]
mod apiserver;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use apiserver::ApiServer;
use common::{get, wait_for, Backend, Controller};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// The binary on free ports, pointed at the double through a kubeconfig file.
fn start(api: &ApiServer, dir: &tempfile::TempDir, extra: &[&str]) -> Controller {
    let kubeconfig = api.write_kubeconfig(dir.path());
    let mut args = vec!["--kubeconfig".to_owned(), kubeconfig.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Controller::start_with(
        &args,
        &[("POD_NAME", "portico-test-0"), ("POD_NAMESPACE", "portico")],
    )
}

async fn ready(c: &Controller) -> bool {
    matches!(get(c.admin, "admin", "/readyz").await, Ok((200, _)))
}

fn reloads(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("portico_config_reloads_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("portico_config_reloads_total in /metrics")
}

async fn eventually<T, F, Fut>(c: &Controller, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ingress(host: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"ingressClassName": "portico", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })
}

/// The `web` EndpointSlice pointing at one backend (the slice carries the port).
fn slice(to: SocketAddr) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [to.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": to.port(), "protocol": "TCP"}]
    })
}

fn seed(api: &ApiServer, to: SocketAddr) {
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portico"}, "spec": {"controller": "portico.dev/ingress-controller"}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    api.apply(slice(to));
    api.apply(ingress("a.example.com"));
}

/// Wait until `host` is answered by backend `name`.
async fn wait_backend(c: &Controller, host: &str, name: &str) {
    let want = format!("{name} /");
    wait_for(c.http, host, "/", DEADLINE, |status, body| {
        status == 200 && body == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_api_and_status_is_written_through_the_subresource() {
    let (a, b) = (
        Backend::start("backend-a").await,
        Backend::start("backend-b").await,
    );
    let api = ApiServer::start().await;
    seed(&api, a.addr);
    // Lists fail at first: the controller must not become ready.
    api.fail_method(Some("GET"));
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(&api, &dir, &["--publish-address", "203.0.113.10"]);
    eventually(&c, "admin up", || async {
        get(c.admin, "admin", "/healthz").await.ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ready(&c).await, "ready before the initial lists");
    api.fail_method(None);
    c.wait_ready().await;
    wait_backend(&c, "a.example.com", "backend-a").await;

    // EndpointSlice change: traffic moves.
    api.apply(slice(b.addr));
    wait_backend(&c, "a.example.com", "backend-b").await;
    // Ingress change: the host moves.
    api.apply(ingress("b.example.com"));
    wait_backend(&c, "b.example.com", "backend-b").await;
    wait_for(c.http, "a.example.com", "/", DEADLINE, |status, _| {
        status == 404
    })
    .await;

    // Status: one server-side apply on the status subresource, by the leader, as `portico`.
    let status_path = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status";
    let patch = eventually(&c, "status patch", || async {
        api.requests().into_iter().find(|r| r.path == status_path)
    })
    .await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type, apiserver::APPLY_PATCH);
    assert!(
        patch.query.contains("fieldManager=portico") && patch.query.contains("force=true"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.json()["status"],
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}})
    );
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "portico",
            "portico-leader",
        )
        .expect("Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "portico-test-0");
    // More changes that do not touch the address: no more status writes.
    api.apply(slice(a.addr));
    wait_backend(&c, "b.example.com", "backend-a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = api
        .requests()
        .into_iter()
        .filter(|r| r.path == status_path)
        .count();
    assert_eq!(writes, 1, "status rewritten without a change");
    assert!(!api.requests().iter().any(|r| r.method != "GET"
        && r.path == "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web"));

    // A broken backend reference becomes an Event on the Ingress.
    let mut broken = ingress("b.example.com");
    broken["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("missing");
    api.apply(broken);
    let event = eventually(&c, "an Event", || async {
        api.list("events.k8s.io/v1", "Event").into_iter().next()
    })
    .await;
    assert_eq!(event["regarding"]["kind"], "Ingress");
    assert_eq!(event["regarding"]["name"], "web");
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["reportingController"],
        "portico.dev/ingress-controller"
    );
    assert!(
        event["note"].as_str().unwrap_or("").contains("missing"),
        "{event}"
    );

    // SIGTERM: the Lease is released for the next replica.
    c.signal("TERM");
    c.wait_exit(DEADLINE).await;
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "portico",
            "portico-leader",
        )
        .expect("Lease");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_through_410_gone_dropped_watches_and_an_api_server_restart() {
    let (a, b) = (
        Backend::start("backend-a").await,
        Backend::start("backend-b").await,
    );
    let api = ApiServer::start().await;
    seed(&api, a.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(&api, &dir, &[]);
    c.wait_ready().await;
    wait_backend(&c, "a.example.com", "backend-a").await;

    // Dropped watch connections: resumed, changes still arrive.
    api.drop_watches();
    api.apply(slice(b.addr));
    wait_backend(&c, "a.example.com", "backend-b").await;

    // 410 Gone: history compacted under the watches; they relist and converge.
    api.expire_watches();
    api.apply(slice(a.addr));
    wait_backend(&c, "a.example.com", "backend-a").await;

    // The API server goes away: the last good config keeps serving, readiness holds.
    api.stop();
    for _ in 0..10 {
        assert_eq!(
            get(c.http, "a.example.com", "/").await,
            Ok((200, "backend-a /".to_owned()))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ready(&c).await,
        "readiness dropped while the API server was away"
    );
    // It comes back having lost our place in its history, with a change we never saw.
    api.apply(slice(b.addr));
    api.compact();
    api.restart().await;
    wait_backend(&c, "a.example.com", "backend-b").await;
}

/// How long the API server is away in the outage test: the case that once took the
/// watchers' backoff to tens of seconds.
const OUTAGE: Duration = Duration::from_secs(20);
/// How soon after the API server is back an object created then must be served.
const AFTER_OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_created_after_a_long_api_server_outage_is_served_within_seconds() {
    let backend = Backend::start("backend-a").await;
    let api = ApiServer::start().await;
    seed(&api, backend.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(&api, &dir, &[]);
    c.wait_ready().await;
    wait_backend(&c, "a.example.com", "backend-a").await;

    api.stop();
    tokio::time::sleep(OUTAGE).await;
    // Back without our place in its history, as a restarted server (or etcd) is: resuming
    // a watch gets 410 Gone.
    api.compact();
    api.restart().await;
    let mut late = ingress("late.example.com");
    late["metadata"]["name"] = json!("late");
    api.apply(late);
    let created = tokio::time::Instant::now();
    wait_for(
        c.http,
        "late.example.com",
        "/",
        AFTER_OUTAGE,
        |status, body| status == 200 && body == "backend-a /",
    )
    .await;
    eprintln!("served {:?} after creation", created.elapsed());
    // The old routes were served all along and still are.
    assert_eq!(
        get(c.http, "a.example.com", "/").await,
        Ok((200, "backend-a /".to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_endpoint_changes_causes_few_reloads() {
    let (a, b) = (
        Backend::start("backend-a").await,
        Backend::start("backend-b").await,
    );
    let api = ApiServer::start().await;
    seed(&api, a.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(&api, &dir, &[]);
    c.wait_ready().await;
    wait_backend(&c, "a.example.com", "backend-a").await;
    // Let start-up publishes settle before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reloads(&c.metrics().await);
    for i in 0..1000u32 {
        // Alternate between two addresses so every change is a real one; the last is b.
        let mut s = slice(if i % 2 == 0 { a.addr } else { b.addr });
        s["metadata"]["annotations"] = json!({"burst": i.to_string()});
        api.apply(s);
    }
    wait_backend(&c, "a.example.com", "backend-b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = reloads(&c.metrics().await) - before;
    eprintln!("1000 EndpointSlice changes -> {n} config reloads");
    assert!((1..=25).contains(&n), "{n} reloads for 1000 changes");
}

/// With the Gateway API served, the binary routes an HTTPRoute and its leader writes the
/// Gateway API status through the status subresources, the Gateway with the
/// `--publish-address` addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_routes_and_status_from_the_binary() {
    let a = Backend::start("backend-a").await;
    let api = ApiServer::start().await;
    api.install_gateway_api();
    seed(&api, a.addr);
    let gw = "gateway.networking.k8s.io/v1";
    api.apply(json!({"apiVersion": gw, "kind": "GatewayClass",
        "metadata": {"name": "portico", "generation": 1},
        "spec": {"controllerName": "portico.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": gw, "kind": "Gateway",
        "metadata": {"namespace": "default", "name": "gw", "generation": 1},
        "spec": {"gatewayClassName": "portico",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}));
    api.apply(json!({"apiVersion": gw, "kind": "HTTPRoute",
        "metadata": {"namespace": "default", "name": "route", "generation": 3},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["gw.example.com"],
                 "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}));
    let dir = tempfile::tempdir().unwrap();
    let mut c = start(&api, &dir, &["--publish-address", "203.0.113.10"]);
    c.wait_ready().await;
    wait_backend(&c, "gw.example.com", "backend-a").await;

    let path = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/gw/status";
    let patch = eventually(&c, "Gateway status patch", || async {
        api.requests().into_iter().find(|r| r.path == path)
    })
    .await;
    assert_eq!(patch.content_type, apiserver::APPLY_PATCH);
    assert!(
        patch.query.contains("fieldManager=portico"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.json()["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.10"}])
    );
    assert_eq!(patch.json()["status"]["listeners"][0]["attachedRoutes"], 1);
    let route_path =
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/route/status";
    let route = eventually(&c, "HTTPRoute status written", || async {
        let stored = api.get(gw, "HTTPRoute", "default", "route")?;
        let parent = stored["status"]["parents"].get(0)?.clone();
        (parent["controllerName"] == "portico.dev/gateway-controller").then_some(parent)
    })
    .await;
    assert_eq!(route["conditions"][0]["type"], "Accepted");
    assert_eq!(route["conditions"][0]["status"], "True");
    assert_eq!(route["conditions"][0]["observedGeneration"], 3);
    assert!(api
        .requests()
        .iter()
        .any(|r| r.path == route_path && r.method == "PATCH"));
}
