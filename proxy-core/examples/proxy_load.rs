//! A proxy in front of a tiny backend, for load generators:
//!
//! ```text
//! cargo run --release -p proxy-core --example proxy_load -- 127.0.0.1:18080 127.0.0.1:18081
//! h2load --h1 -n 100000 -c 32 -H 'Host: load.test' http://127.0.0.1:18080/   # proxied
//! h2load --h1 -n 100000 -c 32 http://127.0.0.1:18081/                       # direct
//! ```
//! The first address is the proxy, the second the backend it forwards to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use proxy_core::http::{Proxy, ProxyOptions};
use proxy_core::routes::{HostMatch, PathType, RouteRule, RouteTable, RouteTarget};
use proxy_core::{Backend, BackendId, Config, ConfigHandle, Endpoint};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let proxy_addr: SocketAddr = args.next().unwrap_or("127.0.0.1:18080".into()).parse()?;
    let backend_addr: SocketAddr = args.next().unwrap_or("127.0.0.1:18081".into()).parse()?;

    let backend_listener = TcpListener::bind(backend_addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = backend_listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let backend = Backend::new(
        BackendId::new("load", "backend", "http"),
        vec![Endpoint::ready(backend_addr)],
    );
    let config = Config {
        routes: RouteTable::build(vec![RouteRule {
            host: HostMatch::parse(Some("load.test")).unwrap(),
            path: "/".into(),
            path_type: PathType::Prefix,
            target: RouteTarget {
                backend: backend.id.clone(),
                policy: Default::default(),
                source: "load/ingress".into(),
            },
        }]),
        backends: [(backend.id.clone(), Arc::new(backend))]
            .into_iter()
            .collect(),
        ..Config::default()
    };
    let proxy = Proxy::new(ConfigHandle::new(config), ProxyOptions::default());
    let listener = TcpListener::bind(proxy_addr).await?;
    let shutdown = proxy.shutdown();
    proxy.serve_listener(listener, shutdown).await;
    Ok(())
}
