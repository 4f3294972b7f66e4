//! External authentication (`auth-url` and its companions) through the binary over a
//! manifest folder, with real sockets: an authentication service in the test records
//! what it is sent (method, target, headers, body) and answers 200, 401, 403 or 500 by
//! the client's cookie, over HTTP and HTTPS (reached by name, with SNI).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::{TcpListener, TcpStream};

use common::*;

const FOLLOW: Duration = Duration::from_secs(20);

/// What the authentication service was sent.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_len: usize,
    sni: Option<String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The service's answer: by the `session` cookie, `good` 200 (naming the user),
/// `anon` 202 (naming none, setting no cookie), `forbidden` 403, `broken` 500; otherwise 401 with a
/// challenge. The others set a cookie.
async fn answer(
    req: http::Request<hyper::body::Incoming>,
    log: Log,
    sni: Option<String>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let cookie = parts
        .headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        body_len: body.len(),
        sni,
    });
    let b = http::Response::builder();
    let b = if cookie.contains("session=good") {
        b.status(200)
            .header("x-auth-request-user", "alice")
            .header("x-auth-request-email", "alice@example.com")
            .header("set-cookie", "refreshed=1; Path=/")
    } else if cookie.contains("session=anon") {
        b.status(202)
    } else if cookie.contains("session=forbidden") {
        b.status(403).header("set-cookie", "tried=1")
    } else if cookie.contains("session=broken") {
        b.status(500)
    } else {
        b.status(401)
            .header("www-authenticate", "Bearer realm=\"test\"")
            .header("set-cookie", "tried=1")
    };
    b.body(Full::new(Bytes::from_static(b"auth service body")))
        .unwrap()
}

