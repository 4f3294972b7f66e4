//! One request through the phases of [`crate::pipeline`]: route, request filters, pick,
//! send (passed on to other endpoints as `proxy-next-upstream` allows), response head, log.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};

use super::body::{read_pod_fields, set_field, BodyEnd, ClientBody, OnDone, RequestBody};
use super::buffer::BufferedBody;
use super::errors::{Blame, ProxyError};
use super::h1::client::PodError;
use super::h1::ClientUpgrade;
use super::headers::{self, Forwarded, Forwarding};
use super::upstream::{resendable, Dial, Outbound, SendError, Sent, UpstreamBody};
use super::upstream_tls::{Alpn, UpstreamTls};
use super::{grpc, upgrade, Conn, Proxy, ProxyBody, ResponseEvent, Scheme};
use crate::balance::{Balance, Choice, Condition, CookieAffinity, KeyVars, NextUpstream, Target};
use crate::config::{Backend, BackendId, BackendKind, BackendProtocol, Config, Timeouts};
use crate::pipeline::client::Client;
use crate::pipeline::errors::{self, ErrorInfo};
use crate::pipeline::{
    Affinitized, AuthCookies, Canary, ErrorPages, ExternalAuth, Flow, HeaderEdits, RequestCtx,
    RoutePolicy, SetHeaders, Vars, Verdict,
};
use crate::routes::{self, RouteTarget};

/// What the access log says of one request, filled in as it goes through the phases and
/// written once its response is done. Boxed once per request and handed to the response
/// body as is, rather than moved through every phase.
struct AccessLog {
    proxy: Arc<Proxy>,
    scheme: Scheme,
    start: Instant,
    client: IpAddr,
    method: Method,
    /// Lower-cased, without port; empty when the request had none.
    host: String,
    /// The request target as received; cloning a `Uri` shares its bytes.
    uri: http::Uri,
    status: StatusCode,
    backend: Option<BackendId>,
    /// The endpoints tried, in order: the first two here, any further in `tried_more`
    /// (only `proxy-next-upstream-tries` above 2 gets there, so it allocates then alone).
    tried: [Option<Target>; 2],
    tried_more: Vec<Target>,
    upstream_status: Option<StatusCode>,
    /// From sending upstream to its response head.
    upstream_time: Option<Duration>,
    error: Option<String>,
    blame: Option<Blame>,
    /// The route's `custom-headers`, set on its answer whatever it is.
    respond_with: Option<Arc<SetHeaders>>,
    /// The route's response header edits (Gateway API), likewise.
    respond_edits: Option<Arc<HeaderEdits>>,
    /// The response header edits of the weighted backend the request went to (a Gateway
    /// API backendRef's own filter), after the route's.
    backend_respond_edits: Option<Arc<HeaderEdits>>,
    /// Fields the request filters set on the answer (CORS).
    answer_headers: Option<SetHeaders>,
    /// The request's place under `limit-connections`, given back with the log line.
    conn_slot: Option<crate::pipeline::ConnSlot>,
    /// The external auth service's cookies, for the answer.
    auth_cookies: Option<AuthCookies>,
}

impl AccessLog {
    fn new(
        proxy: &Arc<Proxy>,
        scheme: Scheme,
        start: Instant,
        client: IpAddr,
        parts: &Parts,
    ) -> Box<Self> {
        Box::new(Self {
            proxy: proxy.clone(),
            scheme,
            start,
            client,
            method: parts.method.clone(),
            host: routes::request_host(parts)
                .map(Cow::into_owned)
                .unwrap_or_default(),
            uri: parts.uri.clone(),
            status: StatusCode::OK,
            backend: None,
            tried: [None, None],
            tried_more: Vec::new(),
            upstream_status: None,
            upstream_time: None,
            error: None,
            blame: None,
            respond_with: None,
            respond_edits: None,
            backend_respond_edits: None,
            answer_headers: None,
            conn_slot: None,
            auth_cookies: None,
        })
    }

    fn tried(&mut self, target: &Target) {
        match &self.tried {
            [None, _] => self.tried[0] = Some(target.clone()),
            [Some(_), None] => self.tried[1] = Some(target.clone()),
            _ => self.tried_more.push(target.clone()),
        }
    }

    fn failed(&mut self, e: &ProxyError) {
        self.error = Some(e.to_string());
        self.blame = Some(e.blame());
    }
}

