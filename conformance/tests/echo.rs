//! The echo backend and the scenario client, against each other on real sockets.

use conformance::certs::SelfSigned;
use conformance::client::{send, ProxyAddrs, Request, TlsTrust, USER_AGENT};
use conformance::echo::{EchoServer, Identity};
use http::Method;

#[tokio::test]
async fn echo_reports_identity_and_request() {
    let server = EchoServer::start(
        "127.0.0.7:0".parse().unwrap(),
        Identity::new("shop", "kubia", "kubia-7d9f8"),
        None,
    )
    .await
    .unwrap();
    let addrs = ProxyAddrs {
        http: server.addr(),
        https: server.addr(),
    };
    let req = Request::parse(Method::POST, "http://kubia.example.com/a/b?x=1&y=2")
        .unwrap()
        .header("x-trace", "abc");
    let got = send(addrs, &req, &TlsTrust::Insecure).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.proto, "HTTP/1.1");
    for h in ["content-length", "content-type", "date", "server"] {
        assert!(got.headers.contains_key(h), "missing response header {h}");
    }
    let echo = got.echo().unwrap();
    assert_eq!(echo.namespace, "shop");
    assert_eq!(echo.service, "kubia");
    assert_eq!(echo.pod, "kubia-7d9f8");
    assert_eq!(echo.pod_addr, server.addr().to_string());
    assert!(echo.pod_addr.starts_with("127.0.0.7:"));
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.host, "kubia.example.com");
    assert_eq!(echo.path, "/a/b");
    assert_eq!(echo.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(echo.proto, "HTTP/1.1");
    assert_eq!(echo.header("User-Agent"), [USER_AGENT]);
    assert_eq!(echo.header("x-trace"), ["abc"]);
    assert!(echo.tls.is_none());
}

#[tokio::test]
async fn empty_host_sends_the_dialled_address() {
    let server = EchoServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Identity::new("a", "b", "c"),
        None,
    )
    .await
    .unwrap();
    let addrs = ProxyAddrs {
        http: server.addr(),
        https: server.addr(),
    };
    let req = Request::new(Method::DELETE, "http", "", "resource");
    let echo = send(addrs, &req, &TlsTrust::Insecure)
        .await
        .unwrap()
        .echo()
        .unwrap();
    assert_eq!(echo.host, server.addr().to_string());
    assert_eq!(echo.path, "/resource");
    assert_eq!(echo.method, "DELETE");
}

#[tokio::test]
async fn tls_echo_reports_sni_and_verifies_against_its_certificate() {
    let cert = SelfSigned::generate(&["foo.bar.com"]).unwrap();
    let server = EchoServer::start(
        "127.0.0.8:0".parse().unwrap(),
        Identity::new("a", "foo-bar-com", "p"),
        Some(cert.server_config().unwrap()),
    )
    .await
    .unwrap();
    let addrs = ProxyAddrs {
        http: server.addr(),
        https: server.addr(),
    };
    let req = Request::get("https://foo.bar.com/").unwrap();
    let got = send(addrs, &req, &TlsTrust::Roots(cert.roots()))
        .await
        .unwrap();
    assert_eq!(got.verified_host.as_deref(), Some("foo.bar.com"));
    assert_eq!(got.peer_cert.as_deref(), Some(cert.cert_der.as_slice()));
    let echo = got.echo().unwrap();
    assert_eq!(echo.tls.unwrap().sni.as_deref(), Some("foo.bar.com"));

    // The same certificate does not verify for another name.
    let other = Request::get("https://other.bar.com/").unwrap();
    assert!(send(addrs, &other, &TlsTrust::Roots(cert.roots()))
        .await
        .is_err());
}
