//! Manifest parsing: the text of one file to the objects Portico reads, the way
//! `kubectl apply -f` accepts it (multi-document YAML, JSON streams, `kind: List`).

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};
use serde::Deserialize;
use serde_json::Value;

use super::{legacy, validate};
use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant,
};
use crate::store::Object;

/// Why a manifest file was rejected. The file's last good objects stay in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ParseError {
    pub path: PathBuf,
    /// 1-based line, when the parser could place the problem.
    pub line: Option<usize>,
    pub message: String,
}

/// The text format of a manifest file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `*.yaml`, `*.yml` and `*.json`, as `kubectl apply -f DIR` picks them.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Where an object sits in its file: document index (0-based) and, inside a `List`, the
/// item index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    doc: usize,
    item: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.doc)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

/// Something about an object that took effect anyway, for the user to fix (an Ingress in
/// a removed API version, converted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParseWarning {
    pub path: PathBuf,
    /// 1-based line where the object starts, when the parser could place it.
    pub line: Option<usize>,
    /// The metric reason, e.g. `deprecated_api_version`.
    pub reason: &'static str,
    /// The object's kind.
    pub kind: String,
    pub message: String,
}

impl fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A file's objects, and the warnings about them.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub warnings: Vec<ParseWarning>,
}

/// Parse one manifest file into the objects Portico reads. Kinds it does not read
/// (Deployment, Namespace, RBAC, ...) are skipped. Any error rejects the whole file, so a
/// half-edited file never applies half of its objects.
pub fn parse(path: &Path, format: Format, text: &str) -> Result<Vec<Object>, ParseError> {
    parse_file(path, format, text).map(|p| p.objects)
}

/// [`parse`], with the warnings about the objects.
pub fn parse_file(path: &Path, format: Format, text: &str) -> Result<Parsed, ParseError> {
    let docs = documents(path, format, text)?;
    let mut parsed = Parsed::default();
    let mut add = |pos: Position,
                   api_version: &str,
                   kind: &str,
                   found: Result<Found, String>|
     -> Result<(), ParseError> {
        match found {
            Ok(found) => {
                if !found.warnings.is_empty() {
                    let line = relocate(format, text, pos, None, "").map(|(line, _)| line);
                    for (reason, message) in found.warnings {
                        parsed.warnings.push(ParseWarning {
                            path: path.to_owned(),
                            line,
                            reason,
                            kind: kind.to_owned(),
                            message,
                        });
                    }
                }
                parsed.objects.extend(found.object);
                Ok(())
            }
            Err(message) => {
                // The text of a converted Ingress is not the v1 form: typing it again
                // would only complain about its apiVersion. Place the message at the object.
                let typed = !(kind == "Ingress" && legacy::VERSIONS.contains(&api_version));
                Err(locate(
                    path,
                    format,
                    text,
                    pos,
                    typed.then_some(kind),
                    message,
                ))
            }
        }
    };
    for (doc, value) in docs.into_iter().enumerate() {
        // Empty documents (a trailing `---`, a file of comments) are allowed, as kubectl does.
        if value.is_null() {
            continue;
        }
        let pos = Position { doc, item: None };
        let (api_version, kind) =
            type_meta(&value).map_err(|m| locate(path, format, text, pos, None, m))?;
        if kind == "List" || (api_version == "v1" && kind.ends_with("List")) {
            let items = match value {
                Value::Object(mut map) => match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    Some(Value::Null) | None => Vec::new(),
                    Some(_) => {
                        return Err(locate(
                            path,
                            format,
                            text,
                            pos,
                            Some(&kind),
                            format!("{kind}: items must be a list"),
                        ))
                    }
                },
                _ => Vec::new(),
            };
            for (i, item) in items.into_iter().enumerate() {
                let pos = Position { doc, item: Some(i) };
                let (api_version, kind) =
                    type_meta(&item).map_err(|m| locate(path, format, text, pos, None, m))?;
                add(pos, &api_version, &kind, object(&api_version, &kind, item))?;
            }
        } else {
            add(pos, &api_version, &kind, object(&api_version, &kind, value))?;
        }
    }
    Ok(parsed)
}

