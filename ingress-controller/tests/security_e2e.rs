//! Access control through the binary over a manifest folder, with real sockets: security
//! annotations that cannot be honoured fail closed (503 on exactly their Ingress's
//! paths), source ranges judged on clients bound to different 127.0.0.x addresses,
//! basic auth against htpasswd Secrets, CORS preflights, and rate and connection limits
//! per client address.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::net::TcpSocket;

const FOLLOW: Duration = Duration::from_secs(20);

/// `method path` for `host` from a socket bound to `source`, with `headers`, on a
/// connection of its own (`Connection: close`).
async fn request_from(
    source: Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind the client's source address");
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    exchange(stream, method, host, path, headers, "").await
}

async fn get_from(source: Ipv4Addr, addr: SocketAddr, host: &str, path: &str) -> Answer {
    request_from(source, addr, "GET", host, path, &[]).await
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// An Ingress `name` routing `host` `/` to Service `web`, with `annotations`.
fn annotated(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut yaml = ingress_yaml(name, host, "/", "web");
    let mut block = String::from("  annotations:\n");
    for (k, v) in annotations {
        block.push_str(&format!("    {k}: \"{}\"\n", v.replace('"', "\\\"")));
    }
    if !annotations.is_empty() {
        yaml = yaml.replace(
            &format!("  name: {name}\n"),
            &format!("  name: {name}\n{block}"),
        );
    }
    yaml
}

/// An Opaque Secret `name` with `data` given as text.
fn secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in data {
        out.push_str(&format!("  {k}: {v:?}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_unsupported_security_annotations_refuse_exactly_their_paths() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    // (Ingress name, its annotations, the key the diagnostic names).
    type Case<'a> = (&'a str, Vec<(String, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "ext-auth",
            vec![(n("auth-url"), "ftp://auth.example.com/check")],
            "auth-url",
        ),
        (
            "mtls",
            vec![("portico.dev/auth-tls-secret".to_owned(), "default/ca")],
            "auth-tls-secret",
        ),
        (
            "waf",
            vec![(n("enable-modsecurity"), "true")],
            "enable-modsecurity",
        ),
        (
            "snippet",
            vec![(n("auth-snippet"), "proxy_set_header X-A b;")],
            "auth-snippet",
        ),
        (
            "bad-range",
            vec![(n("whitelist-source-range"), "10.0.0.0/8,not-a-cidr")],
            "whitelist-source-range",
        ),
        (
            "tls-page",
            vec![
                (n("auth-tls-secret"), "ca"),
                (n("auth-tls-error-page"), "@named"),
            ],
            "auth-tls-error-page",
        ),
        (
            "no-secret",
            vec![(n("auth-type"), "basic"), (n("auth-secret"), "missing")],
            "auth-secret",
        ),
        ("throttled", vec![(n("limit-rps"), "five")], "limit-rps"),
    ];
    for (name, annotations, _) in &cases {
        let pairs: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        // Two paths on the host: both refused.
        let yaml = annotated(name, &format!("{name}.example.com"), &pairs).replace(
            "      paths:\n",
            "      paths:\n      - {path: /second, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
        );
        text.push_str(&yaml);
    }
    // Another Ingress on a refused host, and one on its own host: served.
    text.push_str(&ingress_yaml(
        "neighbour",
        "ext-auth.example.com",
        "/other",
        "web",
    ));
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "web"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "plain.example.com", "/", FOLLOW, |s, _| s == 200).await;

    for (name, _, key) in &cases {
        let host = format!("{name}.example.com");
        for path in ["/", "/second", "/second/x"] {
            let a = get_from(LOCAL, ctl.http, &host, path).await;
            assert_eq!(a.status, 503, "{host}{path} ({key}) was served: {}", a.body);
            assert!(!a.body.contains("web"), "{host}{path} reached the pod");
        }
    }
    let a = get_from(LOCAL, ctl.http, "ext-auth.example.com", "/other").await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /other"));
    let a = get_from(LOCAL, ctl.http, "plain.example.com", "/x").await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /x"));

    // One error diagnostic per case, naming the Ingress and the key.
    let logs = ctl.logs();
    for (name, _, key) in &cases {
        let found = logs.lines().any(|l| {
            l.contains(&format!("default/{name}"))
                && l.contains(key)
                && (l.contains("security_refused") || l.contains("auth_secret_invalid"))
        });
        assert!(found, "no diagnostic for {name} ({key}) in\n{logs}");
    }
    let metrics = ctl.metrics().await;
    assert!(
        metrics.contains(r#"portico_diagnostics{reason="security_refused",kind="Ingress"} 6"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_judge_the_client_address() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "allow",
        "allow.example.com",
        &[(
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "127.0.0.2/32, 10.0.0.0/8, ::1",
        )],
    ));
    text.push_str(&annotated(
        "both",
        "both.example.com",
        &[
            ("portico.dev/allowlist-source-range", "127.0.0.0/24"),
            (
                "nginx.ingress.kubernetes.io/denylist-source-range",
                "127.0.0.3",
            ),
        ],
    ));
    // No annotation: the ConfigMap's lists apply.
    text.push_str(&ingress_yaml("global", "global.example.com", "/", "web"));
    // Its own list replaces the ConfigMap's allowlist.
    text.push_str(&annotated(
        "own",
        "own.example.com",
        &[(
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "127.0.0.6",
        )],
    ));
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n  whitelist-source-range: \"127.0.0.4/31\"\n  denylist-source-range: \"127.0.0.5\"\n",
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "default/portico"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "allow.example.com", "/", FOLLOW, |s, _| s == 403).await;

    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let status = |host: &'static str, last: u8| {
        let http = ctl.http;
        async move { get_from(ip(last), http, host, "/").await.status }
    };
    assert_eq!(status("allow.example.com", 2).await, 200);
    let denied = get_from(ip(3), ctl.http, "allow.example.com", "/").await;
    assert_eq!(denied.status, 403);
    assert!(!denied.body.contains("web"), "{}", denied.body);
    assert_eq!(status("allow.example.com", 1).await, 403);
    // The denylist comes first.
    assert_eq!(status("both.example.com", 1).await, 200);
    assert_eq!(status("both.example.com", 3).await, 403);
    assert_eq!(status("both.example.com", 4).await, 200);
    // Global: 127.0.0.4/31 allowed, but .5 is denied.
    assert_eq!(status("global.example.com", 4).await, 200);
    assert_eq!(status("global.example.com", 5).await, 403);
    assert_eq!(status("global.example.com", 1).await, 403);
    // Own allowlist, the global denylist still applies (it sets none of its own).
    assert_eq!(status("own.example.com", 6).await, 200);
    assert_eq!(status("own.example.com", 4).await, 403);
}

