//! Against a real kube-apiserver (see `envtest`), with the unchanged `manifests/` applied
//! and the controller authenticated as the ServiceAccount they create: lists and watches
//! of every kind, routing to a pod address, Ingress status by server-side apply, the
//! leader Lease, Events, the admission webhook's Secret, caBundle and verdicts, and
//! Gateway API status with the standard CRDs installed, each through the RBAC the
//! manifests grant. Without a kube-apiserver these print
//! `skipped: no kube-apiserver (set KUBEBUILDER_ASSETS)` and pass.
//!
//! Traffic goes to pod addresses (the API server refuses loopback endpoints), so each
//! test runs in a private network namespace (`envtest::netns`).

mod common;
mod envtest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{get, wait_for, Backend, Controller};
use envtest::{netns, KubeApiServer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);
/// A pod address, local inside the test's network namespace.
const POD: &str = "10.244.0.5";
/// Where the controller's webhook listens: the endpoint of the `portico-admission`
/// Service, which the test writes as the endpoints controller would.
const WEBHOOK_POD: &str = "10.244.0.9";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn manifests(files: &[&str]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests")
                .join(f)
        })
        .collect()
}

async fn eventually<T, F, Fut>(what: &str, logs: impl Fn() -> String, mut f: F) -> T
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
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The namespace helper itself, with the file source (no API server needed): a backend
/// on a pod address is reachable through the controller.
#[test]
fn a_private_network_namespace_makes_pod_addresses_local() {
    if !netns::run_inside("a_private_network_namespace_makes_pod_addresses_local") {
        return;
    }
    runtime().block_on(async {
        let backend = Backend::start_at("pod", &format!("{POD}:8080"), Duration::ZERO).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            common::app_yaml("web", "a.example.com", "/", &[backend.addr]),
        )
        .unwrap();
        std::fs::write(dir.path().join("class.yaml"), common::INGRESS_CLASS_YAML).unwrap();
        let mut c = Controller::start(dir.path(), &[]);
        c.wait_ready().await;
        wait_for(c.http, "a.example.com", "/", DEADLINE, |status, body| {
            status == 200 && body == "pod /"
        })
        .await;
    });
}

