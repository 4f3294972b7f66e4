//! HTTP server, forwarding, upgrades and timeouts.
