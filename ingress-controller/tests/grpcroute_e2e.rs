//! GRPCRoute through the real binary over a manifest folder: a GatewayClass of ours, a
//! Gateway with an HTTP listener, GRPCRoutes in the shapes of the upstream conformance
//! suite's manifests (exact method, service only, headers, weights, hostnames, a
//! missing backend), an HTTPRoute sharing a host, with tonic clients (h2c by prior
//! knowledge, the host as `:authority`) and tonic servers behind Portico.

mod common;
mod grpc_raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::server::{Grpc, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use common::*;
use grpc_raw::Raw;

const FOLLOW: Duration = Duration::from_secs(20);
const NS: &str = "gateway-conformance-infra";

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Answers every unary call with `NAME PATH x-added=VALUE`: which pod, which method it
/// was asked for, and the header a RequestHeaderModifier adds.
#[derive(Clone)]
struct Echo {
    name: &'static str,
    path: String,
    added: Option<String>,
}

impl UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = BoxFut<Result<Response<Bytes>, Status>>;
    fn call(&mut self, _req: Request<Bytes>) -> Self::Future {
        let answer = format!("{} {} x-added={:?}", self.name, self.path, self.added);
        Box::pin(async move { Ok(Response::new(Bytes::from(answer))) })
    }
}

/// A tonic gRPC server on h2c that answers any method.
async fn grpc_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let echo = Echo {
                            name,
                            path: req.uri().path().to_owned(),
                            added: req
                                .headers()
                                .get("x-added")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned),
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(Grpc::new(Raw).unary(echo, req).await)
                        }
                    });
                let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = h2.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// A Service `name` in [`NS`] on port 8080 whose EndpointSlice points at `backend`.
fn service(name: &str, backend: SocketAddr) -> String {
    namespaced_service_yaml(NS, name, ("grpc", 8080), backend)
}

const GATEWAY: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: \"*.example.com\"
    allowedRoutes:
      namespaces: {from: Same}
";

const ROUTES: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: exact-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [exact.example.com, exact.example.org]
  rules:
  - matches:
    - method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}
    backendRefs: [{name: grpc-infra-backend-v1, port: 8080}]
  - matches:
    - method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: EchoTwo}
    backendRefs: [{name: grpc-infra-backend-v2, port: 8080}]
  - name: service-only
    matches:
    - method: {service: other.Service}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-added, value: by-rule}]}
    backendRefs: [{name: grpc-infra-backend-v3, port: 8080}]
  - matches:
    - method: {type: RegularExpression, service: 'regex\\.[A-Z][a-z]+', method: 'Get.*'}
    backendRefs: [{name: grpc-infra-backend-v2, port: 8080}]
  - matches:
    - method: {service: missing.Backend}
    backendRefs: [{name: no-such-service, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-header-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [headers.example.com]
  rules:
  - matches:
    - headers: [{name: version, value: one}]
    backendRefs: [{name: grpc-infra-backend-v1, port: 8080}]
  - matches:
    - headers: [{name: version, value: two}]
    backendRefs: [{name: grpc-infra-backend-v2, port: 8080}]
  - matches:
    - headers: [{name: version, value: two}, {name: color, value: orange}]
    backendRefs: [{name: grpc-infra-backend-v1, port: 8080}]
  - matches:
    - headers: [{type: RegularExpression, name: color, value: 'red|yellow'}]
    backendRefs: [{name: grpc-infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: weighted-backends, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [weights.example.com]
  rules:
  - backendRefs:
    - name: grpc-infra-backend-v1
      port: 8080
      weight: 70
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier: {add: [{name: x-from, value: v1-filter}]}
    - name: grpc-infra-backend-v2
      port: 8080
      weight: 30
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-added, value: v2-only}]}
    - {name: grpc-infra-backend-v3, port: 8080, weight: 0}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [exact.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /web}}]
    backendRefs: [{name: web, port: 8080}]
";

