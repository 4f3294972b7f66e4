//! The Kubernetes ingress-controller-conformance features, read from
//! `../shared/conformance/features` (or `$PORTICO_CONFORMANCE_FEATURES`), against the real
//! binary over a watched manifest folder.

use conformance::cluster::FileCluster;
use conformance::suite::{notice, run, scenarios, upstream_features_dir, FEATURES_ENV};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_features_over_a_manifest_folder() {
    let dir = upstream_features_dir();
    if !dir.is_dir() {
        notice(&format!(
            "skipping upstream conformance features: {} not found (set {FEATURES_ENV} to run them)",
            dir.display()
        ));
        return;
    }
    let scenarios = scenarios(&dir).unwrap();
    run("upstream/files", scenarios, || async {
        FileCluster::new().map_err(|e| e.to_string())
    })
    .await;
}
