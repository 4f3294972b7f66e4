//! Sending the copies of a request that a route's [`Mirrors`] ask for (see
//! `pipeline::mirror` for what is copied): fire and forget, from tasks of their own,
//! at most [`MAX_IN_FLIGHT`] at once so that a slow mirror cannot pile up work.

use std::sync::Arc;

use http::request::Parts;
use http::Request;
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Empty};

use super::forward::dial;
use super::upstream::UpstreamBody;
use super::{Proxy, Scheme};
use crate::config::{Config, Timeouts};
use crate::pipeline::Mirrors;

/// Mirrored requests in flight at once, over every route; past it, copies are skipped.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

impl Proxy {
    /// Sends a copy of the request about to go upstream (`parts`, `body`) to each
    /// sampled mirror. Never waits and never fails: a copy that cannot be made or sent
    /// is logged and dropped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mirror(
        self: &Arc<Self>,
        config: &Config,
        mirrors: &Mirrors,
        client_cert: Option<&Arc<str>>,
        parts: &Parts,
        body: &UpstreamBody,
        scheme: Scheme,
        host: &str,
        timeouts: Timeouts,
    ) {
        for id in mirrors.sample() {
            // A body is copied only when that is free (see `pipeline::mirror`).
            let copy: UpstreamBody = match body {
                Either::Left(streamed) if streamed.is_end_stream() => {
                    Either::Right(Either::Right(Empty::new()))
                }
                Either::Right(Either::Right(_)) => Either::Right(Either::Right(Empty::new())),
                Either::Right(Either::Left(whole)) => match whole.try_clone() {
                    Some(whole) => Either::Right(Either::Left(Box::new(whole))),
                    None => {
                        tracing::debug!(mirror = %id, "request body spilled to a file; not mirrored");
                        continue;
                    }
                },
                Either::Left(_) => {
                    tracing::debug!(mirror = %id, "request body streams; not mirrored");
                    continue;
                }
            };
            let Ok(permit) = self.mirror_slots.clone().try_acquire_owned() else {
                tracing::debug!(mirror = %id, "too many mirrored requests in flight; not mirrored");
                continue;
            };
            let Some(backend) = config.backends.get(id) else {
                tracing::debug!(mirror = %id, "mirror backend unknown; not mirrored");
                continue;
            };
            let choice = match self.registry.pick(backend, None, None, None) {
                Ok(choice) => choice,
                Err(_) => {
                    tracing::debug!(mirror = %id, "mirror backend has no ready endpoint; not mirrored");
                    continue;
                }
            };
            let protocol = backend.protocol.unwrap_or_default();
            let dial = match dial(
                config,
                id,
                (None, client_cert),
                protocol,
                scheme,
                false,
                host,
            ) {
                Ok(dial) => dial,
                Err(error) => {
                    tracing::debug!(mirror = %id, %error, "mirror backend unusable; not mirrored");
                    continue;
                }
            };
            let mut req = Request::new(copy);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.headers_mut() = parts.headers.clone();
            let pool = self.pool.clone();
            let target = choice.target;
            let mirror = id.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match pool
                    .send(
                        &target,
                        &dial,
                        timeouts,
                        Box::new(req),
                        None,
                        tokio::time::Instant::now(),
                        || {},
                    )
                    .await
                {
                    Ok(sent) => {
                        let status = sent.resp.status().as_u16();
                        // Read to its end, within the read timeout, so that the
                        // connection can serve again; the bytes are dropped. The
                        // HTTP/2 stream share stays held until then.
                        let (_link, _stream) = (sent.link, sent.stream);
                        let mut body = sent.resp.into_body();
                        let drained = tokio::time::timeout(timeouts.read, async {
                            while let Some(frame) = body.frame().await {
                                if frame.is_err() {
                                    break;
                                }
                            }
                        })
                        .await;
                        tracing::debug!(%mirror, %target, status, complete = drained.is_ok(), "mirror answered");
                    }
                    Err(e) => {
                        tracing::debug!(%mirror, %target, error = %e.error, "mirrored request failed");
                    }
                }
            });
        }
    }
}
