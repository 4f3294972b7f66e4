//! A test double of the Kubernetes API server, on 127.0.0.1, speaking the real list/watch
//! protocol for the kinds Portico uses: LIST with a list `resourceVersion`, WATCH from a
//! resourceVersion as newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`), `410 Gone` for a watch that starts before the compacted revision,
//! GET/POST/PUT with optimistic concurrency, PATCH (merge, and server-side apply checked
//! for its field manager and approximated as a merge; a `resourceVersion` in either is a
//! precondition) of objects and their `status`
//! subresource, and field/label selectors. As for the Gateway API CRDs, a kind may be
//! served at more than one version (ReferenceGrant at `v1beta1` and `v1`: one set of
//! objects, each answer in the version asked for), and `metadata.generation` counts the
//! changes to the Gateway API objects' spec. Tests add, change and delete objects, compact
//! the history, drop watch connections, stop and restart the server, and read back every
//! request it received.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A resource the double serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ResDef {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

impl ResDef {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const RESOURCES: &[ResDef] = &[
    ResDef {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    ResDef {
        group: "",
        version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
        namespaced: true,
    },
    ResDef {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    ResDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    ResDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        kind: "Ingress",
        namespaced: true,
    },
    ResDef {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingressclasses",
        kind: "IngressClass",
        namespaced: false,
    },
    ResDef {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
    ResDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    ResDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "gatewayclasses",
        kind: "GatewayClass",
        namespaced: false,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "gateways",
        kind: "Gateway",
        namespaced: true,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "httproutes",
        kind: "HTTPRoute",
        namespaced: true,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "grpcroutes",
        kind: "GRPCRoute",
        namespaced: true,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "backendtlspolicies",
        kind: "BackendTLSPolicy",
        namespaced: true,
    },
    ResDef {
        group: "gateway.networking.k8s.io",
        version: "v1beta1",
        plural: "referencegrants",
        kind: "ReferenceGrant",
        namespaced: true,
    },
    ResDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
    },
    ResDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    ResDef {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
    },
];

/// Other versions a resource is served at, `(group, plural, version)`: the same objects,
/// converted by their `apiVersion` alone (the versions' schemas are the same), as the
/// Gateway API CRDs of v1.6 serve ReferenceGrant at `v1` besides its stored `v1beta1`.
const ALSO_SERVED: &[(&str, &str, &str)] =
    &[("gateway.networking.k8s.io", "referencegrants", "v1")];

impl ResDef {
    /// Whether `version` of this resource is served.
    fn serves(&self, version: &str) -> bool {
        self.version == version
            || ALSO_SERVED
                .iter()
                .any(|(g, p, v)| *g == self.group && *p == self.plural && *v == version)
    }

    /// The apiVersion for `version` of this resource.
    fn api_version_at(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether the API server counts `metadata.generation` for it: the Gateway API kinds
    /// (custom resources with a status subresource, whose generation counts spec changes).
    fn has_generation(&self) -> bool {
        self.group == "gateway.networking.k8s.io"
    }
}

fn res_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.kind == kind && r.serves(version))
}

/// `obj` as of another served version of its resource.
fn at_version(obj: &Value, api_version: &str) -> Value {
    let mut obj = obj.clone();
    if obj.get("apiVersion").is_some() {
        obj["apiVersion"] = json!(api_version);
    }
    obj
}

/// An object without its `metadata` and `status`: what a change of makes a new generation.
fn spec_part(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(m) = obj.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata", "status"] {
            m.remove(k);
        }
    }
    obj
}

/// A request as the double received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Key = (usize, String, String);