/// The documents of a file as untyped values. Syntax errors carry their line.
fn documents(path: &Path, format: Format, text: &str) -> Result<Vec<Value>, ParseError> {
    let mut docs = Vec::new();
    match format {
        Format::Yaml => {
            for de in serde_yaml_ng::Deserializer::from_str(text) {
                match Value::deserialize(de) {
                    Ok(v) => docs.push(v),
                    Err(e) => return Err(yaml_error(path, e)),
                }
            }
        }
        Format::Json => {
            for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                match v {
                    Ok(v) => docs.push(v),
                    Err(e) => return Err(json_error(path, e)),
                }
            }
        }
    }
    Ok(docs)
}

fn yaml_error(path: &Path, e: serde_yaml_ng::Error) -> ParseError {
    ParseError {
        path: path.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

fn json_error(path: &Path, e: serde_json::Error) -> ParseError {
    ParseError {
        path: path.to_owned(),
        line: Some(e.line()),
        message: e.to_string(),
    }
}

/// `apiVersion` and `kind`, which every object must have.
fn type_meta(value: &Value) -> Result<(String, String), String> {
    let Value::Object(map) = value else {
        return Err("expected an object with apiVersion, kind and metadata".to_owned());
    };
    let field = |name: &str| match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(format!("missing {name}")),
        Some(_) => Err(format!("{name} must be a string")),
    };
    Ok((field("apiVersion")?, field("kind")?))
}

/// What one object of a file gives: the object, for the kinds Portico reads, and the
/// warnings about it (a removed API version converted, unknown fields, an unknown kind).
#[derive(Default)]
struct Found {
    object: Option<Object>,
    warnings: Vec<(&'static str, String)>,
}

/// The typed object for the kinds Portico reads; kinds it does not read are skipped, with a
/// warning when the kind looks like a typo.
fn object(api_version: &str, kind: &str, mut value: Value) -> Result<Found, String> {
    let want = match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Endpoints" | "Secret" | "ConfigMap" | "Namespace" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "BackendTLSPolicy" => {
            "gateway.networking.k8s.io/v1"
        }
        "ReferenceGrant" => "gateway.networking.k8s.io/v1beta1",
        _ => return Ok(other_kind(api_version, kind, &value)),
    };
    let legacy = kind == "Ingress" && legacy::VERSIONS.contains(&api_version);
    // ReferenceGrant is `v1` since Gateway API v1.5 (the upstream manifests use it),
    // and the same object as `v1beta1`, which the CRDs still serve.
    let grant_v1 = kind == "ReferenceGrant" && api_version == "gateway.networking.k8s.io/v1";
    if api_version != want && !legacy && !grant_v1 {
        return Err(format!(
            "{kind}: apiVersion {api_version} is not served; use {want}"
        ));
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(format!("{kind}: missing metadata.name"));
    }
    let name = name.to_owned();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    // As the API server names objects in its messages; cluster-scoped kinds have no
    // namespace.
    let full = if kind == "IngressClass" || kind == "GatewayClass" {
        name.clone()
    } else {
        format!("{namespace}/{name}")
    };
    let mut warnings = Vec::new();
    if legacy {
        let changes =
            legacy::convert_ingress(&mut value).map_err(|e| format!("{kind} {full}: {e}"))?;
        warnings.push((
            "deprecated_api_version",
            legacy::warning(api_version, &full, &changes),
        ));
    }
    if let Some(missing) = validate::required(kind, &value) {
        return Err(format!("{kind} {full}: {missing}"));
    }
    let typed = |e: serde_json::Error| format!("{kind} {name}: {e}");
    let obj = match kind {
        "Ingress" => Object::Ingress(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?),
        "IngressClass" => {
            let mut o: IngressClass =
                typed_as(&value, &full, kind, &mut warnings).map_err(typed)?;
            // Cluster-scoped: a namespace in the manifest means nothing, as with the API server.
            o.metadata.namespace = None;
            Object::IngressClass(o)
        }
        "Service" => Object::Service(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?),
        "Endpoints" => {
            Object::Endpoints(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "EndpointSlice" => {
            Object::EndpointSlice(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "Secret" => Object::Secret(merge_string_data(
            typed_as(&value, &full, kind, &mut warnings).map_err(typed)?,
        )),
        "ConfigMap" => {
            Object::ConfigMap(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "GatewayClass" => {
            let mut o: GatewayClass =
                typed_as(&value, &full, kind, &mut warnings).map_err(typed)?;
            o.metadata.namespace = None;
            Object::GatewayClass(o)
        }
        "Gateway" => Object::Gateway(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?),
        "HTTPRoute" => {
            Object::HTTPRoute(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "GRPCRoute" => {
            Object::GRPCRoute(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "BackendTLSPolicy" => {
            Object::BackendTLSPolicy(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "ReferenceGrant" => {
            Object::ReferenceGrant(typed_as(&value, &full, kind, &mut warnings).map_err(typed)?)
        }
        "Namespace" => {
            let mut o: Namespace = typed_as(&value, &full, kind, &mut warnings).map_err(typed)?;
            o.metadata.namespace = None;
            Object::Namespace(o)
        }
        _ => return Ok(Found::default()),
    };
    Ok(Found {
        object: Some(default_namespace(obj)),
        warnings,
    })
}

/// `value` typed as `T`, with a warning for each field `T` does not have, as
/// `kubectl apply --validate=strict` names them (`unknown field "spec.sepc"`): typing
/// alone would drop them without a word.
fn typed_as<T>(
    value: &Value,
    full: &str,
    kind: &str,
    warnings: &mut Vec<(&'static str, String)>,
) -> Result<T, serde_json::Error>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed = T::deserialize(value)?;
    // What typing kept, in the same JSON form: any field of the text missing from it
    // was unknown. Serializing a typed object cannot fail; if it did, nothing is said.
    if let Ok(kept) = serde_json::to_value(&typed) {
        let mut unknown = Vec::new();
        validate::unknown_fields(value, &kept, &mut String::new(), &mut unknown);
        for field in unknown {
            warnings.push((
                "unknown_field",
                format!("{kind} {full}: unknown field {field:?}; ignored"),
            ));
        }
    }
    Ok(typed)
}

/// A kind Portico does not read: skipped, with a warning when it is no kind the API
/// server would know (a typo such as `Ingres`), naming the closest kind.
fn other_kind(api_version: &str, kind: &str, value: &Value) -> Found {
    let Some(message) = validate::unknown_kind(api_version, kind) else {
        tracing::debug!(api_version, kind, "skipping a kind Portico does not read");
        return Found::default();
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Found {
        object: None,
        warnings: vec![("unknown_kind", format!("{kind} {name}: {message}"))],
    }
}

/// The API server merges `stringData` into `data` (stringData wins) and never returns it.
fn merge_string_data(mut secret: Secret) -> Secret {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    secret
}

/// Namespaced objects without a namespace land in `default`, as `kubectl apply` does with
/// the default context.
fn default_namespace(mut obj: Object) -> Object {
    let meta = match &mut obj {
        Object::Ingress(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Endpoints(o) => &mut o.metadata,
        Object::Secret(o) => &mut o.metadata,
        Object::ConfigMap(o) => &mut o.metadata,
        Object::Gateway(o) => &mut o.metadata,
        Object::HTTPRoute(o) => &mut o.metadata,
        Object::GRPCRoute(o) => &mut o.metadata,
        Object::ReferenceGrant(o) => &mut o.metadata,
        Object::BackendTLSPolicy(o) => &mut o.metadata,
        Object::IngressClass(_) | Object::GatewayClass(_) | Object::Namespace(_) => return obj,
    };
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".to_owned());
    }
    obj
}

/// Turn a message about the object at `pos` into an error with a line. The untyped pass
/// has lost positions, so the document is parsed again, this time typed as the object's
/// kind straight from the text: the parser then names the line of the offending field,
/// or, for a problem typing cannot see (a missing name), the line where the object starts.
fn locate(
    path: &Path,
    format: Format,
    text: &str,
    pos: Position,
    kind: Option<&str>,
    message: String,
) -> ParseError {
    let (line, detail) = match relocate(format, text, pos, kind, &message) {
        Some((line, detail)) => (Some(line), detail),
        None => (None, message),
    };
    ParseError {
        path: path.to_owned(),
        line,
        message: format!("{pos}: {detail}"),
    }
}

/// Parse the object at `pos` again, typed, and return the line of the first problem with
/// the parser's message for it.
fn relocate(
    format: Format,
    text: &str,
    pos: Position,
    kind: Option<&str>,
    message: &str,
) -> Option<(usize, String)> {
    let seed = ObjectAt {
        item: pos.item,
        kind,
        message,
    };
    match format {
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text).nth(pos.doc)?;
            let e = seed.deserialize(de).err()?;
            Some((e.location()?.line(), strip_location(&e.to_string())))
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            for _ in 0..pos.doc {
                IgnoredAny::deserialize(&mut de).ok()?;
            }
            let e = seed.deserialize(&mut de).err()?;
            Some((e.line(), strip_location(&e.to_string())))
        }
    }
}

/// Error messages end in " at line L column C"; the line is reported on its own.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Typed re-parse of one object (the document itself, or `items[i]` of a List) that always
/// fails: with the format's own error when typing fails (it carries the field's position),
/// else with `message` raised inside the object's mapping so the deserializer places it at
/// the object.
struct ObjectAt<'a> {
    item: Option<usize>,
    kind: Option<&'a str>,
    message: &'a str,
}

impl<'de> DeserializeSeed<'de> for ObjectAt<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.item {
            Some(item) => d.deserialize_map(ListVisitor { item, inner: self }),
            None => d.deserialize_map(ObjectVisitor(self)),
        }
    }
}

struct ObjectVisitor<'a>(ObjectAt<'a>);

impl<'de> de::Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with apiVersion, kind and metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let d = de::value::MapAccessDeserializer::new(map);
        match self.0.kind {
            Some("Ingress") => drop(Ingress::deserialize(d)?),
            Some("IngressClass") => drop(IngressClass::deserialize(d)?),
            Some("Service") => drop(Service::deserialize(d)?),
            Some("Endpoints") => drop(Endpoints::deserialize(d)?),
            Some("EndpointSlice") => drop(EndpointSlice::deserialize(d)?),
            Some("Secret") => drop(Secret::deserialize(d)?),
            Some("ConfigMap") => drop(ConfigMap::deserialize(d)?),
            Some("GatewayClass") => drop(GatewayClass::deserialize(d)?),
            Some("Gateway") => drop(Gateway::deserialize(d)?),
            Some("HTTPRoute") => drop(HTTPRoute::deserialize(d)?),
            Some("GRPCRoute") => drop(GRPCRoute::deserialize(d)?),
            Some("ReferenceGrant") => drop(ReferenceGrant::deserialize(d)?),
            Some("BackendTLSPolicy") => drop(BackendTLSPolicy::deserialize(d)?),
            Some("Namespace") => drop(Namespace::deserialize(d)?),
            _ => drop(IgnoredAny::deserialize(d)?),
        }
        Err(de::Error::custom(self.0.message))
    }
}

/// Finds `items[item]` in a List document and re-parses it, skipping everything else.
struct ListVisitor<'a> {
    item: usize,
    inner: ObjectAt<'a>,
}

impl<'de> de::Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a List object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut inner = Some(self.inner);
        while let Some(key) = map.next_key::<String>()? {
            match (key.as_str(), inner.take()) {
                ("items", Some(inner)) => map.next_value_seed(ItemsSeed {
                    item: self.item,
                    inner,
                })?,
                (_, taken) => {
                    inner = taken;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Err(de::Error::custom("items not found"))
    }
}

struct ItemsSeed<'a> {
    item: usize,
    inner: ObjectAt<'a>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> de::Visitor<'de> for ItemsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.item {
            seq.next_element::<IgnoredAny>()?;
        }
        let inner = ObjectAt {
            item: None,
            ..self.inner
        };
        seq.next_element_seed(inner)?;
        Err(de::Error::custom("item not found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;

    fn yaml(text: &str) -> Result<Vec<Object>, ParseError> {
        parse(Path::new("dir/m.yaml"), Format::Yaml, text)
    }

    fn keys(objs: &[Object]) -> Vec<String> {
        objs.iter()
            .map(|o| format!("{} {}", o.kind(), o.key()))
            .collect()
    }

    const APP: &str = "\
# a comment before the first document
apiVersion: v1
kind: Service
metadata:
  name: kubia
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kubia
spec: {}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubia-1
  namespace: shop
  labels:
    kubernetes.io/service-name: kubia
addressType: IPv4
endpoints:
- addresses: [\"127.0.0.1\"]
ports:
- name: http
  port: 8080
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: kubia
spec:
  rules:
  - host: kubia.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
---
";

    #[test]
    fn multi_document_yaml_skips_other_kinds_and_defaults_namespace() {
        let objs = yaml(APP).unwrap();
        assert_eq!(
            keys(&objs),
            [
                "Service default/kubia",
                "EndpointSlice shop/kubia-1",
                "Ingress default/kubia"
            ]
        );
        let Object::Ingress(ing) = &objs[2] else {
            panic!("not an Ingress")
        };
        let rule = &ing.spec.as_ref().unwrap().rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("kubia.example.com"));
    }

    #[test]
    fn reference_grants_parse_in_v1_and_v1beta1() {
        for version in ["v1", "v1beta1"] {
            let text = format!(
                "apiVersion: gateway.networking.k8s.io/{version}\n\
                 kind: ReferenceGrant\n\
                 metadata: {{name: g, namespace: web}}\n\
                 spec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}}]\n  \
                 to: [{{group: \"\", kind: Service}}]\n"
            );
            let objs = yaml(&text).unwrap();
            assert_eq!(keys(&objs), ["ReferenceGrant web/g"], "{version}");
        }
        assert!(yaml(
            "apiVersion: gateway.networking.k8s.io/v2\nkind: ReferenceGrant\nmetadata: {name: g}\n"
        )
        .is_err());
    }

    #[test]
    fn kubectl_create_secret_tls_output_parses() {
        // `kubectl create secret tls x --cert --key --dry-run=client -o yaml`
        let text = "\
apiVersion: v1
data:
  tls.crt: Y2VydA==
  tls.key: a2V5
kind: Secret
metadata:
  creationTimestamp: null
  name: x
type: kubernetes.io/tls
";
        let objs = yaml(text).unwrap();
        let Object::Secret(secret) = &objs[0] else {
            panic!("not a Secret")
        };
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"cert");
        assert_eq!(data["tls.key"].0, b"key");
        assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn string_data_is_merged_into_data_and_wins() {
        let text = "\
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: ns}
data:
  a: YQ==
  b: YQ==
stringData:
  b: plain
";
        let objs = yaml(text).unwrap();
        let Object::Secret(secret) = &objs[0] else {
            panic!("not a Secret")
        };
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["a"].0, b"a");
        assert_eq!(data["b"].0, b"plain");
        assert!(secret.string_data.is_none());
    }

    #[test]
    fn list_items_are_objects() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Endpoints
  metadata: {name: ext}
  subsets:
  - addresses: [{ip: 127.0.0.1}]
    ports: [{port: 9000}]
- apiVersion: networking.k8s.io/v1
  kind: IngressClass
  metadata: {name: portico, namespace: ignored}
  spec: {controller: portico.dev/ingress-controller}
";
        let objs = yaml(text).unwrap();
        assert_eq!(
            keys(&objs),
            ["Endpoints default/ext", "IngressClass portico"]
        );
        assert_eq!(objs[1].kind(), Kind::IngressClass);
    }

    #[test]
    fn json_stream_parses() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"}}\n{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n\t{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"b\",\"namespace\":\"x\"}}]}";
        let objs = parse(Path::new("m.json"), Format::Json, text).unwrap();
        assert_eq!(keys(&objs), ["Service default/a", "Service x/b"]);
    }

    #[test]
    fn syntax_error_names_path_and_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {x: [}\n";
        let e = yaml(text).unwrap_err();
        assert_eq!(e.path, Path::new("dir/m.yaml"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().starts_with("dir/m.yaml:5: "), "{e}");
    }

    #[test]
    fn missing_name_names_document_and_its_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n# second\napiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n";
        let e = yaml(text).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("document 1"), "{e}");
        assert!(e.message.contains("metadata.name"), "{e}");
    }

    #[test]
    fn missing_kind_is_rejected_with_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n";
        let e = yaml(text).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("missing kind"), "{e}");
    }

    #[test]
    fn wrongly_typed_field_names_its_line() {
        let text = APP.replace("number: 80", "number: eighty");
        let e = yaml(&text).unwrap_err();
        let want = APP.lines().position(|l| l.contains("number: 80")).unwrap() + 1;
        assert_eq!(e.line, Some(want), "{e}");
        assert!(e.message.contains("document 3"), "{e}");
        assert!(e.message.contains("eighty"), "{e}");
    }

    #[test]
    fn list_item_error_names_the_item_line() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: ok}