#[test]
fn the_controller_as_its_service_account_against_a_real_api_server() {
    if envtest::assets().is_none() {
        eprintln!("{}", envtest::SKIP);
        return;
    }
    if !netns::run_inside("the_controller_as_its_service_account_against_a_real_api_server") {
        return;
    }
    runtime().block_on(async {
        let Some(server) = KubeApiServer::start().await else {
            return;
        };
        server
            .apply_files(&manifests(&[
                "00-namespace.yaml",
                "10-rbac.yaml",
                "20-ingressclass.yaml",
                "25-configmap.yaml",
                "50-admission.yaml",
            ]))
            .await;
        let backend = Backend::start_at("pod", &format!("{POD}:8080"), Duration::ZERO).await;
        seed(&server, backend.addr).await;

        let dir = tempfile::tempdir().unwrap();
        let c = start_portico(
            &server,
            dir.path(),
            &[
                "--configmap=portico/portico".to_owned(),
                format!("--webhook-addr={WEBHOOK_POD}:8444"),
            ],
            "a.example.com",
        )
        .await;

        let admin = server.admin().await;
        let logs = || format!("{}\n{}", c.logs(), server.logs());
        // Status: applied by `portico` through the status subresource.
        let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
        eventually("status applied by portico", &logs, || async {
            let ing = ingresses.get("web").await.ok()?;
            let lb = ing.status?.load_balancer?.ingress?;
            let ours = lb.first()?.ip.as_deref() == Some("203.0.113.10");
            (ours && applied_by_portico(&ing.metadata)).then_some(())
        })
        .await;
        // The leader Lease.
        let leases: Api<Lease> = Api::namespaced(admin.clone(), "portico");
        eventually("leader Lease held", &logs, || async {
            let lease = leases.get("portico-leader").await.ok()?;
            (lease.spec?.holder_identity.as_deref() == Some("portico-envtest-0")).then_some(())
        })
        .await;
        // An Event about the Ingress with a bad annotation.
        let events: Api<Event> = Api::namespaced(admin.clone(), "default");
        eventually("an Event about default/bad", &logs, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
                        && e.reporting_controller.as_deref()
                            == Some("portico.dev/ingress-controller")
                })
                .then_some(())
        })
        .await;

        // The webhook: its Secret, its caBundle, and the API server calling it.
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), "portico");
        eventually("webhook Secret stored", &logs, || async {
            secrets.get("portico-admission-certs").await.ok().map(drop)
        })
        .await;
        server
            .apply(json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"namespace": "portico", "name": "portico-admission"},
                "subsets": [{"addresses": [{"ip": WEBHOOK_POD}],
                             "ports": [{"name": "webhook", "port": 8444, "protocol": "TCP"}]}]
            }))
            .await;
        let configs: Api<
            k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
        > = Api::all(admin.clone());
        eventually("caBundle set", &logs, || async {
            let config = configs.get("portico-admission").await.ok()?;
            config
                .webhooks?
                .first()?
                .client_config
                .ca_bundle
                .as_ref()
                .map(drop)
        })
        .await;
        let snippet = ingress(
            "snippet",
            json!({"nginx.ingress.kubernetes.io/server-snippet": "return 200;"}),
            "s.example.com",
            "/",
        );
        let denied = eventually(
            "the snippet Ingress denied by the webhook",
            &logs,
            || async {
                let obj: Ingress = serde_json::from_value(snippet.clone()).unwrap();
                match ingresses.create(&PostParams::default(), &obj).await {
                    Err(kube::Error::Api(status)) => Some(status.message),
                    Ok(_) => {
                        // Admitted while the API server did not yet trust the webhook
                        // (failurePolicy Ignore): try again.
                        let _ = ingresses.delete("snippet", &Default::default()).await;
                        None
                    }
                    Err(_) => None,
                }
            },
        )
        .await;
        assert!(
            denied.contains("denied the request") && denied.contains("metadata.annotations"),
            "{denied}"
        );
        let conflict: Ingress =
            serde_json::from_value(ingress("conflict", json!({}), "a.example.com", "/")).unwrap();
        match ingresses.create(&PostParams::default(), &conflict).await {
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains("default/web"), "{}", status.message)
            }
            other => panic!("a conflicting Ingress was not denied: {other:?}"),
        }
        let good: Ingress =
            serde_json::from_value(ingress("good", json!({}), "g.example.com", "/")).unwrap();
        ingresses
            .create(&PostParams::default(), &good)
            .await
            .expect("a good Ingress admitted");
        assert_eq!(
            get(c.http, "a.example.com", "/").await,
            Ok((200, "pod /".to_owned()))
        );
    });
}

/// The controller as its ServiceAccount against `server`, publishing 203.0.113.10, with
/// `extra` flags; returned once ready (every list and watch allowed) and serving `host`
/// from the pod.
async fn start_portico(
    server: &KubeApiServer,
    dir: &std::path::Path,
    extra: &[String],
    host: &str,
) -> Controller {
    let kubeconfig = server.portico_kubeconfig(dir);
    let mut args = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--publish-address=203.0.113.10".to_owned(),
    ];
    args.extend(extra.iter().cloned());
    let mut c = Controller::start_with(
        &args,
        &[
            ("POD_NAME", "portico-envtest-0"),
            ("POD_NAMESPACE", "portico"),
        ],
    );
    c.wait_ready().await;
    wait_for(c.http, host, "/", DEADLINE, |status, body| {
        status == 200 && body == "pod /"
    })
    .await;
    c
}

/// Whether `portico` applied the object's status (server-side apply on the `status`
/// subresource).
fn applied_by_portico(meta: &kube::api::ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some("portico")
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.as_deref() == Some("status")
    })
}

fn ingress(name: &str, annotations: Value, host: &str, path: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "portico", "rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })
}

async fn seed(server: &KubeApiServer, pod: SocketAddr) {
    server
        .apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": pod.port()}]}
        }))
        .await;
    server
        .apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "default", "name": "web-abc",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [pod.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": pod.port(), "protocol": "TCP"}]
        }))
        .await;
    server
        .apply(ingress("web", json!({}), "a.example.com", "/"))
        .await;
    server
        .apply(ingress(
            "bad",
            json!({"nginx.ingress.kubernetes.io/proxy-read-timeout": "forever"}),
            "b.example.com",
            "/",
        ))
        .await;
}

/// The Gateway API standard CRDs, beside the repository.
fn gateway_api_crds() -> Option<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/gateway-api/config/crd/standard");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                // The CRDs only: not the ValidatingAdmissionPolicy beside them.
                .is_some_and(|n| {
                    n.starts_with("gateway.networking.k8s.io_")
                        && n.ends_with(".yaml")
                        && !n.contains("_vap_")
                })
        })
        .collect();
    files.sort();
    (!files.is_empty()).then_some(files)
}