/// An htpasswd line for `user` with `password`: made by `htpasswd` (bcrypt), else by
/// `openssl passwd -apr1`; `None` (and a `skipped:` line) when neither tool is there.
fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    if let Ok(out) = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
    {
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    if let Ok(out) = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
    {
        if out.status.success() {
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return Some(format!("{user}:{hash}"));
        }
    }
    println!("skipped: neither htpasswd nor openssl is installed to make an htpasswd line");
    None
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_against_htpasswd_secrets() {
    let Some(alice) = htpasswd_line("alice", "wonderland") else {
        return;
    };
    // Fixed hashes from `openssl passwd -apr1 -salt abcdefgh secret` and `htpasswd -nbs`.
    let bob = "bob:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/";
    let carol_sha = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "file",
        "file.example.com",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "basic-auth"),
            (
                "nginx.ingress.kubernetes.io/auth-realm",
                "Authentication Required - foo",
            ),
        ],
    ));
    text.push_str(&annotated(
        "map",
        "map.example.com",
        &[
            ("portico.dev/auth-type", "basic"),
            ("portico.dev/auth-secret", "default/basic-map"),
            ("portico.dev/auth-secret-type", "auth-map"),
        ],
    ));
    // Source range and password: both (the default), or either (`satisfy: any`).
    for (name, satisfy) in [("all", "all"), ("any", "any")] {
        text.push_str(&annotated(
            name,
            &format!("{name}.example.com"),
            &[
                ("nginx.ingress.kubernetes.io/auth-type", "basic"),
                ("nginx.ingress.kubernetes.io/auth-secret", "basic-auth"),
                (
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "127.0.0.2",
                ),
                ("nginx.ingress.kubernetes.io/satisfy", satisfy),
            ],
        ));
    }
    text.push_str(&ingress_yaml("open", "open.example.com", "/", "web"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let secrets = |file_users: &str| {
        let mut s = secret_yaml("basic-auth", &[("auth", file_users)]);
        s.push_str(&secret_yaml("basic-map", &[("carol", carol_sha)]));
        s
    };
    std::fs::write(
        dir.path().join("secrets.yaml"),
        secrets(&format!("{alice}\n{bob}\n")),
    )
    .unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "open.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let with = |host: &'static str, auth: Option<String>| {
        let http = ctl.http;
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            request_from(LOCAL, http, "GET", host, "/", &headers).await
        }
    };
    let a = with("file.example.com", None).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("www-authenticate"),
        Some("Basic realm=\"Authentication Required - foo\"")
    );
    assert!(!a.body.contains("web"));
    for wrong in [
        basic("alice", "wrong"),
        basic("mallory", "wonderland"),
        "Bearer x".into(),
    ] {
        assert_eq!(
            with("file.example.com", Some(wrong.clone())).await.status,
            401,
            "{wrong}"
        );
    }
    let a = with("file.example.com", Some(basic("alice", "wonderland"))).await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /"));
    assert_eq!(
        with("file.example.com", Some(basic("bob", "secret")))
            .await
            .status,
        200
    );
    // auth-map, realm left empty.
    let a = with("map.example.com", None).await;
    assert_eq!(
        (a.status, a.header("www-authenticate")),
        (401, Some("Basic realm=\"\""))
    );
    assert_eq!(
        with("map.example.com", Some(basic("carol", "secret")))
            .await
            .status,
        200
    );
    assert_eq!(with("open.example.com", None).await.status, 200);
    let from = |source: u8, host: &'static str, auth: Option<String>| {
        let http = ctl.http;
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let ip = Ipv4Addr::new(127, 0, 0, source);
            request_from(ip, http, "GET", host, "/", &headers)
                .await
                .status
        }
    };
    let alice_ok = || Some(basic("alice", "wonderland"));
    assert_eq!(from(2, "all.example.com", None).await, 401);
    assert_eq!(from(2, "all.example.com", alice_ok()).await, 200);
    assert_eq!(from(1, "all.example.com", alice_ok()).await, 403);
    assert_eq!(from(2, "any.example.com", None).await, 200);
    assert_eq!(from(1, "any.example.com", alice_ok()).await, 200);
    assert_eq!(from(1, "any.example.com", None).await, 401);

    // An edit of the Secret applies without a restart: bob is gone.
    write_atomic(dir.path(), "secrets.yaml", &secrets(&format!("{alice}\n")));
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        if with("file.example.com", Some(basic("bob", "secret")))
            .await
            .status
            == 401
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bob still let in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        with("file.example.com", Some(basic("alice", "wonderland")))
            .await
            .status,
        200
    );
    // The Secret deleted: 503, never open.
    std::fs::remove_file(dir.path().join("secrets.yaml")).unwrap();
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        let s = with("file.example.com", Some(basic("alice", "wonderland")))
            .await
            .status;
        if s == 503 {
            break;
        }
        assert_eq!(s, 200, "neither served as before nor refused");
        assert!(
            std::time::Instant::now() < deadline,
            "still served without its Secret"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(with("file.example.com", None).await.status, 503);
    assert_eq!(with("open.example.com", None).await.status, 200);
    ctl.wait_log("a diagnostic for the missing Secret", FOLLOW, |l| {
        l.contains("auth_secret_invalid") && l.contains("basic-auth") && l.contains("default/file")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_answers_carry_the_fields() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "listed",
        "listed.example.com",
        &[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://origin.example.com, https://*.apps.example.com",
            ),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET, PUT"),
            (
                "nginx.ingress.kubernetes.io/cors-expose-headers",
                "X-Custom",
            ),
            ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
        ],
    ));
    text.push_str(&annotated(
        "any",
        "any.example.com",
        &[
            ("portico.dev/enable-cors", "true"),
            ("portico.dev/cors-allow-credentials", "false"),
        ],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "any.example.com", "/", FOLLOW, |s, _| s == 200).await;

    let preflight = [
        ("Origin", "https://a1.apps.example.com"),
        ("Access-Control-Request-Method", "PUT"),
    ];
    let a = request_from(
        LOCAL,
        ctl.http,
        "OPTIONS",
        "listed.example.com",
        "/x",
        &preflight,
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty() && !a.body.contains("web"));
    let framing = a
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length" || n == "transfer-encoding")
        .count();
    assert!(framing <= 1, "{:?}", a.headers);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://a1.apps.example.com")
    );
    assert_eq!(a.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(a.header("access-control-expose-headers"), Some("X-Custom"));
    assert_eq!(a.header("access-control-max-age"), Some("600"));
    assert!(a
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));

    let a = request_from(
        LOCAL,
        ctl.http,
        "GET",
        "listed.example.com",
        "/x",
        &[("Origin", "https://origin.example.com")],
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /x"));
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://origin.example.com")
    );

    // Another origin: nothing added, and its preflight reaches the pod.
    for method in ["GET", "OPTIONS"] {
        let a = request_from(
            LOCAL,
            ctl.http,
            method,
            "listed.example.com",
            "/x",
            &[("Origin", "https://evil.example.net")],
        )
        .await;
        assert_eq!(a.status, 200, "{method}");
        assert_eq!(a.header("access-control-allow-origin"), None, "{method}");
    }

    // `*`: every answer, and a preflight from anywhere.
    let a = get_from(LOCAL, ctl.http, "any.example.com", "/").await;
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("access-control-allow-credentials"), None);
    let a = request_from(
        LOCAL,
        ctl.http,
        "OPTIONS",
        "any.example.com",
        "/",
        &[("Origin", "https://x.test")],
    )
    .await;
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-max-age"), Some("1728000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_global_auth_url_refuses_all_but_the_ingresses_that_opt_out() {
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&ingress_yaml("guarded", "guarded.example.com", "/", "web"));
    text.push_str(&annotated(
        "public",
        "public.example.com",
        &[("nginx.ingress.kubernetes.io/enable-global-auth", "false")],
    ));
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n  global-auth-url: \"ftp://auth.example.com/check\"\n",
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "default/portico"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "public.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let a = get_from(LOCAL, ctl.http, "guarded.example.com", "/").await;
    assert_eq!(a.status, 503, "{}", a.body);
    ctl.wait_log("the refusal reported", FOLLOW, |l| {
        l.contains("security_refused") && l.contains("global-auth-url")
    })
    .await;
}