const ECHO: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// A client of Portico's plain port speaking h2c, with `host` as the `:authority`.
async fn client(portico: SocketAddr, host: &str) -> tonic::client::Grpc<Channel> {
    let channel = Endpoint::from_shared(format!("http://{portico}"))
        .unwrap()
        .origin(format!("http://{host}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// One unary call of `/service/method`: the answer, or the status code.
async fn unary(
    portico: SocketAddr,
    host: &str,
    path: &str,
    metadata: &[(&'static str, &'static str)],
) -> Result<String, Code> {
    let mut c = client(portico, host).await;
    c.ready().await.unwrap();
    let mut req = Request::new(Bytes::from_static(b"hello"));
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let path = PathAndQuery::try_from(path.to_owned()).unwrap();
    match tokio::time::timeout(Duration::from_secs(30), c.unary(req, path, Raw)).await {
        Ok(Ok(resp)) => Ok(String::from_utf8_lossy(resp.get_ref()).into_owned()),
        Ok(Err(status)) => Err(status.code()),
        Err(_) => panic!("call timed out"),
    }
}

/// The pod that answered (`v1`, ...), or the status code.
async fn pod(
    portico: SocketAddr,
    host: &str,
    path: &str,
    metadata: &[(&'static str, &'static str)],
) -> Result<String, Code> {
    unary(portico, host, path, metadata)
        .await
        .map(|answer| answer.split(' ').next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcroutes_route_calls_by_method_header_weight_and_host() {
    let v1 = grpc_backend("v1").await;
    let v2 = grpc_backend("v2").await;
    let v3 = grpc_backend("v3").await;
    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("grpc-infra-backend-v1", v1));
    text.push_str(&service("grpc-infra-backend-v2", v2));
    text.push_str(&service("grpc-infra-backend-v3", v3));
    text.push_str(&service("web", web.addr));
    std::fs::write(dir.path().join("gateway.yaml"), text).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();

    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let p = ctl.http;
    let echo = |method: &str| format!("/{ECHO}/{method}");
    // Wait for the routes to be served.
    let deadline = tokio::time::Instant::now() + FOLLOW;
    while pod(p, "exact.example.com", &echo("Echo"), &[]).await != Ok("v1".into()) {
        assert!(tokio::time::Instant::now() < deadline, "{}", ctl.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // grpcroute-exact-method-matching: each method its backend; another method of the
    // service matches nothing, which a gRPC client is told as UNIMPLEMENTED.
    let e = "exact.example.com";
    assert_eq!(pod(p, e, &echo("Echo"), &[]).await, Ok("v1".into()));
    assert_eq!(pod(p, e, &echo("EchoTwo"), &[]).await, Ok("v2".into()));
    assert_eq!(
        pod(p, e, &echo("EchoThree"), &[]).await,
        Err(Code::Unimplemented)
    );
    // The method reaches the pod as it was called.
    assert_eq!(
        unary(p, e, &echo("EchoTwo"), &[]).await,
        Ok(format!("v2 /{ECHO}/EchoTwo x-added=None"))
    );
    // A service alone takes each of its methods, with the rule's filter.
    assert_eq!(
        unary(p, e, "/other.Service/Anything", &[]).await,
        Ok("v3 /other.Service/Anything x-added=Some(\"by-rule\")".into())
    );
    // Regular expressions match the whole service and method names.
    assert_eq!(pod(p, e, "/regex.Users/GetOne", &[]).await, Ok("v2".into()));
    assert_eq!(
        pod(p, e, "/regex.users/GetOne", &[]).await,
        Err(Code::Unimplemented)
    );
    assert_eq!(
        pod(p, e, "/regex.Users/ListAll", &[]).await,
        Err(Code::Unimplemented)
    );
    // A rule without a usable backend: UNAVAILABLE, as GRPCRoute's spec asks.
    assert_eq!(
        pod(p, e, "/missing.Backend/Call", &[]).await,
        Err(Code::Unavailable)
    );

    // grpcroute-header-matching: the most header matches first; regex values.
    let h = "headers.example.com";
    let m = echo("Echo");
    assert_eq!(pod(p, h, &m, &[("version", "one")]).await, Ok("v1".into()));
    assert_eq!(pod(p, h, &m, &[("version", "two")]).await, Ok("v2".into()));
    assert_eq!(
        pod(p, h, &m, &[("version", "two"), ("color", "orange")]).await,
        Ok("v1".into())
    );
    assert_eq!(
        pod(p, h, &m, &[("version", "two"), ("color", "blue")]).await,
        Ok("v2".into())
    );
    assert_eq!(pod(p, h, &m, &[("color", "yellow")]).await, Ok("v3".into()));
    assert_eq!(
        pod(p, h, &m, &[("color", "orange")]).await,
        Err(Code::Unimplemented)
    );
    assert_eq!(
        pod(p, h, &m, &[("some-other-header", "one")]).await,
        Err(Code::Unimplemented)
    );

    // grpcroute-weight: 70/30, the weight-0 backend none; each backendRef's own
    // filters only on the calls drawn to it.
    let mut counts = BTreeMap::<String, u32>::new();
    let mut c = client(p, "weights.example.com").await;
    for _ in 0..200 {
        c.ready().await.unwrap();
        let req = Request::new(Bytes::from_static(b"w"));
        let resp = c
            .unary(req, PathAndQuery::from_static("/w.W/Call"), Raw)
            .await
            .expect("weighted call");
        let from = resp
            .metadata()
            .get("x-from")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = String::from_utf8_lossy(resp.get_ref()).into_owned();
        let name = answer.split(' ').next().unwrap_or("").to_owned();
        match name.as_str() {
            "v1" => {
                assert_eq!(answer, "v1 /w.W/Call x-added=None");
                assert_eq!(from.as_deref(), Some("v1-filter"));
            }
            "v2" => {
                assert_eq!(answer, "v2 /w.W/Call x-added=Some(\"v2-only\")");
                assert_eq!(from, None);
            }
            other => panic!("answered by {other:?}: {answer}"),
        }
        *counts.entry(name).or_default() += 1;
    }
    assert!(!counts.contains_key("v3"), "{counts:?}");
    let (a, b) = (counts["v1"], counts["v2"]);
    assert_eq!(a + b, 200);
    // 140 expected of v1; far outside binomial noise either way would be a bug.
    assert!((110..=170).contains(&a), "{counts:?}");

    // Hostnames via `:authority`: the listener's `*.example.com` leaves out the route's
    // `exact.example.org`, and a host no route names has no GRPCRoute.
    assert_eq!(
        pod(p, "exact.example.org", &echo("Echo"), &[]).await,
        Err(Code::Unimplemented)
    );
    assert_eq!(
        pod(p, "nothing.example.com", &echo("Echo"), &[]).await,
        Err(Code::Unimplemented)
    );
    assert_eq!(
        pod(p, "headers.example.com", &echo("EchoTwo"), &[]).await,
        Err(Code::Unimplemented)
    );

    // The HTTPRoute on the same host takes the HTTP requests, even a POST under its
    // prefix; a gRPC call there is still the GRPCRoute's to take (none does).
    let (status, _) = get(p, e, "/other.Service/Anything").await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        pod(p, e, "/web/Call", &[]).await,
        Err(Code::Internal),
        "a gRPC call under the HTTPRoute's prefix goes to its HTTP/1.1 pod"
    );
    let (status, body) = get(p, e, "/web").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("web"), "{body}");

    // The status, over a folder, is logged: the missing backend names ResolvedRefs.
    ctl.wait_log("the GRPCRoute status", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("GRPCRoute")
                && l.contains("gateway-conformance-infra/exact-matching")
                && l.contains(
                    "parent gateway-conformance-infra/same-namespace: Accepted=True (Accepted)",
                )
                && l.contains("ResolvedRefs=False (BackendNotFound)")
        })
    })
    .await;
    ctl.wait_log("the listener's attached routes", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains("gateway-conformance-infra/same-namespace")
                && l.contains("http")
                && l.contains("attachedRoutes 4")
        })
    })
    .await;
    let logs = ctl.logs();
    assert!(!logs.contains("unknown field"), "{logs}");
}