struct Subscriber {
    res: usize,
    /// The apiVersion the watch asked for.
    api_version: String,
    namespace: Option<String>,
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    /// (rv, resource, event type, object) for watches that resume from a resourceVersion.
    history: Vec<(u64, usize, &'static str, Value)>,
    watchers: Vec<Subscriber>,
    requests: Vec<Recorded>,
    /// Requests answered 500 while set, by method (e.g. to fail status patches).
    fail_method: Option<String>,
    /// Requests for exactly this path answered 500 while set (to hold one watch back).
    fail_path: Option<String>,
    /// Set by `stop`: the aborted server task may still run briefly, so requests check it.
    stopped: bool,
    /// Whether the Gateway API CRDs count as installed: their group versions are in
    /// discovery (their objects are served either way).
    gateway_api: bool,
    /// The `status` schema of each installed CRD version, by (apiVersion, kind): a
    /// status write that breaks it is refused (422), as an API server refuses it.
    status_schemas: HashMap<(String, String), Arc<jsonschema::Validator>>,
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Record a change, and send it to the watches it matches.
    fn emit(&mut self, res: usize, kind: &'static str, obj: Value) {
        let rv = self.rv;
        self.history.push((rv, res, kind, obj.clone()));
        let line = event_line(kind, &obj);
        let stored = RESOURCES[res].api_version();
        self.watchers.retain(|w| {
            if w.res != res || !matches(w, &obj) {
                return !w.tx.is_closed();
            }
            if w.api_version == stored {
                w.tx.send(line.clone()).is_ok()
            } else {
                w.tx.send(event_line(kind, &at_version(&obj, &w.api_version)))
                    .is_ok()
            }
        });
    }

    fn put(
        &mut self,
        res: usize,
        mut obj: Value,
        keep_rv_check: bool,
    ) -> Result<Value, (StatusCode, Value)> {
        let def = RESOURCES[res];
        // Anything else would not index as an object below.
        if !obj.is_object() || !obj.get("metadata").is_none_or(Value::is_object) {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the object and its metadata must be JSON objects",
            ));
        }
        let ns = if def.namespaced {
            str_at(&obj, &["metadata", "namespace"])
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = match str_at(&obj, &["metadata", "name"]) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                return Err(status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value",
                ))
            }
        };
        let key = (res, ns.clone(), name);
        let existing = self.objects.get(&key).cloned();
        if keep_rv_check {
            let sent = str_at(&obj, &["metadata", "resourceVersion"]).unwrap_or("");
            let current = existing
                .as_ref()
                .and_then(|o| str_at(o, &["metadata", "resourceVersion"]))
                .unwrap_or("");
            if !sent.is_empty() && sent != current {
                return Err(status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let rv = self.next_rv();
        // A create may name its generation (a test's seed); after that the server counts.
        let generation = match &existing {
            Some(old) => {
                let before = old["metadata"]["generation"].as_i64().unwrap_or(1);
                before + i64::from(spec_part(old) != spec_part(&obj))
            }
            None => obj["metadata"]["generation"].as_i64().unwrap_or(1),
        };
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        let Some(meta) = obj
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        else {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "not an object",
            ));
        };
        if def.has_generation() {
            meta["generation"] = json!(generation);
        }
        if def.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        match &existing {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                self.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.uid));
                if meta.get("creationTimestamp").is_none_or(Value::is_null) {
                    meta["creationTimestamp"] = json!(now());
                }
            }
        }
        self.objects.insert(key, obj.clone());
        let kind = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.emit(res, kind, obj.clone());
        Ok(obj)
    }

    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(key.0, "DELETED", obj.clone());
        Some(obj)
    }
}

/// The Gateway API standard CRDs, beside the repository (this file is also compiled
/// into other crates' tests, each a folder below the workspace root).
const GATEWAY_API_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/gateway-api/config/crd/standard"
);

