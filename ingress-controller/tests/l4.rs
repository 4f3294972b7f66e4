//! `--service-proxy` end to end: the real binary over a manifest folder of Services and
//! EndpointSlices, with TCP and UDP echo backends on 127.0.0.x (Linux routes all of
//! 127/8 to lo, so clusterIPs like 127.0.50.10 are local without aliases).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{write_atomic, Controller};

const WAIT: Duration = Duration::from_secs(30);

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP backend on `ip:port` (0: any) that says `name` on a line, then echoes.
fn tcp_backend(ip: &str, port: u16, name: &'static str) -> u16 {
    let l = TcpListener::bind((ip, port)).unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                if s.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// A UDP backend answering `name:payload`.
fn udp_backend(ip: &str, name: &'static str) -> u16 {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    port
}

fn connect_from(client_ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{client_ip}:0").parse().unwrap();
    sock.bind(&from.into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Connect and read the backend's name line.
fn which_from(client_ip: &str, to: SocketAddr) -> std::io::Result<(String, BufReader<TcpStream>)> {
    let s = connect_from(client_ip, to)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((line.trim().to_owned(), r))
}

fn which(to: SocketAddr) -> String {
    which_from("127.0.0.1", to).unwrap().0
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

struct Ports {
    vip_tcp: u16,
    vip_udp: u16,
    node_tcp: u16,
    backend: u16,
    udp_backend: u16,
    sticky: u16,
}

fn service(p: &Ports, cluster_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: kubia, namespace: default}}
spec:
  type: NodePort
  clusterIP: {cluster_ip}
  externalTrafficPolicy: Local
  selector: {{app: kubia}}
  ports:
  - {{name: http, port: {vip_tcp}, targetPort: http, nodePort: {node_tcp}}}
  - {{name: dns, port: {vip_udp}, targetPort: dns, protocol: UDP}}
"#,
        vip_tcp = p.vip_tcp,
        vip_udp = p.vip_udp,
        node_tcp = p.node_tcp,
    )
}

fn slice(p: &Ports, endpoints: &[(&str, &str)]) -> String {
    let mut eps = String::new();
    for (ip, node) in endpoints {
        eps.push_str(&format!("- {{addresses: [{ip}], nodeName: {node}}}\n"));
    }
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-1
  namespace: default
  labels: {{kubernetes.io/service-name: kubia}}
addressType: IPv4
ports:
- {{name: http, port: {backend}, protocol: TCP}}
- {{name: dns, port: {udp}, protocol: UDP}}
endpoints:
{eps}"#,
        backend = p.backend,
        udp = p.udp_backend,
    )
}

fn sticky(p: &Ports) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: sticky, namespace: default}}
spec:
  clusterIP: 127.0.50.11
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 3}}}}
  ports:
  - {{port: {sticky}, targetPort: {backend}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  namespace: default
  labels: {{kubernetes.io/service-name: sticky}}
addressType: IPv4
ports:
- {{port: {backend}}}
endpoints:
- {{addresses: [127.0.51.1]}}
- {{addresses: [127.0.51.2]}}
"#,
        sticky = p.sticky,
        backend = p.backend,
    )
}

