//! The validating admission webhook (`--webhook-addr`): the API server sends each Ingress
//! create and update here before storing it, and Portico answers whether it would serve
//! it as written.
//!
//! The candidate is compiled against the current store with the same rules as everything
//! Portico serves ([`review`]); nothing is rendered, written to disk or executed, so object
//! content cannot reach anything but the compiler's parsers. The listener speaks HTTPS
//! only, with a certificate from a CA of its own ([`certs`]), and answers exactly one
//! thing: `POST` [`PATH`] with a JSON `admission.k8s.io/v1` AdmissionReview of at most
//! [`MAX_BODY`] bytes. It asks for no client certificate: it gives nothing away but a
//! verdict on the object sent, which the sender already has.

pub mod certs;
pub mod review;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::admin::Readiness;
use crate::compile::CompileOptions;
use crate::store::SharedStore;

/// The one path served, as the ValidatingWebhookConfiguration's `clientConfig.service.path`.
pub const PATH: &str = "/validate/ingresses";

/// The largest body read: the API server's own limit on a request (3 MiB), which no
/// review of an object it accepted can exceed.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long a client has to send its request once connected (the API server's own
/// `timeoutSeconds` is shorter).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a review denied only for missing TLS Secrets waits for them to arrive from
/// the watch (well within the configuration's `timeoutSeconds: 5`).
const SECRET_WAIT: Duration = Duration::from_secs(2);

/// Connections served at once. The API servers keep a few each; more are closed at once,
/// so a flood from the pod network cannot take the process's sockets or memory.
pub const MAX_CONNECTIONS: usize = 256;

/// The webhook's request handler: the store to judge against and when it may judge.
#[derive(Clone)]
pub struct Webhook {
    pub store: SharedStore,
    pub opts: CompileOptions,
    /// Until the first lists are in the store, every verdict would be wrong (no TLS
    /// Secrets, no older Ingresses): answer 503 until then.
    pub readiness: Arc<Readiness>,
}

