//! HTTP server, forwarding, upgrades and timeouts.
//!
//! [`Proxy`] serves HTTP/1.1 and h2c (and HTTP/2 over TLS, given a TLS stream) with
//! hyper-util's auto server, routes each request with the [`Config`](crate::Config)
//! snapshot it loaded once, and forwards it over pooled HTTP/1.1 upstream connections,
//! streaming bodies both ways.
//!
//! What clients see:
//! - `404` no rule matched and there is no default backend; `503` the backend has no
//!   ready endpoint (or the route names a backend the config lacks); `502` the upstream
//!   refused or broke the exchange; `504` connect or response timeout; `400` a path that
//!   cannot be normalized or a request with both `Content-Length` and
//!   `Transfer-Encoding` (the connection is then closed); `431` oversized heads (hyper).
//! - A refused connect sent nothing, so the request goes on to another ready endpoint
//!   (up to the route's `proxy-next-upstream` tries, 3 by default) and the refusing
//!   endpoint is ejected for a doubling backoff. A bodiless
//!   idempotent request whose reused upstream connection died is replayed once.
//! - Upstream requests keep `Host`, drop hop-by-hop headers, append the client to
//!   `X-Forwarded-For` and set `X-Real-IP`, `X-Forwarded-Proto`, `-Host` and `-Port`.
//!   The path sent upstream is the normalized path the route table matched.
//! - `Upgrade` requests (WebSocket) are tunnelled once the upstream answers `101`.
//!
//! Shutdown, as the binary does it on SIGTERM:
//! ```no_run
//! # async fn run(proxy: std::sync::Arc<proxy_core::http::Proxy>, l: tokio::net::TcpListener) {
//! let shutdown = proxy.shutdown();
//! tokio::spawn({
//!     let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
//!     async move { proxy.serve_listener(l, shutdown).await }
//! });
//! // ... on SIGTERM: stop accepting, let in-flight requests finish, then exit 0.
//! let all_done = shutdown.drain(std::time::Duration::from_secs(30)).await;
//! # let _ = all_done;
//! # }
//! ```

mod activity;
mod body;
mod buffer;
mod errors;
mod forward;
pub mod grpc;
mod h1;
pub mod h3;
mod headers;
mod idle_io;
mod limits;
mod mirror;
mod passthrough;
pub mod proxy_protocol;
mod server;
pub mod shard;
mod socket;
mod stall;
mod upgrade;
mod upstream;
pub mod upstream_tls;

pub use body::{BodyEnd, ClientBodyError, ProxyBody};
pub use errors::{Blame, ProxyError};
pub(crate) use h1::messages_of as h1_messages;
pub use h1::H1BodyError;
pub(crate) use headers::strip_hop_by_hop;
pub use limits::{default_max_connections, raise_fd_limit, ConnPermit, Refusal};
pub use passthrough::{Passed, PassthroughError};
pub use server::{Shutdown, ShutdownGuard};
pub use socket::Socket;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::balance::{AffinityKey, EjectionPolicy, Registry, Target};
use crate::config::{BackendId, ConfigHandle, Runtime};

/// Marks a response after which the client connection is closed (a client's fault:
/// what follows on the connection cannot be trusted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CloseAfter;

/// How the client reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One accepted client connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub scheme: Scheme,
    /// TLS server name the client asked for.
    pub sni: Option<String>,
    /// ALPN chose `h2`: serve HTTP/2 only.
    pub alpn_h2: bool,
    /// What a PROXY protocol header said, when the listener reads one and the peer
    /// sending it is trusted (see [`Proxy::proxy_protocol`]). Boxed: every connection's
    /// state carries this field, few connections fill it.
    pub proxied: Option<Box<Proxied>>,
    /// The client certificate, when the handshake asked for one (`auth-tls-*`).
    pub client_cert: Option<Arc<crate::pipeline::ClientCert>>,
}

/// The connection a trusted PROXY protocol header describes: the client's, to the
/// address the client connected to (the load balancer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proxied {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl ConnInfo {
    /// The address the client connected to: the one a PROXY protocol header named, else
    /// this connection's own. Gateways with addresses of their own are told apart by it.
    pub fn arrived_at(&self) -> IpAddr {
        self.proxied
            .as_ref()
            .map_or(self.local, |p| p.destination)
            .ip()
            .to_canonical()
    }
}