- apiVersion: v1
  kind: Service
  metadata: {name: bad}
  spec:
    ports: [{port: many}]
";
        let e = yaml(text).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("items[1]"), "{e}");
    }

    #[test]
    fn json_error_names_line() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"}}\n{\"apiVersion\":\"v1\",\n\"kind\":\"Service\",\n\"metadata\":{\"name\":\"b\"},\n\"spec\":{\"ports\":[{\"port\":\"x\"}]}}\n";
        let e = parse(Path::new("m.json"), Format::Json, text).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
    }

    #[test]
    fn old_api_versions_of_other_kinds_are_rejected() {
        let text = "apiVersion: extensions/v1beta1\nkind: IngressClass\nmetadata: {name: a}\n";
        let e = yaml(text).unwrap_err();
        assert!(e.message.contains("networking.k8s.io/v1"), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let text = "apiVersion: networking.k8s.io/v2\nkind: Ingress\nmetadata: {name: a}\n";
        assert!(yaml(text).is_err());
    }

    /// The notes' kubia Ingress, in the form they give it.
    const KUBIA_V1BETA1: &str = "\
apiVersion: v1
kind: Service
metadata: {name: kubia}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata:
    name: kubia
spec:
    rules:
    -   host: kubia.example.com
        http:
            paths:
            -   path: /
                backend:
                    serviceName: kubia-nodeport
                    servicePort: 80
";

    #[test]
    fn v1beta1_ingresses_are_converted_with_a_warning() {
        use k8s_openapi::api::networking::v1::{IngressBackend, ServiceBackendPort};
        for version in ["extensions/v1beta1", "networking.k8s.io/v1beta1"] {
            let text = KUBIA_V1BETA1.replace("extensions/v1beta1", version);
            let parsed = parse_file(Path::new("dir/m.yaml"), Format::Yaml, &text).unwrap();
            assert_eq!(
                keys(&parsed.objects),
                ["Service default/kubia", "Ingress default/kubia"]
            );
            let Object::Ingress(ing) = &parsed.objects[1] else {
                panic!("not an Ingress");
            };
            let spec = ing.spec.as_ref().unwrap();
            let paths = &spec.rules.as_ref().unwrap()[0].http.as_ref().unwrap().paths;
            assert_eq!(paths[0].path_type, "ImplementationSpecific");
            let IngressBackend { service, .. } = &paths[0].backend;
            let service = service.as_ref().unwrap();
            assert_eq!(service.name, "kubia-nodeport");
            assert_eq!(
                service.port,
                Some(ServiceBackendPort {
                    number: Some(80),
                    name: None
                })
            );
            assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
            let w = &parsed.warnings[0];
            assert_eq!(
                (w.reason, w.kind.as_str()),
                ("deprecated_api_version", "Ingress")
            );
            assert_eq!(w.line, Some(5), "{w}");
            assert!(
                w.message.starts_with("Ingress default/kubia: apiVersion "),
                "{w}"
            );
            assert!(w.message.contains(version), "{w}");
            assert!(w.to_string().starts_with("dir/m.yaml:5: "), "{w}");
        }
        // The v1 form warns of nothing.
        let parsed = parse_file(Path::new("m.yaml"), Format::Yaml, APP).unwrap();
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn a_v1beta1_ingress_in_a_list_and_a_bad_port() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1beta1
  kind: Ingress
  metadata: {name: a, namespace: web}
  spec: {backend: {serviceName: a, servicePort: http}}
";
        let parsed = parse_file(Path::new("m.yaml"), Format::Yaml, text).unwrap();
        let Object::Ingress(ing) = &parsed.objects[0] else {
            panic!("not an Ingress");
        };
        let backend = ing.spec.as_ref().unwrap().default_backend.as_ref().unwrap();
        let port = backend.service.as_ref().unwrap().port.as_ref().unwrap();
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(parsed.warnings.len(), 1);
        assert!(
            parsed.warnings[0].message.starts_with("Ingress web/a: "),
            "{}",
            parsed.warnings[0]
        );
        let bad = text.replace("servicePort: http", "servicePort: [1]");
        let e = yaml(&bad).unwrap_err();
        assert!(
            e.message
                .contains("spec.backend.servicePort must be a port number or name"),
            "{e}"
        );
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn a_scalar_document_is_rejected() {
        let e = yaml("just text\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn typos_are_warned_and_a_missing_path_type_rejected() {
        let text = "\
apiVersion: networking.k8s.io/v1
kind: Ingres
metadata: {name: kubia}
---
apiVersion: v1
kind: Service
metadata: {name: kubia}
sepc:
  ports: [{port: 80}]
spec:
  ports: [{port: 80, targtPort: 8080}]
";
        let parsed = parse_file(Path::new("m.yaml"), Format::Yaml, text).unwrap();
        assert_eq!(keys(&parsed.objects), ["Service default/kubia"]);
        let said: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "m.yaml:1: Ingres kubia: no kind \"Ingres\" is served in version \
                 \"networking.k8s.io/v1\" (did you mean \"Ingress\"?); the object is ignored",
                "m.yaml:5: Service default/kubia: unknown field \"sepc\"; ignored",
                "m.yaml:5: Service default/kubia: unknown field \"spec.ports[0].targtPort\"; ignored",
            ]
        );
        assert_eq!(parsed.warnings[0].reason, "unknown_kind");
        assert_eq!(parsed.warnings[1].reason, "unknown_field");

        let missing = APP.replace("        pathType: Prefix\n", "");
        let e = yaml(&missing).unwrap_err();
        assert!(
            e.message.contains(
                "Ingress default/kubia: spec.rules[0].http.paths[0].pathType: Required value"
            ),
            "{e}"
        );
        assert!(e.line.is_some(), "{e}");
        // The converted v1beta1 form gets its pathType, and no warning of unknown fields.
        let parsed = parse_file(Path::new("m.yaml"), Format::Yaml, KUBIA_V1BETA1).unwrap();
        assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
    }

    #[test]
    fn grpcroutes_are_typed_checked_and_misspellings_named() {
        let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - name: echo
    matches:
    - method: {type: Exact, service: echo.Echo, method: Unary}
      headers: [{name: version, value: two}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]
    backendRefs:
    - name: echo
      port: 50051
      weight: 2
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: F, name: f}}]
    sessionPersistence: {sessionName: s}
  - matches: [{method: {servce: typo.Service}}]
