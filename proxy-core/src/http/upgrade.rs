//! `Upgrade` (WebSocket) tunnels: once both sides switched protocols, copy bytes both ways
//! until either side closes or the pod falls silent for the read timeout.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::h1::ClientUpgrade;
use super::idle_io::ReadIdle;
use super::ShutdownGuard;
use crate::balance::Target;

/// Waits for both halves of the upgrade and relays until either side closes. Runs on its
/// own task: the connections it joins are no longer HTTP and need nothing from the config.
pub(crate) fn spawn_tunnel(
    client: ClientUpgrade,
    upstream: OnUpgrade,
    endpoint: Target,
    read_timeout: Duration,
    guard: ShutdownGuard,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = tokio::join!(client.connection(), upstream);
        let (mut client, upstream) = match (client, upstream) {
            (Some(client), Ok(upstream)) => (client, upstream),
            (None, _) => {
                tracing::debug!(%endpoint, "client connection closed before the upgrade");
                return;
            }
            (_, Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "upgrade did not complete");
                return;
            }
        };
        // A pod that sends nothing for the read timeout ends the tunnel, as nginx's
        // proxy_read_timeout ends an idle WebSocket; writes to it stall out at the
        // route's send timeout, as on every upstream connection.
        let mut upstream = ReadIdle::new(TokioIo::new(upstream), read_timeout);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(%endpoint, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "tunnel ended with an error"),
        }
    });
}
