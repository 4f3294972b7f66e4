//! Swapping the config 1,000 times under load: no failed request, no cut connection, no
//! cut tunnel, and upstream connections kept for endpoints that stay.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hyper::StatusCode;
use proxy_core::balance::CookieAffinity;
use proxy_core::{Config, Timeouts};

const SWAPS: usize = 1000;
const CLIENTS: usize = 6;
const TUNNELS: usize = 3;

fn variant(i: usize, e1: std::net::SocketAddr, e2: std::net::SocketAddr) -> Config {
    let mut cfg = match i % 4 {
        0 => config(
            vec![rule("app.test", "pool")],
            vec![backend("pool", &[e1, e2])],
        ),
        // Other order, an extra host, cookie affinity switched on.
        1 => config(
            vec![
                sticky(rule("app.test", "pool"), CookieAffinity::default()),
                rule("other.test", "other"),
            ],
            vec![backend("pool", &[e2, e1]), backend("other", &[e2])],
        ),
        // Different timeouts.
        2 => {
            let r = with_policy(rule("app.test", "pool"), |p| {
                p.timeouts = Timeouts {
                    connect: Duration::from_secs(3),
                    read: Duration::from_secs(20),
                    send: Duration::from_secs(20),
                }
            });
            config(vec![r], vec![backend("pool", &[e1, e2])])
        }
        // e2 leaves the backend (and comes back with the next swap).
        _ => config(vec![rule("app.test", "pool")], vec![backend("pool", &[e1])]),
    };
    cfg.generation = i as u64 + 2;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_swaps_under_load_fail_nothing() {
    let e1 = TestBackend::start("e1").await;
    let e2 = TestBackend::start("e2").await;
    let ws = TestBackend::start("ws").await;
    let mut first = variant(0, e1.addr, e2.addr);
    // The WebSocket host, present in every variant below via `with_ws`.
    let with_ws = |mut cfg: Config| {
        // One rule per host. (Any backend here echoes upgrades, so tunnels work even
        // while the route table is a first-rule stub.)
        let mut rules = Vec::new();
        for host in ["app.test", "other.test"] {
            let backend = if host == "app.test" { "pool" } else { "other" };
            if cfg.backends.contains_key(&backend_id(backend)) {
                rules.push(rule(host, backend));
            }
        }
        rules.push(rule("ws.test", "ws"));
        cfg.routes = proxy_core::routes::RouteTable::build(rules);
        cfg.backends
            .insert(backend_id("ws"), Arc::new(backend("ws", &[ws.addr])));
        cfg
    };
    first = with_ws(first);
    let px = TestProxy::start(first).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));

    // Idle keep-alive connections: used before the swaps and again after.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open(px.addr).await;
        assert_eq!(c.get("app.test", "/").await.status, StatusCode::OK);
        idle.push(c);
    }

    // Busy keep-alive clients.
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, failures, served, addr) =
            (stop.clone(), failures.clone(), served.clone(), px.addr);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let req = hyper::Request::get("/")
                    .header("host", "app.test")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match tokio::time::timeout(DEADLINE, conn.send(req)).await {
                    Ok(Ok(resp)) => {
                        let r = Reply::read(resp).await;
                        if r.status != StatusCode::OK || (r.text() != "e1" && r.text() != "e2") {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.text()));
                        } else {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(e)) => {
                        failures.lock().unwrap().push(format!("request error: {e}"));
                        return;
                    }
                    Err(_) => {
                        failures.lock().unwrap().push("request timed out".into());
                        return;
                    }
                }
            }
        }));
    }

    // Open WebSocket tunnels echoing the whole time, plus new ones opened mid-swap.
    let echoes = Arc::new(AtomicUsize::new(0));
    for t in 0..TUNNELS {
        let (stop, echoes, addr) = (stop.clone(), echoes.clone(), px.addr);
        tasks.push(tokio::spawn(async move {
            let mut tunnel = open_tunnel(addr, "ws.test").await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                echo(&mut tunnel, format!("tunnel {t} message {n}").as_bytes()).await;
                echoes.fetch_add(1, Ordering::Relaxed);
                n += 1;
                if n.is_multiple_of(200) {
                    // A fresh tunnel while configs keep changing.
                    let mut fresh = open_tunnel(addr, "ws.test").await;
                    echo(&mut fresh, b"hello").await;
                }
            }
        }));
    }

    // Let traffic start, then swap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e1_accepts_before = e1.accepts.load(Ordering::SeqCst);
    let served_before = served.load(Ordering::Relaxed);
    for i in 0..SWAPS {
        px.handle.store(with_ws(variant(i + 1, e1.addr, e2.addr)));
        // Pace the swaps so that requests and echoes interleave with them.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    px.handle.store(with_ws(variant(0, e1.addr, e2.addr)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(DEADLINE, t)
            .await
            .expect("client finished")
            .expect("client did not panic");
    }

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let served_during = served.load(Ordering::Relaxed) - served_before;
    assert!(
        served_during >= SWAPS / 2,
        "too little traffic to mean anything: {served_during}"
    );
    assert!(echoes.load(Ordering::Relaxed) >= 50, "tunnels barely used");
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c.get("app.test", "/").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "idle keep-alive connection {i} was cut"
        );
    }
    // e1 is in every variant: its pooled connections survived the swaps instead of being
    // re-opened per config.
    let e1_new = e1.accepts.load(Ordering::SeqCst) - e1_accepts_before;
    eprintln!(
        "{SWAPS} swaps: {served_during} requests, {} echoes, {e1_new} new connections to e1",
        echoes.load(Ordering::Relaxed)
    );
    assert!(
        e1_new <= 4 * CLIENTS,
        "{e1_new} new upstream connections to e1 for {served_during} requests"
    );
}
