//! The upstream conformance features and Portico's own scenarios against the real binary
//! reading the Kubernetes API, played by the API-server double, which also receives the
//! Ingress status the controller writes (`--publish-address`).

use conformance::apiserver::ApiServer;
use conformance::cluster::{object_ref, Cluster, ClusterError};
use conformance::harness::Controller;
use conformance::suite::{
    notice, own_features_dir, run, scenarios, upstream_features_dir, FEATURES_ENV,
};
use serde_json::Value;

/// What the Ingress status must show: the address given to `--publish-address`.
const PUBLISHED: &str = "127.0.0.1";

struct ApiCluster {
    api: ApiServer,
    dir: tempfile::TempDir,
    controller: Option<Controller>,
}

impl ApiCluster {
    async fn new() -> Result<Self, String> {
        Ok(Self {
            api: ApiServer::start().await,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            controller: None,
        })
    }
}

impl Cluster for ApiCluster {
    fn name(&self) -> &'static str {
        "API server"
    }

    async fn start(&mut self) -> Result<(), ClusterError> {
        let kubeconfig = self.api.write_kubeconfig(self.dir.path());
        let args = vec![
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--publish-address".to_owned(),
            PUBLISHED.to_owned(),
        ];
        self.controller =
            Some(Controller::start_with_env(&args, &[("POD_NAMESPACE", "portico")]).await?);
        Ok(())
    }

    fn controller(&mut self) -> Option<&mut Controller> {
        self.controller.as_mut()
    }

    fn apply(&mut self, obj: Value) -> Result<(), ClusterError> {
        // Namespaces exist implicitly in the double: Portico neither reads nor needs them.
        if obj.get("kind").and_then(Value::as_str) == Some("Namespace") {
            return Ok(());
        }
        object_ref(&obj)?;
        self.api.apply(obj);
        Ok(())
    }

    fn delete(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ClusterError> {
        self.api.delete(api_version, kind, namespace, name);
        Ok(())
    }

    fn ingress_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, ClusterError> {
        let ingress = self
            .api
            .get("networking.k8s.io/v1", "Ingress", namespace, name)
            .ok_or_else(|| ClusterError::Api(format!("Ingress {namespace}/{name} not found")))?;
        let addrs = ingress
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                a.get("ip")
                    .or_else(|| a.get("hostname"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        Ok(Some(addrs))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_features_through_the_api_server() {
    let dir = upstream_features_dir();
    if !dir.is_dir() {
        notice(&format!(
            "skipping upstream conformance features: {} not found (set {FEATURES_ENV} to run them)",
            dir.display()
        ));
        return;
    }
    let scenarios = scenarios(&dir).unwrap();
    run("upstream/api", scenarios, ApiCluster::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_scenarios_through_the_api_server() {
    let scenarios = scenarios(&own_features_dir()).unwrap();
    run("portico/api", scenarios, ApiCluster::new).await;
}
