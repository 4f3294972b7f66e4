//! Portico's controller: Kubernetes objects in, a compiled [`proxy_core::Config`] out.

pub mod compile;
pub mod sources;
pub mod store;