impl Proxy {
    pub(crate) async fn handle(
        self: &Arc<Self>,
        parts: Box<Parts>,
        body: ClientBody,
        conn: &Conn,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        // One snapshot for the whole request: a swap mid-request changes nothing here.
        let config = self.config.load();
        let client = config.settings.client.client(conn.peer, &parts.headers);
        let mut log = AccessLog::new(self, conn.info.scheme, start, client.addr, &parts);
        let grpc = grpc::is_grpc(&parts.headers);
        let resp = match self
            .proxy(&config, parts, body, conn, client, &mut log)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                log.failed(&e);
                if grpc {
                    grpc::answer(&e)
                } else {
                    e.to_response()
                }
            }
        };
        self.finish(&config, conn, resp, log)
    }

    /// Answers `err` without routing, still logging and observing the response.
    pub(crate) fn reject(
        self: &Arc<Self>,
        parts: Box<Parts>,
        conn: &Conn,
        err: ProxyError,
    ) -> Response<ProxyBody> {
        let config = self.config.load();
        let client = config.settings.client.client(conn.peer, &parts.headers);
        let mut log = AccessLog::new(self, conn.info.scheme, Instant::now(), client.addr, &parts);
        log.failed(&err);
        self.finish(&config, conn, err.to_response(), log)
    }

    /// Phases 1 to 5.
    async fn proxy(
        self: &Arc<Self>,
        config: &Config,
        mut parts: Box<Parts>,
        body: ClientBody,
        conn: &Conn,
        client: Client,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let info = &conn.info;
        // 1. Route.
        upgrade::h2_websocket(&mut parts)?;
        one_authority(&mut parts, self.opts.allow_trace)?;
        let route = route(config, &mut parts, info, &log.host)?;
        let policy: &RoutePolicy = &route.policy;
        if let Some(key) = &policy.response_headers {
            log.respond_with = config.response_headers.get(key).cloned();
        }
        log.respond_edits.clone_from(&policy.response_edits);

        // 2. Request filters. The context ends before any wait, so that no future
        // carries it.
        let (flow, upstream_set, body_limit, rewritten, strip_authorization, external_auth) = {
            let mut ctx = RequestCtx {
                scheme: info.scheme,
                host: &log.host,
                local: info.local,
                client: client.addr,
                http_port: self.opts.http_port,
                https_port: self.opts.https_port,
                body_limit: None,
                rewritten: None,
                credentials: &config.credentials,
                digest_credentials: &config.digest_credentials,
                answer_headers: Vec::new(),
                strip_authorization: false,
                limiter: &self.rate_limits,
                replicas: config.replicas,
                conn_slot: None,
                external_auth: None,
                client_auth: &config.client_auth,
                client_cert: info.client_cert.as_deref(),
                sni: info.sni.as_deref(),
                upstream_set: Vec::new(),
            };
            let flow = policy.request_filters(&mut ctx, &parts);
            // Counted until the answer's body is done, whoever answers.
            log.conn_slot = ctx.conn_slot.take();
            // Whatever answers (a filter, the pod, an error), as nginx's `more_set_headers`.
            if !ctx.answer_headers.is_empty() {
                log.answer_headers = Some(SetHeaders(std::mem::take(&mut ctx.answer_headers)));
            }
            (
                flow,
                ctx.upstream_set,
                ctx.body_limit,
                ctx.rewritten,
                ctx.strip_authorization,
                ctx.external_auth,
            )
        };
        if let Flow::Answer(resp) = flow? {
            return Ok(*resp);
        }
        for (name, value) in upstream_set {
            match value {
                Some(v) => {
                    parts.headers.insert(name, v);
                }
                None => {
                    parts.headers.remove(name);
                }
            }
        }
        if let Some(auth) = external_auth {
            // Boxed: only routes with external auth carry the exchange's state.
            let verdict =
                Box::pin(self.ask_external_auth(config, &auth, policy, &parts, conn, client, log))
                    .await?;
            match verdict {
                Verdict::Deny(resp) => return Ok(*resp),
                Verdict::Allow { headers, cookies } => {
                    for (name, value) in headers {
                        match value {
                            Some(v) => {
                                parts.headers.insert(name, v);
                            }
                            None => {
                                parts.headers.remove(name);
                            }
                        }
                    }
                    if !cookies.cookies.is_empty() {
                        log.auth_cookies = Some(cookies);
                    }
                }
            }
        }
        if let Some(target) = rewritten {
            rewrite(&mut parts, &target)?;
        }
        if strip_authorization {
            parts.headers.remove(header::AUTHORIZATION);
        }
        // The global default backend's own route belongs to no Ingress.
        let catch_all = config
            .default_service
            .as_ref()
            .is_some_and(|d| std::ptr::eq(d, route));
        // An error page is asked for with the request's own headers: keep them while the
        // request goes upstream, on routes that intercept anything.
        let pages = policy.errors.as_ref().filter(|p| !p.codes.is_empty());
        let kept = pages.map(|_| {
            Box::new(Kept {
                method: parts.method.clone(),
                version: parts.version,
                headers: parts.headers.clone(),
            })
        });
        let exchange = Exchange {
            route,
            catch_all,
            body_limit,
            client,
        };
        // Boxed: the futures above it then carry (and move) a pointer, not its state.
        let result = Box::pin(self.exchange(config, exchange, parts, body, conn, log)).await;
        let (Some(pages), Some(kept)) = (pages, kept) else {
            return result;
        };
        // nginx's `error_page` takes the upstream's answers (`proxy_intercept_errors`) and
        // its own for the upstream (502, 503, 504); a client's fault is answered as it is.
        let status = match &result {
            // `disable-proxy-intercept-errors`: the pod's answer stands.
            Ok(_) if pages.pass_upstream => return result,
            Ok(resp) => resp.status(),
            Err(e) if matches!(e.blame(), Blame::Upstream | Blame::Config) => e.status(),
            Err(_) => return result,
        };
        if !pages.intercepts(status) {
            return result;
        }
        if let Err(e) = &result {
            log.failed(e);
        }
        // The upstream's answer is dropped, body and all.
        drop(result);
        tracing::debug!(code = status.as_u16(), route = %route.source, "answering with an error page");
        // Boxed: only requests answered with an error page pay for its state.
        Box::pin(self.error_page(config, &exchange, pages, status, kept, conn, log)).await
    }

    /// Phases 3 to 5: the pick (the route's own default backend takes the request when
    /// its backend has no ready endpoint), the send, the response head.
    async fn exchange(
        self: &Arc<Self>,
        config: &Config,
        ex: Exchange<'_>,
        mut parts: Box<Parts>,
        body: ClientBody,
        conn: &Conn,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let route = ex.route;
        let policy: &RoutePolicy = &route.policy;
        // HTTP/2 and HTTP/3 answers carry no connection-specific fields.
        let client_h2 = matches!(parts.version, Version::HTTP_2 | Version::HTTP_3);
        // 3. Pick: the backend (the route's, or its canary's), then an endpoint.
        // A weighted backend's own filters (a Gateway API backendRef's), if any.
        let mut backend_filters = None;
        let (backend_id, affinity) = match (&policy.weighted, &policy.canary) {
            (Some(w), _) => match w.pick_filtered(|n| rand::random_range(1..=n)) {
                Some((id, filters)) => {
                    backend_filters = filters;
                    (id, policy.affinity.as_ref())
                }
                None => return Err(ProxyError::NoValidBackend(w.invalid().clone())),
            },
            (None, None) => (&route.backend, policy.affinity.as_ref()),
            (None, Some(canary)) => {
                self.canary_or_main(config, &route.backend, policy, canary, &parts)
            }
        };
        let mut affinity = affinity;
        let mut backend = config
            .backends
            .get(backend_id)
            .ok_or_else(|| ProxyError::UnknownBackend(backend_id.clone()))?;
        log.backend = Some(backend.id.clone());

        // The body: read whole first when the route buffers bodies, so that a slow client
        // holds no pod connection meanwhile.
        let upgrade = headers::upgrade_protocol(&parts.headers);
        let grpc = grpc::is_grpc(&parts.headers);
        let body = RequestBody::new(body, config.settings.client_body_timeout, ex.body_limit);
        let body: UpstreamBody = match policy.buffer_body {
            // gRPC streams both ways: its request body is never read whole first.
            Some(memory) if upgrade.is_none() && !grpc && !body.is_end_stream() => {
                // Boxed, as connecting is: only requests with a body pay for its state.
                let whole = Box::pin(BufferedBody::read(body, memory))
                    .await
                    .map_err(ProxyError::from)?;
                Either::Right(Either::Left(Box::new(whole)))
            }
            _ => Either::Left(body),
        };

        let cookie = affinity.and_then(|a| {
            a.find_cookie(
                parts
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        });
        let key = config.affinity_key.as_ref();
        // With no ready endpoint: the route's own default backend, as is.
        let mut stand_in = None;
        let picked = match (&policy.balance, affinity) {
            (Balance::RoundRobin, _) | (_, Some(_)) => {
                self.registry.pick(backend, affinity, key, cookie)
            }
            // The route's balancing is for its own backend; a canary's is round robin.
            (balance, None) if backend.id == route.backend => {
                let hash_key = match balance {
                    Balance::Hash(by) => by.key.expand(&KeyVars {
                        parts: &parts,
                        request_uri: log.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                        host: &log.host,
                        client: ex.client.addr,
                        scheme: match conn.info.scheme {
                            Scheme::Http => "http",
                            Scheme::Https => "https",
                        },
                    }),
                    _ => Vec::new(),
                };
                self.registry.pick_balanced(backend, balance, &hash_key)
            }
            _ => self.registry.pick(backend, affinity, key, cookie),
        };
        let choice = match picked {
            Ok(choice) => choice,
            Err(none) => {
                let own = policy
                    .errors
                    .as_ref()
                    .and_then(|e| e.backend.as_ref())
                    .and_then(|id| config.backends.get(id))
                    .and_then(|b| Some((b, self.registry.pick(b, None, key, None).ok()?)));
                match own {
                    Some((b, choice)) => {
                        tracing::debug!(backend = %backend.id, default_backend = %b.id,
                            "no ready endpoint; the route's default backend answers");
                        stand_in = Some(errors::request_id(&parts.headers));
                        backend = b;
                        affinity = None;
                        log.backend = Some(b.id.clone());
                        choice
                    }
                    None if ex.catch_all => {
                        return Err(ProxyError::DefaultBackendDown(none.0));
                    }
                    None => {
                        return Err(match &backend.kind {
                            BackendKind::Unresolved(reason) => ProxyError::Unresolved {
                                backend: backend.id.clone(),
                                reason: reason.clone(),
                            },
                            _ => none.into(),
                        })
                    }
                }
            }
        };

        // Response times feed the route's own backend's scores, not a stand-in's.
        let ewma = matches!(policy.balance, Balance::Ewma)
            && stand_in.is_none()
            && backend.id == route.backend;
        let client_upgrade = if upgrade.is_some() {
            match parts.extensions.remove::<ClientUpgrade>() {
                Some(h1) => Some(upgrade::ClientSide::H1(h1)),
                None => parts
                    .extensions
                    .remove::<upgrade::H2WebSocket>()
                    .and_then(|ws| ws.take())
                    .map(upgrade::ClientSide::H2),
            }
        } else {
            None
        };
        let accept = stand_in
            .as_ref()
            .and_then(|_| errors::joined(&parts.headers, &header::ACCEPT));
        let fwd = Forwarding {
            client: ex.client,
            policy: &config.settings.client,
            host: (!log.host.is_empty()).then_some(log.host.as_str()),
        };
        let protocol = policy.protocol.or(backend.protocol).unwrap_or_default();
        let dial = dial(
            config,
            &backend.id,
            (
                policy.upstream_tls.as_ref(),
                policy.backend_client_cert.as_ref(),
            ),
            protocol,
            conn.info.scheme,
            upgrade.is_some(),
            &log.host,
        )?;
        let mut timeouts = policy.timeouts;
        if grpc {
            // The call's own deadline bounds the wait for its answer.
            if let Some(deadline) = grpc::timeout(&parts.headers) {
                timeouts.read = timeouts.read.min(deadline);
            }
        }
        let te_trailers = grpc && headers::asks_trailers(&parts.headers);
        // Upgrades and gRPC streams are not mirrored: their bodies are the exchange.
        let mirrorable = upgrade.is_none() && !grpc;
        let forwarded = headers::prepare_upstream(&mut parts, conn, &fwd, upgrade);
        let global = &config.settings.proxy_set_headers;
        // Handed to the send, which writes them after the others (Portico's own HTTP/1.1
        // client) or sets them in the map, when nothing below may set their names;
        // otherwise they go in the map here.
        let forwarded = if forwarded.appendable
            && global.is_empty()
            && policy.upstream_headers.edits.is_none()
            && backend_filters.is_none()
            && stand_in.is_none()
            && !(mirrorable && policy.mirrors.is_some())
        {
            Some(forwarded)
        } else {
            forwarded.add_to(&mut parts.headers);
            None
        };
        if te_trailers && matches!(dial, Dial::H2c | Dial::Tls { alpn: Alpn::H2, .. }) {
            // gRPC servers may insist on it; HTTP/2 allows this one `TE` value.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if !global.is_empty() {
            global.apply(&mut parts.headers);
        }
        policy.upstream_headers.apply(&mut parts.headers);
        if let Some(f) = backend_filters {
            if let Some(edits) = &f.request {
                edits.apply(&mut parts.headers);
            }
            log.backend_respond_edits.clone_from(&f.response);
        }
        if let Some(request_id) = stand_in {
            ErrorInfo {
                code: StatusCode::SERVICE_UNAVAILABLE,
                accept,
                original_uri: None,
                route: Some(route),
                request_id,
            }
            .apply(&mut parts.headers);
        }
        if let Either::Right(Either::Left(whole)) = &body {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
        }
        if let (Some(mirrors), true) = (&policy.mirrors, mirrorable) {
            // The request as the backend gets it, every filter applied.
            self.mirror(
                config,
                mirrors,
                policy.backend_client_cert.as_ref(),
                &parts,
                &body,
                conn.info.scheme,
                &log.host,
                timeouts,
            );
        }
        let req = Box::new(Request::from_parts(*parts, body));

        // 4. Send.
        let (sent, choice) = self
            .send(
                config,
                Destination {
                    backend,
                    affinity,
                    timeouts,
                    dial: &dial,
                    next_upstream: policy.next_upstream.as_ref(),
                    ewma,
                    forwarded: forwarded.as_ref(),
                },
                choice,
                req,
                log,
            )
            .await?;
        let Sent {
            mut resp,
            link,
            stream,
            connection_names,
            ..
        } = sent;
        log.upstream_status = Some(resp.status());

        // 5. Response head. An HTTP/1 client gets the pod's fields as they came unless
        // something here reads or edits them.
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if client_h2 || switching || connection_names {
            let fields = read_pod_fields(&mut resp);
            headers::prepare_downstream(fields, switching, client_h2, connection_names);
        }
        let mut accepted_h2 = None;
        if switching {
            let Some(client) = client_upgrade else {
                return Err(ProxyError::UnexpectedUpgrade {
                    target: choice.target,
                });
            };
            if matches!(client, upgrade::ClientSide::H2(_)) {
                accepted_h2 = Some(upgrade::h2_accepted(resp.headers()));
            }
            let upstream = super::upstream::on_upgrade(&mut resp);
            upgrade::spawn_tunnel(
                client,
                upstream,
                choice.target.clone(),
                policy.timeouts.read,
                self.shutdown.track(),
            );
        }
        if let (Some(value), Some(affinity)) = (&choice.set_cookie, affinity) {
            if let Ok(v) = HeaderValue::from_str(&affinity.set_cookie(value)) {
                read_pod_fields(&mut resp).append(header::SET_COOKIE, v);
            }
        }
        if let Some(mut accepted) = accepted_h2 {
            // The HTTP/2 stream carries the tunnel: its answer is a bodiless 200.
            if let Some(cookie) = resp.headers().get(header::SET_COOKIE) {
                accepted
                    .headers_mut()
                    .insert(header::SET_COOKIE, cookie.clone());
            }
            return Ok(accepted);
        }
        let read = policy.timeouts.read;
        let mut resp = resp.map(|b| ProxyBody::upstream(b, read, stream));
        if let Some(l) = policy.limit_rate {
            resp.body_mut().throttle(l.rate, l.after);
        }
        if let (true, Some(stalls)) = (client_h2, &conn.stalls) {
            resp.body_mut().watched(stalls.watch(link));
        }
        Ok(resp)
    }

    /// Phase 5, for an intercepted answer: a `GET /` (the query kept; `HEAD` stays
    /// `HEAD`) with the request's headers and the `X-Code` family, to the route's own
    /// default backend when it has a ready endpoint, else to the global one. Its answer
    /// is the client's, status included. With neither, 404, as ingress-nginx's internal
    /// catch-all answers then.
    #[allow(clippy::too_many_arguments)]
    async fn error_page(
        self: &Arc<Self>,
        config: &Config,
        ex: &Exchange<'_>,
        pages: &ErrorPages,
        code: StatusCode,
        kept: Box<Kept>,
        conn: &Conn,
        log: &mut AccessLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let key = config.affinity_key.as_ref();
        let candidates = pages
            .backend
            .iter()
            .chain(config.default_service.as_ref().map(|d| &d.backend));
        let picked = candidates
            .filter_map(|id| config.backends.get(id))
            .find_map(|b| Some((b, self.registry.pick(b, None, key, None).ok()?)));
        let Some((backend, choice)) = picked else {
            return Err(ProxyError::NoErrorBackend(code));
        };
        log.backend = Some(backend.id.clone());

        let mut parts = Request::new(()).into_parts().0;
        parts.method = if kept.method == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        };
        let target = match log.uri.query() {
            Some(q) => format!("/?{q}"),
            None => "/".to_owned(),
        };
        parts.uri = target
            .parse()
            .map_err(|_| ProxyError::BadRequest("query cannot be sent to the default backend"))?;
        parts.headers = kept.headers;
        // No body goes with it.
        for name in [header::CONTENT_LENGTH, header::EXPECT] {
            parts.headers.remove(name);
        }
        let info = ErrorInfo {
            code,
            accept: errors::joined(&parts.headers, &header::ACCEPT),
            original_uri: log.uri.path_and_query().map(|pq| pq.as_str()),
            route: (!ex.catch_all).then_some(ex.route),
            request_id: errors::request_id(&parts.headers),
        };
        let mut headers = HeaderMap::new();
        info.apply(&mut headers);
        let fwd = Forwarding {
            client: ex.client,
            policy: &config.settings.client,
            host: (!log.host.is_empty()).then_some(log.host.as_str()),
        };
        headers::prepare_upstream(&mut parts, conn, &fwd, None).add_to(&mut parts.headers);
        parts.headers.extend(headers);
        let body: UpstreamBody = Either::Right(Either::Right(Empty::new()));
        let req = Box::new(Request::from_parts(parts, body));
        let timeouts = ex.route.policy.timeouts;
        let to = Destination {
            backend,
            affinity: None,
            timeouts,
            dial: &Dial::Http1,
            next_upstream: None,
            ewma: false,
            forwarded: None,
        };
        let (sent, choice) = self.send(config, to, choice, req, log).await?;
        let Sent {
            mut resp,
            link,
            stream,
            ..
        } = sent;
        log.upstream_status = Some(resp.status());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ProxyError::UnexpectedUpgrade {
                target: choice.target,
            });
        }
        headers::prepare_downstream(read_pod_fields(&mut resp), false, true, true);
        let mut resp = resp.map(|b| ProxyBody::upstream(b, timeouts.read, stream));
        if let (Version::HTTP_2, Some(stalls)) = (kept.version, &conn.stalls) {
            resp.body_mut().watched(stalls.watch(link));
        }
        Ok(resp)
    }

    /// Phase 4: sends on the picked endpoint, and passes the request on to another
    /// endpoint (never one already tried) as `proxy-next-upstream` allows: after a failed
    /// connect (nothing was sent) under `error`/`timeout`; after a failure or an `http_*`
    /// answer once sent, only when the route sets the policy, the method allows it
    /// (`non_idempotent`) and the body is held whole (none, or buffered in memory).
    async fn send(
        &self,
        config: &Config,
        to: Destination<'_>,
        mut choice: Choice,
        mut req: Outbound,
        log: &mut AccessLog,
    ) -> Result<(Sent, Choice), ProxyError> {
        let Destination {
            backend,
            affinity,
            timeouts,
            dial,
            next_upstream,
            ewma,
            forwarded,
        } = to;
        let limits = next_upstream.copied().unwrap_or_default();
        // Read only when there is a time limit to keep.
        let started = limits.timeout.map(|_| Instant::now());
        // Whether another try is allowed after `tries`.
        let more = |tries: u32| {
            limits.may_try(tries + 1)
                && limits
                    .timeout
                    .zip(started)
                    .is_none_or(|(t, s)| s.elapsed() < t)
        };
        let mut tries = 1u32;
        // The endpoints already tried: allocated on the first retry only.
        let mut tried: Vec<Target> = Vec::new();
        loop {
            log.tried(&choice.target);
            // A copy to send again, kept only on routes that ask for resending.
            let copy = match next_upstream {
                Some(n) if n.resends() && n.method_allows(req.method()) => resendable(&req),
                _ => None,
            };
            let sent_at = Instant::now();
            let slow = || self.registry.connect_slow(&backend.id, &choice.target);
            // Boxed: its state (the request, a replay copy, the response wait) would
            // otherwise be carried, and moved, by every future above it.
            let sent = Box::pin(self.pool.send(
                &choice.target,
                dial,
                timeouts,
                req,
                forwarded,
                sent_at.into(),
                slow,
            ));
            let (error, again) = match sent.await {
                Ok(sent) => {
                    let elapsed = sent_at.elapsed();
                    log.upstream_time = Some(elapsed);
                    if sent.fresh {
                        self.registry.connect_succeeded(&backend.id, &choice.target);
                    }
                    if ewma {
                        self.registry.observe(&backend.id, &choice.target, elapsed);
                    }
                    let status = sent.resp.status();
                    let pass_on = next_upstream.is_some_and(|n| n.on_status(status)) && more(tries);
                    let (true, Some(copy)) = (pass_on, copy) else {
                        return Ok((sent, choice));
                    };
                    tried.push(choice.target.clone());
                    let key = config.affinity_key.as_ref();
                    let Some(next) = self
                        .registry
                        .pick_retry(backend, affinity, key, &tried, &choice)
                    else {
                        // Nowhere else to go: this answer is the client's.
                        return Ok((sent, choice));
                    };
                    tracing::debug!(backend = %backend.id, answered = %choice.target,
                        status = status.as_u16(), next = %next.target,
                        "passing the request to another endpoint");
                    // The answer is dropped, and its connection with it.
                    drop(sent);
                    choice = next;
                    req = copy;
                    tries += 1;
                    continue;
                }
                Err(SendError {
                    error,
                    request: Some(back),
                }) if error.retry_safe() => {
                    self.registry.connect_failed(&backend.id, &choice.target);
                    let cond = match error {
                        ProxyError::ConnectTimeout { .. } => Condition::Timeout,
                        _ => Condition::Error,
                    };
                    if !(limits.on(cond) && more(tries)) {
                        return Err(error);
                    }
                    (error, back)
                }
                Err(SendError { error, .. }) => {
                    if !matches!(error.blame(), Blame::Client) {
                        log.upstream_time = Some(sent_at.elapsed());
                    }
                    let cond = match &error {
                        ProxyError::ResponseTimeout { .. }
                        | ProxyError::SendTimeout { .. }
                        | ProxyError::ConnectTimeout { .. } => Some(Condition::Timeout),
                        ProxyError::Upstream { source, .. } if source.is_parse() => {
                            Some(Condition::InvalidHeader)
                        }
                        ProxyError::UpstreamHttp1 {
                            source: PodError::Head(_) | PodError::HeadTooLarge,
                            ..
                        } => Some(Condition::InvalidHeader),
                        ProxyError::Upstream { .. }
                        | ProxyError::UpstreamHttp1 { .. }
                        | ProxyError::UpstreamTls { .. }
                        | ProxyError::Connect { .. } => Some(Condition::Error),
                        _ => None,
                    };
                    match (cond, copy) {
                        (Some(c), Some(copy)) if limits.on(c) && more(tries) => (error, copy),
                        _ => return Err(error),
                    }
                }
            };
            tried.push(choice.target.clone());
            let next = self.registry.pick_retry(
                backend,
                affinity,
                config.affinity_key.as_ref(),
                &tried,
                &choice,
            );
            let Some(next) = next else {
                return Err(error);
            };
            tracing::debug!(backend = %backend.id, failed = %choice.target,
                next = %next.target, error = %error, "passing the request to another endpoint");
            choice = next;
            req = again;
            tries += 1;
        }
    }

    /// Phase 2, last, on a route with `auth-url`: asks the authentication service about
    /// the request (its head only) on a connection of its own, within the route's
    /// connect and read timeouts. A service that cannot be reached is a 500.
    #[allow(clippy::too_many_arguments)]
    async fn ask_external_auth(
        &self,
        config: &Config,
        auth: &ExternalAuth,
        policy: &RoutePolicy,
        parts: &Parts,
        conn: &Conn,
        client: Client,
        log: &mut AccessLog,
    ) -> Result<Verdict, ProxyError> {
        let settings = &config.settings.client;
        // ingress-nginx's `$full_x_forwarded_for` with both settings on, else the client.
        let forwarded_for = if settings.use_forwarded_headers && settings.compute_full_forwarded_for
        {
            match errors::joined(&parts.headers, &headers::X_FORWARDED_FOR) {
                Some(prior) => format!("{prior}, {}", conn.peer),
                None => conn.peer.to_string(),
            }
        } else {
            client.addr.to_string()
        };
        let request_uri = log.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let vars = Vars {
            scheme: conn.info.scheme,
            host: &log.host,
            headers: &parts.headers,
            request_uri,
            path: parts.uri.path(),
            query: parts.uri.query(),
            method: &parts.method,
            client: client.addr,
            forwarded_for: &forwarded_for,
            server_port: conn.info.local.port(),
        };
        // ingress-nginx's cache key: the server, the location and the expanded key.
        let cache_key = auth
            .cache
            .as_ref()
            .map(|c| format!("{}\0{}\0{}", c.scope, log.host, c.key.expand(&vars)));
        if let Some((status, headers)) = cache_key
            .as_deref()
            .and_then(|k| self.auth_decisions.get(k))
        {
            tracing::debug!(
                status = status.as_u16(),
                "external auth answered from the cache"
            );
            return Ok(auth.judge(status, &headers, &vars));
        }
        let extra = match &auth.proxy_set_headers {
            None => None,
            Some(key) => Some(config.auth_proxy_set_headers.get(key).ok_or_else(|| {
                // Fail closed: the service may need those fields to judge the request.
                ProxyError::Refused(
                    format!("auth-proxy-set-headers ConfigMap {key} could not be used").into(),
                )
            })?),
        };
        let ask = auth.request(parts, &vars, extra.map(|e| &**e))?;
        let dial = if ask.tls {
            // nginx's defaults for the auth location: SNI on, the certificate unchecked.
            Dial::Tls {
                tls: UpstreamTls::unverified_sni(),
                alpn: Alpn::Http11,
                name: rustls::pki_types::ServerName::try_from(ask.host.clone()).ok(),
            }
        } else {
            Dial::Http1
        };
        let mut req = Request::new(Either::Right(Either::Right(Empty::new())));
        *req.method_mut() = ask.method;
        *req.uri_mut() = ask.uri;
        *req.headers_mut() = ask.headers;
        let sent = self
            .pool
            .send(
                &ask.target,
                &dial,
                policy.timeouts,
                Box::new(req),
                None,
                tokio::time::Instant::now(),
                || {},
            )
            .await;
        let resp = match sent {
            Ok(mut sent) => {
                read_pod_fields(&mut sent.resp);
                sent.resp
            }
            Err(e) => {
                return Err(ProxyError::ExternalAuth(format!(
                    "asking {} failed: {}",
                    ask.target, e.error
                )))
            }
        };
        let status = resp.status();
        tracing::debug!(service = %ask.target, status = status.as_u16(), "external auth answered");
        if let (Some(cache), Some(key)) = (&auth.cache, cache_key) {
            if let Some(ttl) = cache.ttl(status, resp.headers()) {
                self.auth_decisions
                    .put(key, status, resp.headers().clone(), ttl);
            }
        }
        let verdict = auth.judge(status, resp.headers(), &vars);
        if let Verdict::Deny(r) = &verdict {
            if r.status() == StatusCode::INTERNAL_SERVER_ERROR {
                log.error = Some(format!(
                    "external auth: {} answered {}",
                    ask.target,
                    status.as_u16()
                ));
                log.blame = Some(Blame::Upstream);
            }
        }
        Ok(verdict)
    }

    /// Phase 3, first, on a route with a canary: which backend the request goes to, and
    /// that backend's cookie affinity. A session's own backend keeps it (the main's
    /// first); otherwise the canary's rule decides.
    fn canary_or_main<'c>(
        &self,
        config: &'c Config,
        main: &'c BackendId,
        policy: &'c RoutePolicy,
        canary: &'c Canary,
        parts: &Parts,
    ) -> (&'c BackendId, Option<&'c CookieAffinity>) {
        let key = config.affinity_key.as_ref();
        let owns = |id: &BackendId, affinity: Option<&CookieAffinity>| {
            let (Some(affinity), Some(backend)) = (affinity, config.backends.get(id)) else {
                return false;
            };
            let cookies = parts.headers.get_all(header::COOKIE).iter();
            affinity
                .find_cookie(cookies.map(HeaderValue::as_bytes))
                .is_some_and(|c| self.registry.owns_session(backend, affinity, key, c))
        };
        let main_session = owns(main, policy.affinity.as_ref());
        let affinitized = Affinitized {
            main: main_session,
            canary: !main_session && owns(&canary.backend, canary.affinity.as_ref()),
        };
        let to_canary = canary
            .rule
            .to_canary(&parts.headers, affinitized, |n| rand::random_range(1..=n));
        tracing::trace!(main = %main, canary = %canary.backend, to_canary, "canary decision");
        if to_canary {
            (&canary.backend, canary.affinity.as_ref())
        } else {
            (main, policy.affinity.as_ref())
        }
    }

    /// Phase 5 for every answer, proxied or not (`Server`, HSTS), and phase 6 hooked to
    /// the end of the body.
    fn finish(
        self: &Arc<Self>,
        config: &Config,
        conn: &Conn,
        mut resp: Response<ProxyBody>,
        mut log: Box<AccessLog>,
    ) -> Response<ProxyBody> {
        let settings = &config.settings;
        set_field(&mut resp, header::SERVER, settings.server.clone());
        if let Some((name, value)) = settings
            .hsts
            .as_ref()
            .and_then(|h| h.field(conn.info.scheme))
        {
            set_field(&mut resp, name, value);
        }
        if let (Scheme::Https, false, Some(alt_svc)) =
            (conn.info.scheme, conn.http3, &self.opts.alt_svc)
        {
            set_field(&mut resp, header::ALT_SVC, alt_svc.clone());
        }
        // The fields set above need not read the pod's (see `read_pod_fields`); the
        // edits below may remove, append or read, so each reads them first.
        // After Portico's own, as headers-more's filter runs after nginx's.
        if let Some(set) = log.answer_headers.take() {
            set.apply(read_pod_fields(&mut resp));
        }
        if let Some(set) = log.respond_with.take() {
            set.apply(read_pod_fields(&mut resp));
        }
        if let Some(edits) = log.respond_edits.take() {
            edits.apply(read_pod_fields(&mut resp));
        }
        if let Some(edits) = log.backend_respond_edits.take() {
            edits.apply(read_pod_fields(&mut resp));
        }
        if let Some(cookies) = log.auth_cookies.take() {
            let status = resp.status();
            cookies.apply(status, read_pod_fields(&mut resp));
        }
        log.status = resp.status();
        resp.body_mut().on_done(log);
        resp
    }
}

