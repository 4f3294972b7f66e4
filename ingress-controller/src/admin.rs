//! The admin listener: `/healthz`, `/readyz` and Prometheus `/metrics`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::exposition::Format;
use crate::metrics::Metrics;

/// Whether the controller should get traffic: the source has synced, a config has been
/// published, and it is not shutting down.
#[derive(Debug)]
pub struct Readiness {
    synced: watch::Receiver<bool>,
    published: watch::Sender<bool>,
    draining: AtomicBool,
}

impl Readiness {
    /// The readiness gate and the sender the source flips once its initial load is
    /// complete (the Kubernetes source takes it as its `ready`).
    pub fn new() -> (Arc<Self>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let r = Self {
            synced: rx,
            published: watch::Sender::new(false),
            draining: AtomicBool::new(false),
        };
        (Arc::new(r), tx)
    }

    /// Resolves once the source has loaded everything once.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        // The sender may be dropped after sending true; `wait_for` still sees the value.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn set_published(&self) {
        self.published.send_replace(true);
    }

    /// Resolves once the first configuration has been published.
    pub async fn published(&self) {
        let mut rx = self.published.subscribe();
        // `self` holds the sender, so this ends only by the value turning true.
        let _ = rx.wait_for(|p| *p).await;
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !*self.synced.borrow() {
            Err("initial sync not complete")
        } else if !*self.published.borrow() {
            Err("no configuration published yet")
        } else {
            Ok(())
        }
    }
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Serve the admin endpoints on `listener` until the process ends.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%remote, error = %e, "admin connection error");
                }
            });
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.readiness.check() {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                let accept = accept(req);
                let format = Format::negotiate(accept.as_deref());
                let mut resp = text(StatusCode::OK, self.metrics.encode(format));
                let headers = resp.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(format.content_type()),
                );
                headers.insert(header::VARY, header::HeaderValue::from_static("accept"));
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

/// The request's `Accept` values joined as one list; `None` without any. A value that is
/// not visible ASCII is left out.
fn accept<B>(req: &Request<B>) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_sync_and_publish_and_until_draining() {
        let (r, synced) = Readiness::new();
        assert_eq!(r.check(), Err("initial sync not complete"));
        synced.send_replace(true);
        assert_eq!(r.check(), Err("no configuration published yet"));
        r.set_published();
        assert_eq!(r.check(), Ok(()));
        r.set_draining();
        assert_eq!(r.check(), Err("shutting down"));
    }
}
