//! Leader election, Ingress status and Events against the API-server double.

// One copy of the double, owned by the conformance crate, which runs suites over it too.
#[path = "../../conformance/src/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::{ApiServer, Recorded};
use ingress_controller::events::{self, EventNote};
use ingress_controller::leader::{self, LeaderOptions};
use ingress_controller::sources::kube::{self as source, KubeSourceOptions};
use ingress_controller::status::{self, LbAddress, PublishSource};
use ingress_controller::store::{Kind, ObjectKey, SharedStore};
use serde_json::{json, Value};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(30);

struct Env {
    api: ApiServer,
    client: kube::Client,
    store: SharedStore,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ingress(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"ingressClassName": "portico", "rules": [{"host": format!("{name}.example.com")}]}
    })
}

/// The double with two Ingresses, and the Kubernetes source feeding a store from it.
async fn env() -> Env {
    let api = ApiServer::start().await;
    api.apply(ingress("web"));
    api.apply(ingress("other"));
    let dir = tempfile::tempdir().unwrap();
    let client = source::client(Some(&api.write_kubeconfig(dir.path())))
        .await
        .unwrap();
    let store = SharedStore::new();
    let (ready_tx, mut ready) = watch::channel(false);
    let task = tokio::spawn(source::run(
        client.clone(),
        store.clone(),
        KubeSourceOptions::default(),
        ready_tx,
    ));
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    Env {
        api,
        client,
        store,
        tasks: vec![task],
        _dir: dir,
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_writes(api: &ApiServer) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/status") && r.method != "GET")
        .collect()
}

fn lb_of(api: &ApiServer, name: &str) -> Value {
    api.get("networking.k8s.io/v1", "Ingress", "default", name)
        .unwrap()["status"]["loadBalancer"]["ingress"]
        .clone()
}

#[tokio::test]
async fn status_is_patched_through_the_subresource_only_by_the_leader_and_only_on_change() {
    let env = env().await;
    let (leader_tx, leader_rx) = watch::channel(false);
    let publish = PublishSource::Addresses(vec![LbAddress::Ip("203.0.113.10".parse().unwrap())]);
    let handle = status::spawn(env.client.clone(), env.store.clone(), publish, leader_rx);
    handle.set_owned(&[ObjectKey::new("default", "web")]);

    // Not the leader: nothing is written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        status_writes(&env.api).is_empty(),
        "a follower wrote status"
    );

    leader_tx.send_replace(true);
    let writes = eventually("status written", || {
        let w = status_writes(&env.api);
        (!w.is_empty()).then_some(w)
    })
    .await;
    let w = &writes[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(
        w.path,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"
    );
    // Server-side apply as `portico`, forced.
    assert_eq!(w.content_type, apiserver::APPLY_PATCH);
    let query: Vec<&str> = w.query.split('&').collect();
    assert!(query.contains(&"fieldManager=portico"), "{}", w.query);
    assert!(query.contains(&"force=true"), "{}", w.query);
    assert_eq!(
        w.json(),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "web", "namespace": "default"},
               "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}})
    );
    assert_eq!(lb_of(&env.api, "web"), json!([{"ip": "203.0.113.10"}]));

    // Unrelated changes and repeated owned lists cause no further writes.
    for i in 0..5 {
        env.api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": format!("s{i}")}, "spec": {"clusterIP": "10.96.0.1"}
        }));
        handle.set_owned(&[ObjectKey::new("default", "web")]);
    }
    eventually("services seen", || {
        (env.store.snapshot().services.len() == 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status_writes(&env.api).len(),
        1,
        "status rewritten without a change"
    );

    // Someone else overwrites it: put back.
    let mut ing = env
        .api
        .get("networking.k8s.io/v1", "Ingress", "default", "web")
        .unwrap();
    ing["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}});
    env.api.apply(ing);
    eventually("status restored", || {
        (lb_of(&env.api, "web") == json!([{"ip": "203.0.113.10"}])).then_some(())
    })
    .await;

    // The Ingress stops being ours (and `other` becomes ours): ours is cleared.
    handle.set_owned(&[ObjectKey::new("default", "other")]);
    let cleared = |v: Value| v.is_null() || v == json!([]);
    eventually("status moved", || {
        (cleared(lb_of(&env.api, "web"))
            && lb_of(&env.api, "other") == json!([{"ip": "203.0.113.10"}]))
        .then_some(())
    })
    .await;
    let clear = status_writes(&env.api)
        .into_iter()
        .find(|r| {
            r.path.ends_with("/ingresses/web/status")
                && r.json()["status"]["loadBalancer"]["ingress"] == json!([])
        })
        .expect("a clearing patch");
    assert_eq!(clear.content_type, apiserver::APPLY_PATCH);
    assert!(
        clear.query.contains("fieldManager=portico"),
        "{}",
        clear.query
    );
    // No write ever went to the main resource.
    assert!(!env.api.requests().iter().any(|r| r.method != "GET"
        && r.path.contains("/ingresses/")
        && !r.path.ends_with("/status")));
}

#[tokio::test]
async fn publish_service_address_follows_the_service() {
    let env = env().await;
    env.api.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "portico", "name": "portico"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9"}
    }));
    let (_leader_tx, leader_rx) = watch::channel(true);
    let publish = PublishSource::from_flags(Some("portico/portico"), None).unwrap();
    let handle = status::spawn(env.client.clone(), env.store.clone(), publish, leader_rx);
    handle.set_owned(&[ObjectKey::new("default", "web")]);
    // A LoadBalancer without an address yet publishes nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status_writes(&env.api).is_empty());

    let lb = |status: Value| {
        env.api
            .apply_status("v1", "Service", "portico", "portico", status)
    };
    lb(json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}));
    eventually("hostname published", || {
        (lb_of(&env.api, "web") == json!([{"hostname": "lb.example.com"}])).then_some(())
    })
    .await;

    lb(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}]}}));
    eventually("new address published", || {
        (lb_of(&env.api, "web") == json!([{"ip": "203.0.113.20"}])).then_some(())
    })
    .await;
    // The Service was read with a name-scoped watch in its own namespace.
    assert!(env
        .api
        .requests()
        .iter()
        .any(|r| r.path == "/api/v1/namespaces/portico/services"
            && r.query.contains("fieldSelector=metadata.name%3Dportico")));
}

