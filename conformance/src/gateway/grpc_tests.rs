//! The GATEWAY-GRPC profile's tests of v1.6.1. Listed now, so that they appear in the
//! report; each becomes a [`Plan::Run`] with its checks once GRPCRoute is served.

use super::{Case, Plan};

const NOT_YET: Plan = Plan::Skip("GRPCRoute not yet supported");

pub const CASES: &[Case] = &[
    Case {
        name: "GRPCExactMethodMatching",
        manifests: &["grpcroute-exact-method-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: NOT_YET,
    },
    Case {
        name: "GRPCRouteHeaderMatching",
        manifests: &["grpcroute-header-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: NOT_YET,
    },
    Case {
        name: "GRPCRouteListenerHostnameMatching",
        manifests: &["grpcroute-listener-hostname-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: NOT_YET,
    },
    Case {
        name: "GRPCRouteNamedRule",
        manifests: &["grpcroute-named-rule.yaml"],
        features: &["Gateway", "GRPCRoute", "GRPCRouteNamedRouteRule"],
        plan: NOT_YET,
    },
    Case {
        name: "GRPCRouteWeight",
        manifests: &["grpcroute-weight.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: NOT_YET,
    },
];