";
        let parsed = parse_file(Path::new("m.yaml"), Format::Yaml, text).unwrap();
        let Object::GRPCRoute(route) = &parsed.objects[0] else {
            panic!("not a GRPCRoute");
        };
        let rule = &route.spec.rules[0];
        assert_eq!(rule.name.as_deref(), Some("echo"));
        let method = rule.matches[0].method.as_ref().unwrap();
        assert_eq!(method.service.as_deref(), Some("echo.Echo"));
        assert_eq!(method.method.as_deref(), Some("Unary"));
        assert_eq!(rule.matches[0].headers[0].value, "two");
        assert_eq!(rule.filters[0].type_, "RequestHeaderModifier");
        assert_eq!(rule.backend_refs[0].weight, Some(2));
        assert_eq!(rule.backend_refs[0].filters[0].type_, "ExtensionRef");
        // Fields Portico does not act on are kept; a misspelt one is named.
        let said: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            ["m.yaml:1: GRPCRoute app/rpc: unknown field \"spec.rules[1].matches[0].method.servce\"; ignored"]
        );

        let nameless = text.replace(
            "parentRefs: [{name: gw}]",
            "parentRefs: [{sectionName: http}]",
        );
        let e = yaml(&nameless).unwrap_err();
        assert!(
            e.message
                .contains("GRPCRoute app/rpc: spec.parentRefs[0].name: Required value"),
            "{e}"
        );
        let old = text.replace(
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2",
        );
        let e = yaml(&old).unwrap_err();
        assert!(
            e.message
                .contains("apiVersion gateway.networking.k8s.io/v1alpha2 is not served"),
            "{e}"
        );
    }
}