fn fast(identity: &str) -> LeaderOptions {
    LeaderOptions {
        namespace: "portico".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_period: Duration::from_millis(300),
        retry_period: Duration::from_millis(200),
        renew_deadline: Duration::from_millis(1500),
        ..LeaderOptions::default()
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_failover_after_the_lease_expires() {
    let env = env().await;
    let (a_tx, a) = watch::channel(false);
    let (b_tx, b) = watch::channel(false);
    let (_stop_tx, stop) = watch::channel(false);
    let task_a = tokio::spawn(leader::run(
        env.client.clone(),
        fast("pod-a"),
        a_tx,
        stop.clone(),
    ));
    eventually("a leads", || (*a.borrow()).then_some(())).await;
    let task_b = tokio::spawn(leader::run(env.client.clone(), fast("pod-b"), b_tx, stop));
    // b campaigns for a few lease periods but never wins while a renews.
    for _ in 0..30 {
        assert!(
            *a.borrow() && !*b.borrow(),
            "two leaders, or a lost the Lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = env
        .api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "portico",
            "portico-leader",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
    // Renewals are replaces that carry the resourceVersion read.
    let puts: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path == "/apis/coordination.k8s.io/v1/namespaces/portico/leases/portico-leader"
        })
        .collect();
    assert!(!puts.is_empty());
    assert!(puts
        .iter()
        .all(|r| r.json()["metadata"]["resourceVersion"].is_string()));

    task_a.abort();
    eventually("b takes over", || (*b.borrow()).then_some(())).await;
    let lease = env
        .api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "portico",
            "portico-leader",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    task_b.abort();
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_steps_down() {
    let env = env().await;
    let (tx, rx) = watch::channel(false);
    let (_stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(leader::run(env.client.clone(), fast("pod-a"), tx, stop));
    eventually("leads", || (*rx.borrow()).then_some(())).await;
    env.api.fail_method(Some("GET"));
    eventually("steps down", || (!*rx.borrow()).then_some(())).await;
    env.api.fail_method(None);
    eventually("leads again", || (*rx.borrow()).then_some(())).await;
    task.abort();
}

#[tokio::test]
async fn a_stopping_leader_releases_the_lease_for_an_immediate_takeover() {
    let env = env().await;
    // A long lease: without the release, b would wait 60 s.
    let slow = |id: &str| LeaderOptions {
        lease_duration: Duration::from_secs(60),
        ..fast(id)
    };
    let (a_tx, a) = watch::channel(false);
    let (b_tx, b) = watch::channel(false);
    let (stop_a_tx, stop_a) = watch::channel(false);
    let (_stop_b_tx, stop_b) = watch::channel(false);
    let task_a = tokio::spawn(leader::run(env.client.clone(), slow("pod-a"), a_tx, stop_a));
    eventually("a leads", || (*a.borrow()).then_some(())).await;
    let task_b = tokio::spawn(leader::run(env.client.clone(), slow("pod-b"), b_tx, stop_b));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*b.borrow());
    stop_a_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task_a)
        .await
        .expect("a stops")
        .unwrap();
    assert!(!*a.borrow());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !*b.borrow() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not take over a released Lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task_b.abort();
}

fn note(name: &str, reason: &str, message: &str) -> EventNote {
    EventNote {
        kind: Kind::Ingress,
        object: ObjectKey::new("default", name),
        warning: true,
        reason: reason.into(),
        message: message.into(),
    }
}

fn event_posts(api: &ApiServer) -> Vec<Value> {
    api.requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.path == "/apis/events.k8s.io/v1/namespaces/default/events"
        })
        .map(|r| {
            // Every write names Portico's field manager.
            assert!(r.query.contains("fieldManager=portico"), "{}", r.query);
            r.json()
        })
        .collect()
}

