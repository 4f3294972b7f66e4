//! The immutable configuration snapshot the dataplane serves, and its atomic hot swap.
//!
//! A request loads the current [`Config`] once and keeps that `Arc` until it finishes,
//! so a swap never changes the routing of a request in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::balance::{AffinityKey, RingKey, Target};
use crate::http::upstream_tls::UpstreamTls;
use crate::l4::L4Service;
pub use crate::model::{BackendId, Endpoint};
use crate::pipeline::{
    AuthProxyHeaders, ClientAddressPolicy, ClientAuthTable, Credentials, DigestCredentials, Hsts,
    SetHeaders,
};
use crate::routes::{RouteTable, RouteTarget};

/// Where a backend's traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Pod endpoints from EndpointSlices / Endpoints.
    Endpoints(Vec<Endpoint>),
    /// An `ExternalName` Service: a DNS name resolved at connect time.
    ExternalName { host: Arc<str>, port: u16 },
    /// A reference that reaches no Service port (the Service, the port or the
    /// externalName is missing): no endpoints. The text says why, in each failed
    /// request's log line, rather than a backend that does not exist.
    Unresolved(Arc<str>),
}

/// Upstream timeouts of a route, as nginx's `proxy_*_timeout`: `read` and `send` bound the
/// wait between two successive reads or writes of the upstream exchange, not the whole of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to an endpoint (`proxy-connect-timeout`).
    pub connect: Duration,
    /// Waiting for the response head, and between two reads of the response body
    /// (`proxy-read-timeout`); exceeded before the head: 504, after: the client connection
    /// is closed.
    pub read: Duration,
    /// Between two writes of the request body to the upstream (`proxy-send-timeout`).
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            send: Duration::from_secs(60),
        }
    }
}

/// How a route's requests travel to its pods: `backend-protocol`, or else the Service
/// port's `appProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 (`HTTP`).
    #[default]
    Http,
    /// TLS, then HTTP/2 or HTTP/1.1 as the pod's ALPN answer says (`HTTPS`).
    Https,
    /// As the client came: plain HTTP/1.1 for a plain client, [`BackendProtocol::Https`]
    /// for one over TLS (`AUTO_HTTP`, nginx's `$scheme://`).
    AutoHttp,
    /// HTTP/2 without TLS, by prior knowledge (`GRPC`).
    Grpc,
    /// HTTP/2 over TLS (`GRPCS`).
    Grpcs,
    /// HTTP/2 without TLS, by prior knowledge (`H2C`).
    H2c,
}

impl BackendProtocol {
    /// The `backend-protocol` value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendProtocol::Http => "HTTP",
            BackendProtocol::Https => "HTTPS",
            BackendProtocol::AutoHttp => "AUTO_HTTP",
            BackendProtocol::Grpc => "GRPC",
            BackendProtocol::Grpcs => "GRPCS",
            BackendProtocol::H2c => "H2C",
        }
    }
}

/// An HTTP backend: a Service port resolved to endpoints. What a request to it gets
/// (affinity, timeouts, filters) belongs to the route, in [`RoutePolicy`](crate::pipeline::RoutePolicy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    pub kind: BackendKind,
    /// The Service port's `appProtocol`, where it names one Portico speaks: what routes
    /// get that set no `backend-protocol` of their own.
    pub protocol: Option<BackendProtocol>,
}

impl Backend {
    pub fn new(id: BackendId, endpoints: Vec<Endpoint>) -> Self {
        Self {
            id,
            kind: BackendKind::Endpoints(endpoints),
            protocol: None,
        }
    }

    /// Every target a request to this backend may go to.
    pub fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        let (eps, name) = match &self.kind {
            BackendKind::Endpoints(eps) => (eps.as_slice(), None),
            BackendKind::Unresolved(_) => (&[][..], None),
            BackendKind::ExternalName { host, port } => (
                &[][..],
                Some(Target::Name {
                    host: host.clone(),
                    port: *port,
                }),
            ),
        };
        eps.iter().map(|e| Target::Addr(e.addr)).chain(name)
    }
}

