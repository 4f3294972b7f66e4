//! `ssl-passthrough`: a TLS connection whose ClientHello names a passthrough host goes
//! to one of that host's pods as it is, bytes both ways, never decrypted here. The
//! ClientHello is still unread on the socket (the listener only peeked at it), so the
//! pod gets every byte the client sent.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{upstream, Proxy, ProxyError};
use crate::balance::{NoReadyEndpoint, Target};
use crate::config::{BackendId, Config, Timeouts};

/// What a passthrough connection did, once it is over.
#[derive(Debug)]
pub struct Passed {
    pub backend: BackendId,
    pub target: Target,
    /// Bytes from the client to the pod, and back.
    pub sent: u64,
    pub received: u64,
    pub duration: Duration,
    /// How the byte pump ended, when not by both sides closing.
    pub error: Option<std::io::Error>,
}

/// Why a passthrough connection reached no pod (the client connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("host {0} is not an ssl-passthrough host of this configuration")]
    UnknownHost(String),
    #[error("ssl-passthrough backend {0} is not in the configuration")]
    MissingBackend(BackendId),
    #[error(transparent)]
    NoEndpoint(#[from] NoReadyEndpoint),
    #[error(transparent)]
    Connect(ProxyError),
}

impl PassthroughError {
    /// A short stable name, usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PassthroughError::UnknownHost(_) | PassthroughError::MissingBackend(_) => "no_backend",
            PassthroughError::NoEndpoint(_) => "no_endpoint",
            PassthroughError::Connect(ProxyError::ConnectTimeout { .. }) => "connect_timeout",
            PassthroughError::Connect(_) => "connect_failed",
        }
    }
}

impl Proxy {
    /// Forwards `client` to a ready endpoint of passthrough host `host` in `config`
    /// (the snapshot loaded when the connection came; a later swap leaves it be), until
    /// both sides are done. The endpoint is picked round robin by the balancer, skipping
    /// ejected ones; a refused connect ejects it, as for HTTP requests.
    pub async fn pass_through(
        &self,
        config: &Config,
        mut client: TcpStream,
        host: &str,
    ) -> Result<Passed, PassthroughError> {
        let id = config
            .passthrough
            .get(host)
            .ok_or_else(|| PassthroughError::UnknownHost(host.to_owned()))?;
        let backend = config
            .backends
            .get(id)
            .ok_or_else(|| PassthroughError::MissingBackend(id.clone()))?;
        let choice = self.registry.pick(backend, None, None, None)?;
        let target = choice.target;
        let timeouts = Timeouts::default();
        let mut pod = match upstream::connect_tcp(&target, timeouts, None::<fn()>).await {
            Ok(pod) => {
                self.registry.connect_succeeded(&backend.id, &target);
                pod
            }
            Err(e) => {
                if matches!(e, ProxyError::Connect { .. }) {
                    self.registry.connect_failed(&backend.id, &target);
                }
                return Err(PassthroughError::Connect(e));
            }
        };
        // A drain waits for it like any open connection, up to its deadline.
        let _guard = self.shutdown.track();
        let start = Instant::now();
        let (sent, received, error) =
            match tokio::io::copy_bidirectional(&mut client, &mut pod).await {
                Ok((up, down)) => (up, down, None),
                Err(e) => (0, 0, Some(e)),
            };
        Ok(Passed {
            backend: backend.id.clone(),
            target,
            sent,
            received,
            duration: start.elapsed(),
            error,
        })
    }
}