/// A connection as its requests see it: what was accepted, plus the values every request
/// on it sends upstream, formatted once rather than per request.
pub(crate) struct Conn {
    pub info: ConnInfo,
    /// The peer: the TCP peer, or the client a PROXY protocol header named.
    pub peer: IpAddr,
    /// `peer` as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub peer_ip: HeaderValue,
    /// `X-Forwarded-Port`.
    pub local_port: HeaderValue,
    /// Upstream responses streaming to this connection's HTTP/2 streams; HTTP/1
    /// connections have none.
    pub stalls: Option<Arc<stall::Stalls>>,
    /// A QUIC connection: its answers need no `Alt-Svc`.
    pub http3: bool,
}

impl Conn {
    /// An HTTP/2 connection: its streams are watched for stalls.
    pub fn h2(info: ConnInfo) -> Self {
        Self {
            stalls: Some(Arc::default()),
            ..Self::new(info)
        }
    }

    pub fn new(info: ConnInfo) -> Self {
        let peer = info.proxied.as_ref().map_or(info.remote, |p| p.source).ip();
        let local_port = port_header(info.local.port());
        Self {
            peer_ip: headers::header_of(peer),
            peer,
            info,
            local_port,
            stalls: None,
            http3: false,
        }
    }

    /// A plain HTTP connection from 192.0.2.7:5555 to 127.0.0.1:8080.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self::new(ConnInfo {
            remote: "192.0.2.7:5555".parse().expect("address"),
            local: "127.0.0.1:8080".parse().expect("address"),
            scheme: Scheme::Http,
            sni: None,
            alpn_h2: false,
            proxied: None,
            client_cert: None,
        })
    }
}

/// `port` as a header value, shared by every connection to the same local port rather
/// than made (and allocated) for each.
fn port_header(port: u16) -> HeaderValue {
    // A proxy listens on a few ports; beyond these, a value is made per connection.
    static PORTS: [OnceLock<(u16, HeaderValue)>; 4] = [const { OnceLock::new() }; 4];
    for slot in &PORTS {
        let (p, value) = slot.get_or_init(|| (port, HeaderValue::from(port)));
        if *p == port {
            return value.clone();
        }
    }
    HeaderValue::from(port)
}

/// One answered request, for metrics, once its response is done.
#[derive(Debug)]
pub struct ResponseEvent<'a> {
    /// The client, as the client address policy decided.
    pub client: IpAddr,
    pub scheme: Scheme,
    /// Request host without port, normalised as route lookups use it
    /// ([`crate::host::normalize_request_host`]); empty when the request had none or an
    /// invalid one.
    pub host: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: StatusCode,
    pub backend: Option<&'a BackendId>,
    /// The endpoint that answered (or last failed).
    pub endpoint: Option<&'a Target>,
    /// From sending upstream to its response head.
    pub upstream_latency: Option<Duration>,
    /// From the request head to the end of the response.
    pub total_latency: Duration,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Whose fault the failure was, when the proxy failed the request or the response
    /// broke off.
    pub blame: Option<Blame>,
}