impl OnDone for AccessLog {
    /// Phase 6: one access-log line per request, and the metrics observer.
    fn done(mut self: Box<Self>, bytes: u64, end: BodyEnd) {
        let log = &mut *self;
        match end {
            BodyEnd::Complete => {}
            BodyEnd::UpstreamTimeout | BodyEnd::UpstreamError => {
                log.blame = Some(Blame::Upstream);
                log.error.get_or_insert_with(|| match end {
                    BodyEnd::UpstreamTimeout => "upstream stalled mid-body".to_owned(),
                    _ => "upstream broke off the body".to_owned(),
                });
            }
            BodyEnd::ClientGone => {
                log.blame.get_or_insert(Blame::Client);
                log.error
                    .get_or_insert_with(|| "client went away".to_owned());
            }
        }
        let total = log.start.elapsed();
        let tried = Tried(&log.tried, &log.tried_more);
        let fields = (
            Dash(log.backend.as_ref()),
            Dash(log.upstream_status.map(|s| s.as_u16())),
            Dash(log.upstream_time.map(Secs)),
        );
        let host = if log.host.is_empty() { "-" } else { &log.host };
        let blame = log.blame.map(Blame::as_str).unwrap_or("-");
        // One line, at a level fixed per call site (tracing's levels are static): the
        // fields are written once here for both.
        macro_rules! access {
            ($level:ident $(, $extra:tt)*) => {
                tracing::$level!(
                    target: "portico::access",
                    client = %log.client, method = %log.method, host, path = log.uri.path(),
                    status = log.status.as_u16(), bytes_sent = bytes,
                    request_time = %Secs(total), backend = %fields.0, upstream_addr = %tried,
                    upstream_status = %fields.1, upstream_response_time = %fields.2, blame
                    $(, $extra)*
                )
            };
        }
        // A failure the proxy or the upstream caused is a warning; a client that went
        // away or sent garbage is routine.
        if matches!(
            log.blame,
            Some(Blame::Upstream | Blame::Config | Blame::Internal)
        ) && log.status.is_server_error()
            || matches!(end, BodyEnd::UpstreamTimeout | BodyEnd::UpstreamError)
        {
            let error = log.error.as_deref().unwrap_or("-");
            access!(warn, error, "request failed");
        } else {
            access!(info);
        }
        if let Some(observer) = &log.proxy.opts.observer {
            observer.on_response(&ResponseEvent {
                client: log.client,
                scheme: log.scheme,
                host: &log.host,
                method: &log.method,
                path: log.uri.path(),
                status: log.status,
                backend: log.backend.as_ref(),
                endpoint: log
                    .tried_more
                    .last()
                    .or(log.tried[1].as_ref())
                    .or(log.tried[0].as_ref()),
                upstream_latency: log.upstream_time,
                total_latency: total,
                bytes_sent: bytes,
                blame: log.blame,
            });
        }
    }
}

