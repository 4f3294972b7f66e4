//! Reading folders of Kubernetes YAML manifests: every document of every `*.yaml`/`*.yml`
//! file, typed by `apiVersion`/`kind`, with fields the type does not know rejected.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} document {index}: invalid YAML: {message}")]
    Yaml {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("{path} document {index}: {what}: {message}")]
    Invalid {
        path: PathBuf,
        index: usize,
        what: String,
        message: String,
    },
}

/// One YAML document of one file.
#[derive(Clone, Debug)]
pub struct Document {
    pub path: PathBuf,
    /// Position of the document in its file, from 0.
    pub index: usize,
    pub value: Value,
}

impl Document {
    pub fn api_version(&self) -> &str {
        self.value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        let ns = self
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        match ns {
            Some(ns) => format!("{} {}/{}", self.kind(), ns, self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    fn invalid(&self, message: String) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.clone(),
            index: self.index,
            what: self.describe(),
            message,
        }
    }

    /// Deserialize into `T`, failing on any field `T` does not have.
    pub fn parse_strict<T: DeserializeOwned + Serialize>(&self) -> Result<T, ManifestError> {
        let typed: T =
            serde_json::from_value(self.value.clone()).map_err(|e| self.invalid(e.to_string()))?;
        // k8s-openapi types ignore unknown fields; a field lost in the round trip was unknown.
        let back = serde_json::to_value(&typed).map_err(|e| self.invalid(e.to_string()))?;
        let mut unknown = Vec::new();
        missing_fields(&self.value, &back, String::new(), &mut unknown);
        if unknown.is_empty() {
            Ok(typed)
        } else {
            Err(self.invalid(format!("unknown field(s): {}", unknown.join(", "))))
        }
    }
}

/// Paths present in `input` but absent from `output` (null input values count as absent).
fn missing_fields(input: &Value, output: &Value, at: String, found: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(inp), Value::Object(out)) => {
            for (key, value) in inp {
                let path = format!("{at}.{key}");
                match out.get(key) {
                    Some(o) => missing_fields(value, o, path, found),
                    None if value.is_null() => {}
                    None => found.push(path.trim_start_matches('.').to_owned()),
                }
            }
        }
        (Value::Array(inp), Value::Array(out)) => {
            for (i, (a, b)) in inp.iter().zip(out.iter()).enumerate() {
                missing_fields(a, b, format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Every `*.yaml`/`*.yml` file under `dir` (recursively), sorted for stable output.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ManifestError::Read {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ManifestError::Read {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The non-empty documents of one YAML file.
pub fn read_file(path: &Path) -> Result<Vec<Document>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_documents(path, &text)
}

/// The non-empty documents of a YAML text.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize_from(de).map_err(|message| ManifestError::Yaml {
            path: path.to_path_buf(),
            index,
            message,
        })?;
        if !value.is_null() {
            docs.push(Document {
                path: path.to_path_buf(),
                index,
                value,
            });
        }
    }
    Ok(docs)
}

/// Every document of every YAML file under `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for file in yaml_files(dir)? {
        docs.extend(read_file(&file)?);
    }
    Ok(docs)
}

trait DeserializeFrom: Sized {
    fn deserialize_from(de: serde_yaml_ng::Deserializer<'_>) -> Result<Self, String>;
}

impl DeserializeFrom for Value {
    fn deserialize_from(de: serde_yaml_ng::Deserializer<'_>) -> Result<Self, String> {
        serde::Deserialize::deserialize(de).map_err(|e| e.to_string())
    }
}

/// Check a document against the k8s-openapi type its `apiVersion`/`kind` name.
pub fn validate(doc: &Document) -> Result<(), ManifestError> {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, discovery::v1 as discovery, networking::v1 as net,
        policy::v1 as policy, rbac::v1 as rbac,
    };
    match (doc.api_version(), doc.kind()) {
        ("v1", "Namespace") => doc.parse_strict::<core::Namespace>().map(drop),
        ("v1", "ServiceAccount") => doc.parse_strict::<core::ServiceAccount>().map(drop),
        ("v1", "Service") => doc.parse_strict::<core::Service>().map(drop),
        ("v1", "Endpoints") => doc.parse_strict::<core::Endpoints>().map(drop),
        ("v1", "Secret") => doc.parse_strict::<core::Secret>().map(drop),
        ("v1", "ConfigMap") => doc.parse_strict::<core::ConfigMap>().map(drop),
        ("apps/v1", "Deployment") => doc.parse_strict::<apps::Deployment>().map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            doc.parse_strict::<rbac::ClusterRole>().map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            doc.parse_strict::<rbac::ClusterRoleBinding>().map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => doc.parse_strict::<rbac::Role>().map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            doc.parse_strict::<rbac::RoleBinding>().map(drop)
        }
        ("networking.k8s.io/v1", "Ingress") => doc.parse_strict::<net::Ingress>().map(drop),
        ("networking.k8s.io/v1", "IngressClass") => {
            doc.parse_strict::<net::IngressClass>().map(drop)
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            doc.parse_strict::<discovery::EndpointSlice>().map(drop)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => doc
            .parse_strict::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>()
            .map(drop),
        ("policy/v1", "PodDisruptionBudget") => {
            doc.parse_strict::<policy::PodDisruptionBudget>().map(drop)
        }
        (api, kind) => Err(doc.invalid(format!(
            "apiVersion {api:?} kind {kind:?} is not a kind these manifests may use"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Document {
        parse_documents(Path::new("test.yaml"), yaml)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn accepts_a_known_service() {
        let d = doc("apiVersion: v1\nkind: Service\nmetadata:\n  name: kubia\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n  selector:\n    app: kubia\n");
        validate(&d).unwrap();
    }

    #[test]
    fn rejects_a_misspelled_field() {
        let d = doc("apiVersion: v1\nkind: Service\nmetadata:\n  name: kubia\nspec:\n  ports:\n  - port: 80\n    tragetPort: 8080\n");
        let err = validate(&d).unwrap_err().to_string();
        assert!(err.contains("spec.ports[0].tragetPort"), "{err}");
        assert!(err.contains("Service kubia"), "{err}");
    }

    #[test]
    fn rejects_a_wrong_type_and_an_unknown_kind() {
        let d = doc("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: 80\n");
        assert!(validate(&d).is_err());
        let d = doc("apiVersion: v1\nkind: Pod2\nmetadata:\n  name: x\n");
        assert!(validate(&d).unwrap_err().to_string().contains("Pod2"));
    }

    #[test]
    fn multi_document_files_skip_empty_documents() {
        let docs = parse_documents(
            Path::new("x.yaml"),
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].name(), "b");
    }
}
