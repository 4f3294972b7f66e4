//! The settings ConfigMap and the shared affinity cookie key against the API-server
//! double: each watched by name (ConfigMaps also all together), kept across the TLS Secrets' relists, and the key
//! Secret created by the leader when missing, never overwritten.

// One copy of the double, owned by the conformance crate, which runs suites over it too.
#[path = "../../conformance/src/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::ApiServer;
use ingress_controller::affinity_key::{self, Ensured};
use ingress_controller::compile::{compile, decode_key, CompileOptions, AFFINITY_KEY_SECRET};
use ingress_controller::leader::LeaderOptions;
use ingress_controller::sources::kube::{self as source, KubeOptions, KubeSourceOptions};
use ingress_controller::store::{ObjectKey, SharedStore, Store};
use serde_json::{json, Value};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(30);

fn configmap(ns: &str, name: &str, body_size: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"namespace": ns, "name": name},
        "data": {"proxy-body-size": body_size}
    })
}

fn secret(ns: &str, name: &str, type_: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"namespace": ns, "name": name},
        "data": data
    })
}

/// "00112233445566778899aabbccddeeff", base64.
const KEY_B64: &str = "MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=";

fn affinity_secret(ns: &str) -> Value {
    secret(ns, AFFINITY_KEY_SECRET, "Opaque", json!({"key": KEY_B64}))
}

fn tls_secret(ns: &str, name: &str) -> Value {
    secret(
        ns,
        name,
        "kubernetes.io/tls",
        json!({"tls.crt": "Y2VydA==", "tls.key": "a2V5"}),
    )
}