/// What phases 3 to 5 need of phases 1 and 2.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    route: &'a RouteTarget,
    /// The route is the global default backend's (`Config::default_service`).
    catch_all: bool,
    body_limit: Option<u64>,
    client: Client,
}

/// What an error page request takes from the request it answers for.
struct Kept {
    method: Method,
    version: Version,
    headers: HeaderMap,
}

/// Where phase 4 sends: the backend phase 3 chose, its cookie affinity, and the route's
/// timeouts.
#[derive(Clone, Copy)]
struct Destination<'a> {
    backend: &'a Backend,
    affinity: Option<&'a CookieAffinity>,
    timeouts: Timeouts,
    dial: &'a Dial,
    /// The route's `proxy-next-upstream`, if it sets one.
    next_upstream: Option<&'a NextUpstream>,
    /// Response times feed the backend's EWMA scores.
    ewma: bool,
    /// Forwarding fields for Portico's own HTTP/1.1 client to write after the request's.
    forwarded: Option<&'a Forwarded>,
}

/// How the route's protocol reaches the pod for this request. A WebSocket upgrade
/// offers only HTTP/1.1 over TLS, since HTTP/2 to pods does not carry it.
pub(super) fn dial(
    config: &Config,
    backend: &BackendId,
    (upstream_tls, client_cert): (Option<&Arc<str>>, Option<&Arc<str>>),
    protocol: BackendProtocol,
    scheme: super::Scheme,
    upgrade: bool,
    host: &str,
) -> Result<Dial, ProxyError> {
    // A BackendTLSPolicy's backend: TLS with its setting, whatever the route asks.
    let required = match config.backend_tls.is_empty() {
        true => None,
        false => config.backend_tls.get(backend),
    };
    // Through a Gateway with a backend client certificate: the policy's setting that
    // presents it, or none at all (503) when that could not be made.
    let required = match (required, client_cert) {
        (Some(key), Some(cert)) => Some(
            config
                .backend_client_certs
                .get(cert)
                .and_then(|with| with.get(key))
                .ok_or_else(|| ProxyError::UpstreamTlsUnusable(key.clone()))?,
        ),
        (required, _) => required,
    };
    let tls = |alpn: Alpn| {
        let tls = match required.or(upstream_tls) {
            None => UpstreamTls::unverified(),
            Some(key) => config
                .upstream_tls
                .get(key)
                .cloned()
                .ok_or_else(|| ProxyError::UpstreamTlsUnusable(key.clone()))?,
        };
        let name = tls.name_for(host);
        Ok(Dial::Tls { tls, alpn, name })
    };
    let either = if upgrade { Alpn::Http11 } else { Alpn::Either };
    if required.is_some() {
        return match protocol {
            BackendProtocol::Grpc | BackendProtocol::Grpcs | BackendProtocol::H2c => tls(Alpn::H2),
            _ => tls(either),
        };
    }
    match protocol {
        BackendProtocol::Http => Ok(Dial::Http1),
        BackendProtocol::AutoHttp if scheme == super::Scheme::Http => Ok(Dial::Http1),
        BackendProtocol::Https | BackendProtocol::AutoHttp => tls(either),
        BackendProtocol::Grpc | BackendProtocol::H2c => Ok(Dial::H2c),
        BackendProtocol::Grpcs => tls(Alpn::H2),
    }
}

