//! Every object in `manifests/` and `manifests/examples/` is a valid Kubernetes object with no
//! unknown fields, and the install and example folders hang together.

use std::collections::BTreeSet;
use std::path::PathBuf;

use conformance::backends::loopback_backends;
use conformance::manifests::{read_dir, read_file, validate, yaml_files, Document};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn install_docs() -> Vec<Document> {
    // `kubectl apply -f manifests/` is not recursive: only the top folder is installed.
    let dir = manifests_dir();
    let mut docs = Vec::new();
    for file in yaml_files(&dir).unwrap() {
        if file.parent() == Some(dir.as_path()) {
            docs.extend(read_file(&file).unwrap());
        }
    }
    docs
}

#[test]
fn every_manifest_is_a_known_kind_without_unknown_fields() {
    let docs = read_dir(&manifests_dir()).unwrap();
    assert!(docs.len() > 10, "found only {} documents", docs.len());
    let errors: Vec<String> = docs
        .iter()
        .filter_map(|d| validate(d).err().map(|e| e.to_string()))
        .collect();
    assert!(
        errors.is_empty(),
        "invalid manifests:\n{}",
        errors.join("\n")
    );
}

#[test]
fn install_objects_live_in_the_portico_namespace() {
    let docs = install_docs();
    let kinds: BTreeSet<&str> = docs.iter().map(Document::kind).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "install manifests lack a {kind}");
    }
    for doc in &docs {
        let cluster_scoped = matches!(
            doc.kind(),
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "IngressClass"
                | "ValidatingWebhookConfiguration"
        );
        let ns = doc
            .value
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str());
        if cluster_scoped {
            assert_eq!(ns, None, "{} must not carry a namespace", doc.describe());
        } else {
            assert_eq!(
                ns,
                Some("portico"),
                "{} must be in namespace portico",
                doc.describe()
            );
        }
    }
}

#[test]
fn load_balancer_maps_80_and_443_to_the_proxy_ports_and_probes_use_admin() {
    let docs = install_docs();
    let deployment: Deployment = docs
        .iter()
        .find(|d| d.kind() == "Deployment")
        .unwrap()
        .parse_strict()
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let port_of = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    assert_eq!(port_of("http"), Some(8080));
    assert_eq!(port_of("https"), Some(8443));
    assert_eq!(port_of("admin"), Some(10254));
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert!(args.contains("--http-addr=0.0.0.0:8080"), "{args}");
    assert!(args.contains("--https-addr=0.0.0.0:8443"), "{args}");
    assert!(args.contains("--admin-addr=0.0.0.0:10254"), "{args}");
    for (probe, path) in [
        (container.readiness_probe.as_ref(), "/readyz"),
        (container.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            serde_json::to_value(&get.port).unwrap(),
            serde_json::json!("admin")
        );
    }
    assert!(container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some());
    // The pod keeps accepting while load balancers catch up, then drains, all within
    // the grace period.
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map(|s| s.seconds)
        .expect("a preStop sleep (the image has no shell)");
    assert!(pre_stop >= 5, "preStop sleep {pre_stop}s");
    let drain: i64 = container
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--shutdown-grace=")?.parse().ok())
        .unwrap_or(10);
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} does not cover preStop {pre_stop} + drain {drain}"
    );
    let sc = pod.security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_ne!(sc.run_as_user, Some(0));

    let service: Service = docs
        .iter()
        .find(|d| d.kind() == "Service")
        .unwrap()
        .parse_strict()
        .unwrap();
    let spec = service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let mapping: Vec<(i32, serde_json::Value)> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.port, serde_json::to_value(&p.target_port).unwrap()))
        .collect();
    assert_eq!(
        mapping,
        vec![
            (80, serde_json::json!("http")),
            (443, serde_json::json!("https"))
        ]
    );
}

#[test]
fn example_ingresses_name_services_that_have_backends() {
    let docs = read_dir(&manifests_dir().join("examples")).unwrap();
    let services: Vec<Service> = docs
        .iter()
        .filter(|d| d.kind() == "Service")
        .map(|d| d.parse_strict().unwrap())
        .collect();
    let backends = loopback_backends(&docs).unwrap();
    let served: BTreeSet<&str> = backends.values().map(|b| b.service.as_str()).collect();
    for doc in docs.iter().filter(|d| d.kind() == "Ingress") {
        let ingress: Ingress = doc.parse_strict().unwrap();
        let spec = ingress.spec.unwrap();
        for rule in spec.rules.iter().flatten() {
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let name = &path.backend.service.as_ref().unwrap().name;
                let svc = services
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("{} names missing Service {name}", doc.describe()));
                let external =
                    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
                assert!(
                    external || served.contains(name.as_str()),
                    "Service {name} has no loopback endpoints for the demo"
                );
            }
        }
    }
}

#[test]
fn the_admission_webhook_is_wired_from_configuration_to_container() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    let docs = install_docs();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| {
                d.kind() == kind
                    && d.value.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config: ValidatingWebhookConfiguration =
        find("ValidatingWebhookConfiguration", "portico-admission")
            .parse_strict()
            .unwrap();
    let hook = &config.webhooks.unwrap()[0];
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.side_effects, "None");
    assert!(
        hook.client_config.ca_bundle.is_none(),
        "Portico sets caBundle"
    );
    let rule = &hook.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["networking.k8s.io".to_owned()][..])
    );
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_owned()][..]));
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["ingresses".to_owned()][..])
    );
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..])
    );
    let svc_ref = hook.client_config.service.as_ref().unwrap();
    assert_eq!(svc_ref.path.as_deref(), Some("/validate/ingresses"));
    let service: Service = find("Service", &svc_ref.name).parse_strict().unwrap();
    let port = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| Some(p.port) == svc_ref.port)
        .expect("the Service port the webhook names");
    assert_eq!(
        serde_json::to_value(&port.target_port).unwrap(),
        serde_json::json!("webhook")
    );
    let deployment: Deployment = find("Deployment", "portico").parse_strict().unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let webhook_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("webhook"))
        .map(|p| p.container_port)
        .expect("a container port named webhook");
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--webhook-addr=0.0.0.0:{webhook_port}")),
        "{args:?}"
    );
    // Exactly the one configuration and the one Secret, by name.
    let role: ClusterRole = find("ClusterRole", "portico").parse_strict().unwrap();
    let vwc_rule = role
        .rules
        .unwrap()
        .into_iter()
        .find(|r| {
            r.resources
                .iter()
                .flatten()
                .any(|r| r == "validatingwebhookconfigurations")
        })
        .expect("RBAC for the webhook configuration");
    assert_eq!(
        vwc_rule.resource_names,
        Some(vec!["portico-admission".to_owned()])
    );
    assert_eq!(vwc_rule.verbs, ["get", "patch", "update"]);
    let ns_role: Role = find("Role", "portico").parse_strict().unwrap();
    assert!(ns_role.rules.unwrap().iter().any(|r| {
        r.resource_names == Some(vec!["portico-admission-certs".to_owned()])
            && r.verbs.contains(&"update".to_owned())
    }));
}
