//! The echo backend: answers every request with JSON naming the backend it plays and what
//! it received, so a test can assert where the proxy sent a request and what arrived.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The backend an echo listener plays: which pod of which Service in which namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub namespace: String,
    pub service: String,
    pub pod: String,
}

impl Identity {
    pub fn new(namespace: &str, service: &str, pod: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            pod: pod.to_owned(),
        }
    }
}

/// What the echo backend answers: who it is and what it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub namespace: String,
    pub service: String,
    pub pod: String,
    /// The address the request arrived on (the "pod IP" and port).
    pub pod_addr: String,
    pub method: String,
    /// The Host header (HTTP/1.1) or :authority (HTTP/2), as received.
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub proto: String,
    /// Header names lower-cased, values in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Bytes of request body received.
    pub body_len: usize,
    /// Present when the request came over TLS.
    pub tls: Option<TlsInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// The SNI name the client sent, if any.
    pub sni: Option<String>,
    /// The client's certificates (PEM, leaf first), as echo-basic's
    /// `peerCertificates`: only a server configured to ask for them gets any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_certificates: Vec<String>,
}

impl Echo {
    /// All values of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("binding echo backend {identity} on {addr}: {source}")]
    Bind {
        identity: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The requests an echo listener has answered, as `path?query`, in arrival order (what
/// the Gateway API's echo-basic writes to its log, `Echoing back request made to PATH
/// to client`).
pub type Received = Arc<std::sync::Mutex<Vec<String>>>;

/// A running echo listener; aborted when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    identity: Identity,
    received: Received,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Listen on `addr` (port 0 picks a free port) and answer as `identity`; with `tls`,
    /// serve HTTPS and report the SNI name received.
    pub async fn start(
        addr: SocketAddr,
        identity: Identity,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, EchoError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EchoError::Bind {
                identity: format!(
                    "{}/{}/{}",
                    identity.namespace, identity.service, identity.pod
                ),
                addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| EchoError::Bind {
            identity: identity.pod.clone(),
            addr,
            source,
        })?;
        let shared = Arc::new(identity.clone());
        let acceptor = tls.map(TlsAcceptor::from);
        let received = Received::default();
        let task = tokio::spawn(accept_loop(
            listener,
            local,
            shared,
            acceptor,
            received.clone(),
        ));
        Ok(Self {
            addr: local,
            identity,
            received,
            task,
        })
    }

    /// Listen on `addr` and answer as echo-basic's gRPC echo service of `identity`
    /// (h2c; see [`crate::grpc_echo`]).
    pub async fn start_grpc(addr: SocketAddr, identity: Identity) -> Result<Self, EchoError> {
        let bind_error = |source| EchoError::Bind {
            identity: identity.pod.clone(),
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let received = Received::default();
        let task = tokio::spawn(crate::grpc_echo::serve(
            listener,
            Arc::new(identity.clone()),
            received.clone(),
        ));
        Ok(Self {
            addr: local,
            identity,
            received,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The requests answered so far, as `path?query`.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    identity: Arc<Identity>,
    acceptor: Option<TlsAcceptor>,
    received: Received,
) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(%local, %error, "echo accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let identity = identity.clone();
        let acceptor = acceptor.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let svc = service_fn(move |req| {
                        answer(req, identity.clone(), local, None, received.clone())
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let info = TlsInfo {
                        sni: conn.server_name().map(str::to_owned),
                        peer_certificates: conn
                            .peer_certificates()
                            .unwrap_or_default()
                            .iter()
                            .map(|c| crate::certs::der_to_pem(c))
                            .collect(),
                    };
                    let svc = service_fn(move |req| {
                        answer(
                            req,
                            identity.clone(),
                            local,
                            Some(info.clone()),
                            received.clone(),
                        )
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                }
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    identity: Arc<Identity>,
    local: SocketAddr,
    tls: Option<TlsInfo>,
    received: Received,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if is_websocket_upgrade(&req) {
        return Ok(websocket(req, received));
    }
    let (parts, body) = req.into_parts();
    if let Ok(mut log) = received.lock() {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        log.push(path.to_owned());
    }
    // Drain the body so the client is never left blocked on a full window.
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echo = Echo {
        namespace: identity.namespace.clone(),
        service: identity.service.clone(),
        pod: identity.pod.clone(),
        pod_addr: local.to_string(),
        method: parts.method.to_string(),
        host,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        proto: format!("{:?}", parts.version),
        headers,
        body_len,
        tls,
    };
    // As the Gateway API's echo-basic: `?delay=1s` answers late, for timeout tests.
    if let Some(delay) = parts.uri.query().and_then(|q| query_value(q, "delay")) {
        if let Some(d) = parse_go_duration(delay) {
            tokio::time::sleep(d).await;
        }
    }
    let body = serde_json::to_vec_pretty(&echo).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    // As echo-basic: `X-Echo-Set-Header: name:value,name2:value2` become response
    // headers, so a test can check what a response filter does to them.
    for list in parts.headers.get_all("x-echo-set-header") {
        for pair in String::from_utf8_lossy(list.as_bytes()).split(',') {
            let Some((name, value)) = pair.split_once(':') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            ) {
                h.append(n, v);
            }
        }
    }
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::SERVER,
        http::HeaderValue::from_static("portico-echo"),
    );
    Ok(response)
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && req.headers().contains_key(http::header::SEC_WEBSOCKET_KEY)
}

/// As echo-basic: accept the WebSocket upgrade (HTTP/1.1) and send every text and
/// binary message back as it came.
fn websocket(mut req: Request<Incoming>, received: Received) -> Response<Full<Bytes>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};
    if let Ok(mut log) = received.lock() {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        log.push(path.to_owned());
    }
    let accept = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// The value of `key` in a query string, undecoded.
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A Go duration of one unit (`500ms`, `2s`, `1m`); `None` for anything else.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    // Bounded, so a bad query cannot park a backend task for ever.
    (secs.is_finite() && (0.0..=300.0).contains(&secs))
        .then(|| std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_of_one_unit() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1h"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("10m"), None);
        assert_eq!(query_value("a=1&delay=1s", "delay"), Some("1s"));
        assert_eq!(query_value("a=1", "delay"), None);
    }
}
