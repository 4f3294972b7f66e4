//! The ConfigMap's `ssl-protocols` and `ssl-ciphers` through the binary, checked with
//! `openssl s_client` against the HTTPS listener, and changed without a restart.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `openssl s_client` against `addr` with `args`; `None` when openssl is missing.
async fn s_client(addr: SocketAddr, args: &[&str]) -> Option<Output> {
    let connect = addr.to_string();
    let mut all: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        connect,
        "-servername".into(),
        "a.example.com".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .ok()
    })
    .await
    .unwrap()
}

fn configmap(data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n{data}")
}

/// Polls until a handshake with `args` succeeds (`true`) or fails (`false`).
async fn until_handshake(addr: SocketAddr, args: &[&str], ok: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = s_client(addr, args).await.expect("openssl ran before");
        if out.status.success() == ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "handshake with {args:?} never {}: {}",
            if ok { "succeeded" } else { "failed" },
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_protocols_and_ciphers_shape_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    let web = Backend::start("web").await;
    text.push_str(&app_yaml("web", "a.example.com", "/", &[web.addr]));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        configmap("  ssl-protocols: \"TLSv1.1 TLSv1.3\"\n"),
    )
    .unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "default/portico"]);
    ctl.wait_ready().await;
    if s_client(ctl.https, &["-tls1_3"]).await.is_none() {
        println!("skipped: openssl is not installed");
        return;
    }
    until_handshake(ctl.https, &["-tls1_2"], false).await;
    until_handshake(ctl.https, &["-tls1_3"], true).await;
    ctl.wait_log(
        "the refused protocol reported",
        Duration::from_secs(10),
        |l| l.contains("ssl-protocols") && l.contains("TLSv1.1"),
    )
    .await;

    // TLS 1.2 with one suite: the others are refused.
    write_atomic(
        dir.path(),
        "settings.yaml",
        &configmap("  ssl-protocols: \"TLSv1.2\"\n  ssl-ciphers: \"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384\"\n"),
    );
    until_handshake(ctl.https, &["-tls1_3"], false).await;
    until_handshake(
        ctl.https,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
        ],
        true,
    )
    .await;
    until_handshake(
        ctl.https,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
        ],
        false,
    )
    .await;
    let out = s_client(ctl.https, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
        .await
        .unwrap();
    assert!(!out.status.success(), "TLS 1.1 was accepted");
}