/// Gateway API against a real API server with the standard CRDs installed: the
/// controller, as its ServiceAccount, serves an HTTPRoute and applies the status of the
/// GatewayClass, the Gateway (with the published address) and the route through their
/// `status` subresources, as field manager `portico`, which the CRDs' schemas accept.
#[test]
fn gateway_api_status_against_a_real_api_server() {
    if envtest::assets().is_none() {
        eprintln!("{}", envtest::SKIP);
        return;
    }
    let Some(crds) = gateway_api_crds() else {
        eprintln!("skipped: no Gateway API CRDs beside the repository");
        return;
    };
    if !netns::run_inside("gateway_api_status_against_a_real_api_server") {
        return;
    }
    runtime().block_on(async {
        let Some(server) = KubeApiServer::start().await else {
            return;
        };
        server.apply_files(&crds).await;
        server
            .apply_files(&manifests(&["00-namespace.yaml", "10-rbac.yaml"]))
            .await;
        let backend = Backend::start_at("pod", &format!("{POD}:8080"), Duration::ZERO).await;
        seed(&server, backend.addr).await;
        let admin = server.admin().await;
        let gvk = |kind: &str| {
            kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "gateway.networking.k8s.io",
                "v1",
                kind,
            ))
        };
        // The CRDs take a moment to be served.
        let logs = || server.logs();
        let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "default", "name": "gw"},
            "spec": {"gatewayClassName": "portico",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}});
        // Served, and in discovery (which the applies below resolve kinds by).
        eventually("the Gateway API served", &logs, || async {
            let classes: Api<kube::api::DynamicObject> =
                Api::all_with(admin.clone(), &gvk("GatewayClass"));
            classes.list(&ListParams::default()).await.ok()?;
            let discovery = kube::discovery::Discovery::new(admin.clone())
                .run()
                .await
                .ok()?;
            ["GatewayClass", "Gateway", "HTTPRoute"]
                .iter()
                .all(|kind| {
                    let gvk =
                        kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
                    discovery.resolve_gvk(&gvk).is_some()
                })
                .then_some(())
        })
        .await;
        server
            .apply(
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "portico"},
                "spec": {"controllerName": "portico.dev/gateway-controller"}}),
            )
            .await;
        server.apply(gateway).await;
        server
            .apply(
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"namespace": "default", "name": "route"},
                "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["g.example.com"],
                         "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
            )
            .await;

        let dir = tempfile::tempdir().unwrap();
        let c = start_portico(&server, dir.path(), &[], "g.example.com").await;
        let logs = || format!("{}\n{}", c.logs(), server.logs());
        let condition = |status: &Value, type_: &str| {
            status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == type_)
                .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        };
        let classes: Api<kube::api::DynamicObject> =
            Api::all_with(admin.clone(), &gvk("GatewayClass"));
        eventually("GatewayClass Accepted by portico", &logs, || async {
            let class = classes.get("portico").await.ok()?;
            let status = class.data.get("status")?;
            (condition(status, "Accepted").as_deref() == Some("True")
                && applied_by_portico(&class.metadata))
            .then_some(())
        })
        .await;
        let gateways: Api<kube::api::DynamicObject> =
            Api::namespaced_with(admin.clone(), "default", &gvk("Gateway"));
        eventually(
            "Gateway Programmed at the published address",
            &logs,
            || async {
                let gw = gateways.get("gw").await.ok()?;
                let status = gw.data.get("status")?;
                let programmed = condition(status, "Programmed").as_deref() == Some("True");
                let address = status["addresses"][0]["value"] == "203.0.113.10";
                let attached = status["listeners"][0]["attachedRoutes"] == 1;
                (programmed && address && attached && applied_by_portico(&gw.metadata))
                    .then_some(())
            },
        )
        .await;
        let routes: Api<kube::api::DynamicObject> =
            Api::namespaced_with(admin.clone(), "default", &gvk("HTTPRoute"));
        eventually("HTTPRoute parent Accepted", &logs, || async {
            let route = routes.get("route").await.ok()?;
            let parent = route.data.get("status")?["parents"].get(0)?.clone();
            let ours = parent["controllerName"] == "portico.dev/gateway-controller";
            (ours && condition(&parent, "Accepted").as_deref() == Some("True")).then_some(())
        })
        .await;
    });
}
