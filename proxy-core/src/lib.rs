//! Portico's dataplane. It takes a plain [`config::Config`] value and serves it; it
//! knows nothing of Kubernetes.

pub mod balance;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod http;
pub mod l4;
pub mod model;
pub mod pipeline;
pub mod routes;

pub use config::{Backend, BackendId, BackendKind, Config, ConfigHandle, Endpoint, Timeouts};
