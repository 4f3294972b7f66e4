//! Services -> L4 forwarding for `--service-proxy` (the seeds' kube-proxy in user space).
//!
//! The call site in [`super::compile`] is fixed; the translation of Services into
//! [`L4Service`] values belongs to the L4 dataplane and fills this in. Endpoint
//! resolution (targetPort via EndpointSlices, hand-written Endpoints) is shared through
//! [`EndpointIndex::resolve`].

use proxy_core::l4::L4Service;

use super::endpoints::EndpointIndex;
use super::{CompileOptions, Diagnostic};
use crate::store::Store;

/// The L4 services to forward. Not yet implemented: returns none.
pub fn compile_l4(
    _store: &Store,
    _endpoints: &EndpointIndex<'_>,
    _opts: &CompileOptions,
    _diags: &mut Vec<Diagnostic>,
) -> Vec<L4Service> {
    Vec::new()
}