/// A Kubernetes structural schema as JSON Schema: the same keywords, less the
/// `x-kubernetes-*` extensions.
fn json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with("x-kubernetes-"))
                .map(|(k, v)| (k.clone(), json_schema(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// The status write's errors against the object's CRD schema, as an API server's 422.
fn invalid_status(s: &State, obj: &Value) -> Option<(StatusCode, Value)> {
    let key = (
        obj["apiVersion"].as_str()?.to_owned(),
        obj["kind"].as_str()?.to_owned(),
    );
    let validator = s.status_schemas.get(&key)?;
    let written = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let errors: Vec<String> = validator
        .iter_errors(&written)
        .map(|e| format!("status{}: Invalid value: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        return None;
    }
    Some(status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!(
            "{} {:?} is invalid: {}",
            key.1,
            obj["metadata"]["name"],
            errors.join(", ")
        ),
    ))
}

/// Writes to an object never change its status: carry the stored one over.
fn keep_status(s: &State, res: usize, obj: &mut Value) {
    let ns = if RESOURCES[res].namespaced {
        str_at(obj, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    };
    let name = str_at(obj, &["metadata", "name"]).unwrap_or("").to_owned();
    let Some(m) = obj.as_object_mut() else { return };
    match s
        .objects
        .get(&(res, ns, name))
        .and_then(|o| o.get("status"))
    {
        Some(st) => {
            m.insert("status".to_owned(), st.clone());
        }
        None => {
            m.remove("status");
        }
    }
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "2025-01-01T00:00:00Z".to_owned())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
        }),
    )
}

/// One `key=value`, `key==value`, `key!=value`, `key` or `!key` of a selector.
#[derive(Clone, Debug)]
enum Requirement {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(s: &str) -> Vec<Requirement> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((k, v)) = p.split_once("!=") {
                Requirement::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = p.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(p.into())
            }
        })
        .collect()
}

fn satisfied(reqs: &[Requirement], get: impl Fn(&str) -> Option<String>) -> bool {
    reqs.iter().all(|r| match r {
        Requirement::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Requirement::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    })
}

fn field_of(obj: &Value, field: &str) -> Option<String> {
    let mut cur = obj;
    for p in field.split('.') {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn label_of(obj: &Value, label: &str) -> Option<String> {
    obj.get("metadata")?
        .get("labels")?
        .get(label)?
        .as_str()
        .map(str::to_owned)
}

fn selected(obj: &Value, ns: Option<&str>, fields: &[Requirement], labels: &[Requirement]) -> bool {
    if let Some(ns) = ns {
        if str_at(obj, &["metadata", "namespace"]) != Some(ns) {
            return false;
        }
    }
    satisfied(fields, |f| field_of(obj, f)) && satisfied(labels, |l| label_of(obj, l))
}

fn matches(w: &Subscriber, obj: &Value) -> bool {
    selected(obj, w.namespace.as_deref(), &w.fields, &w.labels)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// What a request path names.
struct Target {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    /// The apiVersion asked for (answers carry it).
    api_version: String,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return None,
    };
    let res = RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural && r.serves(version))?;
    Some(Target {
        res,
        namespace,
        name,
        subresource: sub,
        api_version: RESOURCES[res].api_version_at(version),
    })
}

/// `GET /apis/GROUP/VERSION`: the APIResourceList of a served group version (only the
/// Gateway API's, once installed: Portico asks discovery for nothing else).
fn discovery(s: &State, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", group, version] = segs.as_slice() else {
        return None;
    };
    if *group != "gateway.networking.k8s.io" || !s.gateway_api {
        return None;
    }
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == *group && r.serves(version))
        .map(|r| {
            json!({"name": r.plural, "singularName": "", "namespaced": r.namespaced,
                   "kind": r.kind, "verbs": ["get", "list", "watch"]})
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1",
               "groupVersion": format!("{group}/{version}"), "resources": resources})
    })
}

/// The content type of a server-side apply patch.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

type Body = BoxBody<Bytes, Infallible>;

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// 400 for a request body that is not a JSON object.
fn not_json() -> Response<Body> {
    error_response(status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "body is not JSON",
    ))
}

fn error_response((code, v): (StatusCode, Value)) -> Response<Body> {
    json_response(code, &v)
}

