//! Conformance support.