struct Running {
    store: SharedStore,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client(api: &ApiServer) -> (kube::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    (source::client(Some(&kubeconfig)).await.unwrap(), dir)
}

/// The source with `opts`, once it is ready.
async fn start(api: &ApiServer, opts: KubeSourceOptions) -> Running {
    let (client, dir) = client(api).await;
    let store = SharedStore::new();
    let (tx, mut ready) = watch::channel(false);
    let task = tokio::spawn(source::run(client, store.clone(), opts, tx));
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .expect("ready in time")
        .expect("ready sender alive");
    Running {
        store,
        task,
        _dir: dir,
    }
}

async fn until(store: &SharedStore, what: &str, check: impl Fn(&Store) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check(&store.snapshot()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body_size(s: &Store, key: &ObjectKey) -> Option<String> {
    s.config_maps
        .get(key)?
        .data
        .as_ref()?
        .get("proxy-body-size")
        .cloned()
}

fn settings_opts() -> KubeSourceOptions {
    KubeSourceOptions {
        configmap: Some(ObjectKey::new("portico", "portico")),
        affinity_key_namespace: Some("portico".into()),
        ..KubeSourceOptions::default()
    }
}

#[tokio::test]
async fn the_configmap_is_watched_by_name_and_changes_reach_compile() {
    let api = ApiServer::start().await;
    api.apply(configmap("portico", "portico", "8m"));
    api.apply(configmap("portico", "other", "1k"));
    api.apply(configmap("default", "portico", "2k"));
    let run = start(&api, settings_opts()).await;
    let key = ObjectKey::new("portico", "portico");

    // Every ConfigMap is read (custom-headers and proxy-set-headers may name any), the
    // settings one also by name.
    let s = run.store.snapshot();
    let names: Vec<_> = s.config_maps.keys().map(ToString::to_string).collect();
    assert_eq!(
        names,
        ["default/portico", "portico/other", "portico/portico"]
    );
    let opts = CompileOptions {
        configmap: Some(key.clone()),
        ..CompileOptions::default()
    };
    assert_eq!(compile(&s, &opts).settings.proxy_body_size, Some(8 << 20));

    // (Watches open just after the lists that made the source ready.)
    eventually("the ConfigMap watches", || {
        let reqs = api.requests();
        let by_name = reqs.iter().any(|r| {
            r.is_watch()
                && r.path == "/api/v1/namespaces/portico/configmaps"
                && r.query.contains("fieldSelector=metadata.name%3Dportico")
        });
        let all = reqs
            .iter()
            .any(|r| r.is_watch() && r.path == "/api/v1/configmaps");
        (by_name && all).then_some(())
    })
    .await;

    api.apply(configmap("portico", "portico", "0"));
    until(&run.store, "the edit arrives", |s| {
        body_size(s, &key).as_deref() == Some("0")
    })
    .await;
    assert_eq!(
        compile(&run.store.snapshot(), &opts)
            .settings
            .proxy_body_size,
        None
    );
    api.delete("v1", "ConfigMap", "portico", "portico");
    until(&run.store, "the deletion arrives", |s| {
        !s.config_maps.contains_key(&key) && s.config_maps.len() == 2
    })
    .await;
}

#[tokio::test]
async fn outside_the_watched_namespace_only_the_settings_configmap_is_read() {
    let api = ApiServer::start().await;
    api.apply(configmap("portico", "portico", "8m"));
    api.apply(configmap("portico", "other", "1k"));
    api.apply(configmap("apps", "headers", "2k"));
    let run = start(
        &api,
        KubeSourceOptions {
            watch_namespace: Some("apps".into()),
            ..settings_opts()
        },
    )
    .await;
    let s = run.store.snapshot();
    let names: Vec<_> = s.config_maps.keys().map(ToString::to_string).collect();
    assert_eq!(names, ["apps/headers", "portico/portico"]);
    // A relist of the namespace's ConfigMaps keeps the settings one.
    api.apply(configmap("apps", "more", "3k"));
    until(&run.store, "the new ConfigMap arrives", |s| {
        s.config_maps.len() == 3
    })
    .await;
}

#[tokio::test]
async fn the_affinity_key_secret_is_watched_beside_tls_secrets_and_survives_their_relist() {
    let api = ApiServer::start().await;
    api.apply(affinity_secret("portico"));
    // Not the controller's namespace: never read.
    api.apply(affinity_secret("default"));
    api.apply(tls_secret("default", "tls"));
    let run = start(&api, settings_opts()).await;
    let key = ObjectKey::new("portico", AFFINITY_KEY_SECRET);
    let s = run.store.snapshot();
    let names: Vec<_> = s.secrets.keys().map(ToString::to_string).collect();
    assert_eq!(names, ["default/tls", "portico/portico-affinity-key"]);
    let compiled = compile(&s, &CompileOptions::default());
    assert_eq!(
        compiled.affinity_key,
        decode_key(b"00112233445566778899aabbccddeeff")
    );
    let watch = eventually("the key Secret watch", || {
        api.requests()
            .into_iter()
            .find(|r| r.is_watch() && r.path == "/api/v1/namespaces/portico/secrets")
    })
    .await;
    assert!(
        watch
            .query
            .contains("fieldSelector=metadata.name%3Dportico-affinity-key"),
        "{}",
        watch.query
    );

    // The TLS Secrets relist (410 Gone) while the key Secret's watch is held back: the
    // TLS relist replaces only its own objects.
    let tls_path = "/api/v1/secrets";
    let key_path = "/api/v1/namespaces/portico/secrets";
    api.fail_path(Some(key_path));
    api.stop();
    api.apply(tls_secret("default", "tls-2"));
    api.delete("v1", "Secret", "default", "tls");
    api.compact();
    api.clear_requests();
    api.restart().await;
    relisted(&api, tls_path).await;
    let s = run.store.snapshot();
    assert!(s.secrets.contains_key(&ObjectKey::new("default", "tls-2")));
    assert!(!s.secrets.contains_key(&ObjectKey::new("default", "tls")));
    assert!(
        s.secrets.contains_key(&key),
        "the TLS relist dropped the key Secret"
    );
    api.fail_path(None);
    relisted(&api, key_path).await;
    assert!(run.store.snapshot().secrets.contains_key(&key));

    // And the key Secret's own relist leaves the TLS Secrets alone.
    api.fail_path(Some(tls_path));
    api.stop();
    api.delete("v1", "Secret", "portico", AFFINITY_KEY_SECRET);
    api.compact();
    api.clear_requests();
    api.restart().await;
    relisted(&api, key_path).await;
    let s = run.store.snapshot();
    assert!(!s.secrets.contains_key(&key));
    assert!(
        s.secrets.contains_key(&ObjectKey::new("default", "tls-2")),
        "the key Secret's relist dropped the TLS Secrets"
    );
    api.fail_path(None);
}

/// The watch of `path` has relisted and watches again (so its list was applied).
async fn relisted(api: &ApiServer, path: &str) {
    eventually("a relist then a watch", || {
        let reqs = api.requests();
        let list = reqs
            .iter()
            .position(|r| r.method == "GET" && !r.is_watch() && r.path == path)?;
        reqs[list..]
            .iter()
            .any(|r| r.is_watch() && r.path == path)
            .then_some(())
    })
    .await;
}

fn stored_key(api: &ApiServer) -> Option<String> {
    let s = api.get("v1", "Secret", "portico", AFFINITY_KEY_SECRET)?;
    s["data"]["key"].as_str().map(str::to_owned)
}

fn key_posts(api: &ApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v1/namespaces/portico/secrets")
        .count()
}

#[tokio::test]
async fn only_the_leader_creates_the_key_secret_and_recreates_it_when_deleted() {
    let api = ApiServer::start().await;
    let (client, _dir) = client(&api).await;
    let (leader_tx, leader) = watch::channel(false);
    let task = tokio::spawn(affinity_key::run(
        client,
        "portico".into(),
        Duration::from_millis(200),
        leader,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_key(&api), None, "a follower created the Secret");

    leader_tx.send_replace(true);
    let first = eventually("the leader creates the Secret", || stored_key(&api)).await;
    let secret = api
        .get("v1", "Secret", "portico", AFFINITY_KEY_SECRET)
        .unwrap();
    assert_eq!(secret["type"], "Opaque");
    let raw = base64_decode(&first);
    assert!(decode_key(&raw).is_some(), "{raw:?}");

    // Rechecks find it and leave it be.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stored_key(&api).as_deref(), Some(first.as_str()));
    assert_eq!(key_posts(&api), 1);

    // Deleting it rotates the key.
    api.delete("v1", "Secret", "portico", AFFINITY_KEY_SECRET);
    let second = eventually("the leader recreates the Secret", || stored_key(&api)).await;
    assert_ne!(first, second);
    task.abort();
}

#[tokio::test]
async fn an_existing_key_secret_is_never_overwritten() {
    let api = ApiServer::start().await;
    // Whatever it holds, even a key compile will reject: the operator's to fix.
    api.apply(secret(
        "portico",
        AFFINITY_KEY_SECRET,
        "Opaque",
        json!({"key": "c2hvcnQ="}),
    ));
    let (client, _dir) = client(&api).await;
    assert_eq!(
        affinity_key::ensure(client.clone(), "portico")
            .await
            .unwrap(),
        Ensured::Existed
    );
    assert_eq!(stored_key(&api).as_deref(), Some("c2hvcnQ="));
    assert_eq!(key_posts(&api), 0);

    // Two replicas racing for a missing Secret: one creates it, the other's 409 is fine.
    api.delete("v1", "Secret", "portico", AFFINITY_KEY_SECRET);
    let (a, b) = tokio::join!(
        affinity_key::ensure(client.clone(), "portico"),
        affinity_key::ensure(client.clone(), "portico"),
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|e| *e == Ensured::Created);
    assert_eq!(outcomes, [Ensured::Existed, Ensured::Created]);
}

#[tokio::test]
async fn start_watches_the_key_secret_the_leader_creates() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new();
    let (tx, mut ready) = watch::channel(false);
    let opts = KubeOptions {
        kubeconfig: Some(api.write_kubeconfig(dir.path())),
        source: KubeSourceOptions {
            configmap: Some(ObjectKey::new("portico", "portico")),
            ..KubeSourceOptions::default()
        },
        leader: Some(LeaderOptions {
            namespace: "portico".into(),
            identity: "pod-a".into(),
            retry_period: Duration::from_millis(100),
            ..LeaderOptions::default()
        }),
        ..KubeOptions::default()
    };
    let reporter = source::start(opts, store.clone(), tx).await.unwrap();
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    until(&store, "the created key Secret is watched", |s| {
        compile(s, &CompileOptions::default())
            .affinity_key
            .is_some()
    })
    .await;
    assert!(reporter.is_leader());
    let compiled = compile(
        &store.snapshot(),
        &CompileOptions {
            configmap: Some(ObjectKey::new("portico", "portico")),
            ..CompileOptions::default()
        },
    );
    let raw = base64_decode(&stored_key(&api).unwrap());
    assert_eq!(compiled.affinity_key, decode_key(&raw));
    reporter.shutdown(Duration::from_secs(2)).await;
}

/// Standard base64, as the API server encodes `data`.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {s}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
