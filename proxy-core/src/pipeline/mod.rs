//! What a matched route does to a request, besides sending it: its [`RoutePolicy`].
//!
//! A request goes through these phases (see `http::forward`, which runs them):
//! 1. **route**: the host and normalized path pick a [`RouteTarget`](crate::routes::RouteTarget),
//!    which names a backend and carries the route's policy;
//! 2. **request filters** ([`RequestFilter`]): each may answer the request itself (a
//!    redirect, a refusal) or let it through;
//! 3. **pick**: the backend (the route's, or its [`Canary`]'s), then an endpoint of it,
//!    under that backend's cookie affinity if any;
//! 4. **send**: on a pooled or new upstream connection, passed on to other endpoints
//!    after a failed connect, or as the route's [`NextUpstream`] allows, bounded by the
//!    route's [`Timeouts`];
//! 5. **response head**: an intercepted error answered by a default backend
//!    ([`ErrorPages`]), the affinity cookie, `Strict-Transport-Security` over HTTPS
//!    ([`Hsts`]) and `Server` on every answer;
//! 6. **log**: one access-log line once the response body is done.
//!
//! Filters are plain data in the route's lists: a route with none runs none, and each
//! filter lives in a module of its own with its own tests.

mod app_root;
mod basic_auth;
mod body_limit;
mod canary;
pub mod client;
mod client_cert;
mod cors;
mod digest_auth;
pub(crate) mod errors;
mod ext_auth;
mod gateway_redirect;
mod gateway_rewrite;
mod hsts;
mod mirror;
mod rate_limit;
mod redirect;
mod refuse;
mod rewrite;
mod satisfy_any;
mod set_headers;
mod source_range;
mod upstream_headers;
mod url_redirect;
mod weighted;
mod www_redirect;

pub use app_root::AppRoot;
pub use basic_auth::{BasicAuth, Credentials, Htpasswd, HtpasswdError};
pub use body_limit::BodyLimit;
pub use canary::{Affinitized, ByHeader, Canary, CanaryRule, HeaderJudge, HeaderPattern};
pub use client::ClientAddressPolicy;
pub use client_cert::{
    ByHost, CertVerify, ClientAuthTable, ClientCert, ClientCertAuth, ClientCertPolicy, VerifyClient,
};
pub use cors::{Cors, CorsOrigins, CorsRules, OriginError, OriginPattern};
pub use digest_auth::{DigestAuth, DigestCredentials, Htdigest, NONCE_LIFETIME};
pub use errors::ErrorPages;
pub(crate) use ext_auth::AuthDecisions;
pub use ext_auth::{
    nginx_time, parse_cache_duration, signin_url, AuthCache, AuthCookies, AuthProxyHeaders,
    AuthRequest, CacheValid, ExternalAuth, Template, TemplateError, Vars, Verdict,
};
pub use gateway_redirect::{GatewayRedirect, RedirectPath};
pub use gateway_rewrite::GatewayRewrite;
pub use hsts::Hsts;
pub use mirror::{Fraction, Mirrors, RequestMirror};
pub use rate_limit::{per_replica, ConnSlot, Limiter, Rate, RateLimit, ZONE_CLIENTS};
pub use redirect::SslRedirect;
pub use refuse::{NoValidBackend, Refuse};
pub use rewrite::{Rewrite, RewriteError};
pub use satisfy_any::{SatisfyAny, UserAuth};
pub use set_headers::{HeaderEdits, SetHeaders};
pub use source_range::SourceRanges;
pub use upstream_headers::UpstreamHeaders;
pub use url_redirect::UrlRedirect;
pub use weighted::{BackendFilters, WeightedBackends};
pub use www_redirect::WwwRedirect;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::balance::{Balance, CookieAffinity, NextUpstream};
use crate::config::{BackendProtocol, Timeouts};
use crate::http::{ProxyBody, ProxyError, Scheme};

/// A Gateway's backend client certificate: for each BackendTLSPolicy setting (its key
/// in [`Config::upstream_tls`](crate::config::Config)), the key of the same setting
/// presenting the Gateway's certificate. A policy missing here could not be made with
/// it: requests to its backends fail rather than go out without the certificate.
pub type BackendClientCert = std::collections::HashMap<Arc<str>, Arc<str>>;