/// Everything the dataplane serves, compiled from the cluster's objects.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Increases with every publish; for logs and metrics.
    pub generation: u64,
    /// Host/path rules.
    pub routes: RouteTable,
    /// What no rule matched (an Ingress `spec.defaultBackend`).
    pub default_backend: Option<RouteTarget>,
    /// The global default backend (`--default-backend-service`): what neither a rule nor
    /// `default_backend` matched (404 while it has no ready endpoint, as ingress-nginx's
    /// own catch-all answers then), and the error pages of routes that name no default
    /// backend of their own. With neither, unmatched requests get 404.
    pub default_service: Option<RouteTarget>,
    /// `custom-headers`: the answer fields of each ConfigMap that routes name (by
    /// `namespace/name`), validated.
    pub response_headers: HashMap<Arc<str>, Arc<SetHeaders>>,
    /// TLS to pods as routes ask for it (`proxy-ssl-*`), by the key the routes name.
    /// A key missing here is a setting that could not be made: its routes answer 503.
    pub upstream_tls: HashMap<Arc<str>, Arc<UpstreamTls>>,
    /// Backends whose pods must be reached over TLS (Gateway API BackendTLSPolicy), with
    /// the key in `upstream_tls` of the setting: it applies to every route and mirror to
    /// the backend, whatever the route asks. A key missing from `upstream_tls` is a
    /// policy that could not be made: requests to the backend fail (never in
    /// plaintext). Empty for most configurations, which then pay one check.
    pub backend_tls: HashMap<BackendId, Arc<str>>,
    /// Gateways' backend client certificates, by the key routes through them name
    /// ([`RoutePolicy::backend_client_cert`](crate::pipeline::RoutePolicy)): for
    /// `backend_tls` settings, the same setting presenting the certificate. A key
    /// missing here is a certificate that could not be used: those routes' requests to
    /// `backend_tls` backends fail.
    pub backend_client_certs: HashMap<Arc<str>, crate::pipeline::BackendClientCert>,
    /// The SNI scopes of Gateways' HTTPS listeners that have a hostname: a request no
    /// route takes, on a connection one of them was made for, whose host none of
    /// those takes, gets 421 rather than 404. Empty without Gateway HTTPS listeners.
    pub gateway_sni: Vec<crate::routes::SniScope>,
    /// The rules of Gateways served at addresses of their own, by local address: a
    /// connection made to one of these is routed by its table alone (no Ingress, no
    /// default backend, no other Gateway answers there). Usually empty.
    pub routes_at: HashMap<std::net::IpAddr, RouteTable>,
    /// Basic auth: the user lists routes name (by the Secret they came from),
    /// validated. A route naming one that is not here refuses its requests.
    pub credentials: Credentials,
    /// Digest auth: the htdigest user lists routes name, as `credentials`.
    pub digest_credentials: DigestCredentials,
    /// Backends referenced by routes, by id. Looked up on every request, hence foldhash
    /// rather than SipHash (the ids are the cluster's own names, not a client's input).
    pub backends: foldhash::HashMap<BackendId, Arc<Backend>>,
    /// The consistent-hash rings routes with `upstream-hash-by` look endpoints up on,
    /// built when the configuration is published (sorted, each once).
    pub hash_rings: Vec<RingKey>,
    /// `auth-proxy-set-headers` (and the ConfigMap's `global-auth-proxy-set-headers`):
    /// the fields of each ConfigMap external auth names, by `namespace/name`, validated.
    /// An auth naming one that is not here refuses its requests (503).
    pub auth_proxy_set_headers: HashMap<Arc<str>, Arc<AuthProxyHeaders>>,
    /// `auth-tls-*`: the client-certificate settings of each host whose CA could be
    /// read. A route checking client certificates on a host missing here answers 503.
    pub client_auth: ClientAuthTable,
    /// L4 Service forwarding (only served with the service proxy enabled).
    pub l4: Vec<L4Service>,
    /// `ssl-passthrough` (with `--enable-ssl-passthrough`): TLS connections whose SNI is
    /// one of these hosts (lowercase, exact) go undecrypted to the backend's pods. Each
    /// backend is in `backends`.
    pub passthrough: HashMap<Arc<str>, BackendId>,
    /// Settings that apply to every request, from the controller's global settings.
    pub settings: ProxySettings,
    /// Key for affinity cookies, shared by every replica; `None` uses the proxy's own.
    pub affinity_key: Option<AffinityKey>,
    /// Ready replicas of the proxy sharing the rate and connection limits: each enforces
    /// its share of every limit (0 counts as 1).
    pub replicas: u32,
}

