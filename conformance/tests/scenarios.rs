//! Portico's own scenarios (conformance/features), against the real binary over a watched
//! manifest folder.

use conformance::cluster::FileCluster;
use conformance::suite::{own_features_dir, run, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_scenarios_over_a_manifest_folder() {
    let scenarios = scenarios(&own_features_dir()).unwrap();
    run("portico/files", scenarios, || async {
        FileCluster::new().map_err(|e| e.to_string())
    })
    .await;
}