/// The API server double. Dropping it stops it.
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(h) = self.lock_server().take() {
            h.abort();
        }
    }
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            ..State::default()
        }));
        let server = tokio::spawn(serve(listener, state.clone()));
        ApiServer {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_server(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this double, without credentials.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: double\n    namespace: default\n\
             current-context: double\nusers:\n- name: double\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Create or replace an object (an `ADDED` or `MODIFIED` watch event). As on a real
    /// server, writing an object leaves its `status` alone (that is the status
    /// subresource's job; see [`ApiServer::apply_status`]). Returns it as stored, with its
    /// new resourceVersion.
    pub fn apply(&self, obj: Value) -> Value {
        self.try_apply(obj).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ApiServer::apply`], with an error for an object the double does not take (a kind
    /// it does not serve, no name).
    pub fn try_apply(&self, obj: Value) -> Result<Value, String> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let res = res_by_kind(&api_version, &kind)
            .ok_or_else(|| format!("the double does not serve {api_version} {kind}"))?;
        let mut obj = obj;
        // A test's apply is unconditional, like `kubectl replace --force`.
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let mut s = self.lock();
        keep_status(&s, res, &mut obj);
        s.put(res, obj, false)
            .map_err(|(code, st)| format!("applying {kind}: {code}: {}", st["message"]))
    }

    /// The apiVersion `kind` is stored at, and whether it is namespaced, if served.
    pub fn served(&self, kind: &str) -> Option<(String, bool)> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| (r.api_version(), r.namespaced))
    }

    /// Replace the `status` of a stored object, as its owner would through the status
    /// subresource.
    pub fn apply_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Value {
        let res = res_by_kind(api_version, kind).expect("served kind");
        let mut s = self.lock();
        let key = (res, namespace.to_owned(), name.to_owned());
        let mut obj = s
            .objects
            .get(&key)
            .cloned()
            .expect("object to set status on");
        obj["status"] = status;
        s.put(res, obj, false).expect("apply status")
    }

    /// Delete an object (a `DELETED` watch event). Returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let res = res_by_kind(api_version, kind).expect("served kind");
        self.lock()
            .remove(&(res, namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = res_by_kind(api_version, kind).expect("served kind");
        self.lock()
            .objects
            .get(&(res, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let res = res_by_kind(api_version, kind).expect("served kind");
        self.lock()
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forget history: a watch resuming from any resourceVersion older than now gets an
    /// `ERROR` event with a 410 Gone `Status`, as after etcd compaction.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.rv += 1;
        s.compacted = s.rv;
        s.history.clear();
    }

    /// Close every open watch stream (the body ends), as a server does on a watch timeout.
    pub fn drop_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Compact and then close every watch: the watchers' next watch gets 410 and relists.
    pub fn expire_watches(&self) {
        self.compact();
        self.drop_watches();
    }

    /// Send a BOOKMARK at the current resourceVersion to the watches that asked for them.
    pub fn bookmark(&self) {
        let mut s = self.lock();
        let rv = s.next_rv();
        s.watchers.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let def = RESOURCES[w.res];
            let obj = json!({"apiVersion": w.api_version, "kind": def.kind,
                             "metadata": {"resourceVersion": rv.to_string()}});
            w.tx.send(event_line("BOOKMARK", &obj)).is_ok()
        });
    }

    pub fn open_watches(&self) -> usize {
        let mut s = self.lock();
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }

    /// Stop serving: the listener and every connection close at once (a crash or a
    /// network cut). The stored objects survive for [`ApiServer::restart`].
    pub fn stop(&self) {
        if let Some(h) = self.lock_server().take() {
            h.abort();
        }
        let mut s = self.lock();
        s.stopped = true;
        s.watchers.clear();
    }

    /// Serve again on the same address with the same objects.
    pub async fn restart(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.lock().stopped = false;
        *self.lock_server() = Some(tokio::spawn(serve(listener, self.state.clone())));
    }

    /// Answer every request with this method with 500 (None to stop).
    pub fn fail_method(&self, method: Option<&str>) {
        self.lock().fail_method = method.map(str::to_owned);
    }

    /// Serve discovery of the Gateway API group versions, as once their CRDs are
    /// installed, and hold status writes to the CRDs' schemas where the standard CRDs
    /// are beside the repository (`../shared/gateway-api/config/crd/standard`).
    pub fn install_gateway_api(&self) {
        self.lock().gateway_api = true;
        let crds = Path::new(GATEWAY_API_CRDS);
        if crds.exists() {
            if let Err(e) = self.check_status_with_crds(crds) {
                panic!("reading the Gateway API CRDs: {e}");
            }
        } else {
            eprintln!(
                "status writes unchecked: no Gateway API CRDs at {}",
                crds.display()
            );
        }
    }

    /// Check every status write to the custom resources that the CRDs in `dir` (YAML
    /// files) define against its version's `status` schema. CEL rules are not run.
    pub fn check_status_with_crds(&self, dir: &Path) -> Result<usize, String> {
        let mut schemas = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let Ok(crd) = Value::deserialize(doc) else {
                    continue;
                };
                if crd["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                let group = crd["spec"]["group"].as_str().unwrap_or_default();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
                for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                    let name = version["name"].as_str().unwrap_or_default();
                    let Some(status) = version.pointer("/schema/openAPIV3Schema/properties/status")
                    else {
                        continue;
                    };
                    let validator = jsonschema::validator_for(&json_schema(status))
                        .map_err(|e| format!("{}: {kind} {name}: {e}", path.display()))?;
                    schemas.insert(
                        (format!("{group}/{name}"), kind.to_owned()),
                        Arc::new(validator),
                    );
                }
            }
        }
        let n = schemas.len();
        self.lock().status_schemas = schemas;
        Ok(n)
    }

    /// Answer every request for exactly this path with 500 (None to stop).
    pub fn fail_path(&self, path: Option<&str>) {
        self.lock().fail_path = path.map(str::to_owned);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Connections live in this set, so aborting the server task closes them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    if state.lock().unwrap_or_else(|e| e.into_inner()).stopped {
        // Stopped: close the connection without an answer, as a dead server would.
        return Err(std::io::Error::other("stopped"));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.stopped {
        return Err(std::io::Error::other("stopped"));
    }
    s.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if s.fail_method.as_deref() == Some(method.as_str())
        || s.fail_path.as_deref() == Some(path.as_str())
    {
        return Ok(error_response(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected failure",
        )));
    }
    if let Some(list) = discovery(&s, &path) {
        return Ok(json_response(StatusCode::OK, &list));
    }
    let Some(t) = parse_path(&path) else {
        return Ok(error_response(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )));
    };
    let params = query_params(&query);
    let def = RESOURCES[t.res];
    // Objects only: indexing anything else as one would panic.
    let body_json = || {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(Value::is_object)
    };
    // Objects are answered in the version asked for.
    let answer = |code: StatusCode, o: &Value| json_response(code, &at_version(o, &t.api_version));
    let resp = match (&method, &t.name) {
        (&Method::GET, None)
            if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            return Ok(watch(&mut s, &t, &params));
        }
        (&Method::GET, None) => {
            let fields = parse_selector(
                params
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            let labels = parse_selector(
                params
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| {
                    *r == t.res && selected(o, t.namespace.as_deref(), &fields, &labels)
                })
                .map(|(_, o)| {
                    // Items of a real list carry no apiVersion/kind.
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    o
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"apiVersion": t.api_version, "kind": format!("{}List", def.kind),
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        (&Method::POST, None) => match body_json() {
            Some(mut obj) => {
                // A metadata that is no object is refused by `put`.
                if def.namespaced && obj.get("metadata").is_none_or(Value::is_object) {
                    obj["metadata"]["namespace"] =
                        json!(t.namespace.clone().unwrap_or_else(|| "default".into()));
                }
                let key = (
                    t.res,
                    str_at(&obj, &["metadata", "namespace"])
                        .unwrap_or("")
                        .to_owned(),
                    str_at(&obj, &["metadata", "name"]).unwrap_or("").to_owned(),
                );
                if s.objects.contains_key(&key) {
                    error_response(status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "already exists",
                    ))
                } else {
                    match s.put(t.res, obj, false) {
                        Ok(o) => answer(StatusCode::CREATED, &o),
                        Err(e) => error_response(e),
                    }
                }
            }
            None => not_json(),
        },
        (m, Some(name)) => {
            let key = (t.res, t.namespace.clone().unwrap_or_default(), name.clone());
            let current = s.objects.get(&key).cloned();
            match (m, current) {
                (_, None) if *m != Method::POST => error_response(status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} \"{}\" not found", def.plural, name),
                )),
                (&Method::GET, Some(obj)) => answer(StatusCode::OK, &obj),
                (&Method::DELETE, Some(_)) => {
                    let obj = s.remove(&key).unwrap_or(Value::Null);
                    answer(StatusCode::OK, &obj)
                }
                (&Method::PUT, Some(old)) => match body_json() {
                    Some(mut obj) => {
                        if t.subresource.as_deref() == Some("status") {
                            let new_status = obj["status"].clone();
                            let rv = obj["metadata"]["resourceVersion"].clone();
                            obj = old;
                            obj["status"] = new_status;
                            obj["metadata"]["resourceVersion"] = rv;
                        } else {
                            if !obj["metadata"].is_object() {
                                obj["metadata"] = json!({});
                            }
                            match old.get("status") {
                                Some(st) => obj["status"] = st.clone(),
                                None => {
                                    if let Some(m) = obj.as_object_mut() {
                                        m.remove("status");
                                    }
                                }
                            }
                        }
                        obj["metadata"]["namespace"] = json!(key.1);
                        obj["metadata"]["name"] = json!(key.2);
                        if t.subresource.as_deref() == Some("status") {
                            if let Some(refused) = invalid_status(&s, &obj) {
                                return Ok(error_response(refused));
                            }
                        }
                        match s.put(t.res, obj, true) {
                            Ok(o) => answer(StatusCode::OK, &o),
                            Err(e) => error_response(e),
                        }
                    }
                    None => not_json(),
                },
                (&Method::PATCH, Some(_))
                    if content_type == APPLY_PATCH
                        && params.get("fieldManager").is_none_or(String::is_empty) =>
                {
                    error_response(status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "fieldManager: Required value: is required for apply patch",
                    ))
                }
                (&Method::PATCH, Some(_))
                    if content_type == APPLY_PATCH
                        && body_json().is_none_or(|p| {
                            str_at(&p, &["apiVersion"]) != Some(t.api_version.as_str())
                                || str_at(&p, &["kind"]) != Some(def.kind)
                        }) =>
                {
                    error_response(status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "apply patch: apiVersion and kind must be set and match the resource",
                    ))
                }
                // A patch naming a resourceVersion applies only over that version, as a
                // real server takes it (a precondition, for server-side apply too).
                (&Method::PATCH, Some(obj))
                    if body_json().is_some_and(|p| {
                        str_at(&p, &["metadata", "resourceVersion"]).is_some_and(|rv| {
                            !rv.is_empty()
                                && Some(rv) != str_at(&obj, &["metadata", "resourceVersion"])
                        })
                    }) =>
                {
                    error_response(status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ))
                }
                // Merge patches, and server-side apply approximated as a merge (the double
                // keeps no managed fields).
                (&Method::PATCH, Some(mut obj)) => match body_json() {
                    Some(patch) => {
                        if t.subresource.as_deref() == Some("status") {
                            // The status subresource changes status only.
                            if let Some(st) = patch.get("status") {
                                merge_patch(&mut obj, &json!({"status": st}));
                            }
                            if let Some(refused) = invalid_status(&s, &obj) {
                                return Ok(error_response(refused));
                            }
                        } else {
                            let mut p = patch.clone();
                            if let Some(m) = p.as_object_mut() {
                                m.remove("status");
                            }
                            merge_patch(&mut obj, &p);
                        }
                        if let Some(meta) = obj["metadata"].as_object_mut() {
                            meta.remove("resourceVersion");
                        }
                        match s.put(t.res, obj, false) {
                            Ok(o) => answer(StatusCode::OK, &o),
                            Err(e) => error_response(e),
                        }
                    }
                    None => not_json(),
                },
                _ => error_response(status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "method not allowed",
                )),
            }
        }
        _ => error_response(status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        )),
    };
    Ok(resp)
}

fn watch(s: &mut State, t: &Target, params: &BTreeMap<String, String>) -> Response<Body> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let sub = Subscriber {
        res: t.res,
        namespace: t.namespace.clone(),
        fields: parse_selector(
            params
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or(""),
        ),
        labels: parse_selector(
            params
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or(""),
        ),
        bookmarks: params.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
        api_version: t.api_version.clone(),
        tx,
    };
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if from != 0 && from < s.compacted {
        // What a real server sends: 200, one ERROR event carrying a 410 Status, then EOF.
        let (_, st) = status(
            StatusCode::GONE,
            "Expired",
            &format!("too old resource version: {from} ({})", s.compacted),
        );
        let _ = sub.tx.send(event_line("ERROR", &st));
    } else {
        if from == 0 {
            // "Any" version: start with the current objects.
            for ((r, _, _), o) in &s.objects {
                if *r == t.res && matches(&sub, o) {
                    let _ = sub
                        .tx
                        .send(event_line("ADDED", &at_version(o, &t.api_version)));
                }
            }
        } else {
            for (rv, r, kind, o) in &s.history {
                if *rv > from && *r == t.res && matches(&sub, o) {
                    let _ = sub
                        .tx
                        .send(event_line(kind, &at_version(o, &t.api_version)));
                }
            }
        }
        s.watchers.push(sub);
    }
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The status line of a merge patch of `body` to the Gateway's status.
    async fn patch_status(api: &ApiServer, body: &Value) -> String {
        let body = body.to_string();
        let mut tcp = tokio::net::TcpStream::connect(api.addr())
            .await
            .expect("connect");
        let head = format!(
            "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/ns/gateways/gw/status HTTP/1.1\r\n\
             host: api\r\ncontent-type: application/merge-patch+json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        tcp.write_all(body.as_bytes()).await.expect("write");
        let mut got = String::new();
        tcp.read_to_string(&mut got).await.expect("read");
        got.lines().next().unwrap_or_default().to_owned()
    }

    /// A status write that breaks the CRD's schema is refused, as a real API server
    /// refuses it; a valid one is stored.
    #[tokio::test]
    async fn status_writes_are_held_to_the_crd_schema() {
        let crds = Path::new(GATEWAY_API_CRDS);
        if !crds.exists() {
            println!("skipped: no Gateway API CRDs at {}", crds.display());
            return;
        }
        let api = ApiServer::start().await;
        api.install_gateway_api();
        assert!(api.lock().status_schemas.len() >= 5);
        api.apply(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "ns", "name": "gw"},
            "spec": {"gatewayClassName": "portico",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}),
        );
        let condition = |status: &str, reason: &str| {
            json!({"type": "Accepted", "status": status, "reason": reason, "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
        };
        // `Maybe` is no condition status, and a reason must not hold spaces.
        for bad in [
            condition("Maybe", "Accepted"),
            condition("True", "Not a reason"),
        ] {
            let got = patch_status(&api, &json!({"status": {"conditions": [bad]}})).await;
            assert!(got.contains(" 422 "), "{got}");
        }
        let stored = |api: &ApiServer| {
            api.get("gateway.networking.k8s.io/v1", "Gateway", "ns", "gw")
                .and_then(|o| o.get("status").cloned())
        };
        assert_eq!(stored(&api), None, "nothing refused was stored");
        let good = json!({"status": {"conditions": [condition("True", "Accepted")],
            "addresses": [{"type": "IPAddress", "value": "127.0.1.1"}]}});
        let got = patch_status(&api, &good).await;
        assert!(got.contains(" 200 "), "{got}");
        assert_eq!(stored(&api), Some(good["status"].clone()));
    }
}
