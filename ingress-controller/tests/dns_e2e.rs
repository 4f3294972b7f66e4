//! `--dns-addr` through the real binary: a Rust resolver over UDP and TCP, and `dig` when
//! the machine has it.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: kubia
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-headless
spec:
  clusterIP: None
  ports:
  - name: http
    port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-headless-abc12
  labels:
    kubernetes.io/service-name: kubia-headless
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: [10.1.0.1]
  hostname: kubia-0
- addresses: [10.1.0.2]
- addresses: [10.1.0.3]
  conditions:
    ready: false
---
apiVersion: v1
kind: Service
metadata:
  name: external-service
spec:
  type: ExternalName
  externalName: api.somecompany.com
  ports:
  - port: 80
";

fn resolver(addr: SocketAddr, tcp: bool) -> TokioResolver {
    let mut connection = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    connection.port = addr.port();
    let server = NameServerConfig::new(addr.ip(), true, vec![connection]);
    let config = ResolverConfig::from_name_servers(vec![server]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    // Every answer fresh from the server: the test watches answers change.
    builder.options_mut().cache_size = 0;
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.build().expect("resolver")
}

async fn addresses(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    let found = r.lookup_ip(name).await.map_err(|e| e.to_string())?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort();
    Ok(ips)
}

async fn records(r: &TokioResolver, name: &str, rtype: RecordType) -> Vec<String> {
    let found = r.lookup(name, rtype).await.expect(name);
    let mut out: Vec<String> = found.answers().iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_resolve_over_udp_and_tcp_and_follow_edits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut ctl = Controller::start(dir.path(), &["--dns-addr", &dns.to_string()]);
    ctl.wait_ready().await;

    for tcp in [false, true] {
        let r = resolver(dns, tcp);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            addresses(&r, "kubia.default.svc.cluster.local.").await,
            Ok(vec![ip("10.96.0.10")]),
            "tcp: {tcp}"
        );
        // Headless: the ready endpoints, and each by its own name.
        assert_eq!(
            addresses(&r, "kubia-headless.default.svc.cluster.local.").await,
            Ok(vec![ip("10.1.0.1"), ip("10.1.0.2")])
        );
        assert_eq!(
            addresses(&r, "kubia-0.kubia-headless.default.svc.cluster.local.").await,
            Ok(vec![ip("10.1.0.1")])
        );
        assert_eq!(
            records(
                &r,
                "_http._tcp.kubia.default.svc.cluster.local.",
                RecordType::SRV
            )
            .await,
            ["0 100 80 kubia.default.svc.cluster.local."]
        );
        assert_eq!(
            records(
                &r,
                "_http._tcp.kubia-headless.default.svc.cluster.local.",
                RecordType::SRV
            )
            .await,
            [
                "0 50 8080 10-1-0-2.kubia-headless.default.svc.cluster.local.",
                "0 50 8080 kubia-0.kubia-headless.default.svc.cluster.local."
            ]
        );
        let cname = r
            .lookup(
                "external-service.default.svc.cluster.local.",
                RecordType::CNAME,
            )
            .await
            .unwrap();
        assert!(
            matches!(&cname.answers()[0].data, RData::CNAME(c) if c.0.to_string() == "api.somecompany.com."),
            "{:?}",
            cname.answers()
        );
        let e = r
            .lookup_ip("nope.default.svc.cluster.local.")
            .await
            .unwrap_err();
        assert!(e.is_nx_domain(), "{e}");
    }

    // A new Service answers as soon as it is published; a removed one goes.
    let r = resolver(dns, false);
    std::fs::write(
        dir.path().join("late.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: shop}\n\
         spec:\n  clusterIP: 10.96.0.99\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses(&r, "late.shop.svc.cluster.local.").await
        != Ok(vec!["10.96.0.99".parse().unwrap()])
    {
        assert!(Instant::now() < deadline, "new Service never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(dir.path().join("late.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses(&r, "late.shop.svc.cluster.local.").await.is_ok() {
        assert!(Instant::now() < deadline, "removed Service still answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    dig_agrees(dns);
}

/// The same answers through `dig`, the client users reach for; skipped, saying so, where
/// it is not installed (Debian: bind9-dnsutils).
fn dig_agrees(dns: SocketAddr) {
    let port = dns.port().to_string();
    let dig = |extra: &[&str]| {
        std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+short", "+time=2", "+tries=2"])
            .args(extra)
            .output()
    };
    let out = match dig(&["kubia.default.svc.cluster.local"]) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: no dig (install bind9-dnsutils)");
            return;
        }
        Err(e) => panic!("dig: {e}"),
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.96.0.10");
    let out = dig(&["+tcp", "SRV", "_http._tcp.kubia.default.svc.cluster.local"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 100 80 kubia.default.svc.cluster.local."
    );
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port,
            "+time=2",
            "nope.default.svc.cluster.local",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NXDOMAIN"), "{text}");
}
