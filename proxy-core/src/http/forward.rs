//! One request: route, pick, forward (with one retry after a refused connect), relay the
//! response, log it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::errors::ProxyError;
use super::upstream::SendError;
use super::{headers, upgrade, Conn, ConnInfo, Proxy, ProxyBody, ResponseEvent, Scheme};
use crate::balance::Target;
use crate::config::{BackendId, Config};
use crate::routes;

/// What the access log needs to know about how a request went.
#[derive(Default)]
struct Trace {
    backend: Option<BackendId>,
    endpoint: Option<Target>,
    upstream: Option<Duration>,
}

impl Proxy {
    pub(crate) async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Conn,
    ) -> Response<ProxyBody> {
        let info = &conn.info;
        let start = Instant::now();
        // One snapshot for the whole request: a swap mid-request changes nothing here.
        let config = self.config.load();
        self.registry.prune(&config);
        self.pool.prune(&config);

        let (parts, body) = req.into_parts();
        let host = routes::request_host(&parts)
            .map(|h| h.into_owned())
            .unwrap_or_default();
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let mut trace = Trace::default();
        let resp = match self
            .forward(&config, parts, body, conn, &host, &mut trace)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(host = %host, path = %path, backend = ?trace.backend.as_ref().map(ToString::to_string), error = %e, "request failed");
                }
                e.to_response()
            }
        };
        let ev = ResponseEvent {
            remote: info.remote,
            scheme: info.scheme,
            host: &host,
            method: &method,
            path: &path,
            status: resp.status(),
            backend: trace.backend.as_ref(),
            endpoint: trace.endpoint.as_ref(),
            upstream_latency: trace.upstream,
            total_latency: start.elapsed(),
        };
        self.record(&ev);
        resp
    }

    /// Answers `err` without routing, still logging and observing the response.
    pub(crate) fn reject(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
        err: ProxyError,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let (parts, _body) = req.into_parts();
        let host = routes::request_host(&parts).unwrap_or_default();
        tracing::info!(remote = %info.remote, error = %err, "rejecting request");
        let resp = err.to_response();
        self.record(&ResponseEvent {
            remote: info.remote,
            scheme: info.scheme,
            host: &host,
            method: &parts.method,
            path: parts.uri.path(),
            status: resp.status(),
            backend: None,
            endpoint: None,
            upstream_latency: None,
            total_latency: start.elapsed(),
        });
        resp
    }

    fn record(&self, ev: &ResponseEvent<'_>) {
        tracing::info!(
            target: "portico::access",
            remote = %ev.remote,
            method = %ev.method,
            host = ev.host,
            path = ev.path,
            status = ev.status.as_u16(),
            backend = ev.backend.map(tracing::field::display),
            endpoint = ev.endpoint.map(tracing::field::display),
            upstream_ms = ev.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            total_ms = ev.total_latency.as_secs_f64() * 1000.0,
        );
        if let Some(observer) = &self.opts.observer {
            observer.on_response(ev);
        }
    }

    async fn forward(
        self: &Arc<Self>,
        config: &Config,
        mut parts: Parts,
        body: Incoming,
        conn: &Conn,
        host: &str,
        trace: &mut Trace,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let info = &conn.info;
        // Route on the canonical path and send the upstream that same path, so the
        // backend sees exactly what was matched (`/a/../admin` cannot reach a backend
        // as anything but `/admin`).
        let path = routes::normalize_path(parts.uri.path())
            .map_err(|_| ProxyError::BadRequest("path cannot be normalized"))?;
        let route = config
            .routes
            .lookup(host, &path)
            .or(config.default_backend.as_ref())
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
        if route.ssl_redirect && info.scheme == Scheme::Http {
            return Ok(self.redirect(host, &parts, info));
        }
        let backend = config
            .backends
            .get(&route.backend)
            .ok_or_else(|| ProxyError::UnknownBackend(route.backend.clone()))?;
        trace.backend = Some(backend.id.clone());

        let cookie = backend.affinity.as_ref().and_then(|policy| {
            policy.find_cookie(
                parts
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        });
        let mut choice = self.registry.pick(backend, cookie)?;

        let upgrade = headers::upgrade_protocol(&parts.headers);
        let client_upgrade = if upgrade.is_some() {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        headers::prepare_upstream(&mut parts, conn, Some(host), upgrade);
        let mut req = Request::from_parts(parts, Either::Left(body));

        let mut retried = false;
        let mut resp = loop {
            trace.endpoint = Some(choice.target.clone());
            let sent_at = Instant::now();
            match self.pool.send(backend, &choice.target, req).await {
                Ok((resp, fresh)) => {
                    trace.upstream = Some(sent_at.elapsed());
                    if fresh {
                        self.registry.connect_succeeded(&backend.id, &choice.target);
                    }
                    break resp;
                }
                Err(SendError {
                    error,
                    request: Some(back),
                    connect: true,
                }) => {
                    self.registry.connect_failed(&backend.id, &choice.target);
                    // Nothing was sent: safe to try another endpoint, once.
                    let next = if retried {
                        None
                    } else {
                        self.registry.pick_retry(backend, &choice.target, &choice)
                    };
                    let Some(next) = next else {
                        return Err(error);
                    };
                    tracing::info!(backend = %backend.id, failed = %choice.target, next = %next.target,
                        error = %error, "retrying on another endpoint");
                    choice = next;
                    req = back;
                    retried = true;
                }
                Err(SendError { error, .. }) => return Err(error),
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::prepare_downstream(resp.headers_mut(), switching);
        if switching {
            let Some(client) = client_upgrade else {
                return Err(ProxyError::UnexpectedUpgrade {
                    target: choice.target,
                });
            };
            let upstream = hyper::upgrade::on(&mut resp);
            upgrade::spawn_tunnel(
                client,
                upstream,
                choice.target.clone(),
                self.shutdown.track(),
            );
        }
        if let (Some(value), Some(policy)) = (&choice.set_cookie, &backend.affinity) {
            if let Ok(v) = HeaderValue::from_str(&policy.set_cookie(value)) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        Ok(resp.map(Either::Left))
    }

    /// `308` to the same host and path over HTTPS.
    fn redirect(&self, host: &str, parts: &Parts, info: &ConnInfo) -> Response<ProxyBody> {
        let host = if host.is_empty() {
            match info.local {
                std::net::SocketAddr::V4(a) => a.ip().to_string(),
                std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        } else {
            host.to_owned()
        };
        let port = match self.opts.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let pq = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{pq}")) else {
            return ProxyError::BadRequest("host cannot form a redirect URL").to_response();
        };
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
            b"308 Permanent Redirect\n",
        ))));
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, location);
        resp.headers_mut().insert(
            header::SERVER,
            HeaderValue::from_static(super::errors::SERVER),
        );
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
