//! `Upgrade` (WebSocket) tunnels: once both sides switched protocols, copy bytes both ways.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::ShutdownGuard;
use crate::balance::Target;

/// Waits for both halves of the upgrade and relays until either side closes. Runs on its
/// own task: the connections it joins are no longer HTTP and need nothing from the config.
pub(crate) fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    endpoint: Target,
    guard: ShutdownGuard,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(%endpoint, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "tunnel ended with an error"),
        }
    });
}