/// The service on plain HTTP and on HTTPS (a self-signed certificate for
/// `localhost`), recording into one log.
async fn auth_service(log: Log) -> (SocketAddr, SocketAddr) {
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = plain.accept().await {
            let l = l.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let l = l.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req, l, None).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = tls.accept().await {
            let (l, acceptor) = (log.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                let svc = service_fn(move |req| {
                    let (l, sni) = (l.clone(), sni.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(req, l, sni).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (plain_addr, tls_addr)
}

/// `method target` for `host` with `headers` and `body`, on a connection of its own.
async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    exchange(stream, method, host, target, headers, body).await
}

/// An Ingress `name` routing `host` `/` to Service `web`, with `annotations`.
fn annotated(name: &str, host: &str, annotations: &[(&str, String)]) -> String {
    let yaml = ingress_yaml(name, host, "/", "web");
    let mut block = String::from("  annotations:\n");
    for (k, v) in annotations {
        block.push_str(&format!(
            "    nginx.ingress.kubernetes.io/{k}: \"{}\"\n",
            v.replace('"', "\\\"")
        ));
    }
    yaml.replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n{block}"),
    )
}

fn last(log: &Log) -> Seen {
    log.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the service was asked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_url_asks_the_service_and_follows_its_answer() {
    let web = Backend::start("web").await;
    let log: Log = Arc::default();
    let (plain, tls) = auth_service(log.clone()).await;
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "plain",
        "auth.example.com",
        &[
            ("auth-url", format!("http://{plain}/check?for=$host")),
            (
                "auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email".to_owned(),
            ),
        ],
    ));
    // oauth2-proxy's documented setup, its service reached over HTTPS by name.
    text.push_str(&annotated(
        "oauth",
        "oauth.example.com",
        &[
            (
                "auth-url",
                format!("https://localhost:{}/oauth2/auth", tls.port()),
            ),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri".to_owned(),
            ),
            ("auth-method", "POST".to_owned()),
            ("auth-always-set-cookie", "true".to_owned()),
        ],
    ));
    text.push_str(&annotated(
        "signin",
        "signin.example.com",
        &[
            ("auth-url", format!("http://{plain}/check")),
            ("auth-signin", "https://login.example.com/start".to_owned()),
            (
                "auth-request-redirect",
                "https://signin.example.com/home".to_owned(),
            ),
        ],
    ));
    text.push_str(&annotated(
        "down",
        "down.example.com",
        &[("auth-url", format!("http://127.0.0.1:{closed}/check"))],
    ));
    text.push_str(&annotated(
        "bad",
        "bad.example.com",
        &[("auth-url", "http://$hostname/check".to_owned())],
    ));
    text.push_str(&ingress_yaml("open", "open.example.com", "/", "web"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "open.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let addr = ctl.http;

    // No session: the service's 401 and its challenge; the pod is not reached.
    let a = send(addr, "GET", "auth.example.com", "/app?x=1", &[], "").await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"test\""));
    assert!(!a.body.contains("web"), "{}", a.body);
    assert!(
        a.header("set-cookie").is_none(),
        "no cookie on a 401 without auth-always-set-cookie"
    );

    // A POST with a body: the service gets a bodiless GET with the template's headers.
    let a = send(
        addr,
        "POST",
        "auth.example.com",
        "/app/form?x=1",
        &[
            ("Cookie", "session=good"),
            ("X-Auth-Request-User", "mallory"),
            ("X-Forwarded-Proto", "gopher"),
            ("X-Custom", "kept"),
            ("Content-Type", "text/plain"),
        ],
        "the body",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, "web /app/form");
    // The service's answer names the user for the pod, replacing the client's claim.
    assert_eq!(a.header("echo-x-auth-request-user"), Some("alice"));
    assert_eq!(
        a.header("echo-x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(a.all("set-cookie"), ["refreshed=1; Path=/"]);
    let seen = last(&log);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/check?for=auth.example.com");
    assert_eq!(seen.body_len, 0);
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("host"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-original-url"),
        Some("http://auth.example.com/app/form?x=1")
    );
    assert_eq!(seen.header("x-original-method"), Some("POST"));
    assert_eq!(seen.header("x-sent-from"), Some("nginx-ingress-controller"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-auth-request-redirect"),
        Some("/app/form?x=1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), None);
    assert_eq!(
        seen.header("x-original-uri"),
        None,
        "only beside auth-method"
    );
    assert_eq!(seen.header("cookie"), Some("session=good"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("content-type"), Some("text/plain"));
    assert!(seen.header("x-request-id").is_some_and(|v| v.len() == 32));

    // A success that names no user: the client's claim does not reach the pod.
    let a = send(
        addr,
        "GET",
        "auth.example.com",
        "/",
        &[
            ("Cookie", "session=anon"),
            ("X-Auth-Request-User", "mallory"),
        ],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("echo-x-auth-request-user"), None);

    let a = send(
        addr,
        "GET",
        "auth.example.com",
        "/",
        &[("Cookie", "session=forbidden")],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(a.header("set-cookie").is_none());
    let a = send(
        addr,
        "GET",
        "auth.example.com",
        "/",
        &[("Cookie", "session=broken")],
        "",
    )
    .await;
    assert_eq!(a.status, 500);

    // HTTPS by name with SNI; auth-method adds X-Original-URI and X-Scheme; a 401
    // becomes the sign-in redirect, carrying the service's cookie.
    let a = send(addr, "GET", "oauth.example.com", "/a/b?c=d%20e", &[], "").await;
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(
        a.header("location"),
        Some("https://oauth.example.com/oauth2/start?rd=%2Fa%2Fb%3Fc%3Dd%2520e")
    );
    assert_eq!(a.all("set-cookie"), ["tried=1"]);
    let seen = last(&log);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/oauth2/auth");
    assert_eq!(seen.body_len, 0);
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(seen.header("host"), Some("localhost"));
    assert_eq!(seen.header("x-original-uri"), Some("/a/b?c=d%20e"));
    assert_eq!(seen.header("x-scheme"), Some("http"));
    // auth-always-set-cookie: the cookie rides on a refusal too.
    let a = send(
        addr,
        "GET",
        "oauth.example.com",
        "/",
        &[("Cookie", "session=forbidden")],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.all("set-cookie"), ["tried=1"]);
    let a = send(
        addr,
        "GET",
        "oauth.example.com",
        "/",
        &[("Cookie", "session=good")],
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /"));

    // A sign-in URL without rd gets one as ingress-nginx builds it; the redirect
    // header is auth-request-redirect's.
    let a = send(addr, "GET", "signin.example.com", "/p?q=1", &[], "").await;
    assert_eq!(a.status, 302);
    assert_eq!(
        a.header("location"),
        Some("https://login.example.com/start?rd=http://signin.example.com%2Fp%3Fq%3D1")
    );
    assert_eq!(
        last(&log).header("x-auth-request-redirect"),
        Some("https://signin.example.com/home")
    );

    // A service that cannot be reached: 500, never the pod.
    let a = send(addr, "GET", "down.example.com", "/", &[], "").await;
    assert_eq!(a.status, 500, "{}", a.body);
    // A variable Portico does not expand: refused with a diagnostic.
    let a = send(addr, "GET", "bad.example.com", "/", &[], "").await;
    assert_eq!(a.status, 503);
    let logs = ctl.logs();
    assert!(
        logs.lines().any(|l| l.contains("default/bad")
            && l.contains("auth-url")
            && l.contains("security_refused")
            && l.contains("$hostname")),
        "{logs}"
    );
    // Other Ingresses are served without asking anyone.
    let asked = log.lock().unwrap().len();
    let a = send(addr, "GET", "open.example.com", "/", &[], "").await;
    assert_eq!(a.status, 200);
    assert_eq!(log.lock().unwrap().len(), asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_auth_guards_every_ingress_but_those_that_opt_out() {
    let web = Backend::start("web").await;
    let log: Log = Arc::default();
    let (plain, _) = auth_service(log.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&ingress_yaml("guarded", "guarded.example.com", "/", "web"));
    // cert-manager's solver path is in the default no-auth-locations.
    text.push_str(&ingress_yaml(
        "acme",
        "guarded.example.com",
        "/.well-known/acme-challenge",
        "web",
    ));
    text.push_str(&annotated(
        "public",
        "public.example.com",
        &[("enable-global-auth", "false".to_owned())],
    ));
    // An Ingress's own auth-url replaces the global one.
    text.push_str(&annotated(
        "own",
        "own.example.com",
        &[("auth-url", format!("http://{plain}/own"))],
    ));
    text.push_str(&format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: portico\ndata:\n  \
         global-auth-url: \"http://{plain}/global\"\n  \
         global-auth-response-headers: \"X-Auth-Request-User\"\n  \
         global-auth-signin: \"https://login.example.com/start\"\n  \
         global-auth-proxy-set-headers: \"default/global-headers\"\n"
    ));
    text.push_str(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: global-headers\ndata:\n  \
         X-Global-Auth: \"from $host\"\n",
    );
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &["--configmap", "default/portico"]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "public.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let addr = ctl.http;
    assert!(
        log.lock().unwrap().is_empty(),
        "the opted-out Ingress asked nobody"
    );

    let a = send(addr, "GET", "guarded.example.com", "/x", &[], "").await;
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(
        a.header("location"),
        Some("https://login.example.com/start?rd=http://guarded.example.com%2Fx")
    );
    assert_eq!(last(&log).target, "/global");
    // global-auth-proxy-set-headers: the ConfigMap's fields, expanded.
    assert_eq!(
        last(&log).header("x-global-auth"),
        Some("from guarded.example.com")
    );
    let a = send(
        addr,
        "GET",
        "guarded.example.com",
        "/x",
        &[("Cookie", "session=good")],
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /x"));
    assert_eq!(a.header("echo-x-auth-request-user"), Some("alice"));

    let asked = log.lock().unwrap().len();
    let a = send(
        addr,
        "GET",
        "guarded.example.com",
        "/.well-known/acme-challenge/token",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(addr, "GET", "public.example.com", "/", &[], "").await;
    assert_eq!(a.status, 200);
    assert_eq!(log.lock().unwrap().len(), asked);

    let a = send(addr, "GET", "own.example.com", "/", &[], "").await;
    assert_eq!(a.status, 401);
    assert_eq!(last(&log).target, "/own");
    assert_eq!(last(&log).header("x-global-auth"), None);
}

fn configmap(name: &str, data: &[(&str, &str)]) -> String {
    let mut out =
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n");
    for (k, v) in data {
        out.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_proxy_set_headers_reach_the_service_or_refuse_the_paths() {
    let web = Backend::start("web").await;
    let log: Log = Arc::default();
    let (plain, _) = auth_service(log.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    let url = format!("http://{plain}/check");
    for (name, headers) in [
        ("hdrs", "default/auth-headers"),
        // A bare name: ingress-nginx finds no ConfigMap by it.
        ("bare", "auth-headers"),
        ("missing", "default/nope"),
        ("bad", "default/bad-headers"),
    ] {
        text.push_str(&annotated(
            name,
            &format!("{name}.example.com"),
            &[
                ("auth-url", url.clone()),
                ("auth-proxy-set-headers", headers.to_owned()),
            ],
        ));
    }
    text.push_str(&ingress_yaml("open", "open.example.com", "/", "web"));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        configmap("bad-headers", &[("Bad Header", "1")]),
    )
    .unwrap();
    let headers = |custom: &str| {
        configmap(
            "auth-headers",
            &[
                ("My-Custom-Header", custom),
                ("X-Client", "$remote_addr"),
                ("X-Sent-From", "portico-test"),
            ],
        )
    };
    write_atomic(dir.path(), "headers.yaml", &headers("42"));
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    wait_for(ctl.http, "open.example.com", "/", FOLLOW, |s, _| s == 200).await;
    let addr = ctl.http;
    let good = [("Cookie", "session=good")];

    let a = send(addr, "GET", "hdrs.example.com", "/x", &good, "").await;
    assert_eq!((a.status, a.body.as_str()), (200, "web /x"));
    let seen = last(&log);
    assert_eq!(seen.header("my-custom-header"), Some("42"));
    assert_eq!(seen.header("x-client"), Some("127.0.0.1"));
    // The ConfigMap's field replaces Portico's own of the same name.
    assert_eq!(seen.header("x-sent-from"), Some("portico-test"));

    // Unusable: the paths answer 503 and the service is not asked.
    let asked = log.lock().unwrap().len();
    for host in ["bare", "missing", "bad"] {
        let a = send(addr, "GET", &format!("{host}.example.com"), "/", &good, "").await;
        assert_eq!(a.status, 503, "{host}: {}", a.body);
    }
    assert_eq!(log.lock().unwrap().len(), asked);
    for (ingress, why) in [
        ("default/bare", "namespace/name"),
        ("default/missing", "does not exist"),
        ("default/bad", "not a header name"),
    ] {
        assert!(
            ctl.logs().lines().any(|l| l.contains(ingress)
                && l.contains("auth-proxy-set-headers")
                && l.contains(why)),
            "no diagnostic for {ingress}:\n{}",
            ctl.logs()
        );
    }

    // An edit of the ConfigMap applies without the Ingress changing.
    write_atomic(dir.path(), "headers.yaml", &headers("43"));
    let deadline = std::time::Instant::now() + FOLLOW;
    loop {
        send(addr, "GET", "hdrs.example.com", "/", &good, "").await;
        if last(&log).header("my-custom-header") == Some("43") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edit never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And its removal refuses the paths.
    std::fs::remove_file(dir.path().join("headers.yaml")).unwrap();
    wait_for(addr, "hdrs.example.com", "/", FOLLOW, |s, _| s == 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_per_key_for_the_listed_codes() {
    let web = Backend::start("web").await;
    let log: Log = Arc::default();
    let (plain, _) = auth_service(log.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    text.push_str(&annotated(
        "cached",
        "cached.example.com",
        &[
            ("auth-url", format!("http://{plain}/check")),
            ("auth-cache-key", "$cookie_session".to_owned()),
            ("auth-cache-duration", "202 403 1m".to_owned()),
            ("auth-response-headers", "X-Auth-Request-User".to_owned()),
        ],
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let addr = ctl.http;
    let asked = || log.lock().unwrap().len();
    let get = |cookie: &'static str| async move {
        send(
            addr,
            "GET",
            "cached.example.com",
            "/",
            &[("Cookie", cookie)],
            "",
        )
        .await
    };
    let deadline = tokio::time::Instant::now() + FOLLOW;
    while get("session=none").await.status != 401 {
        assert!(tokio::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 202 is listed: kept, so asked once however often.
    let n = asked();
    for _ in 0..3 {
        let a = get("session=anon").await;
        assert_eq!((a.status, a.body.as_str()), (200, "web /"));
    }
    assert_eq!(asked(), n + 1);
    // Another key is asked for itself.
    assert_eq!(get("session=good").await.status, 200);
    assert_eq!(asked(), n + 2);
    // 403 is listed, but an answer that sets a cookie is never kept, as nginx's cache.
    assert_eq!(get("session=forbidden").await.status, 403);
    assert_eq!(get("session=forbidden").await.status, 403);
    assert_eq!(asked(), n + 4);
    // 401 is not listed.
    assert_eq!(get("session=none").await.status, 401);
    assert_eq!(get("session=none").await.status, 401);
    assert_eq!(asked(), n + 6);
}
