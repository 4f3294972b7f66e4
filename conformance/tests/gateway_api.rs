//! The Gateway API's upstream conformance tests (v1.6.1), GATEWAY-HTTP and GATEWAY-GRPC
//! profiles, against the real binary in two modes: over a manifest folder (status read
//! from the binary's log), and over the API-server double (the manifests applied to it,
//! the binary watching it as the leader, status read from the objects as the binary
//! applied it). The manifests are read from `../shared/gateway-api/conformance` beside
//! the repository (or `$PORTICO_GATEWAY_API_DIR`); one test by name:
//! `PORTICO_GATEWAY_TEST=HTTPRouteMatching`.
//!
//! Each result is printed as it comes (to stderr, so `--nocapture` is not needed); with
//! `PORTICO_GATEWAY_REPORT=FILE` the run also writes an upstream-style ConformanceReport
//! per mode (FILE for the folder, beside it for the API server: see `report_path`).

use conformance::gateway::{
    gateway_api_dir, grpc_tests, http_tests, line, report, report_path, run, statistics, Mode,
    DIR_ENV, GATEWAY_API_VERSION, REPORT_ENV,
};
use conformance::harness::binary_path;
use conformance::suite::notice;

/// The modes take turns: each runs a controller and echo backends per test, and two at
/// once on a small machine would measure the machine's load.
static ONE_MODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_over_a_manifest_folder() {
    conformance(Mode::Folder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_over_the_api_server_double() {
    conformance(Mode::ApiDouble).await;
}

async fn conformance(mode: Mode) {
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
    let _turn = ONE_MODE_AT_A_TIME.lock().await;
    notice(&format!(
        "Gateway API {GATEWAY_API_VERSION} conformance {}, manifests from {}",
        mode.describe(),
        root.display()
    ));
    let mut results = run(&root, "GATEWAY-HTTP", http_tests::CASES, mode).await;
    results.extend(run(&root, "GATEWAY-GRPC", grpc_tests::CASES, mode).await);

    for profile in ["GATEWAY-HTTP", "GATEWAY-GRPC"] {
        let (core, ext) = statistics(&results, profile);
        notice(&format!(
            "{profile} {}: core passed {} failed {} skipped {}; extended passed {} failed {} skipped {}",
            mode.name(),
            core.passed, core.failed, core.skipped, ext.passed, ext.failed, ext.skipped
        ));
    }
    if let Some(base) = std::env::var_os(REPORT_ENV) {
        let path = report_path(std::path::Path::new(&base), mode);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = i64::try_from(secs)
            .ok()
            .and_then(|s| k8s_openapi::jiff::Timestamp::new(s, 0).ok())
            .map(|t| t.to_string())
            .unwrap_or_default();
        std::fs::write(&path, report(&results, &date, mode)).expect("writing the report");
        notice(&format!("report written to {}", path.display()));
    }
    let problems: Vec<String> = results
        .iter()
        .filter(|r| r.outcome.is_problem())
        .map(line)
        .collect();
    assert!(
        problems.is_empty(),
        "{} Gateway API conformance test(s) {} did not come out as listed:\n{}",
        problems.len(),
        mode.describe(),
        problems.join("\n")
    );
}