/// Receives every response; the binary implements it for metrics.
pub trait ProxyObserver: Send + Sync {
    fn on_response(&self, ev: &ResponseEvent<'_>);

    /// A client connection was closed unserved because a cap was reached.
    fn on_refused(&self, _why: Refusal) {}
}

/// Proxy tuning.
#[derive(Clone)]
pub struct ProxyOptions {
    /// A client must send a complete request head within this time. hyper also applies
    /// it to the idle time between requests on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 read buffer, HTTP/2 header list); larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1.1 request head.
    pub max_headers: usize,
    /// Serve more than one request per HTTP/1.1 connection.
    pub keep_alive: bool,
    /// The HTTP port clients reach us on, for redirects between hosts
    /// (`from-to-www-redirect`), which always name it.
    pub http_port: u16,
    /// The HTTPS port clients reach us on, for redirects; 443 is left out of the URL
    /// unless a route asks for the port (`use-port-in-redirects`).
    pub https_port: u16,
    /// Key for affinity cookies when the configuration carries none; `None` draws a
    /// random one at start (replicas then disagree on every cookie).
    pub affinity_key: Option<[u8; 16]>,
    pub ejection: EjectionPolicy,
    pub observer: Option<Arc<dyn ProxyObserver>>,
    /// Client connections served at once, over every listener of this proxy.
    pub max_connections: usize,
    /// Client connections one client address may hold at once.
    pub max_connections_per_client: Option<usize>,
    /// Forward `TRACE` requests; by default they get 405, as they echo a request
    /// (cookies and credentials included) back to whoever sent it.
    pub allow_trace: bool,
    /// `Alt-Svc` on answers over TCP HTTPS, advertising HTTP/3 when it is served.
    pub alt_svc: Option<HeaderValue>,
    /// How long an idle HTTP/1 keep-alive connection over plain TCP keeps its task
    /// before it parks without one (see `h1::park`); `None` never parks.
    pub park_idle_after: Option<Duration>,
}

/// An idle connection parks after this long: long enough that a client sending its
/// requests back to back never parks, short enough that idle clients cost little.
pub const PARK_IDLE_AFTER: Duration = Duration::from_secs(1);

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            keep_alive: true,
            http_port: 80,
            https_port: 443,
            affinity_key: None,
            ejection: EjectionPolicy::default(),
            observer: None,
            max_connections: default_max_connections(None),
            max_connections_per_client: None,
            allow_trace: false,
            alt_svc: None,
            park_idle_after: Some(PARK_IDLE_AFTER),
        }
    }
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_headers", &self.max_headers)
            .field("keep_alive", &self.keep_alive)
            .field("park_idle_after", &self.park_idle_after)
            .field("http_port", &self.http_port)
            .field("https_port", &self.https_port)
            .field("ejection", &self.ejection)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .finish_non_exhaustive()
    }
}

/// The HTTP reverse proxy. Shared by every listener; holds the state that outlives
/// config swaps (balancer registry, upstream pool).
pub struct Proxy {
    config: ConfigHandle,
    opts: ProxyOptions,
    registry: Arc<Registry>,
    pool: Arc<upstream::Pool>,
    builder_h2: auto::Builder<TokioExecutor>,
    shutdown: Shutdown,
    limits: Arc<limits::ConnLimits>,
    /// `limit-rps`, `limit-rpm`, `limit-connections` state.
    rate_limits: Arc<crate::pipeline::Limiter>,
    /// `auth-cache-key`: kept answers of authentication services.
    auth_decisions: crate::pipeline::AuthDecisions,
    /// Idle HTTP/1 connections parked without a task, a lot per [`shard`], each
    /// started on its shard's runtime by the first connection it parks.
    lots: std::sync::Mutex<Vec<Option<Arc<h1::park::Lot>>>>,
    /// Room for mirrored requests in flight (Gateway API RequestMirror).
    mirror_slots: Arc<tokio::sync::Semaphore>,
}

impl Proxy {
    pub fn new(config: ConfigHandle, opts: ProxyOptions) -> Arc<Self> {
        let key = opts
            .affinity_key
            .map(AffinityKey::new)
            .unwrap_or_else(AffinityKey::random);
        let mut builder_h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        builder_h2
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
            // Finds peers that vanished with streams open; idle connections are closed
            // by the keep-alive timer instead.
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20))
            // WebSocket over HTTP/2 (RFC 8441).
            .enable_connect_protocol();
        let registry = Arc::new(Registry::new(key, opts.ejection));
        let pool = Arc::new(upstream::Pool::new());
        // Brought to every configuration as it is published, before requests see it.
        let runtime: Arc<dyn Runtime> = registry.clone();
        config.attach(Arc::downgrade(&runtime));
        let runtime: Arc<dyn Runtime> = pool.clone();
        config.attach(Arc::downgrade(&runtime));
        let rate_limits = Arc::new(crate::pipeline::Limiter::default());
        let runtime: Arc<dyn Runtime> = rate_limits.clone();
        config.attach(Arc::downgrade(&runtime));
        Arc::new(Self {
            rate_limits,
            config,
            registry,
            pool,
            builder_h2,
            shutdown: Shutdown::new(),
            limits: limits::ConnLimits::new(opts.max_connections, opts.max_connections_per_client),
            auth_decisions: Default::default(),
            lots: std::sync::Mutex::default(),
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(mirror::MAX_IN_FLIGHT)),
            opts,
        })
    }

    /// The handle that stops this proxy's connections: trigger it (or `drain` it) on
    /// SIGTERM. Pass it to [`Proxy::serve_listener`] too so one handle stops everything.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn config(&self) -> &ConfigHandle {
        &self.config
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.limits.open()
    }
}
