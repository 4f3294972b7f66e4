//! The notes this project grew from, followed as a new user would: their YAML copied as it
//! is (`tests/fixtures/notes/`: the kubia Service, the `extensions/v1beta1` kubia,
//! kubia-mult and cafe Ingresses, external-service with its Endpoints and as an
//! ExternalName, the NodePort, the headless Service, the Service with session affinity and
//! a timeout), plus the EndpointSlices a cluster would make for their pods. Each either
//! routes, or Portico says exactly why not.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::TokioResolver;

const FOLLOW: Duration = Duration::from_secs(20);

/// The EndpointSlice the EndpointSlice controller would write for `service`'s pods: one
/// slice per pod here, since each test pod listens on a port of its own.
fn slice(service: &str, pod: &Backend, ready: bool) -> String {
    let name = format!("{service}-{}", pod.addr.port());
    format!(
        "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels:
    kubernetes.io/service-name: {service}
addressType: IPv4
ports:
- port: {port}
  protocol: TCP
endpoints:
- addresses: [{ip}]
  conditions:
    ready: {ready}
  targetRef:
    kind: Pod
    name: {pod_name}
",
        port = pod.addr.port(),
        ip = pod.addr.ip(),
        pod_name = pod.name,
    )
}

fn copy_notes(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/notes");
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn resolver(addr: SocketAddr) -> TokioResolver {
    let mut connection = ConnectionConfig::udp();
    connection.port = addr.port();
    let server = NameServerConfig::new(addr.ip(), true, vec![connection]);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().cache_size = 0;
    builder.build().expect("resolver")
}

async fn answers(r: &TokioResolver, name: &str, rtype: RecordType) -> Vec<String> {
    match r.lookup(name, rtype).await {
        Ok(found) => {
            let mut out: Vec<String> = found.answers().iter().map(|a| a.data.to_string()).collect();
            out.sort();
            out
        }
        Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
        Err(e) => panic!("{name} {rtype}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notes_manifests_route_or_say_why_not() {
    let pod_a = Backend::start_on("kubia-a", 31).await;
    let pod_b = Backend::start_on("kubia-b", 32).await;
    let dir = tempfile::tempdir().unwrap();
    copy_notes(dir.path());
    let mut slices = String::new();
    for service in ["kubia", "kubia-nodeport", "svc1"] {
        slices.push_str(&slice(service, &pod_a, true));
        slices.push_str(&slice(service, &pod_b, true));
    }
    // One pod of the headless Service is not ready (yet).
    slices.push_str(&slice("kubia-headless", &pod_a, true));
    slices.push_str(&slice("kubia-headless", &pod_b, false));
    std::fs::write(dir.path().join("zz-endpointslices.yaml"), slices).unwrap();

    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dns_arg = dns.to_string();
    // As the laptop section of the README says: the notes' Ingresses name no class.
    let mut ctl = Controller::start(
        dir.path(),
        &[
            "--watch-ingress-without-class",
            "--dns-addr",
            &dns_arg,
            "--service-proxy",
            "--node-address",
            "127.0.0.1",
        ],
    );
    ctl.wait_ready().await;

    // Routes: kubia (v1beta1, to kubia-nodeport) and kubia-mult's /kubia (to kubia).
    let pods = ["kubia-a /", "kubia-b /"];
    let (status, body) = get(ctl.http, "kubia.example.com", "/").await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", ctl.logs());
    assert!(pods.contains(&body.as_str()), "{body}");
    let (status, body) = get(ctl.http, "foo.example.com", "/kubia").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(" /kubia"), "{body}");

    // Routes that cannot work as written answer 503, and the log says why, once each.
    for (host, path) in [("foo.example.com", "/foo"), ("bar.example.com", "/")] {
        assert_eq!(
            get(ctl.http, host, path).await.unwrap().0,
            503,
            "{host}{path}"
        );
    }
    // cafe has spec.tls: plain HTTP is redirected to HTTPS, as ingress-nginx does, where
    // the default certificate stands in for the missing Secret and the missing Services
    // answer 503.
    for path in ["/tea", "/coffee"] {
        assert_eq!(
            get(ctl.http, "cafe.example.com", path).await.unwrap().0,
            308,
            "{path}"
        );
    }
    let logs = ctl.logs();
    for (object, said) in [
        (
            "default/kubia-mult",
            r#"service "foo" not found in namespace "default""#,
        ),
        (
            "default/kubia-mult",
            r#"service "bar" not found in namespace "default""#,
        ),
        (
            "default/cafe-ingress",
            r#"service "tea-svc" not found in namespace "default""#,
        ),
        (
            "default/cafe-ingress",
            r#"service "coffee-svc" not found in namespace "default""#,
        ),
        (
            "default/cafe-ingress",
            r#"spec.tls[0].secretName: secret "cafe-secret": not found"#,
        ),
    ] {
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(said) && !l.contains("request failed"))
            .collect();
        assert_eq!(lines.len(), 1, "{said}:\n{logs}");
        assert!(lines[0].contains(object), "{}", lines[0]);
    }
    // The failed requests' own lines say the same.
    assert!(
        logs.lines().any(|l| l.contains("request failed")
            && l.contains("backend default/foo:80: service")
            && l.contains("not found in namespace")),
        "{logs}"
    );
    for ingress in ["kubia", "kubia-mult", "cafe-ingress"] {
        let said =
            format!("Ingress default/{ingress}: apiVersion extensions/v1beta1 is deprecated");
        assert_eq!(logs.matches(&said).count(), 1, "{said}:\n{logs}");
    }
    // The notes define external-service twice (selector-less, then as ExternalName).
    assert!(
        logs.contains("Service default/external-service is defined in")
            && logs.contains("external-service-alias.yaml and")
            && logs.contains("the first wins"),
        "{logs}"
    );

    // The metric counts the same problems the start-up line does.
    let metrics = ctl.metrics().await;
    for want in [
        r#"portico_diagnostics{reason="service_not_found",kind="Ingress"} 4"#,
        r#"portico_diagnostics{reason="secret_not_found",kind="Ingress"} 1"#,
        r#"portico_diagnostics{reason="deprecated_api_version",kind="Ingress"} 3"#,
        r#"portico_diagnostics{reason="duplicate_object",kind="Service"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let total: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("portico_diagnostics{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    let published = logs
        .lines()
        .find(|l| l.contains("configuration published"))
        .unwrap();
    assert!(
        published.contains(&format!("diagnostics={total} ")),
        "{published}\n{metrics}"
    );

    // The NodePort Service, through the L4 dataplane on the node address.
    let node_port: SocketAddr = ([127, 0, 0, 1], 30123).into();
    let (status, body) = get(node_port, "anything", "/np").await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", ctl.logs());
    assert!(body.ends_with(" /np"), "{body}");

    // Cluster DNS, as the notes use it.
    let r = resolver(dns);
    assert_eq!(
        answers(
            &r,
            "kubia-headless.default.svc.cluster.local.",
            RecordType::A
        )
        .await,
        [pod_a.addr.ip().to_string()],
        "only the ready pod"
    );
    assert_eq!(
        answers(
            &r,
            "external-service.default.svc.cluster.local.",
            RecordType::CNAME
        )
        .await,
        ["someapi.somecompany.com."]
    );
    assert_eq!(
        answers(&r, "svc1.default.svc.cluster.local.", RecordType::A).await,
        ["1.1.1.1"]
    );
    assert_eq!(
        answers(
            &r,
            "_web._tcp.svc1.default.svc.cluster.local.",
            RecordType::SRV
        )
        .await,
        ["0 100 80 svc1.default.svc.cluster.local."]
    );
    // kubia has no clusterIP in its manifest (a cluster would allocate one): the name
    // exists, with no address to give.
    assert_eq!(
        answers(&r, "kubia.default.svc.cluster.local.", RecordType::A).await,
        Vec::<String>::new()
    );
    // svc1's clusterIP is not an address of this machine: said, once.
    ctl.wait_log("svc1 not served at L4", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("L4 address is not on this machine")
                && l.contains("default/svc1")
                && l.contains("1.1.1.1:80")
        })
    })
    .await;

    // The notes' other external-service, once the alias is gone: its hand-written
    // Endpoints, and why L4 cannot forward it as written.
    std::fs::remove_file(dir.path().join("external-service-alias.yaml")).unwrap();
    ctl.wait_log("the duplicate resolved", FOLLOW, |logs| {
        logs.contains("Service default/external-service: spec.clusterIP: no clusterIP")
    })
    .await;
    assert_eq!(
        answers(
            &r,
            "external-service.default.svc.cluster.local.",
            RecordType::CNAME
        )
        .await,
        Vec::<String>::new()
    );
}