#[tokio::test]
async fn each_new_diagnostic_becomes_one_event() {
    let env = env().await;
    let (leader_tx, leader_rx) = watch::channel(true);
    let publisher = events::spawn(
        env.client.clone(),
        env.store.clone(),
        "pod-a".into(),
        leader_rx,
    );
    let a = note(
        "web",
        "ServiceNotFound",
        "Ingress default/web: spec.rules[0]: service \"x\" not found",
    );
    let b = note(
        "web",
        "PortNotFound",
        "Ingress default/web: spec.rules[1]: no port 81",
    );

    publisher.publish(vec![a.clone()]);
    let posts = eventually("first event", || {
        let p = event_posts(&env.api);
        (!p.is_empty()).then_some(p)
    })
    .await;
    let ev = &posts[0];
    assert_eq!(ev["reason"], "ServiceNotFound");
    assert_eq!(ev["note"], a.message);
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["action"], "Compile");
    assert_eq!(ev["reportingController"], "portico.dev/ingress-controller");
    assert_eq!(ev["reportingInstance"], "pod-a");
    assert_eq!(ev["regarding"]["kind"], "Ingress");
    assert_eq!(ev["regarding"]["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ev["regarding"]["name"], "web");
    let uid = env
        .api
        .get("networking.k8s.io/v1", "Ingress", "default", "web")
        .unwrap()["metadata"]["uid"]
        .clone();
    assert_eq!(ev["regarding"]["uid"], uid);
    assert!(ev["eventTime"].is_string());

    // The same diagnostics again (a resync): nothing new. One more: one Event.
    publisher.publish(vec![a.clone()]);
    publisher.publish(vec![a.clone(), b.clone()]);
    let posts = eventually("second event", || {
        let p = event_posts(&env.api);
        (p.len() >= 2).then_some(p)
    })
    .await;
    assert_eq!(posts[1]["reason"], "PortNotFound");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(event_posts(&env.api).len(), 2);

    // Gone and back: published again. While not the leader: nothing.
    publisher.publish(vec![b.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    publisher.publish(vec![a.clone(), b.clone()]);
    eventually("third event", || {
        (event_posts(&env.api).len() == 3).then_some(())
    })
    .await;
    leader_tx.send_replace(false);
    publisher.publish(vec![note("other", "BadAnnotation", "x")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(event_posts(&env.api).len(), 3);
}

/// GatewayClass, Gateway, HTTPRoute and GRPCRoute status, worked out by a compile of the store and
/// applied by the writer through each kind's status subresource.
#[tokio::test]
async fn gateway_api_status_is_applied_through_the_status_subresources() {
    use ingress_controller::compile::{compile, CompileOptions};
    use ingress_controller::gateway_status;

    let api = ApiServer::start().await;
    api.install_gateway_api();
    let gw = "gateway.networking.k8s.io/v1";
    api.apply(json!({"apiVersion": gw, "kind": "GatewayClass",
        "metadata": {"name": "portico", "generation": 1},
        "spec": {"controllerName": "portico.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": gw, "kind": "Gateway",
        "metadata": {"namespace": "default", "name": "gw", "generation": 2},
        "spec": {"gatewayClassName": "portico", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"},
            {"name": "udp", "port": 53, "protocol": "UDP"}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 8080}]}}));
    api.apply(json!({"apiVersion": gw, "kind": "HTTPRoute",
        "metadata": {"namespace": "default", "name": "web", "generation": 5},
        "spec": {"parentRefs": [{"name": "gw", "sectionName": "http"}],
                 "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]}}));
    api.apply(json!({"apiVersion": gw, "kind": "GRPCRoute",
        "metadata": {"namespace": "default", "name": "rpc", "generation": 7},
        "spec": {"parentRefs": [{"name": "gw"}],
                 "rules": [{"backendRefs": [{"name": "missing", "port": 8080}]}]}}));
    // Another controller's entry, which the atomic list must keep.
    let theirs = json!({"parentRef": {"name": "mesh", "kind": "Service", "group": ""},
        "controllerName": "example.com/mesh",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]});
    api.apply_status(
        gw,
        "HTTPRoute",
        "default",
        "web",
        json!({"parents": [theirs]}),
    );

    let dir = tempfile::tempdir().unwrap();
    let client = source::client(Some(&api.write_kubeconfig(dir.path())))
        .await
        .unwrap();
    let store = SharedStore::new();
    let (ready_tx, mut ready) = watch::channel(false);
    let source_task = tokio::spawn(source::run(
        client.clone(),
        store.clone(),
        KubeSourceOptions::default(),
        ready_tx,
    ));
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    let compiled = compile(&store.snapshot(), &CompileOptions::default());

    let (leader_tx, leader_rx) = watch::channel(false);
    let (_addrs_tx, addrs_rx) =
        watch::channel(vec![LbAddress::Ip("203.0.113.10".parse().unwrap())]);
    let handle = gateway_status::spawn(client.clone(), store.clone(), addrs_rx, leader_rx);
    handle.set(&compiled.gateway_status);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status_writes(&api).is_empty(), "a follower wrote status");

    leader_tx.send_replace(true);
    let writes = eventually("four status writes", || {
        let w = status_writes(&api);
        (w.len() >= 4).then_some(w)
    })
    .await;
    let at = |path: &str| {
        writes
            .iter()
            .find(|w| w.path == path)
            .unwrap_or_else(|| panic!("no write to {path}: {writes:?}"))
    };
    let class = at("/apis/gateway.networking.k8s.io/v1/gatewayclasses/portico/status");
    let gateway = at("/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/gw/status");
    let route = at("/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web/status");
    let rpc = at("/apis/gateway.networking.k8s.io/v1/namespaces/default/grpcroutes/rpc/status");
    for w in [class, gateway, route, rpc] {
        assert_eq!(w.method, "PATCH");
        assert_eq!(w.content_type, apiserver::APPLY_PATCH);
        let query: Vec<&str> = w.query.split('&').collect();
        assert!(query.contains(&"fieldManager=portico"), "{}", w.query);
        assert!(query.contains(&"force=true"), "{}", w.query);
    }
    // Conditions without their lastTransitionTime, which is the time of the write.
    let strip = |mut v: Value| {
        if let Some(list) = v.as_array_mut() {
            for c in list {
                assert!(c["lastTransitionTime"].is_string(), "{c}");
                c.as_object_mut().unwrap().remove("lastTransitionTime");
            }
        }
        v
    };
    let class = class.json();
    assert_eq!(class["kind"], "GatewayClass");
    assert_eq!(class["metadata"], json!({"name": "portico"}));
    assert_eq!(
        strip(class["status"]["conditions"].clone()),
        json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                "observedGeneration": 1}])
    );

    let gateway = gateway.json();
    assert_eq!(
        gateway["metadata"],
        json!({"name": "gw", "namespace": "default"})
    );
    let st = &gateway["status"];
    assert_eq!(
        st["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.10"}])
    );
    assert_eq!(
        strip(st["conditions"].clone()),
        json!([
            // The UDP listener is not served.
            {"type": "Accepted", "status": "True", "reason": "ListenersNotValid",
             "message": "some listeners cannot be served", "observedGeneration": 2},
            {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "", "observedGeneration": 2},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "", "observedGeneration": 2},
        ])
    );
    let http = &st["listeners"][0];
    assert_eq!(http["name"], "http");
    assert_eq!(http["attachedRoutes"], 2);
    assert_eq!(
        http["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
               {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    let types: Vec<(&str, &str, &str)> = http["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["observedGeneration"], 2);
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("Accepted", "True", "Accepted"),
            ("Programmed", "True", "Programmed"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
            ("Conflicted", "False", "NoConflicts"),
        ]
    );
    let udp = &st["listeners"][1];
    assert_eq!(udp["supportedKinds"], json!([]));
    assert_eq!(udp["conditions"][0]["reason"], "UnsupportedProtocol");

    let route = route.json();
    // The atomic list is written over the version it was read from.
    assert!(route["metadata"]["resourceVersion"].is_string(), "{route}");
    let parents = route["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{route}");
    assert_eq!(parents[0], theirs);
    assert_eq!(
        parents[1]["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
               "namespace": "default", "name": "gw", "sectionName": "http"})
    );
    assert_eq!(
        parents[1]["controllerName"],
        "portico.dev/gateway-controller"
    );
    assert_eq!(
        strip(parents[1]["conditions"].clone()),
        json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 5},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "", "observedGeneration": 5},
        ])
    );
    let rpc = rpc.json();
    assert_eq!(rpc["kind"], "GRPCRoute");
    assert!(rpc["metadata"]["resourceVersion"].is_string(), "{rpc}");
    let parents = rpc["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "{rpc}");
    assert_eq!(
        parents[0]["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
               "namespace": "default", "name": "gw"})
    );
    let conditions = strip(parents[0]["conditions"].clone());
    assert_eq!(conditions[0]["reason"], "Accepted");
    assert_eq!(conditions[1]["type"], "ResolvedRefs");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(conditions[1]["reason"], "BackendNotFound");
    assert_eq!(conditions[1]["observedGeneration"], 7);
    let stored = api.get(gw, "HTTPRoute", "default", "web").unwrap();
    assert_eq!(
        stored["status"]["parents"].as_array().map(Vec::len),
        Some(2)
    );

    // Once the store shows what was written, the same status is not written again.
    eventually("the written status read back", || {
        let s = store.snapshot();
        s.http_routes
            .get(&ObjectKey::new("default", "web"))
            .and_then(|r| r.status.clone())
            .filter(|st| st["parents"].as_array().map(Vec::len) == Some(2))
            .map(drop)
    })
    .await;
    handle.set(&compile(&store.snapshot(), &CompileOptions::default()).gateway_status);
    tokio::time::sleep(Duration::from_secs(1)).await;
    eventually("the GRPCRoute status read back", || {
        let s = store.snapshot();
        s.grpc_routes
            .get(&ObjectKey::new("default", "rpc"))
            .and_then(|r| r.status.clone())
            .filter(|st| st["parents"].as_array().map(Vec::len) == Some(1))
            .map(drop)
    })
    .await;
    handle.set(&compile(&store.snapshot(), &CompileOptions::default()).gateway_status);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status_writes(&api).len(),
        4,
        "status rewritten without a change"
    );
    source_task.abort();
}

