//! Portico conformance: an echo backend, a client, a harness that runs the real
//! `ingress-controller` binary, and a Gherkin step runner for the scenarios.

pub mod backends;
pub mod certs;
pub mod client;
pub mod echo;
pub mod manifests;