/// `md5(text)` in hex, by `md5sum` or `openssl`; `None` (and a `skipped:` line) without.
fn md5_hex(text: &str) -> Option<String> {
    use std::io::Write;
    for (cmd, args) in [
        ("md5sum", &[][..]),
        ("openssl", &["dgst", "-md5", "-r"][..]),
    ] {
        let Ok(mut child) = Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(text.as_bytes());
        }
        if let Ok(out) = child.wait_with_output() {
            let hex = String::from_utf8_lossy(&out.stdout);
            if let Some(h) = hex.split_whitespace().next().filter(|h| h.len() == 32) {
                return Some(h.to_owned());
            }
        }
    }
    println!("skipped: neither md5sum nor openssl is installed to make an htdigest line");
    None
}

/// `curl --digest` for `host` `path` with `user:password`; the status, or `None` (and a
/// `skipped:` line) without curl.
async fn curl_digest(addr: SocketAddr, host: &str, path: &str, user: &str) -> Option<u16> {
    let url = format!("http://{addr}{path}");
    let host = format!("Host: {host}");
    let user = user.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--digest",
                "-u",
            ])
            .arg(&user)
            .args(["-H", &host, &url])
            .output()
    })
    .await
    .unwrap();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().parse().ok(),
        Err(_) => {
            println!("skipped: curl is not installed for the digest exchange");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_against_an_htdigest_secret() {
    let Some(ha1) = md5_hex("alice:Restricted Area:secret") else {
        return;
    };
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "digest",
        "digest.example.com",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "digest"),
            ("nginx.ingress.kubernetes.io/auth-secret", "digest-users"),
            ("nginx.ingress.kubernetes.io/auth-realm", "Restricted Area"),
        ],
    ));
    text.push_str(&secret_yaml(
        "digest-users",
        &[("auth", &format!("alice:Restricted Area:{ha1}\n"))],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "digest.example.com", "/", FOLLOW, |s, _| s == 401).await;
    let a = get_from(LOCAL, ctl.http, "digest.example.com", "/").await;
    let challenge = a.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Digest ") && challenge.contains("realm=\"Restricted Area\""),
        "{challenge}"
    );
    let Some(ok) = curl_digest(ctl.http, "digest.example.com", "/app?x=1", "alice:secret").await
    else {
        return;
    };
    assert_eq!(ok, 200);
    let wrong = curl_digest(ctl.http, "digest.example.com", "/app", "alice:nope").await;
    assert_eq!(wrong, Some(401));
    // Basic credentials do not pass a digest route.
    let a = request_from(
        LOCAL,
        ctl.http,
        "GET",
        "digest.example.com",
        "/",
        &[("Authorization", &basic("alice", "secret"))],
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_connection_limits_per_client_address() {
    let web = Backend::start("web").await;
    let slow = Backend::start_slow("slow", Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&service_yaml("slow", &[slow.addr]));
    // One request a minute with a burst of 2: three requests pass, whatever the pace of
    // this machine, and the rest of the test is over long before one drains.
    text.push_str(&annotated(
        "rated",
        "rated.example.com",
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "2"),
            (
                "nginx.ingress.kubernetes.io/limit-allowlist",
                "127.0.0.4/32",
            ),
        ],
    ));
    // One request at a time per client, over both paths of the Ingress.
    text.push_str(
        &annotated(
            "conns",
            "conns.example.com",
            &[("portico.dev/limit-connections", "1")],
        )
        .replace(
            "      paths:\n",
            "      paths:\n      - {path: /slow, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}\n",
        ),
    );
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "web"));
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n  limit-req-status-code: \"429\"\n",
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "default/portico"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "plain.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);

    // Requests over the rate get the ConfigMap's code; another client has its own
    // bucket; an allowlisted one is never limited.
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            get_from(ip(2), ctl.http, "rated.example.com", "/")
                .await
                .status,
        );
    }
    assert_eq!(seen, [200, 200, 200, 429, 429, 429]);
    let a = get_from(ip(3), ctl.http, "rated.example.com", "/").await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /"));
    for i in 0..8 {
        let a = get_from(ip(4), ctl.http, "rated.example.com", "/").await;
        assert_eq!(a.status, 200, "allowlisted request {i}");
    }
    // Other Ingresses are not limited by it.
    for _ in 0..5 {
        let a = get_from(ip(2), ctl.http, "plain.example.com", "/").await;
        assert_eq!(a.status, 200);
    }

    // A request in progress takes the client's one connection: its next request is
    // refused (503, the default limit-conn-status-code) while another client's passes.
    // A probe in progress when the slow request arrives refuses that one instead: then
    // the whole exchange is tried again.
    let http = ctl.http;
    let mut judged = false;
    for _ in 0..5 {
        let held =
            tokio::spawn(async move { get_from(ip(2), http, "conns.example.com", "/slow").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        let refused = loop {
            if held.is_finished() || tokio::time::Instant::now() > deadline {
                break false;
            }
            let a = get_from(ip(2), ctl.http, "conns.example.com", "/").await;
            if a.status == 503 {
                break true;
            }
            assert_eq!(a.status, 200, "{}", a.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !refused {
            let a = held.await.unwrap();
            assert_eq!(
                a.status, 503,
                "the slow request was answered and never held its slot"
            );
            continue;
        }
        let a = get_from(ip(3), ctl.http, "conns.example.com", "/").await;
        assert_eq!((a.status, a.body.as_str()), (200, "web /"));
        assert!(
            !held.is_finished(),
            "the slow request ended too early to judge"
        );
        let a = held.await.unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "slow /slow"));
        judged = true;
        break;
    }
    assert!(judged, "a second concurrent request was never refused");
    // Its answer done, the slot is free again.
    let a = get_from(ip(2), ctl.http, "conns.example.com", "/").await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /"));
}