/// Phase 1, first: the request names exactly one host, and the `Host` the upstream gets
/// is the one the request was routed by. An absolute-form target (HTTP/1.1) or
/// `:authority` (HTTP/2) replaces `Host` (RFC 9112 §3.2.2); an HTTP/2 `host` header that
/// disagrees with `:authority`, several `Host` headers, or none on HTTP/1.1 is a 400.
/// Portico is not a forward proxy (CONNECT) and does not echo requests (TRACE) unless
/// told to.
fn one_authority(parts: &mut Parts, allow_trace: bool) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT || (parts.method == Method::TRACE && !allow_trace) {
        return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, more) = (hosts.next(), hosts.next().is_some());
    if more {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    match parts.uri.authority() {
        Some(authority) => {
            if matches!(parts.version, Version::HTTP_2 | Version::HTTP_3) {
                if let Some(host) = first {
                    if !host
                        .as_bytes()
                        .eq_ignore_ascii_case(authority.as_str().as_bytes())
                    {
                        return Err(ProxyError::BadRequest("Host differs from :authority"));
                    }
                }
            }
            let value = HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("authority is not a valid Host"))?;
            parts.headers.insert(header::HOST, value);
        }
        None if first.is_none() && parts.version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
        }
        None => {}
    }
    Ok(())
}