/// What one route does with a request, compiled and validated from the object it came
/// from (one Ingress path, later one HTTPRoute rule). Shared by the routes that ask for
/// the same thing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    pub timeouts: Timeouts,
    /// How requests travel to the pods (`backend-protocol`); `None` leaves it to the
    /// backend's `appProtocol`, else HTTP/1.1.
    pub protocol: Option<BackendProtocol>,
    /// TLS to the pods, when the protocol has it (`proxy-ssl-*`): the key of its
    /// settings in [`Config::upstream_tls`](crate::config::Config), which routes
    /// without a usable setting are refused by. `None` encrypts without verifying, as
    /// ingress-nginx does by default.
    pub upstream_tls: Option<Arc<str>>,
    /// The client certificate of the Gateway the route came through
    /// (`spec.tls.backend.clientCertificateRef`), for backends a BackendTLSPolicy has
    /// reached over TLS: its key in
    /// [`Config::backend_client_certs`](crate::config::Config). `None`: the policy's
    /// own setting.
    pub backend_client_cert: Option<Arc<str>>,
    /// Cookie session affinity: the route's requests stick to an endpoint.
    pub affinity: Option<CookieAffinity>,
    /// How an endpoint is picked without affinity (`load-balance`, `upstream-hash-by`),
    /// on the route's own backend (a canary's is round robin).
    pub balance: Balance,
    /// `proxy-next-upstream` and its companions, when the Ingress or the ConfigMap sets
    /// them. `None`: a request goes to another endpoint only when nothing reached the
    /// first (a failed connect), up to 3 tries, so that routes without the setting keep
    /// no copy of their requests.
    pub next_upstream: Option<NextUpstream>,
    /// Run in order before an endpoint is picked; the first that answers ends the request.
    pub request: Vec<RequestFilter>,
    /// Read request bodies whole before taking a pod connection
    /// (`proxy-request-buffering: on`), keeping this many bytes in memory
    /// (`client-body-buffer-size`) and the rest in a temporary file. `None` streams them.
    pub buffer_body: Option<usize>,
    /// A canary Ingress for the route's host and path: some requests go to its backend
    /// instead, chosen after the request filters, before the pick.
    pub canary: Option<Canary>,
    /// Headers set on the upstream request (`upstream-vhost`, `x-forwarded-prefix`).
    pub upstream_headers: UpstreamHeaders,
    /// `custom-http-errors` and `default-backend`: answers intercepted for a default
    /// backend, and where requests go while the backend has no ready endpoint.
    pub errors: Option<ErrorPages>,
    /// `custom-headers`: the key in [`Config::response_headers`](crate::config::Config)
    /// of the fields set on every answer of the route (looked up per request, so a
    /// ConfigMap edit needs no new policy).
    pub response_headers: Option<Arc<str>>,
    /// `limit-rate` and `limit-rate-after`: the pace of the pods' answers.
    pub limit_rate: Option<LimitRate>,
    /// A Gateway API ResponseHeaderModifier: edits to every answer of the route.
    pub response_edits: Option<Arc<HeaderEdits>>,
    /// A Gateway API rule's weighted backendRefs: each request goes to one of them
    /// instead of the route's backend (which is the first of them).
    pub weighted: Option<Arc<WeightedBackends>>,
    /// Gateway API RequestMirror filters: backends that get a copy of the requests.
    pub mirrors: Option<Arc<Mirrors>>,
}

/// nginx's `limit_rate`: a response body goes out at `rate` bytes a second once its first
/// `after` bytes are sent, per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRate {
    pub rate: u64,
    pub after: u64,
}

/// A request filter's verdict.
pub enum Flow {
    Continue,
    /// Answer with this instead of proxying (boxed: the common verdict is `Continue`).
    Answer(Box<Response<ProxyBody>>),
}

/// What a request filter knows of the request besides its head.
pub struct RequestCtx<'a> {
    pub scheme: Scheme,
    /// The routing host, lower-cased, without port; empty when the request had none.
    pub host: &'a str,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The client, as [`ClientAddressPolicy`] decided.
    pub client: IpAddr,
    /// The HTTP port clients reach us on, for redirects.
    pub http_port: u16,
    /// The HTTPS port clients reach us on, for redirects.
    pub https_port: u16,
    /// Largest request body the route accepts, set by [`BodyLimit`]; enforced while the
    /// body streams.
    pub body_limit: Option<u64>,
    /// The path and query the upstream gets instead of the request's, set by
    /// [`Rewrite`] and applied once every filter has run.
    pub rewritten: Option<String>,
    /// The user lists of [`BasicAuth`] filters.
    pub credentials: &'a Credentials,
    /// The user lists of [`DigestAuth`] filters.
    pub digest_credentials: &'a DigestCredentials,
    /// Fields set on the answer, whatever answers ([`Cors`]).
    pub answer_headers: Vec<(HeaderName, HeaderValue)>,
    /// Do not pass `Authorization` upstream: [`BasicAuth`] consumed it.
    pub strip_authorization: bool,
    /// The state of [`RateLimit`] zones.
    pub limiter: &'a Limiter,
    /// Replicas sharing the limits ([`Config::replicas`](crate::config::Config)).
    pub replicas: u32,
    /// Set by [`RateLimit`]: the request counts against `limit-connections` until this is
    /// dropped, with the answer's body.
    pub conn_slot: Option<ConnSlot>,
    /// Ask this authentication service once the filters are done ([`ExternalAuth`]).
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// The client-certificate settings of each host ([`ClientCertAuth`]).
    pub client_auth: &'a ClientAuthTable,
    /// The connection's client certificate as its handshake judged it; `None` when the
    /// handshake asked for none (or the connection is not TLS).
    pub client_cert: Option<&'a ClientCert>,
    /// The TLS server name the client sent.
    pub sni: Option<&'a str>,
    /// Fields set (`Some`) or removed (`None`) on the upstream request once the filters
    /// are done ([`ClientCertAuth`]).
    pub upstream_set: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// One step before the pick. The compiler puts them in nginx's phase order: a refused
