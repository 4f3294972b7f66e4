//! End to end: the per-core runtime model (`--runtime per-core`). Each serving thread
//! runs a runtime of its own; new connections are dealt out to them in turn, and every
//! thread serves the ones dealt to it, over HTTP and HTTPS, parks them when idle, and
//! drains them with the rest of the process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod common;

use common::{
    app_yaml, client, exchange, get, get_with, request_on, AnyCert, Backend, Controller,
    INGRESS_CLASS_YAML,
};

const THREADS: usize = 3;

/// Each serving thread of the process (`portico-shard-N`, and the main thread, which is
/// shard 0), with the times it has gone to sleep waiting for work.
fn shard_wakeups(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let name = field("Name:").unwrap_or_default();
        let main = task.file_name().to_string_lossy() == pid.to_string();
        if name.starts_with("portico-shard-") || main {
            let switches = field("voluntary_ctxt_switches:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.push((if main { "main".to_owned() } else { name }, switches));
        }
    }
    out.sort();
    out
}

fn tls_client() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn over_tls(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("name");
    let tls = tls_client().connect(name, tcp).await.expect("handshake");
    let answer = exchange(tls, "GET", host, path, &[], "").await;
    (answer.status, answer.body)
}

/// The binary per core with `THREADS` threads (and `extra` flags) over a folder that
/// routes `host` to `backend`; the folder lives as long as the controller is used.
async fn per_core(
    backend: &Backend,
    host: &str,
    extra: &[&str],
) -> (Controller, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        app_yaml("app", host, "/", &[backend.addr]),
    )
    .unwrap();
    let threads = THREADS.to_string();
    let mut args = vec!["--runtime", "per-core", "--worker-threads", &threads];
    args.extend_from_slice(extra);
    let mut ctl = Controller::start(dir.path(), &args);
    ctl.wait_ready().await;
    (ctl, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_threads_each_serve_their_share_over_http_and_https() {
    let backend = Backend::start("app").await;
    let (ctl, _dir) = per_core(&backend, "app.example.com", &[]).await;

    let pid = ctl.pid();
    let before = shard_wakeups(pid);
    assert_eq!(before.len(), THREADS, "serving threads: {before:?}");
    // One request per connection, one connection at a time: every connection wakes the
    // thread it was dealt to, and each thread gets a third of them.
    for i in 0..90 {
        let path = format!("/n{i}");
        let (status, body) = if i % 3 == 0 {
            over_tls(ctl.https, "app.example.com", &path).await
        } else {
            let tcp = TcpStream::connect(ctl.http).await.expect("connect");
            let answer = exchange(tcp, "GET", "app.example.com", &path, &[], "").await;
            (answer.status, answer.body)
        };
        assert_eq!(
            (status, body),
            (200, format!("app {path}")),
            "{}",
            ctl.logs()
        );
    }
    // Keep-alive connections stay with their thread and reuse its pod connections.
    let keep_alive = client();
    for _ in 0..10 {
        let (status, body) = get_with(&keep_alive, ctl.http, "app.example.com", "/again")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "app /again"));
    }
    let after = shard_wakeups(pid);
    for ((name, was), (_, now)) in before.iter().zip(&after) {
        assert!(
            now.saturating_sub(*was) >= 10,
            "{name} woke {} times for 90 connections: it served none of them ({before:?} -> {after:?})",
            now.saturating_sub(*was)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_sigterm_drains_every_threads_requests() {
    let slow = Backend::start_slow("slow", Duration::from_secs(2)).await;
    let (mut ctl, _dir) = per_core(&slow, "slow.example.com", &["--shutdown-grace", "30"]).await;
    // Enough connections that every thread holds some with high likelihood.
    let http = ctl.http;
    let in_flight: Vec<_> = (0..12)
        .map(|i| {
            tokio::spawn(async move { get(http, "slow.example.com", &format!("/d{i}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.signal("TERM");
    // No thread accepts any more while they drain.
    ctl.wait_not_accepting(Duration::from_secs(10)).await;
    for (i, request) in in_flight.into_iter().enumerate() {
        assert_eq!(
            request.await.unwrap().unwrap(),
            (200, format!("slow /d{i}")),
            "{}",
            ctl.logs()
        );
    }
    let status = ctl.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}:\n{}", ctl.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_idle_connections_park_on_their_thread_and_serve_again() {
    let backend = Backend::start("app").await;
    let (ctl, _dir) = per_core(&backend, "app.example.com", &[]).await;
    let mut conns = Vec::new();
    for _ in 0..9 {
        let mut conn = TcpStream::connect(ctl.http).await.expect("connect");
        assert!(request_on(&mut conn).await.starts_with("HTTP/1.1 200"));
        conns.push(conn);
    }
    // Idle past the park time (1 s): each thread's lot takes its own.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains("portico_client_connections_parked 9\n"),
        "{metrics}"
    );
    // Woken by their next requests, served again on the same connections.
    for round in 0..2 {
        for conn in &mut conns {
            let answer = request_on(conn).await;
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "round {round}: {answer}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}
