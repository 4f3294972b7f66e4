//! SNI certificate selection with lock-free rotation.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::self_signed::SelfSigned;
use crate::store::CertStore;
use crate::{CertDiagnostic, CertSource};

/// Picks a certificate per handshake: exact SNI, then one-label wildcard, then the
/// configured default, then the self-signed fallback. No SNI (IP literals, old clients)
/// gets the default.
///
/// The store sits in an `ArcSwap`: [`CertResolver::swap`] affects new handshakes at once
/// and leaves established connections alone, since they no longer consult the resolver.
#[derive(Debug)]
pub struct CertResolver {
    store: ArcSwap<CertStore>,
    fallback: Arc<CertifiedKey>,
}

impl CertResolver {
    /// A resolver with an empty store, serving `fallback` until a store is swapped in.
    pub fn new(fallback: &SelfSigned) -> Self {
        CertResolver {
            store: ArcSwap::from_pointee(CertStore::default()),
            fallback: fallback.certified_key(),
        }
    }

    /// Replaces the store for all later handshakes.
    pub fn swap(&self, store: impl Into<Arc<CertStore>>) {
        self.store.store(store.into());
    }

    /// Builds a store from `sources` and swaps it in. Returns the build's diagnostics.
    pub fn rebuild(
        &self,
        sources: &[CertSource],
        default: Option<&CertSource>,
    ) -> Vec<CertDiagnostic> {
        let (store, diags) = CertStore::build(sources, default);
        self.swap(store);
        diags
    }

    /// The store new handshakes currently see.
    pub fn store(&self) -> Arc<CertStore> {
        self.store.load_full()
    }

    /// The certificate a client sending `sni` gets.
    pub fn resolve_name(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        self.store
            .load()
            .resolve(sni)
            .unwrap_or_else(|| self.fallback.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.resolve_name(client_hello.server_name()))
    }
}