#[test]
fn services_are_forwarded_through_vip_and_node_port() {
    let backend = tcp_backend("127.0.51.1", 0, "b1");
    tcp_backend("127.0.51.2", backend, "b2");
    let udp = udp_backend("127.0.51.1", "u1");
    let p = Ports {
        vip_tcp: free_port("127.0.50.10"),
        vip_udp: free_port("127.0.50.10"),
        node_tcp: free_port("127.0.50.1"),
        backend,
        udp_backend: udp,
        sticky: free_port("127.0.50.11"),
    };
    let vip: SocketAddr = format!("127.0.50.10:{}", p.vip_tcp).parse().unwrap();
    let node: SocketAddr = format!("127.0.50.1:{}", p.node_tcp).parse().unwrap();
    let sticky_vip: SocketAddr = format!("127.0.50.11:{}", p.sticky).parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path(), "kubia.yaml", &service(&p, "127.0.50.10"));
    write_atomic(
        dir.path(),
        "kubia-slice.yaml",
        &slice(&p, &[("127.0.51.1", "n1"), ("127.0.51.2", "n2")]),
    );
    write_atomic(dir.path(), "sticky.yaml", &sticky(&p));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut controller = Controller::start(
        dir.path(),
        &[
            "--service-proxy",
            "--node-name",
            "n1",
            "--node-address",
            "127.0.50.1",
        ],
    );
    rt.block_on(controller.wait_ready());

    eventually("L4 listener on the clusterIP", || {
        which_from("127.0.0.1", vip).is_ok()
    });

    // clusterIP: every ready endpoint, round-robin.
    let names: Vec<String> = (0..10).map(|_| which(vip)).collect();
    assert_eq!(names.iter().filter(|n| *n == "b1").count(), 5, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b2").count(), 5, "{names:?}");

    // Node port with externalTrafficPolicy: Local: only the endpoint on node n1.
    for _ in 0..6 {
        assert_eq!(which(node), "b1");
    }

    // UDP through the clusterIP, replies from the clusterIP.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let udp_vip: SocketAddr = format!("127.0.50.10:{}", p.vip_udp).parse().unwrap();
    let mut buf = [0u8; 64];
    eventually("UDP answer", || {
        c.send_to(b"ping", udp_vip).unwrap();
        matches!(c.recv_from(&mut buf), Ok((7, from)) if from == udp_vip && &buf[..7] == b"u1:ping")
    });

    // ClientIP affinity holds, then expires (3 s).
    let (first, _) = which_from("127.0.0.31", sticky_vip).unwrap();
    for _ in 0..5 {
        assert_eq!(which_from("127.0.0.31", sticky_vip).unwrap().0, first);
    }
    thread::sleep(Duration::from_millis(4000));
    // Nobody else used the Service, so the round-robin's next pick is the other one.
    assert_ne!(which_from("127.0.0.31", sticky_vip).unwrap().0, first);

    // Endpoint churn: a long-lived connection to b2 survives b1 leaving and coming back.
    let mut to_b2 = loop {
        let (name, r) = which_from("127.0.0.1", vip).unwrap();
        if name == "b2" {
            break r;
        }
    };
    for round in 0..3 {
        write_atomic(
            dir.path(),
            "kubia-slice.yaml",
            &slice(&p, &[("127.0.51.2", "n2")]),
        );
        eventually("b1 gone from the clusterIP", || {
            (0..4).all(|_| which(vip) == "b2")
        });
        // No endpoint left on our node: the node port refuses.
        eventually("node port refuses", || {
            which_from("127.0.0.1", node).is_err()
        });
        write_atomic(
            dir.path(),
            "kubia-slice.yaml",
            &slice(&p, &[("127.0.51.1", "n1"), ("127.0.51.2", "n2")]),
        );
        // Until the change lands the node port still refuses: that is not a failure.
        eventually("b1 back", || {
            which_from("127.0.0.1", node).is_ok_and(|(name, _)| name == "b1")
        });
        let msg = format!("round {round}\n");
        to_b2.get_mut().write_all(msg.as_bytes()).unwrap();
        let mut line = String::new();
        to_b2.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
    }

    // Metrics per Service port.
    let metrics = rt.block_on(controller.metrics());
    let tcp = r#"portico_l4_connections_total{namespace="default",service="kubia",port="http",protocol="tcp"}"#;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(tcp))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 20.0, "{line}");
    assert!(metrics.contains(r#"portico_l4_bytes_total{namespace="default",service="kubia",port="dns",protocol="udp",direction="out"}"#));

    // The Service turns headless: its listeners close; the other Service is untouched.
    write_atomic(dir.path(), "kubia.yaml", &service(&p, "None"));
    eventually("clusterIP listener closed", || {
        TcpStream::connect_timeout(&vip, Duration::from_secs(1)).is_err()
    });
    eventually("node port listener closed", || {
        TcpStream::connect_timeout(&node, Duration::from_secs(1)).is_err()
    });
    assert!(which_from("127.0.0.33", sticky_vip).is_ok());
}
