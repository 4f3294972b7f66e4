//! The GATEWAY-GRPC profile's tests of v1.6.1: for each, what the upstream Go test
//! checks, against the binary's answers to gRPC calls (h2c to Portico's HTTP listener,
//! as upstream's client dials the Gateway) and its logged status. The backends are
//! [`crate::grpc_echo`]'s echo service, one per pod of the `grpc-infra-backend-*`
//! Deployments.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::exchange::INFRA_NS;
use super::world::{Check, Ctx, CONSISTENCY_TIMEOUT, REQUIRED_SUCCESSES};
use super::{Case, Plan, TestFuture};
use crate::grpc_echo::{call, Reply, OK, UNIMPLEMENTED};

const SAME_NS: &str = "same-namespace";
const V1: &str = "grpc-infra-backend-v1";
const V2: &str = "grpc-infra-backend-v2";
const V3: &str = "grpc-infra-backend-v3";

/// `fn name(c) -> TestFuture` from an async body.
macro_rules! test_fn {
    ($name:ident, |$c:ident| $body:block) => {
        fn $name($c: &mut Ctx) -> TestFuture<'_> {
            Box::pin(async move { $body })
        }
    };
}

/// One call and what upstream's `ExpectedResponse` wants of it: OK from a pod of a
/// backend in the infra namespace, or a status code.
struct Call {
    method: &'static str,
    authority: &'static str,
    metadata: Vec<(&'static str, &'static str)>,
    want: Result<&'static str, u32>,
}

fn echo(method: &'static str) -> Call {
    Call {
        method,
        authority: "",
        metadata: Vec::new(),
        want: Err(OK),
    }
}

impl Call {
    fn to(mut self, backend: &'static str) -> Self {
        self.want = Ok(backend);
        self
    }
    fn code(mut self, code: u32) -> Self {
        self.want = Err(code);
        self
    }
    fn authority(mut self, authority: &'static str) -> Self {
        self.authority = authority;
        self
    }
    fn meta(mut self, name: &'static str, value: &'static str) -> Self {
        self.metadata.push((name, value));
        self
    }

    fn describe(&self) -> String {
        format!(
            "{} (authority {:?}, metadata {:?})",
            self.method, self.authority, self.metadata
        )
    }

    /// Upstream `compareResponse`.
    fn check(&self, got: &Reply) -> Check {
        let want_code = match self.want {
            Ok(_) => OK,
            Err(code) => code,
        };
        if got.code != want_code {
            return Err(format!(
                "expected gRPC status {want_code}, got {}",
                got.code
            ));
        }
        if let (Ok(backend), Some(a)) = (self.want, &got.assertions) {
            if a.namespace != INFRA_NS {
                return Err(format!("answered from namespace {:?}", a.namespace));
            }
            if !a.pod.starts_with(backend) {
                return Err(format!(
                    "answered by pod {}, expected a pod of {backend}",
                    a.pod
                ));
            }
        }
        Ok(())
    }

    async fn send(&self, c: &Ctx) -> Result<Reply, String> {
        // An empty authority is the Gateway's address, as a client dialing it sends.
        let proxy = c.proxy().http;
        let authority = if self.authority.is_empty() {
            proxy.to_string()
        } else {
            self.authority.to_owned()
        };
        call(proxy, self.method, &authority, &self.metadata).await
    }
}

