//! Where objects come from: the Kubernetes API (`kube`) or a folder of manifests (`files`).

pub mod files;
pub mod kube;
