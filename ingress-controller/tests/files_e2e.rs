//! The binary over a folder of manifests: routing, admin endpoints, and a folder edited
//! while requests flow.

mod common;

use std::time::Duration;

use common::*;

const FOLLOW: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_manifests_and_reports_metrics() {
    let a = Backend::start("alpha").await;
    let b = Backend::start("beta").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("alpha", "a.example.com", "/", &[a.addr]));
    std::fs::write(dir.path().join("alpha.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("beta.yml"),
        app_yaml("beta", "b.example.com", "/", &[b.addr]),
    )
    .unwrap();

    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;

    assert_eq!(
        get(ctl.http, "a.example.com", "/x").await.unwrap(),
        (200, "alpha /x".to_owned())
    );
    assert_eq!(
        get(ctl.http, "B.Example.com:8080", "/y").await.unwrap(),
        (200, "beta /y".to_owned())
    );
    let (status, _) = get(ctl.http, "nobody.example.com", "/").await.unwrap();
    assert_eq!(status, 404);

    assert_eq!(get(ctl.admin, "admin", "/healthz").await.unwrap().0, 200);
    assert_eq!(get(ctl.admin, "admin", "/nope").await.unwrap().0, 404);
    let metrics = ctl.metrics().await;
    for want in [
        r#"portico_requests_total{status="200",host="a.example.com",backend="default/alpha:80",blame="none"} 1"#,
        r#"portico_requests_total{status="200",host="b.example.com",backend="default/beta:80",blame="none"} 1"#,
        r#"portico_requests_total{status="404",host="other",backend="none",blame="config"} 1"#,
        r#"portico_backend_endpoints{backend="default/alpha:80",ready="true"} 1"#,
        r#"portico_upstream_latency_seconds_count{backend="default/alpha:80"} 1"#,
        "portico_config_reloads_total",
        "portico_config_reload_duration_seconds_count",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_edits_additions_and_deletions() {
    let a = Backend::start("alpha").await;
    let b = Backend::start("beta").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        app_yaml("app", "app.example.com", "/", &[a.addr]),
    )
    .unwrap();
    // On the single-threaded runtime `--worker-threads 1` selects: the watcher, the
    // compile loop and the proxy all share the main thread.
    let mut ctl = Controller::start(dir.path(), &["--worker-threads", "1"]);
    ctl.wait_ready().await;
    assert_eq!(
        get(ctl.http, "app.example.com", "/").await.unwrap(),
        (200, "alpha /".to_owned())
    );

    // Edit in place: the endpoints move to beta.
    std::fs::write(
        dir.path().join("app.yaml"),
        app_yaml("app", "app.example.com", "/", &[b.addr]),
    )
    .unwrap();
    wait_for(ctl.http, "app.example.com", "/", FOLLOW, |s, body| {
        s == 200 && body.starts_with("beta")
    })
    .await;

    // A new file in a new subfolder adds a host.
    std::fs::create_dir(dir.path().join("more")).unwrap();
    write_atomic(
        &dir.path().join("more"),
        "other.yaml",
        &app_yaml("other", "other.example.com", "/", &[a.addr]),
    );
    wait_for(ctl.http, "other.example.com", "/o", FOLLOW, |s, body| {
        s == 200 && body == "alpha /o"
    })
    .await;

    // Deleting a file removes its objects.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    wait_for(ctl.http, "app.example.com", "/", FOLLOW, |s, _| s == 404).await;
    assert_eq!(
        get(ctl.http, "other.example.com", "/").await.unwrap().0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_is_reported_with_path_and_line_and_last_good_keeps_serving() {
    let a = Backend::start("alpha").await;
    let b = Backend::start("beta").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, app_yaml("app", "app.example.com", "/", &[a.addr])).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;

    // The new version points at beta, but line 7 is broken.
    let good = app_yaml("app", "app.example.com", "/", &[b.addr]);
    let mut lines: Vec<&str> = good.lines().collect();
    assert_eq!(lines[6], "  ports:");
    lines[6] = "  ports: [unclosed";
    std::fs::write(&path, lines.join("\n")).unwrap();

    let want = format!("{}:", path.display());
    ctl.wait_log("the broken file", FOLLOW, |logs| {
        logs.lines()
            .any(|l| l.contains("manifest rejected") && l.contains(&want))
    })
    .await;
    let logs = ctl.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("manifest rejected"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains(&format!("{}:7:", path.display()))
            || line.contains(&format!("{}:8:", path.display())),
        "no path:line in {line}"
    );
    // Last good version still serves.
    for _ in 0..5 {
        assert_eq!(
            get(ctl.http, "app.example.com", "/").await.unwrap(),
            (200, "alpha /".to_owned())
        );
    }
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains(r#"portico_diagnostics{reason="invalid_manifest",kind="File"} 1"#),
        "{metrics}"
    );

    // Fixed: the new version applies and the diagnostic clears.
    std::fs::write(&path, &good).unwrap();
    wait_for(ctl.http, "app.example.com", "/", FOLLOW, |s, body| {
        s == 200 && body.starts_with("beta")
    })
    .await;
    let metrics = ctl.metrics().await;
    assert!(!metrics.contains("invalid_manifest"), "{metrics}");
    // Reported once, not once per rescan.
    assert_eq!(ctl.logs().matches("manifest rejected").count(), 1);
}

/// `GET /metrics` with this `Accept` (none when `None`): the `Content-Type` and the body.
async fn scrape(ctl: &Controller, accept: Option<&str>) -> (String, String) {
    use http_body_util::BodyExt;
    let mut req = hyper::Request::get(format!("http://{}/metrics", ctl.admin));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample line `name value` (no labels).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_the_format_and_report_the_process() {
    let a = Backend::start("alpha").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&app_yaml("alpha", "a.example.com", "/", &[a.addr]));
    std::fs::write(dir.path().join("alpha.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    let prometheus = "text/plain; version=0.0.4; charset=utf-8";
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    for (accept, want) in [
        (None, prometheus),
        (Some("*/*"), prometheus),
        (Some("text/plain"), prometheus),
        // What Prometheus sends by default.
        (
            Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            openmetrics,
        ),
        (Some("application/openmetrics-text"), openmetrics),
        (
            Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"),
            prometheus,
        ),
        (Some("application/openmetrics-text;version=9.9.9"), prometheus),
    ] {
        let (content_type, body) = scrape(&ctl, accept).await;
        assert_eq!(content_type, want, "Accept: {accept:?}");
        let build = format!(
            r#"portico_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        assert!(body.contains(&build), "{body}");
        if want == openmetrics {
            assert!(body.ends_with("# EOF\n"), "{body}");
            assert!(body.contains("# TYPE portico_config_reloads counter\n"), "{body}");
        } else {
            assert!(!body.contains("# EOF"), "{body}");
            assert!(!body.contains("# UNIT"), "{body}");
            assert!(body.contains("# TYPE portico_config_reloads_total counter\n"), "{body}");
            assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"), "{body}");
        }
        // The binary's own figures, read from /proc.
        assert!(sample(&body, "process_cpu_seconds_total") >= 0.0);
        assert!(sample(&body, "process_resident_memory_bytes") > 1e6, "{body}");
        let open = sample(&body, "process_open_fds");
        // At least stdio and the three listeners.
        assert!(open >= 6.0, "{body}");
        assert!(sample(&body, "process_max_fds") >= open, "{body}");
        let start = sample(&body, "process_start_time_seconds");
        assert!(start > now - 300.0 && start <= now + 2.0, "start {start}, now {now}");
    }
}

/// The notes' kubia Ingress as they give it, in `extensions/v1beta1` with no class
/// (the folder's IngressClass is the default one).
const NOTES_KUBIA_INGRESS: &str = "\
apiVersion: extensions/v1beta1
kind: Ingress
metadata:
    name: kubia
spec:
    rules:
    -   host: kubia.example.com #将该域名映射到服务
        http:
            paths:
            -   path: / #将请求发送到kubia-nodeport服务svc的80端口
                backend:
                    serviceName: kubia-nodeport
                    servicePort: 80 #对应svc的Port，是cluster-IP对应的port
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1beta1_ingress_routes_with_a_deprecation_warning() {
    let pod = Backend::start("kubia-pod").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("kubia-nodeport", &[pod.addr]));
    std::fs::write(dir.path().join("kubia-svc.yaml"), text).unwrap();
    let ingress = dir.path().join("kubia-ingress.yaml");
    std::fs::write(&ingress, NOTES_KUBIA_INGRESS).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;

    // Converted as the API server did: path `/` ImplementationSpecific (a prefix here).
    for path in ["/", "/deeper/page"] {
        assert_eq!(
            get(ctl.http, "kubia.example.com", path).await.unwrap(),
            (200, format!("kubia-pod {path}"))
        );
    }
    let warning = format!(
        "{}:1: Ingress default/kubia: apiVersion extensions/v1beta1 is deprecated and was removed in Kubernetes 1.22",
        ingress.display()
    );
    ctl.wait_log("the deprecation warning", FOLLOW, |logs| {
        logs.contains(&warning)
    })
    .await;
    let logs = ctl.logs();
    let line = logs.lines().find(|l| l.contains(&warning)).unwrap();
    for want in [
        "WARN",
        "apiVersion: networking.k8s.io/v1",
        "spec.rules[0].http.paths[0].backend.service: {name: kubia-nodeport, port: {number: 80}}",
        "pathType: ImplementationSpecific on the 1 path that had none",
    ] {
        assert!(line.contains(want), "missing {want} in {line}");
    }
    let metrics = ctl.metrics().await;
    assert!(
        metrics
            .contains(r#"portico_diagnostics{reason="deprecated_api_version",kind="Ingress"} 1"#),
        "{metrics}"
    );

    // Rewritten in the v1 form: the same routes, and the warning clears.
    std::fs::write(
        &ingress,
        ingress_yaml("kubia", "kubia.example.com", "/", "kubia-nodeport"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + FOLLOW;
    while ctl.metrics().await.contains("deprecated_api_version") {
        assert!(
            std::time::Instant::now() < deadline,
            "warning never cleared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(ctl.http, "kubia.example.com", "/").await.unwrap(),
        (200, "kubia-pod /".to_owned())
    );
    // Said once.
    assert_eq!(ctl.logs().matches(&warning).count(), 1);
}

/// The checked promise: a folder edited 60 times while requests flow fails no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_failed_requests_while_the_folder_is_edited() {
    let a = Backend::start("alpha").await;
    let b = Backend::start("beta").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    std::fs::write(dir.path().join("svc.yaml"), service_yaml("app", &[a.addr])).unwrap();
    std::fs::write(
        dir.path().join("ing.yaml"),
        ingress_yaml("app", "app.example.com", "/", "app"),
    )
    .unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let http = ctl.http;
        clients.push(tokio::spawn(async move {
            let client = client();
            let (mut ok, mut failures) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match get_with(&client, http, "app.example.com", "/loop").await {
                    Ok((200, body)) if body == "alpha /loop" || body == "beta /loop" => ok += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (ok, failures)
        }));
    }

    for i in 0..60 {
        let backends = match i % 3 {
            0 => vec![b.addr],
            1 => vec![a.addr, b.addr],
            _ => vec![a.addr],
        };
        match i % 4 {
            // In place (truncate and write), as a shell redirect or a simple editor does.
            0 | 1 => {
                std::fs::write(dir.path().join("svc.yaml"), service_yaml("app", &backends)).unwrap()
            }
            // Through a rename, as careful editors and tools do.
            2 => write_atomic(dir.path(), "svc.yaml", &service_yaml("app", &backends)),
            // Unrelated files come and go; the Ingress is rewritten unchanged.
            _ => {
                let extra = dir.path().join(format!("extra-{i}.yaml"));
                std::fs::write(
                    &extra,
                    app_yaml(&format!("x{i}"), "x.example.com", "/", &[a.addr]),
                )
                .unwrap();
                if i > 10 {
                    let _ = std::fs::remove_file(dir.path().join(format!("extra-{}.yaml", i - 8)));
                }
                write_atomic(
                    dir.path(),
                    "ing.yaml",
                    &ingress_yaml("app", "app.example.com", "/", "app"),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Let the last edits apply while requests continue.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (mut ok, mut failures) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 100, "only {ok} requests");
    let reloads: u64 = ctl
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("portico_config_reloads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(reloads > 5, "{reloads} reloads for 60 edits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let slow = Backend::start_slow("slow", Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        app_yaml("app", "slow.example.com", "/", &[slow.addr]),
    )
    .unwrap();
    // Draining works the same on the single-threaded runtime.
    let mut ctl = Controller::start(
        dir.path(),
        &["--shutdown-grace", "30", "--worker-threads", "1"],
    );
    ctl.wait_ready().await;
    let http = ctl.http;
    let in_flight = tokio::spawn(async move { get(http, "slow.example.com", "/drain").await });
    // Let the request reach the backend before stopping.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.signal("TERM");

    // While it drains: not ready, and no new connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(ctl.admin, "admin", "/readyz").await;
        let accepting = tokio::net::TcpStream::connect(ctl.http).await.is_ok();
        if matches!(ready, Ok((503, _))) && !accepting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready ({ready:?}) or accepting ({accepting}) after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        (200, "slow /drain".to_owned())
    );
    let status = ctl.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(dir.path(), &["--shutdown-grace", "5"]);
    ctl.wait_ready().await;
    ctl.signal("TERM");
    let status = ctl.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}:\n{}", ctl.logs());
    assert!(ctl.logs().contains("draining"), "{}", ctl.logs());
}

/// Ready means listening: a Service sends traffic to a pod once its readiness probe
/// passes, so from the first `200` on `/readyz` both proxy ports must take connections.
/// The first config is published by a task of its own, so the check runs on a few
/// starts, polling without a pause, to land in any gap between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_its_ports_listen() {
    // An empty folder is a config like any other: published, then ready.
    let dir = tempfile::tempdir().unwrap();
    for start in 0..6 {
        let ctl = Controller::start(dir.path(), &[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !matches!(get(ctl.admin, "admin", "/readyz").await, Ok((200, _))) {
            assert!(
                std::time::Instant::now() < deadline,
                "start {start}: not ready:\n{}",
                ctl.logs()
            );
        }
        for (port, addr) in [("http", ctl.http), ("https", ctl.https)] {
            if let Err(e) = tokio::net::TcpStream::connect(addr).await {
                panic!("start {start}: ready, but the {port} port refused: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let admin = free_port();
    let (http_s, admin_s) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{admin}"));
    let https_s = format!("127.0.0.1:{}", free_port());
    let dir_s = dir.path().display().to_string();
    let mut ctl = Controller::start_with(
        &[],
        &[
            ("PORTICO_MANIFESTS", &dir_s),
            ("PORTICO_LOG_FORMAT", "json"),
            ("PORTICO_HTTP_ADDR", &http_s),
            ("PORTICO_HTTPS_ADDR", &https_s),
            ("PORTICO_ADMIN_ADDR", &admin_s),
        ],
    );
    // Flags win over the environment: the helper passed its own addresses as flags.
    ctl.wait_ready().await;
    let logs = ctl.logs();
    let first = logs.lines().next().expect("a log line");
    let v: serde_json::Value = serde_json::from_str(first).expect("JSON log line");
    assert!(
        v.get("level").is_some() && v.get("message").is_some(),
        "{first}"
    );
}

#[test]
fn help_documents_flags_and_env_vars() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingress-controller"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--manifests",
        "PORTICO_MANIFESTS",
        "--http-addr",
        "PORTICO_HTTP_ADDR",
        "0.0.0.0:8080",
        "--admin-addr",
        "0.0.0.0:10254",
        "--ingress-class",
        "--watch-namespace",
        "--publish-service",
        "--publish-address",
        "--service-proxy",
        "--node-name",
        "--node-address",
        "--default-certificate",
        "--shutdown-grace",
        "--log-format",
    ] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
}

#[test]
fn a_missing_manifest_folder_fails_start_up_clearly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingress-controller"))
        .args([
            "--manifests",
            "/nonexistent/portico",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/portico"), "{err}");
}

/// Nothing in the folder is dropped without a word, and each word leads to the fix: the
/// class, a mistyped kind and field, a missing pathType, a targetPort given as the port
/// (also in the failed request's own log line), endpoints none of which is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_does_not_take_effect_says_why_once() {
    let pod = Backend::start("kubia").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), INGRESS_CLASS_YAML).unwrap();
    let wrong_port = ingress_yaml("wrong-port", "port.example.com", "/", "kubia")
        .replace("number: 80", "number: 8080");
    let mut app = service_yaml("kubia", &[pod.addr]);
    app.push_str(&wrong_port);
    std::fs::write(dir.path().join("app.yaml"), app).unwrap();
    let unready = app_yaml("unready", "unready.example.com", "/", &[pod.addr])
        .replace("ready: true", "ready: false");
    std::fs::write(dir.path().join("unready.yaml"), unready).unwrap();
    // Another controller's Ingress, a typo of a kind and of a field.
    let nginx = ingress_yaml("nginx", "nginx.example.com", "/", "kubia")
        .replace("ingressClassName: portico", "ingressClassName: nginx");
    std::fs::write(dir.path().join("nginx.yaml"), nginx).unwrap();
    std::fs::write(
        dir.path().join("typos.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingres\nmetadata: {name: typo}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: typo}\nsepc: {}\n",
    )
    .unwrap();
    let no_type = ingress_yaml("no-type", "t.example.com", "/", "kubia")
        .replace("        pathType: Prefix\n", "");
    std::fs::write(dir.path().join("no-type.yaml"), no_type).unwrap();

    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    assert_eq!(get(ctl.http, "port.example.com", "/").await.unwrap().0, 503);
    assert_eq!(
        get(ctl.http, "nginx.example.com", "/").await.unwrap().0,
        404
    );
    let said = [
        r#"spec.ingressClassName: asks for IngressClass "nginx", which does not exist; not served"#,
        r#"Ingres typo: no kind "Ingres" is served in version "networking.k8s.io/v1" (did you mean "Ingress"?)"#,
        r#"Service default/typo: unknown field "sepc""#,
        "Ingress default/no-type: spec.rules[0].http.paths[0].pathType: Required value",
        "8080 is the targetPort (the pods' port) of Service port 80",
        "Service default/unready: none of its endpoints is ready (1 listed",
    ];
    ctl.wait_log("every problem", FOLLOW, |logs| {
        said.iter().all(|s| logs.contains(s))
    })
    .await;
    let logs = ctl.logs();
    for s in said {
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(s) && !l.contains("request failed"))
            .collect();
        assert_eq!(lines.len(), 1, "{s}:\n{logs}");
    }
    // The failed request names the missing port, not a backend that does not exist.
    let failed = logs
        .lines()
        .find(|l| l.contains("request failed") && l.contains("port.example.com"))
        .unwrap_or_else(|| panic!("no failed request line:\n{logs}"));
    assert!(
        failed.contains("backend default/kubia:8080: service")
            && failed.contains("has no port 8080"),
        "{failed}"
    );
    let metrics = ctl.metrics().await;
    for want in [
        r#"portico_diagnostics{reason="ingress_class_not_ours",kind="Ingress"} 1"#,
        r#"portico_diagnostics{reason="unknown_kind",kind="Ingres"} 1"#,
        r#"portico_diagnostics{reason="unknown_field",kind="Service"} 1"#,
        r#"portico_diagnostics{reason="invalid_manifest",kind="File"} 1"#,
        r#"portico_diagnostics{reason="service_port_not_found",kind="Ingress"} 1"#,
        r#"portico_diagnostics{reason="no_ready_endpoints",kind="Service"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

/// Without --manifests and without any kubeconfig: one clear error, naming --manifests.
#[test]
fn no_cluster_and_no_manifests_is_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingress-controller"))
        .args(["--http-addr", &port(), "--https-addr", &port()])
        .args(["--admin-addr", &port()])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let error = errors[0];
    assert_eq!(
        error.matches("no Kubernetes API to watch").count(),
        1,
        "{error}"
    );
    assert_eq!(error.matches("--manifests DIR").count(), 1, "{error}");
    assert!(!error.contains(r#"\""#), "quoted twice: {error}");
}