/// route's `return 503` first; the location's rewrite-phase `return`s (`app-root`, the
/// CORS preflight, then `permanent-`/`temporal-redirect`); the HTTPS redirect of its Lua
/// rewrite phase; nginx's preaccess phase (rate and connection limits); then the access
/// phase (source ranges, basic auth, then external auth, whose exchange `http::forward`
/// makes once the filters are done).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestFilter {
    /// A security setting that cannot be honoured: every request gets 503.
    Refuse(Refuse),
    /// `auth-tls-*`: first, as nginx checks the certificate before any phase runs.
    ClientCert(ClientCertAuth),
    /// A Gateway HTTPS listener's rule: a request on a connection made for another
    /// listener gets 421 (first of all).
    Misdirected(crate::routes::SniScope),
    /// A Gateway API rule with no valid backend: every request gets 500.
    NoValidBackend(NoValidBackend),
    /// `from-to-www-redirect`, on the host the Ingress does not name.
    WwwRedirect(WwwRedirect),
    AppRoot(AppRoot),
    Cors(Box<Cors>),
    UrlRedirect(UrlRedirect),
    /// Gateway API RequestRedirect.
    GatewayRedirect(GatewayRedirect),
    /// Gateway API URLRewrite's path.
    GatewayRewrite(GatewayRewrite),
    Rewrite(Rewrite),
    SslRedirect(SslRedirect),
    RateLimit(Box<RateLimit>),
    SourceRanges(SourceRanges),
    BasicAuth(BasicAuth),
    DigestAuth(DigestAuth),
    /// `satisfy: any` with both source ranges and basic auth.
    SatisfyAny(Box<SatisfyAny>),
    /// `auth-url`: last in the access phase, as nginx's `auth_request` runs after
    /// `allow`/`deny` and `auth_basic`.
    ExternalAuth(Arc<ExternalAuth>),
    BodyLimit(BodyLimit),
}

impl RequestFilter {
    fn on_request(&self, ctx: &mut RequestCtx<'_>, parts: &Parts) -> Result<Flow, ProxyError> {
        match self {
            RequestFilter::Refuse(f) => f.on_request(ctx, parts),
            RequestFilter::ClientCert(f) => f.on_request(ctx, parts),
            RequestFilter::Misdirected(scope) => Ok(client_cert::misdirected_unless(ctx, scope)),
            RequestFilter::NoValidBackend(f) => f.on_request(ctx, parts),
            RequestFilter::Cors(f) => f.on_request(ctx, parts),
            RequestFilter::SourceRanges(f) => f.on_request(ctx, parts),
            RequestFilter::BasicAuth(f) => f.on_request(ctx, parts),
            RequestFilter::DigestAuth(f) => f.on_request(ctx, parts),
            RequestFilter::SatisfyAny(f) => f.on_request(ctx, parts),
            RequestFilter::WwwRedirect(f) => f.on_request(ctx, parts),
            RequestFilter::AppRoot(f) => f.on_request(ctx, parts),
            RequestFilter::UrlRedirect(f) => f.on_request(ctx, parts),
            RequestFilter::GatewayRedirect(f) => f.on_request(ctx, parts),
            RequestFilter::GatewayRewrite(f) => f.on_request(ctx, parts),
            RequestFilter::Rewrite(f) => f.on_request(ctx, parts),
            RequestFilter::SslRedirect(f) => f.on_request(ctx, parts),
            RequestFilter::ExternalAuth(f) => f.on_request(ctx, parts),
            RequestFilter::BodyLimit(f) => f.on_request(ctx, parts),
            RequestFilter::RateLimit(f) => f.on_request(ctx, parts),
        }
    }
}

impl RoutePolicy {
    /// Runs the request filters in order; the first answer wins.
    pub(crate) fn request_filters(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        for f in &self.request {
            if let flow @ Flow::Answer(_) = f.on_request(ctx, parts)? {
                return Ok(flow);
            }
        }
        Ok(Flow::Continue)
    }
}

/// A short plain-text answer of Portico's own: `403 Forbidden`, `401 Unauthorized`.
pub(crate) fn plain_answer(status: StatusCode) -> Response<ProxyBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