impl Webhook {
    /// Serves HTTPS on `listener` through `acceptor` (whose certificate [`certs::run`]
    /// keeps), until the process ends.
    pub async fn serve(self, listener: TcpListener, acceptor: tls::TlsAcceptor) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "webhook connection refused: too many open");
                continue;
            };
            let (hook, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let tls = match tls::accept(stream, &acceptor, READ_TIMEOUT).await {
                    Ok((tls, _)) => tls,
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let hook = hook.clone();
                    async move { Ok::<_, Infallible>(hook.handle(req, remote).await) }
                });
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%remote, error = %e, "webhook connection error");
                }
            });
        }
    }

    async fn handle<B>(&self, req: Request<B>, remote: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() != PATH {
            return text(StatusCode::NOT_FOUND, "not found");
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json only");
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 3 MiB");
        }
        let body = match tokio::time::timeout(
            READ_TIMEOUT,
            Limited::new(req.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 3 MiB")
            }
            Ok(Err(_)) | Err(_) => return text(StatusCode::BAD_REQUEST, "body not read"),
        };
        if let Err(why) = self.readiness.check() {
            return text(StatusCode::SERVICE_UNAVAILABLE, why);
        }
        let started = Instant::now();
        // Subscribed before the snapshot, so no change between the two is missed.
        let mut changes = self.store.subscribe();
        let mut result = review::review(&self.store.snapshot(), &self.opts, &body);
        while let Ok(reviewed) = &result {
            let left = SECRET_WAIT.saturating_sub(started.elapsed());
            if !reviewed.awaits_secrets || left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, changes.changed()).await {
                Ok(Ok(())) => {
                    result = review::review(&self.store.snapshot(), &self.opts, &body);
                }
                _ => break,
            }
        }
        match result {
            Ok(reviewed) => {
                tracing::info!(
                    %remote,
                    outcome = reviewed.outcome.as_str(),
                    micros = started.elapsed().as_micros() as u64,
                    "admission review"
                );
                match serde_json::to_vec(&reviewed.review) {
                    Ok(out) => {
                        let mut resp = Response::new(Full::new(Bytes::from(out)));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        resp
                    }
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "response not encoded"),
                }
            }
            Err(e) => {
                tracing::info!(%remote, error = %e, "admission request refused");
                text(StatusCode::BAD_REQUEST, &e.to_string())
            }
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
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

    fn hook(ready: bool) -> Webhook {
        let (readiness, synced) = Readiness::new();
        if ready {
            synced.send_replace(true);
            readiness.set_published();
        }
        Webhook {
            store: SharedStore::new(),
            opts: CompileOptions::default(),
            readiness,
        }
    }

    fn post(path: &str, content_type: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    async fn status(hook: &Webhook, req: Request<Full<Bytes>>) -> (u16, String) {
        let resp = hook.handle(req, ([127, 0, 0, 1], 1).into()).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_small_json_post_to_its_path() {
        let hook = hook(true);
        let big = vec![b' '; MAX_BODY + 1];
        // Streamed past the cap (no Content-Length to go by), and declared too large.
        let mut streamed = post(PATH, "application/json", big.clone());
        streamed.headers_mut().remove(header::CONTENT_LENGTH);
        assert_eq!(status(&hook, streamed).await.0, 413);
        let mut declared = post(PATH, "application/json", Vec::new());
        declared.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(MAX_BODY as u64 + 1),
        );
        assert_eq!(status(&hook, declared).await.0, 413);
        assert_eq!(
            status(&hook, post("/", "application/json", Vec::new()))
                .await
                .0,
            404
        );
        assert_eq!(
            status(&hook, post(PATH, "text/yaml", Vec::new())).await.0,
            415
        );
        let mut get = post(PATH, "application/json", Vec::new());
        *get.method_mut() = Method::GET;
        assert_eq!(status(&hook, get).await.0, 405);
        let (code, text) = status(
            &hook,
            post(PATH, "application/json", b"{\"secret\": 1".to_vec()),
        )
        .await;
        assert_eq!(code, 400);
        assert!(!text.contains("secret"), "{text}");
    }

    fn review_body(secret: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "1", "operation": "CREATE", "namespace": "default", "name": "web",
                "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
                "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
                "userInfo": {"username": "admin"},
                "object": {
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"ingressClassName": "portico",
                        "tls": [{"hosts": ["a.example.com"], "secretName": secret}],
                        "rules": [{"host": "a.example.com"}]}
                }
            }
        }))
        .unwrap()
    }

    fn tls_secret(name: &str) -> crate::store::Object {
        let pair = tls::generate_serving_pair(
            "test",
            &["a.example.com".to_owned()],
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            Duration::from_secs(3600),
        )
        .unwrap();
        crate::store::Object::Secret(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem}
            }))
            .unwrap(),
        )
    }

    fn class() -> crate::store::Object {
        crate::store::Object::IngressClass(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "portico"},
                "spec": {"controller": "portico.dev/ingress-controller"}
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_tls_secret_created_just_before_its_ingress_is_waited_for() {
        let hook = hook(true);
        hook.store.update(|s| s.apply(class()));
        let store = hook.store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.update(|s| s.apply(tls_secret("arriving")));
        });
        let started = Instant::now();
        let (code, body) = status(
            &hook,
            post(PATH, "application/json", review_body("arriving")),
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.contains("\"allowed\":true"), "{body}");
        assert!(started.elapsed() < SECRET_WAIT, "{:?}", started.elapsed());
        // One that never comes is refused once the wait is over.
        let (_, body) = status(&hook, post(PATH, "application/json", review_body("never"))).await;
        assert!(
            body.contains("\"allowed\":false") && body.contains("never"),
            "{body}"
        );
        assert!(started.elapsed() >= SECRET_WAIT);
    }

    #[tokio::test]
    async fn answers_503_until_the_store_is_synced() {
        let (code, _) = status(&hook(false), post(PATH, "application/json", b"{}".to_vec())).await;
        assert_eq!(code, 503);
        let (code, _) = status(&hook(true), post(PATH, "application/json", b"{}".to_vec())).await;
        assert_eq!(code, 400);
    }
}
