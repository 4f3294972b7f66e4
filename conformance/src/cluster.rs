//! Where scenario objects go and how the controller is run: a manifest folder the binary
//! watches (`--manifests`), or an API server the binary lists and watches.

use std::future::Future;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Controller, HarnessError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object has no {0}")]
    Object(&'static str),
    #[error("{0}")]
    Api(String),
}

/// A place to put Kubernetes objects, with a controller reading them.
pub trait Cluster {
    /// For reports: `manifest folder` or `API server`.
    fn name(&self) -> &'static str;
    /// Start the controller.
    fn start(&mut self) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// The running controller, once started.
    fn controller(&mut self) -> Option<&mut Controller>;
    /// Create or replace an object (JSON with apiVersion, kind, metadata).
    fn apply(&mut self, obj: Value) -> Result<(), ClusterError>;
    /// Delete an object if it exists.
    fn delete(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ClusterError>;
    /// The addresses in an Ingress's `status.loadBalancer.ingress`; `None` where there is
    /// no status to read (the manifest folder).
    fn ingress_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, ClusterError>;
}

/// `apiVersion`, `kind`, namespace and name of an object, for file names and API paths.
pub fn object_ref(obj: &Value) -> Result<(String, String, String, String), ClusterError> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_owned);
    Ok((
        s("/apiVersion").ok_or(ClusterError::Object("apiVersion"))?,
        s("/kind").ok_or(ClusterError::Object("kind"))?,
        s("/metadata/namespace").unwrap_or_default(),
        s("/metadata/name").ok_or(ClusterError::Object("metadata.name"))?,
    ))
}

/// Objects written as one YAML file each into a folder the binary watches.
pub struct FileCluster {
    dir: tempfile::TempDir,
    staging: tempfile::TempDir,
    controller: Option<Controller>,
}

impl FileCluster {
    pub fn new() -> Result<Self, ClusterError> {
        let mk = || {
            tempfile::tempdir().map_err(|source| ClusterError::Write {
                path: std::env::temp_dir(),
                source,
            })
        };
        Ok(Self {
            dir: mk()?,
            staging: mk()?,
            controller: None,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn file_name(kind: &str, namespace: &str, name: &str) -> String {
        let ns = if namespace.is_empty() {
            "_cluster"
        } else {
            namespace
        };
        format!("{ns}--{}--{name}.yaml", kind.to_ascii_lowercase())
    }
}

impl Cluster for FileCluster {
    fn name(&self) -> &'static str {
        "manifest folder"
    }

    async fn start(&mut self) -> Result<(), ClusterError> {
        let args = vec![
            "--manifests".to_owned(),
            self.dir.path().display().to_string(),
        ];
        self.controller = Some(Controller::start(&args).await?);
        Ok(())
    }

    fn controller(&mut self) -> Option<&mut Controller> {
        self.controller.as_mut()
    }

    fn apply(&mut self, obj: Value) -> Result<(), ClusterError> {
        let (_, kind, ns, name) = object_ref(&obj)?;
        let file = Self::file_name(&kind, &ns, &name);
        let yaml = serde_yaml_ng::to_string(&obj).map_err(|e| ClusterError::Write {
            path: PathBuf::from(&file),
            source: std::io::Error::other(e),
        })?;
        // Write elsewhere and rename, so the watcher never reads a half-written file.
        let staged = self.staging.path().join(&file);
        let target = self.dir.path().join(&file);
        std::fs::write(&staged, yaml).map_err(|source| ClusterError::Write {
            path: staged.clone(),
            source,
        })?;
        std::fs::rename(&staged, &target).map_err(|source| ClusterError::Write {
            path: target,
            source,
        })
    }

    fn delete(
        &mut self,
        _api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ClusterError> {
        let target = self.dir.path().join(Self::file_name(kind, namespace, name));
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ClusterError::Write {
                path: target,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn ingress_status(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<Vec<String>>, ClusterError> {
        Ok(None)
    }
}