/// Settings that are not a route's: who the client is, what every answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// How the client address is worked out and passed upstream.
    pub client: ClientAddressPolicy,
    /// Read a PROXY protocol header (v1 or v2) first on every client connection, and
    /// refuse connections that do not send one.
    pub proxy_protocol: bool,
    /// `Server` on every answer, proxied or not.
    pub server: http::HeaderValue,
    /// Longest wait between two reads of a request body (`client-body-timeout`).
    pub client_body_timeout: Duration,
    /// `Strict-Transport-Security` on HTTPS answers (`hsts`).
    pub hsts: Option<Hsts>,
    /// A client connection with nothing in flight for this long is closed (`keep-alive`).
    pub keep_alive: Duration,
    /// A client that takes no response data for this long is cut off (nginx's
    /// `send_timeout`).
    pub send_timeout: Duration,
    /// `proxy-set-headers`: fields set on every request sent to a backend.
    pub proxy_set_headers: SetHeaders,
    /// How connections to pods are kept for reuse (`upstream-keepalive-*`).
    pub upstream_keepalive: UpstreamKeepalive,
}

/// How connections to pods are kept for reuse, as ingress-nginx's
/// `upstream-keepalive-*` keys; the defaults are theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamKeepalive {
    /// Idle connections kept per pod (`upstream-keepalive-connections`); the oldest
    /// goes when one more comes back. 0 keeps none: each request asks the pod to close.
    pub connections: usize,
    /// An idle connection unused for this long is not used again
    /// (`upstream-keepalive-timeout`).
    pub timeout: Duration,
    /// Requests one connection carries before it is closed
    /// (`upstream-keepalive-requests`); an HTTP/2 one takes no new stream after them.
    pub requests: u64,
    /// A connection open this long is closed after the response in flight
    /// (`upstream-keepalive-time`); an HTTP/2 one takes no new stream after it.
    pub time: Duration,
}

impl UpstreamKeepalive {
    /// Whether a connection open for `age` that has carried `requests` may carry no
    /// more.
    pub fn spent(&self, requests: u64, age: Duration) -> bool {
        requests >= self.requests || age >= self.time
    }
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        Self {
            connections: 320,
            timeout: Duration::from_secs(60),
            requests: 10_000,
            time: Duration::from_secs(3600),
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            client: ClientAddressPolicy::default(),
            proxy_protocol: false,
            server: http::HeaderValue::from_static(SERVER_NAME),
            client_body_timeout: Duration::from_secs(60),
            hsts: Some(Hsts::new(31_536_000, true, false)),
            keep_alive: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            proxy_set_headers: SetHeaders::default(),
            upstream_keepalive: UpstreamKeepalive::default(),
        }
    }
}

/// `Server` with `server-tokens` off.
pub const SERVER_NAME: &str = "portico";

/// `Server` with `server-tokens` on.
pub fn server_with_version() -> http::HeaderValue {
    http::HeaderValue::from_static(concat!("portico/", env!("CARGO_PKG_VERSION")))
}

/// Runtime state that outlives configurations (balancer state, upstream pools): each
/// published configuration is applied to it once, before requests can see it.
pub trait Runtime: Send + Sync {
    /// Brings the state to `next`: adds what it has new, drops what it no longer has,
    /// and leaves untouched what both have.
    fn apply(&self, next: &Config);
}

/// The published configuration: readers load it lock-free, the controller swaps it.
#[derive(Clone, Default)]
pub struct ConfigHandle {
    inner: Arc<HandleInner>,
}

#[derive(Default)]
struct HandleInner {
    current: ArcSwap<Config>,
    /// Taken only by publishers, never on the request path.
    runtimes: Mutex<Vec<Weak<dyn Runtime>>>,
}

impl ConfigHandle {
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                current: ArcSwap::from_pointee(config),
                runtimes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<Config> {
        self.inner.current.load_full()
    }

    /// Registers state to keep in step with every publish, and brings it to the current
    /// configuration now.
    pub fn attach(&self, runtime: Weak<dyn Runtime>) {
        let mut runtimes = self.runtimes();
        if let Some(rt) = runtime.upgrade() {
            rt.apply(&self.inner.current.load());
        }
        runtimes.push(runtime);
    }

    fn runtimes(&self) -> MutexGuard<'_, Vec<Weak<dyn Runtime>>> {
        self.inner
            .runtimes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Publish a new snapshot. Never blocks readers.
    pub fn store(&self, config: Config) {
        drop(self.swap(config));
    }

    /// [`ConfigHandle::store`], handing back the previous snapshot, so that the caller
    /// chooses where a large one is freed. The attached runtime state is brought to
    /// `config` first, so the first request that sees it finds its state ready.
    pub fn swap(&self, config: Config) -> Arc<Config> {
        let mut runtimes = self.runtimes();
        runtimes.retain(|rt| match rt.upgrade() {
            Some(rt) => {
                rt.apply(&config);
                true
            }
            None => false,
        });
        self.inner.current.swap(Arc::new(config))
    }
}
