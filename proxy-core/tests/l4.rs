//! End-to-end tests of the L4 dataplane with real sockets on 127.0.0.0/8 (Linux routes
//! the whole block to `lo`, so every 127.x.y.z address is local without aliases).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_core::config::Endpoint;
use proxy_core::l4::{
    Direction, L4Observer, L4Options, L4Proxy, L4Service, Protocol, ServicePortId,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A free port on `ip`, found by binding port 0.
fn free_port(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let u = std::net::UdpSocket::bind(l.local_addr().unwrap());
    // Prefer a port free for both protocols; a clash on UDP just retries.
    match u {
        Ok(_) => l.local_addr().unwrap(),
        Err(_) => free_port(ip),
    }
}

/// A TCP backend that says its name on a line, then echoes everything back; it shuts its
/// write side when the client does (so half-close can be observed).
async fn tcp_backend(ip: &str, name: &'static str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A UDP backend that answers `name:payload`.
async fn udp_backend(ip: &str, name: &'static str) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    addr
}

fn svc(name: &str, protocol: Protocol, cluster: Option<SocketAddr>, eps: &[Endpoint]) -> L4Service {
    L4Service {
        id: ServicePortId::new("default", name, "p"),
        protocol,
        cluster_addr: cluster,
        node_addrs: vec![],
        endpoints: eps.to_vec(),
        external_traffic_local: false,
        client_ip_affinity: None,
    }
}

fn on_node(addr: SocketAddr, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::ready(addr)
    }
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    per_service: Mutex<HashMap<String, u64>>,
}

impl L4Observer for Counts {
    fn flow_opened(&self, id: &ServicePortId, _: Protocol) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        *self
            .per_service
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default() += 1;
    }
    fn flow_closed(&self, _: &ServicePortId, _: Protocol) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn refused(&self, _: &ServicePortId, _: Protocol) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }
    fn bytes(&self, _: &ServicePortId, _: Protocol, d: Direction, n: u64) {
        match d {
            Direction::Inbound => self.bytes_in.fetch_add(n, Ordering::SeqCst),
            Direction::Outbound => self.bytes_out.fetch_add(n, Ordering::SeqCst),
        };
    }
}

fn proxy(node: Option<&str>, options: L4Options) -> (L4Proxy, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let p = L4Proxy::with_options(node.map(str::to_owned), counts.clone(), options);
    (p, counts)
}

async fn connect_from(client_ip: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind((client_ip.parse::<IpAddr>().unwrap(), 0).into())
        .unwrap();
    timeout(WAIT, s.connect(to)).await.unwrap().unwrap()
}

