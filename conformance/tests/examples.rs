//! manifests/examples served by the real binary with `--manifests`, with echo backends on
//! the addresses the examples name: the requests the README prints must all work.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use conformance::backends::loopback_backends;
use conformance::client::{send, Request, TlsTrust};
use conformance::echo::{EchoServer, Identity};
use conformance::harness::{binary_path, workspace_root, Controller};
use conformance::manifests::read_dir;
use k8s_openapi::api::core::v1::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_folder_serves_what_the_readme_shows() {
    if let Err(e) = binary_path() {
        panic!("{e}");
    }
    let dir = workspace_root().join("manifests/examples");
    let docs = read_dir(&dir).unwrap();
    let mut backends: Vec<(SocketAddr, Identity)> =
        loopback_backends(&docs).unwrap().into_iter().collect();
    // run-example.sh serves the ExternalName Service's target the same way.
    backends.push((
        "127.0.0.1:8090".parse().unwrap(),
        Identity::new("default", "someapi", "someapi-external"),
    ));
    let mut servers = Vec::new();
    for (addr, id) in backends {
        let server = EchoServer::start(addr, id, None).await.unwrap_or_else(|e| {
            panic!("{e} (is ./run-example.sh running? it uses the same addresses)")
        });
        servers.push(server);
    }

    let args = vec!["--manifests".to_owned(), dir.display().to_string()];
    let controller = Controller::start(&args).await.unwrap();
    let proxy = controller.proxy;
    let get = |url: &str| Request::get(url).unwrap();

    // kubia: only its two ready pods answer.
    let mut pods = BTreeSet::new();
    for _ in 0..20 {
        let got = send(
            proxy,
            &get("http://kubia.example.com/"),
            &TlsTrust::Insecure,
        )
        .await
        .unwrap();
        assert_eq!(
            got.status,
            200,
            "{}\nlog:\n{}",
            String::from_utf8_lossy(&got.body),
            controller.log_tail()
        );
        let echo = got.echo().unwrap();
        assert_eq!(
            (echo.namespace.as_str(), echo.service.as_str()),
            ("default", "kubia")
        );
        pods.insert(echo.pod);
    }
    assert_eq!(
        pods,
        BTreeSet::from(["kubia-5d7f9".to_owned(), "kubia-x2k4q".to_owned()]),
        "the not-ready kubia-zsaff must get nothing and both ready pods something"
    );

    // HTTPS by SNI serves the committed demo certificate. It was made with `openssl req
    // -x509`, which marks it as a CA, so (like the README's `curl -k`) the client does not
    // verify it; the test compares it with the Secret's instead.
    let secret: Secret = docs
        .iter()
        .find(|d| d.kind() == "Secret" && d.name() == "tls-secret")
        .unwrap()
        .parse_strict()
        .unwrap();
    let pem = secret.data.unwrap().remove("tls.crt").unwrap().0;
    let want = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let got = send(
        proxy,
        &get("https://kubia.example.com/secure"),
        &TlsTrust::Insecure,
    )
    .await
    .unwrap();
    assert_eq!(got.peer_cert.as_deref(), Some(want.as_ref()));
    let echo = got.echo().unwrap();
    assert_eq!(echo.service, "kubia");
    assert_eq!(echo.path, "/secure");
    assert_eq!(echo.header("x-forwarded-proto"), ["https"]);

    // The other examples, as the README lists them.
    for (url, service) in [
        ("http://foo.example.com/foo", "foo"),
        ("http://foo.example.com/kubia", "kubia"),
        ("http://bar.example.com/", "bar"),
        ("http://external.example.com/", "external-service"),
        ("http://api.example.com/", "someapi"),
    ] {
        let got = send(proxy, &get(url), &TlsTrust::Insecure).await.unwrap();
        assert_eq!(
            got.status,
            200,
            "{url}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(got.echo().unwrap().service, service, "{url}");
    }

    // Cookie affinity: the cookie comes back and keeps the client on one pod.
    let first = send(
        proxy,
        &get("http://sticky.example.com/"),
        &TlsTrust::Insecure,
    )
    .await
    .unwrap();
    let cookie = first
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("STICKY="))
        .unwrap_or_else(|| panic!("no STICKY cookie in {:?}", first.set_cookies()));
    let pair = cookie.split(';').next().unwrap().to_owned();
    let pod = first.echo().unwrap().pod;
    for _ in 0..10 {
        let got = send(
            proxy,
            &get("http://sticky.example.com/").header("cookie", &pair),
            &TlsTrust::Insecure,
        )
        .await
        .unwrap();
        assert_eq!(got.echo().unwrap().pod, pod);
    }
    drop(servers);
}