#[tokio::test]
async fn backend_tls_policy_status_is_applied_as_ancestors() {
    use ingress_controller::compile::{compile, CompileOptions};
    use ingress_controller::gateway_status;

    let api = ApiServer::start().await;
    api.install_gateway_api();
    let gw = "gateway.networking.k8s.io/v1";
    api.apply(json!({"apiVersion": gw, "kind": "GatewayClass",
        "metadata": {"name": "portico", "generation": 1},
        "spec": {"controllerName": "portico.dev/gateway-controller"}}));
    api.apply(json!({"apiVersion": gw, "kind": "Gateway",
        "metadata": {"namespace": "default", "name": "gw", "generation": 1},
        "spec": {"gatewayClassName": "portico", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP"}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "secure"},
        "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "https", "port": 443}]}}));
    api.apply(json!({"apiVersion": gw, "kind": "HTTPRoute",
        "metadata": {"namespace": "default", "name": "web", "generation": 1},
        "spec": {"parentRefs": [{"name": "gw"}],
                 "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}]}}));
    api.apply(json!({"apiVersion": gw, "kind": "BackendTLSPolicy",
        "metadata": {"namespace": "default", "name": "tls", "generation": 4},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "secure"}],
                 "validation": {"hostname": "secure.internal",
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "missing"}]}}}));

    let dir = tempfile::tempdir().unwrap();
    let client = source::client(Some(&api.write_kubeconfig(dir.path())))
        .await
        .unwrap();
    let store = SharedStore::new();
    let (ready_tx, mut ready) = watch::channel(false);
    let source_task = tokio::spawn(source::run(
        client.clone(),
        store.clone(),
        KubeSourceOptions::default(),
        ready_tx,
    ));
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    // The watch brought the policy in.
    assert!(!store.snapshot().backend_tls_policies.is_empty());
    let compiled = compile(&store.snapshot(), &CompileOptions::default());

    let (_leader_tx, leader_rx) = watch::channel(true);
    let (_addrs_tx, addrs_rx) = watch::channel(Vec::new());
    let handle = gateway_status::spawn(client.clone(), store.clone(), addrs_rx, leader_rx);
    handle.set(&compiled.gateway_status);
    let path =
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/backendtlspolicies/tls/status";
    let write = eventually("the policy's status write", || {
        status_writes(&api).into_iter().find(|w| w.path == path)
    })
    .await;
    assert_eq!(write.method, "PATCH");
    let body = write.json();
    assert_eq!(body["kind"], "BackendTLSPolicy");
    let ancestors = body["status"]["ancestors"].as_array().unwrap();
    assert_eq!(ancestors.len(), 1, "{body}");
    assert_eq!(
        ancestors[0]["ancestorRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
               "namespace": "default", "name": "gw"})
    );
    assert_eq!(
        ancestors[0]["controllerName"],
        "portico.dev/gateway-controller"
    );
    let conditions: Vec<(&str, &str, &str, i64)> = ancestors[0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
                c["observedGeneration"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("Accepted", "False", "NoValidCACertificate", 4),
            ("ResolvedRefs", "False", "InvalidCACertificateRef", 4),
        ]
    );
    source_task.abort();
}