/// Connect and read the backend's name line.
async fn which(client_ip: &str, to: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = connect_from(client_ip, to).await;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    timeout(WAIT, r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    (line.trim().to_owned(), r)
}

/// Wait until `cond` holds, or fail after a generous deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True if the connection is reset or closed without data within the deadline.
async fn is_cut(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    match timeout(WAIT, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn tcp_through_vip_and_node_port_with_half_close() {
    let b1 = tcp_backend("127.0.11.1", "b1").await;
    let vip = free_port("127.0.10.1");
    let node = free_port("127.0.10.2");
    let (p, counts) = proxy(Some("n1"), L4Options::default());
    let mut s = svc("echo", Protocol::Tcp, Some(vip), &[Endpoint::ready(b1)]);
    s.node_addrs = vec![node];
    let summary = p.reconcile(&[s]).unwrap();
    assert_eq!(summary.listening, 2, "{summary:?}");
    assert_eq!(
        p.listening(),
        vec![(Protocol::Tcp, vip), (Protocol::Tcp, node)]
    );

    for addr in [vip, node] {
        let (name, mut r) = which("127.0.0.1", addr).await;
        assert_eq!(name, "b1");
        let payload = vec![7u8; 300_000];
        r.get_mut().write_all(&payload).await.unwrap();
        // Half-close: the backend sees EOF, echoes the rest, closes; we read it all.
        r.get_mut().shutdown().await.unwrap();
        let mut back = Vec::new();
        timeout(WAIT, r.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, payload);
    }
    eventually("flows closed", || counts.closed.load(Ordering::SeqCst) == 2).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
    assert_eq!(counts.bytes_in.load(Ordering::SeqCst), 600_000);
    // Name lines ("b1\n") plus the echoes.
    assert_eq!(counts.bytes_out.load(Ordering::SeqCst), 600_006);
}

#[tokio::test]
async fn copy_fallback_forwards_and_half_closes_too() {
    let b1 = tcp_backend("127.0.11.2", "b1").await;
    let vip = free_port("127.0.10.3");
    let options = L4Options {
        zero_copy: false,
        ..L4Options::default()
    };
    let (p, counts) = proxy(None, options);
    p.reconcile(&[svc(
        "echo",
        Protocol::Tcp,
        Some(vip),
        &[Endpoint::ready(b1)],
    )])
    .unwrap();
    let (name, mut r) = which("127.0.0.1", vip).await;
    assert_eq!(name, "b1");
    r.get_mut().write_all(b"hello").await.unwrap();
    r.get_mut().shutdown().await.unwrap();
    let mut back = Vec::new();
    timeout(WAIT, r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"hello");
    eventually("flow closed", || counts.closed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(counts.bytes_in.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn no_affinity_spreads_connections_evenly() {
    let eps = [
        tcp_backend("127.0.12.1", "b1").await,
        tcp_backend("127.0.12.2", "b2").await,
        tcp_backend("127.0.12.3", "b3").await,
    ];
    let vip = free_port("127.0.10.4");
    let (p, _) = proxy(None, L4Options::default());
    let eps: Vec<_> = eps.iter().map(|a| Endpoint::ready(*a)).collect();
    p.reconcile(&[svc("spread", Protocol::Tcp, Some(vip), &eps)])
        .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (name, _) = which("127.0.0.1", vip).await;
        *counts.entry(name).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
}

#[tokio::test]
async fn client_ip_affinity_holds_then_expires_and_follows_endpoint_removal() {
    let b1 = tcp_backend("127.0.13.1", "b1").await;
    let b2 = tcp_backend("127.0.13.2", "b2").await;
    let vip = free_port("127.0.10.5");
    let (p, _) = proxy(None, L4Options::default());
    let mut s = svc(
        "sticky",
        Protocol::Tcp,
        Some(vip),
        &[Endpoint::ready(b1), Endpoint::ready(b2)],
    );
    s.client_ip_affinity = Some(Duration::from_secs(3));
    p.reconcile(std::slice::from_ref(&s)).unwrap();

    // Client A stays on one endpoint; client B (another source IP) is spread away.
    let (a_first, _) = which("127.0.0.21", vip).await;
    let (b_first, _) = which("127.0.0.22", vip).await;
    assert_ne!(a_first, b_first);
    for _ in 0..10 {
        assert_eq!(which("127.0.0.21", vip).await.0, a_first);
        assert_eq!(which("127.0.0.22", vip).await.0, b_first);
    }

    // Idle past the timeout: the pin expires, A is balanced afresh. The round-robin
    // would give A its old endpoint next, so a new client C takes that turn first.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(which("127.0.0.23", vip).await.0, a_first);
    let (a_after, _) = which("127.0.0.21", vip).await;
    assert_ne!(a_after, a_first);
    assert_eq!(which("127.0.0.21", vip).await.0, a_after);

    // A's endpoint leaves: the pin goes with it and A moves, and stays moved when it
    // comes back.
    let a_ep = if a_after == "b1" { b1 } else { b2 };
    let other = if a_after == "b1" { b2 } else { b1 };
    s.endpoints = vec![Endpoint::ready(other)];
    p.reconcile(std::slice::from_ref(&s)).unwrap();
    let (moved, _) = which("127.0.0.21", vip).await;
    assert_ne!(moved, a_after);
    s.endpoints = vec![Endpoint::ready(a_ep), Endpoint::ready(other)];
    p.reconcile(std::slice::from_ref(&s)).unwrap();
    assert_eq!(which("127.0.0.21", vip).await.0, moved);
}

#[tokio::test]
async fn local_traffic_policy_on_node_port_only() {
    let b1 = tcp_backend("127.0.14.1", "b1").await;
    let b2 = tcp_backend("127.0.14.2", "b2").await;
    let vip = free_port("127.0.10.6");
    let node = free_port("127.0.10.7");
    let (p, counts) = proxy(Some("n1"), L4Options::default());
    let mut s = svc(
        "local",
        Protocol::Tcp,
        Some(vip),
        &[on_node(b1, "n1"), on_node(b2, "n2")],
    );
    s.node_addrs = vec![node];
    s.external_traffic_local = true;
    p.reconcile(std::slice::from_ref(&s)).unwrap();

    for _ in 0..6 {
        assert_eq!(which("127.0.0.1", node).await.0, "b1");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(which("127.0.0.1", vip).await.0);
    }
    assert_eq!(seen.len(), 2, "the clusterIP uses every endpoint: {seen:?}");

    // No endpoint on our node: node-port connections are refused (reset) at once,
    // the clusterIP still works.
    s.endpoints = vec![on_node(b2, "n2")];
    p.reconcile(std::slice::from_ref(&s)).unwrap();
    let mut c = connect_from("127.0.0.1", node).await;
    assert!(is_cut(&mut c).await);
    assert_eq!(counts.refused.load(Ordering::SeqCst), 1);
    assert_eq!(which("127.0.0.1", vip).await.0, "b2");

    // Cluster policy: the node port uses all endpoints again.
    s.external_traffic_local = false;
    p.reconcile(std::slice::from_ref(&s)).unwrap();
    assert_eq!(which("127.0.0.1", node).await.0, "b2");
}

#[tokio::test]
async fn no_ready_endpoints_resets_promptly() {
    let b1 = tcp_backend("127.0.15.1", "b1").await;
    let vip = free_port("127.0.10.8");
    let (p, counts) = proxy(None, L4Options::default());
    let not_ready = Endpoint {
        ready: false,
        ..Endpoint::ready(b1)
    };
    p.reconcile(&[svc("empty", Protocol::Tcp, Some(vip), &[not_ready])])
        .unwrap();
    let mut c = connect_from("127.0.0.1", vip).await;
    let mut b = [0u8; 8];
    let r = timeout(WAIT, c.read(&mut b))
        .await
        .expect("reset, not a hang");
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(counts.refused.load(Ordering::SeqCst), 1);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 0);

    // An endpoint that refuses connections (nothing listens) is also a prompt reset.
    let dead = free_port("127.0.15.2");
    p.reconcile(&[svc(
        "empty",
        Protocol::Tcp,
        Some(vip),
        &[Endpoint::ready(dead)],
    )])
    .unwrap();
    let mut c = connect_from("127.0.0.1", vip).await;
    assert!(is_cut(&mut c).await);
}

#[tokio::test]
async fn endpoint_churn_keeps_remaining_connections_and_drains_removed_ones() {
    let b1 = tcp_backend("127.0.16.1", "b1").await;
    let b2 = tcp_backend("127.0.16.2", "b2").await;
    let b3 = tcp_backend("127.0.16.3", "b3").await;
    let vip = free_port("127.0.10.9");
    let options = L4Options {
        drain_timeout: Duration::from_secs(1),
        ..L4Options::default()
    };
    let (p, counts) = proxy(None, options);
    let s = |eps: &[SocketAddr]| {
        let eps: Vec<_> = eps.iter().map(|a| Endpoint::ready(*a)).collect();
        svc("churn", Protocol::Tcp, Some(vip), &eps)
    };
    p.reconcile(&[s(&[b1, b2])]).unwrap();
    let mut conns: HashMap<String, BufReader<TcpStream>> = HashMap::new();
    while conns.len() < 2 {
        let (name, r) = which("127.0.0.1", vip).await;
        conns.insert(name, r);
    }
    let mut b1c = conns.remove("b1").unwrap();
    let mut b2c = conns.remove("b2").unwrap();

    // Many swaps in which b2 stays; b1 leaves; b3 arrives.
    for _ in 0..20 {
        p.reconcile(&[s(&[b1, b2, b3])]).unwrap();
        p.reconcile(&[s(&[b2, b1])]).unwrap();
    }
    let summary = p.reconcile(&[s(&[b2, b3])]).unwrap();
    assert_eq!(summary.draining, 1, "{summary:?}");
    for _ in 0..4 {
        let (name, _) = which("127.0.0.1", vip).await;
        assert_ne!(name, "b1");
    }

    // The b1 connection is cut after the drain timeout...
    assert!(is_cut(b1c.get_mut()).await);
    // ...and the b2 connection, older than all the churn, still echoes well after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3u8 {
        b2c.get_mut().write_all(&[b'a' + i; 1000]).await.unwrap();
        let mut back = [0u8; 1000];
        timeout(WAIT, b2c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [b'a' + i; 1000]);
    }
    assert!(counts.closed.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn listeners_follow_the_service_list() {
    let b1 = tcp_backend("127.0.17.1", "b1").await;
    let vip_a = free_port("127.0.10.10");
    let vip_b = free_port("127.0.10.11");
    let other_vip = free_port("127.0.10.12");
    let (p, _) = proxy(None, L4Options::default());
    let ep = [Endpoint::ready(b1)];
    let other = svc("other", Protocol::Tcp, Some(other_vip), &ep);
    p.reconcile(&[svc("mover", Protocol::Tcp, Some(vip_a), &ep), other.clone()])
        .unwrap();
    let (_, mut before_move) = which("127.0.0.1", vip_a).await;
    let (_, mut unrelated) = which("127.0.0.1", other_vip).await;

    // The clusterIP moves: old address closed, new one open, the open connection kept
    // (its endpoint is still in the Service), the unrelated listener untouched.
    let s = p
        .reconcile(&[svc("mover", Protocol::Tcp, Some(vip_b), &ep), other.clone()])
        .unwrap();
    assert_eq!((s.added, s.removed, s.listening), (1, 1, 2), "{s:?}");
    eventually("old listener closed", || {
        std::net::TcpStream::connect_timeout(&vip_a, Duration::from_secs(1)).is_err()
    })
    .await;
    assert_eq!(which("127.0.0.1", vip_b).await.0, "b1");
    for c in [&mut before_move, &mut unrelated] {
        c.get_mut().write_all(b"still here").await.unwrap();
        let mut back = [0u8; 10];
        timeout(WAIT, c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"still here");
    }

    // The Service goes away (e.g. made headless): its listener closes.
    let s = p.reconcile(&[other]).unwrap();
    assert_eq!((s.removed, s.listening), (1, 1));
    eventually("listener closed", || {
        std::net::TcpStream::connect_timeout(&vip_b, Duration::from_secs(1)).is_err()
    })
    .await;
    assert_eq!(which("127.0.0.1", other_vip).await.0, "b1");
}

#[tokio::test]
async fn address_not_on_this_machine_gets_no_listener_and_no_error() {
    let (p, _) = proxy(None, L4Options::default());
    // TEST-NET-1: documentation addresses, never assigned to a local interface.
    let remote: SocketAddr = "192.0.2.10:80".parse().unwrap();
    let s = svc("remote", Protocol::Tcp, Some(remote), &[]);
    let summary = p.reconcile(std::slice::from_ref(&s)).unwrap();
    assert_eq!(summary.not_local, 1, "{summary:?}");
    assert_eq!(summary.listening, 0);
    assert_eq!(p.reconcile(&[s]).unwrap().not_local, 1);
}

#[tokio::test]
async fn two_services_claiming_one_address_first_wins() {
    let b1 = tcp_backend("127.0.18.1", "b1").await;
    let b2 = tcp_backend("127.0.18.2", "b2").await;
    let vip = free_port("127.0.10.13");
    let (p, _) = proxy(None, L4Options::default());
    let s = p
        .reconcile(&[
            svc("first", Protocol::Tcp, Some(vip), &[Endpoint::ready(b1)]),
            svc("second", Protocol::Tcp, Some(vip), &[Endpoint::ready(b2)]),
        ])
        .unwrap();
    assert_eq!(s.listening, 1);
    assert_eq!(which("127.0.0.1", vip).await.0, "b1");
}

#[test]
fn reconcile_outside_a_runtime_is_an_error() {
    let (p, _) = proxy(None, L4Options::default());
    assert!(p.reconcile(&[]).is_err());
}

#[tokio::test]
async fn udp_flows_reply_from_the_service_address_and_idle_out() {
    let u1 = udp_backend("127.0.19.1", "u1").await;
    let u2 = udp_backend("127.0.19.2", "u2").await;
    let vip = free_port("127.0.10.14");
    let node = free_port("127.0.10.15");
    let options = L4Options {
        // Long enough that a loaded machine never idles a flow out between the
        // datagrams of one exchange below.
        udp_idle_timeout: Duration::from_secs(2),
        ..L4Options::default()
    };
    let (p, counts) = proxy(Some("n1"), options);
    let mut s = svc(
        "dns",
        Protocol::Udp,
        Some(vip),
        &[Endpoint::ready(u1), Endpoint::ready(u2)],
    );
    s.node_addrs = vec![node];
    p.reconcile(&[s]).unwrap();
    assert_eq!(
        p.listening(),
        vec![(Protocol::Udp, vip), (Protocol::Udp, node)]
    );

    let mut names = HashMap::new();
    for i in 0..4 {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = if i % 2 == 0 { vip } else { node };
        let mut buf = [0u8; 64];
        // One flow: several datagrams, same endpoint, replies from the address we sent to.
        let mut first = None;
        for q in 0..3 {
            c.send_to(format!("q{q}").as_bytes(), to).await.unwrap();
            let (n, from) = timeout(WAIT, c.recv_from(&mut buf)).await.unwrap().unwrap();
            assert_eq!(from, to);
            let reply = std::str::from_utf8(&buf[..n]).unwrap().to_owned();
            let (name, payload) = reply.split_once(':').unwrap();
            assert_eq!(payload, format!("q{q}"));
            assert_eq!(*first.get_or_insert(name.to_owned()), name);
        }
        *names.entry(first.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(names.len(), 2, "flows spread over endpoints: {names:?}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 4);
    assert_eq!(counts.bytes_in.load(Ordering::SeqCst), 4 * 3 * 2);
    assert_eq!(counts.bytes_out.load(Ordering::SeqCst), 4 * 3 * 5);
    eventually("UDP flows idle out", || {
        counts.closed.load(Ordering::SeqCst) == 4
    })
    .await;
}

#[tokio::test]
async fn udp_without_endpoints_drops_and_removed_listener_closes_flows() {
    let u1 = udp_backend("127.0.19.3", "u1").await;
    let vip = free_port("127.0.10.16");
    let (p, counts) = proxy(None, L4Options::default());
    p.reconcile(&[svc("dns", Protocol::Udp, Some(vip), &[])])
        .unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(b"x", vip).await.unwrap();
    eventually("datagram refused", || {
        counts.refused.load(Ordering::SeqCst) == 1
    })
    .await;

    p.reconcile(&[svc("dns", Protocol::Udp, Some(vip), &[Endpoint::ready(u1)])])
        .unwrap();
    c.send_to(b"y", vip).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = timeout(WAIT, c.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"u1:y");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);

    // The endpoint is replaced: the flow closes at once (no drain for UDP) and the
    // same client's next datagram reaches the new endpoint.
    let u2 = udp_backend("127.0.19.4", "u2").await;
    p.reconcile(&[svc("dns", Protocol::Udp, Some(vip), &[Endpoint::ready(u2)])])
        .unwrap();
    eventually("flow to the removed endpoint closed", || {
        counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    c.send_to(b"z", vip).await.unwrap();
    let (n, _) = timeout(WAIT, c.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"u2:z");

    p.reconcile(&[]).unwrap();
    eventually("flow closed with its listener", || {
        counts.closed.load(Ordering::SeqCst) == 2
    })
    .await;
    // The address is free again: the listener socket is gone.
    eventually("UDP address released", || {
        std::net::UdpSocket::bind(vip).is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_both_ways_at_once_under_backpressure() {
    let b1 = tcp_backend("127.0.21.1", "b1").await;
    let vip = free_port("127.0.10.17");
    for zero_copy in [true, false] {
        let options = L4Options {
            zero_copy,
            ..L4Options::default()
        };
        let (p, counts) = proxy(None, options);
        p.reconcile(&[svc(
            "bulk",
            Protocol::Tcp,
            Some(vip),
            &[Endpoint::ready(b1)],
        )])
        .unwrap();
        let (name, r) = which("127.0.0.1", vip).await;
        assert_eq!(name, "b1");
        let (mut rd, mut wr) = r.into_inner().into_split();
        // Far more than socket buffers hold: the writer only progresses while the reader
        // drains the echo, so every pump must honour backpressure both ways.
        const LEN: usize = 16 << 20;
        let writer = tokio::spawn(async move {
            let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < LEN {
                wr.write_all(&chunk).await.unwrap();
                sent += chunk.len();
            }
            wr.shutdown().await.unwrap();
        });
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = timeout(WAIT, rd.read(&mut buf)).await.unwrap().unwrap();
            if n == 0 {
                break;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, (((got + k) % 65536) % 251) as u8, "byte {}", got + k);
            }
            got += n;
        }
        writer.await.unwrap();
        assert_eq!(got, LEN, "zero_copy={zero_copy}");
        eventually("flow closed", || counts.closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(counts.bytes_in.load(Ordering::SeqCst), LEN as u64);
        drop(p);
        // Let the listener close before the next round binds the same address.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