/// Phase 1: routes on the canonical path and rewrites the request to it, so the
/// backend sees exactly what was matched (`/a/../admin` cannot reach a backend as
/// anything but `/admin`).
fn route<'c>(
    config: &'c Config,
    parts: &mut Parts,
    info: &super::ConnInfo,
    host: &str,
) -> Result<&'c RouteTarget, ProxyError> {
    let path = routes::normalize_path(parts.uri.path())
        .map_err(|_| ProxyError::BadRequest("path cannot be normalized"))?;
    // A Gateway's own address: its rules alone.
    let own = match config.routes_at.is_empty() {
        true => None,
        false => config.routes_at.get(&info.arrived_at()),
    };
    let found = own
        .unwrap_or(&config.routes)
        .lookup_on(info.scheme, host, &path, Some(parts));
    // Nothing for the host, on a connection made for a Gateway listener with a
    // hostname that is not the host's: misdirected, not unknown.
    if let (None, Some(sni), Scheme::Https) = (found, info.sni.as_deref(), info.scheme) {
        if !config.gateway_sni.is_empty() {
            let mut chosen = config
                .gateway_sni
                .iter()
                .filter(|s| s.admits(sni))
                .peekable();
            if chosen.peek().is_some() && !chosen.any(|s| s.admits(host)) {
                return Err(ProxyError::Misdirected);
            }
        }
    }
    let route = match own {
        Some(_) => found,
        None => found
            .or(config.default_backend.as_ref())
            .or(config.default_service.as_ref()),
    }
    .ok_or(ProxyError::NoRoute)?;
    if let Cow::Owned(canonical) = &path {
        let uri = match parts.uri.query() {
            Some(q) => format!("{canonical}?{q}"),
            None => canonical.clone(),
        };
        // Keep scheme and authority: HTTP/2 carries the host there.
        let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
        uri_parts.path_and_query = uri.parse().ok();
        parts.uri = http::Uri::from_parts(uri_parts)
            .map_err(|_| ProxyError::BadRequest("path cannot be normalized"))?;
    }
    Ok(route)
}

