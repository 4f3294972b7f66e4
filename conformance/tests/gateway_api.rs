//! The Gateway API's upstream conformance tests (v1.6.1), GATEWAY-HTTP and GATEWAY-GRPC
//! profiles, against the real binary over a manifest folder. The manifests are read from
//! `../shared/gateway-api/conformance` beside the repository (or
//! `$PORTICO_GATEWAY_API_DIR`); one test by name: `PORTICO_GATEWAY_TEST=HTTPRouteMatching`.
//!
//! Run with `--nocapture` to see the per-test report; it is printed either way on failure.

use conformance::gateway::{
    gateway_api_dir, grpc_tests, http_tests, run, statistics, DIR_ENV, GATEWAY_API_VERSION,
};
use conformance::harness::binary_path;
use conformance::suite::notice;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_over_a_manifest_folder() {
    let root = gateway_api_dir();
    if !root.join("base/manifests.yaml").is_file() {
        notice(&format!(
            "skipping Gateway API conformance: {} not found (set {DIR_ENV} to the upstream \
             conformance folder of {GATEWAY_API_VERSION})",
            root.join("base/manifests.yaml").display()
        ));
        return;
    }
    if let Err(e) = binary_path() {
        panic!("{e}");
    }
    notice(&format!(
        "Gateway API {GATEWAY_API_VERSION} conformance, manifests from {}",
        root.display()
    ));
    let mut results = run(&root, "GATEWAY-HTTP", http_tests::CASES).await;
    results.extend(run(&root, "GATEWAY-GRPC", grpc_tests::CASES).await);

    for profile in ["GATEWAY-HTTP", "GATEWAY-GRPC"] {
        let of: Vec<_> = results
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| conformance::gateway::Result_ {
                case: r.case,
                profile: r.profile,
                outcome: r.outcome.clone(),
                seconds: r.seconds,
            })
            .collect();
        let (core, ext) = statistics(&of);
        notice(&format!(
            "{profile}: core passed {} failed {} skipped {}; extended passed {} failed {} skipped {}",
            core.passed, core.failed, core.skipped, ext.passed, ext.failed, ext.skipped
        ));
    }
    let problems: Vec<String> = results
        .iter()
        .filter(|r| r.outcome.is_problem())
        .map(conformance::gateway::line)
        .collect();
    assert!(
        problems.is_empty(),
        "{} Gateway API conformance test(s) did not come out as listed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
