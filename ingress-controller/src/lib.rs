//! Portico's controller: Kubernetes objects in, a compiled [`proxy_core::Config`] out.

pub mod admin;
pub mod admission;
pub mod affinity_key;
pub mod alloc;
pub mod cli;
pub mod compile;
pub mod dns;
pub mod events;
pub mod exposition;
pub mod gateway_api;
pub mod gateway_status;
pub mod https;
pub mod leader;
pub mod metrics;
pub mod passthrough;
pub mod process_metrics;
pub mod publish;
pub mod service_proxy;
pub mod sources;
pub mod status;
pub mod store;
