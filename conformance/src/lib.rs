//! Portico conformance: an echo backend, a client, a harness that runs the real
//! `ingress-controller` binary, and a Gherkin step runner for the scenarios.

pub mod apiserver;
pub mod backends;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod echo;
pub mod gateway;
pub mod gherkin_run;
pub mod grpc_echo;
pub mod harness;
pub mod manifests;
pub mod suite;
pub mod world;
