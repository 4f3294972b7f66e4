//! Connection caps through the binary: a flood of idle connections is refused at the cap,
//! counted, and neither the admin listener nor new clients after it go unanswered.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FOLLOW: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_stops_at_the_cap_and_the_probes_still_answer() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("app", "app.example.com", "/", &[b.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--max-connections", "20"]);
    ctl.wait_ready().await;
    // Routed, asked over connections the proxy closes itself: a pooling client's
    // connection would hold a slot until its close is noticed, and free it midway
    // through the flood.
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        let mut s = TcpStream::connect(ctl.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 20 idle connections take every slot, on both listeners together.
    let mut held = Vec::new();
    for i in 0..20 {
        let addr = if i % 2 == 0 { ctl.http } else { ctl.https };
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next ones are closed at once, unanswered.
    for addr in [ctl.http, ctl.https, ctl.http] {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("a connection over the cap was kept open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // The probes answer throughout.
    assert_eq!(get(ctl.admin, "admin", "/healthz").await.unwrap().0, 200);
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains(r#"portico_connections_refused_total{reason="max_connections"} 3"#),
        "{metrics}"
    );
    // Slots come back when the flood goes away.
    drop(held);
    wait_for(ctl.http, "app.example.com", "/", FOLLOW, |s, _| s == 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_slot() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("app", "app.example.com", "/", &[b.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--max-connections-per-client", "4"]);
    ctl.wait_ready().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(ctl.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(ctl.http).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("a fifth connection from one address was kept open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains(
            r#"portico_connections_refused_total{reason="max_connections_per_client"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_rate_paces_the_answer() {
    let b = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[b.addr]));
    // 1 KiB a second past the first KiB.
    text.push_str(
        &ingress_yaml("paced", "paced.example.com", "/", "web").replace(
            "  name: paced\n",
            "  name: paced\n  annotations:\n    nginx.ingress.kubernetes.io/limit-rate: \"1\"\n    nginx.ingress.kubernetes.io/limit-rate-after: \"1\"\n",
        ),
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "paced.example.com", "/", FOLLOW, |s, _| s == 200).await;

    // The backend echoes the path: a 4 KiB answer goes out as 1 KiB at once, one
    // second's worth at once, then 1 KiB a second, so it cannot take less than 2 s
    // (a slow machine only makes it longer).
    let path = format!("/{}", "a".repeat(4 << 10));
    let start = std::time::Instant::now();
    let (status, body) = get(ctl.http, "paced.example.com", &path).await.unwrap();
    let took = start.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body, format!("web {path}"));
    assert!(took >= Duration::from_millis(1900), "answered in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_park_keep_their_slots_and_serve_again() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("app", "app.example.com", "/", &[b.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--max-connections", "2"]);
    ctl.wait_ready().await;
    let mut first = TcpStream::connect(ctl.http).await.unwrap();
    let mut second = TcpStream::connect(ctl.http).await.unwrap();
    assert!(request_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(request_on(&mut second).await.starts_with("HTTP/1.1 200"));
    // Idle past the park time (1 s): both give up their tasks, not their slots.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains("portico_client_connections_parked 2\n"),
        "{metrics}"
    );
    let mut extra = TcpStream::connect(ctl.http).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("a connection over the cap was kept open while the others were parked")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Woken by their next requests, on the same connections, again and again.
    for _ in 0..2 {
        assert!(request_on(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(request_on(&mut second).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}