/// Sends the request upstream with `target` (path and query) instead of its own, keeping
/// scheme and authority (HTTP/2 carries the host there).
fn rewrite(parts: &mut Parts, target: &str) -> Result<(), ProxyError> {
    let pq = target
        .parse()
        .map_err(|_| ProxyError::BadRequest("rewritten path is not a valid request target"))?;
    let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
    uri_parts.path_and_query = Some(pq);
    parts.uri = http::Uri::from_parts(uri_parts)
        .map_err(|_| ProxyError::BadRequest("rewritten path is not a valid request target"))?;
    Ok(())
}

/// Seconds with millisecond precision, as nginx logs times: `0.005`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        write!(f, "{}.{:03}", ms / 1000, ms % 1000)
    }
}

/// A value, or `-` when there is none, as nginx logs a missing variable.
struct Dash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The endpoints tried, `a, b` as nginx's `$upstream_addr`.
struct Tried<'a>(&'a [Option<Target>; 2], &'a [Target]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [None, _] => f.write_str("-"),
            [Some(a), None] => a.fmt(f),
            [Some(a), Some(b)] => {
                write!(f, "{a}, {b}")?;
                self.1.iter().try_for_each(|t| write!(f, ", {t}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_values_read_as_nginx_writes_them() {
        assert_eq!(Secs(Duration::from_micros(605_397)).to_string(), "0.605");
        assert_eq!(Secs(Duration::from_millis(12_034)).to_string(), "12.034");
        assert_eq!(Dash::<u16>(None).to_string(), "-");
        assert_eq!(Dash(Some(502)).to_string(), "502");
        let a = Target::Addr("10.0.0.1:80".parse().unwrap());
        let b = Target::Addr("10.0.0.2:80".parse().unwrap());
        assert_eq!(
            Tried(&[Some(a.clone()), Some(b.clone())], &[]).to_string(),
            "10.0.0.1:80, 10.0.0.2:80"
        );
        assert_eq!(
            Tried(&[Some(a.clone()), Some(b)], std::slice::from_ref(&a)).to_string(),
            "10.0.0.1:80, 10.0.0.2:80, 10.0.0.1:80"
        );
        assert_eq!(Tried(&[Some(a), None], &[]).to_string(), "10.0.0.1:80");
        assert_eq!(Tried(&[None, None], &[]).to_string(), "-");
    }
}
