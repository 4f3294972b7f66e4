//! `compile`: a pure function from the watched objects to a [`proxy_core::Config`] plus
//! diagnostics. Every Kubernetes rule lives here.