/// An HTTPS listener takes GRPCRoutes too: the client negotiates `h2` by ALPN on
/// Portico's HTTPS port, with the listener's certificate, and the call reaches the pod
/// over h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_serves_grpcroutes_over_tls() {
    let v1 = grpc_backend("v1").await;
    let host = "secure.example.com";
    let cert = rcgen::generate_simple_self_signed(vec![host.into()]).unwrap();
    let pem = cert.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let mut text = GATEWAY.to_owned();
    text.push_str(&service("grpc-infra-backend-v1", v1));
    text.push_str("---\n");
    text.push_str(
        &secret_yaml(
            "secure-cert",
            pem.as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )
        .replace(
            "  name: secure-cert\n",
            &format!("  name: secure-cert\n  namespace: {NS}\n"),
        ),
    );
    text.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: {NS}}}
spec:
  gatewayClassName: portico
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    hostname: {host}
    tls: {{certificateRefs: [{{name: secure-cert}}]}}
    allowedRoutes: {{kinds: [{{kind: GRPCRoute}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: secure, namespace: {NS}}}
spec:
  parentRefs: [{{name: secure, sectionName: https}}]
  rules:
  - matches: [{{method: {{service: secure.Echo}}}}]
    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]
"
    ));
    std::fs::write(dir.path().join("secure.yaml"), text).unwrap();
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pem))
        .domain_name(host);
    let call = || async {
        let channel = Endpoint::from_shared(format!("https://{}", ctl.https))
            .unwrap()
            .origin(format!("https://{host}").parse().unwrap())
            .tls_config(tls.clone())
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = tonic::client::Grpc::new(channel);
        c.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = Request::new(Bytes::from_static(b"hi"));
        c.unary(req, PathAndQuery::from_static("/secure.Echo/Call"), Raw)
            .await
            .map(|r| String::from_utf8_lossy(r.get_ref()).into_owned())
            .map_err(|s| format!("status: {:?}", s.code()))
    };
    let deadline = tokio::time::Instant::now() + FOLLOW;
    let mut got = call().await;
    while got.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = call().await;
    }
    assert_eq!(
        got,
        Ok("v1 /secure.Echo/Call x-added=None".to_owned()),
        "{}",
        ctl.logs()
    );
    ctl.wait_log("the listener's GRPCRoute", FOLLOW, |logs| {
        logs.lines().any(|l| {
            l.contains(&format!("{NS}/secure"))
                && l.contains("Gateway")
                && l.contains("attachedRoutes 1")
        })
    })
    .await;
}