/// Upstream `MakeRequestAndExpectEventuallyConsistentResponse`: the expected answer
/// [`REQUIRED_SUCCESSES`] times in a row within the timeout.
async fn expect(c: &mut Ctx, call: &Call, limit: Duration) -> Check {
    let deadline = Instant::now() + limit;
    let mut streak = 0;
    loop {
        match call.send(c).await.and_then(|got| call.check(&got)) {
            Ok(()) => {
                streak += 1;
                if streak >= REQUIRED_SUCCESSES {
                    c.notes.push(format!("ok: {}", call.describe()));
                    return Ok(());
                }
            }
            Err(e) => {
                streak = 0;
                if Instant::now() > deadline {
                    return Err(format!("{}: {e}", call.describe()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every call; all failures reported together.
async fn expect_all(c: &mut Ctx, calls: &[Call]) -> Check {
    let mut failures = Vec::new();
    let mut limit = CONSISTENCY_TIMEOUT;
    for call in calls {
        if let Err(e) = expect(c, call, limit).await {
            failures.push(e);
            limit = Duration::from_secs(1);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n      "))
    }
}

async fn accepted(c: &mut Ctx, gateway: &str, routes: &[&str]) -> Check {
    c.accepted_kind(gateway, "GRPCRoute", routes).await
}

test_fn!(exact_method_matching, |c| {
    accepted(c, SAME_NS, &["exact-matching"]).await?;
    expect_all(
        c,
        &[
            echo("Echo").to(V1),
            echo("EchoTwo").to(V2),
            echo("EchoThree").code(UNIMPLEMENTED),
        ],
    )
    .await
});

test_fn!(header_matching, |c| {
    accepted(c, SAME_NS, &["grpc-header-matching"]).await?;
    let e = || echo("Echo");
    expect_all(
        c,
        &[
            e().meta("Version", "one").to(V1),
            e().meta("Version", "two").to(V2),
            e().meta("Version", "two").meta("Color", "orange").to(V1),
            e().meta("Version", "two").meta("Color", "blue").to(V2),
            e().meta("Color", "orange").code(UNIMPLEMENTED),
            e().meta("Some-Other-Header", "one").code(UNIMPLEMENTED),
            e().meta("Color", "blue").to(V1),
            e().meta("Color", "green").to(V1),
            e().meta("Color", "red").to(V2),
            e().meta("Color", "yellow").to(V2),
            e().meta("Color", "purple").code(UNIMPLEMENTED),
        ],
    )
    .await
});

test_fn!(listener_hostname_matching, |c| {
    let gw = "grpcroute-listener-hostname-matching";
    accepted(c, gw, &["backend-v1", "backend-v2", "backend-v3"]).await?;
    let e = |authority| echo("Echo").authority(authority);
    expect_all(
        c,
        &[
            e("bar.com").to(V1),
            e("foo.bar.com").to(V2),
            e("baz.bar.com").to(V3),
            e("boo.bar.com").to(V3),
            e("multiple.prefixes.bar.com").to(V3),
            e("multiple.prefixes.foo.com").to(V3),
            e("foo.com").code(UNIMPLEMENTED),
            e("no.matching.host").code(UNIMPLEMENTED),
        ],
    )
    .await
});

test_fn!(named_rule, |c| {
    accepted(c, SAME_NS, &["grpc-named-rules"]).await?;
    expect_all(c, &[echo("Echo").to(V1), echo("EchoTwo").to(V2)]).await
});

// Upstream `TestWeightedDistribution`: 500 calls, each backend's share within 0.05
// of its weight (none for a weight of 0), in one of ten tries.
test_fn!(weight, |c| {
    accepted(c, SAME_NS, &["weighted-backends"]).await?;
    expect(c, &echo("Echo"), CONSISTENCY_TIMEOUT).await?;
    let want = [(V1, 0.7), (V2, 0.3), (V3, 0.0)];
    let (n, tolerance) = (500usize, 0.05);
    let mut last = String::new();
    for _ in 0..10 {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for _ in 0..n {
            let got = echo("Echo").send(c).await?;
            let pod = got
                .assertions
                .map(|a| a.pod)
                .ok_or_else(|| format!("gRPC status {}", got.code))?;
            let backend = want
                .iter()
                .map(|(b, _)| *b)
                .find(|b| pod.starts_with(b))
                .unwrap_or("other");
            *counts.entry(backend).or_default() += 1;
        }
        let bad: Vec<String> = want
            .iter()
            .filter_map(|(b, w)| {
                let share = counts.get(b).copied().unwrap_or(0) as f64 / n as f64;
                ((share - w).abs() > tolerance || (*w == 0.0 && share > 0.0))
                    .then(|| format!("{b} got {share:.3}, expected {w} ± {tolerance}"))
            })
            .collect();
        if bad.is_empty() && !counts.contains_key("other") {
            c.notes.push(format!("ok: weights {counts:?}"));
            return Ok(());
        }
        last = format!("{}: {counts:?}", bad.join("; "));
    }
    Err(last)
});

pub const CASES: &[Case] = &[
    Case {
        name: "GRPCExactMethodMatching",
        manifests: &["grpcroute-exact-method-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: Plan::Run(exact_method_matching),
    },
    Case {
        name: "GRPCRouteHeaderMatching",
        manifests: &["grpcroute-header-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: Plan::Run(header_matching),
    },
    Case {
        name: "GRPCRouteListenerHostnameMatching",
        manifests: &["grpcroute-listener-hostname-matching.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: Plan::Run(listener_hostname_matching),
    },
    Case {
        name: "GRPCRouteNamedRule",
        manifests: &["grpcroute-named-rule.yaml"],
        features: &["Gateway", "GRPCRoute", "GRPCRouteNamedRouteRule"],
        plan: Plan::Run(named_rule),
    },
    Case {
        name: "GRPCRouteWeight",
        manifests: &["grpcroute-weight.yaml"],
        features: &["Gateway", "GRPCRoute"],
        plan: Plan::Run(weight),
    },
];
