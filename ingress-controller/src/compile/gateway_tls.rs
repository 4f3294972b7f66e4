//! A Gateway's `spec.tls`: the client certificates its HTTPS listeners ask for
//! (`frontend`, served by the `auth-tls-*` machinery: the listener's hosts go into the
//! same per-SNI client-certificate settings) and the certificate it presents to
//! backends reached over TLS (`backend.clientCertificateRef`, presented through the
//! BackendTLSPolicy settings as `proxy-ssl-secret`'s is).
//!
//! Both fail closed. A listener whose CA certificates are all unusable is not served
//! (`Accepted=False`, `NoValidCACertificate`) and its hosts' handshakes fail, rather
//! than serve them without client verification; a backend client certificate that
//! cannot be used makes the Gateway's requests to TLS backends fail (503), rather than
//! go out without it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use proxy_core::host::HostPattern;
use proxy_core::pipeline::{ClientCertPolicy, VerifyClient};
use serde::Deserialize;

use super::certs::secret_field;
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::gateway::granted_to;
use crate::gateway_api::{Gateway, Listener};
use crate::store::{Kind, ObjectKey, Store};

/// Intermediates allowed between a client's certificate and a CA (the spec leaves the
/// depth to the implementation).
const FRONTEND_VERIFY_DEPTH: u32 = 4;
const CA_KEY: &str = "ca.crt";

/// `spec.tls.frontend`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FrontendTls {
    #[serde(default)]
    default: Option<TlsConfig>,
    #[serde(default)]
    per_port: Vec<PerPort>,
}

#[derive(Debug, Default, Deserialize)]
struct TlsConfig {
    #[serde(default)]
    validation: Option<Validation>,
}

#[derive(Debug, Deserialize)]
struct PerPort {
    port: i32,
    #[serde(default)]
    tls: TlsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Validation {
    #[serde(default)]
    ca_certificate_refs: Vec<ObjectRef>,
    #[serde(default)]
    mode: Option<String>,
}

/// An `ObjectReference` (CA certificates) or `SecretObjectReference` (the backend
/// client certificate, whose kind defaults to Secret).
#[derive(Debug, Default, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

const INSECURE_FALLBACK: &str = "AllowInsecureFallback";

/// A listener's client certificate settings, ready for its hosts.
#[derive(Debug)]
pub(super) struct FrontendAuth {
    /// The Gateway they are of.
    pub gateway: ObjectKey,
    /// The CA bundle and handshake behaviour, for the listener's SNI hosts.
    pub auth: Arc<tls::ClientAuth>,
    /// The request-time settings, for the route table's client-certificate filter.
    pub policy: Arc<ClientCertPolicy>,
}

/// How a listener's client certificate validation came out.
#[derive(Debug)]
pub(super) enum ListenerValidation {
    /// None applies to the listener.
    None,
    /// Usable; `problem`: some references were not (ResolvedRefs=False, with the
    /// spec's reason), the others are used.
    Usable {
        frontend: Arc<FrontendAuth>,
        problem: Option<(&'static str, String)>,
    },
    /// No usable CA certificate: the listener is not served, and its hosts'
    /// handshakes fail.
    Unusable {
        frontend: Arc<FrontendAuth>,
        reason: &'static str,
        message: String,
    },
}

/// The validation that applies to an HTTPS `listener` of Gateway `key`: the `perPort`
/// entry of its port, else `default`. Each problem is also a diagnostic naming the
/// field.
pub(super) fn listener_validation(
    store: &Store,
    key: &ObjectKey,
    gw: &Gateway,
    listener: &Listener,
    diags: &mut Vec<Diagnostic>,
) -> ListenerValidation {
    let Some(raw) = gw
        .spec
        .rest
        .get("tls")
        .and_then(|t| t.get("frontend"))
        .filter(|f| !f.is_null())
    else {
        return ListenerValidation::None;
    };
    let frontend: FrontendTls = match serde_json::from_value(raw.clone()) {
        Ok(f) => f,
        Err(e) => {
            // Client verification was asked for in a form Portico cannot read: its
            // HTTPS listeners are not served without it.
            let message = format!("spec.tls.frontend cannot be read: {e}");
            diags.push(refusal(key, listener, "spec.tls.frontend", &message));
            return unusable(key, "spec.tls.frontend", "InvalidCACertificateRef", message);
        }
    };
    let per_port = frontend
        .per_port
        .iter()
        .enumerate()
        .find(|(_, p)| p.port == listener.port);
    let (field, validation) = match per_port {
        Some((i, p)) => (
            format!("spec.tls.frontend.perPort[{i}].tls.validation"),
            p.tls.validation.as_ref(),
        ),
        None => (
            "spec.tls.frontend.default.validation".to_owned(),
            frontend
                .default
                .as_ref()
                .and_then(|d| d.validation.as_ref()),
        ),
    };
    let Some(v) = validation else {
        return ListenerValidation::None;
    };
    let source: Arc<str> = format!("Gateway {key} {field}").into();
    let insecure = match v.mode.as_deref() {
        None | Some("AllowValidOnly") => false,
        Some(INSECURE_FALLBACK) => true,
        Some(other) => {
            // The stricter mode, rather than let unverified clients through.
            diags.push(Diagnostic::warning(
                Kind::Gateway,
                key,
                format!("{field}.mode"),
                DiagnosticReason::CertificateRefInvalid,
                format!(
                    "listener {:?}: mode {other:?} is not AllowValidOnly or AllowInsecureFallback; AllowValidOnly applies",
                    listener.name
                ),
            ));
            false
        }
    };
    if v.ca_certificate_refs.is_empty() {
        let message = "no caCertificateRefs".to_owned();
        diags.push(refusal(
            key,
            listener,
            &format!("{field}.caCertificateRefs"),
            &message,
        ));
        return unusable(key, &field, "InvalidCACertificateRef", message);
    }
    let mut bundle = Vec::new();
    let mut problem: Option<(&'static str, String)> = None;
    for (i, r) in v.ca_certificate_refs.iter().enumerate() {
        let field = format!("{field}.caCertificateRefs[{i}]");
        let kind = r.kind.as_deref().unwrap_or_default();
        let namespace = r.namespace.as_deref().unwrap_or(&key.namespace);
        let judged = if !r.group.is_empty() || kind != "ConfigMap" {
            Err((
                "InvalidCACertificateKind",
                format!(
                    "kind {kind:?} of group {:?} is not supported, only ConfigMaps",
                    r.group
                ),
            ))
        } else if namespace != key.namespace
            && !granted_to(
                store,
                "Gateway",
                &key.namespace,
                namespace,
                "ConfigMap",
                &r.name,
            )
        {
            Err((
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {namespace:?} lets Gateways of {:?} use ConfigMap {:?}",
                    key.namespace, r.name
                ),
            ))
        } else {
            read_ca(store, &ObjectKey::new(namespace, &r.name))
                .map_err(|why| ("InvalidCACertificateRef", why))
        };
        match judged {
            Ok(pem) => {
                bundle.extend_from_slice(&pem);
                bundle.push(b'\n');
            }
            Err((reason, why)) => {
                let message = format!("listener {:?}: {why} ({reason})", listener.name);
                diags.push(Diagnostic::error(
                    Kind::Gateway,
                    key,
                    field,
                    DiagnosticReason::CertificateRefInvalid,
                    format!("{message}; the reference is not used"),
                ));
                problem.get_or_insert((reason, message));
            }
        }
    }
    if bundle.is_empty() {
        let (reason, message) = problem.unwrap_or(("InvalidCACertificateRef", String::new()));
        diags.push(refusal(key, listener, &field, "no usable CA certificate"));
        return unusable(key, &field, reason, message);
    }
    // Each bundle was read on its own above; together they cannot fail.
    let mode = if insecure {
        VerifyClient::Optional
    } else {
        VerifyClient::On
    };
    let auth = match tls::ClientAuth::from_pem(mode, FRONTEND_VERIFY_DEPTH, &bundle, None) {
        Ok(a) if insecure => a,
        Ok(a) => a.refusing_in_handshake(),
        Err(e) => {
            let message = format!("the CA certificates cannot be used together: {e}");
            diags.push(refusal(key, listener, &field, &message));
            return unusable(key, &field, "InvalidCACertificateRef", message);
        }
    };
    ListenerValidation::Usable {
        frontend: Arc::new(FrontendAuth {
            gateway: key.clone(),
            auth: Arc::new(auth),
            policy: Arc::new(ClientCertPolicy {
                source,
                // AllowInsecureFallback: asked for, never refused (the backend decides).
                verify: if insecure {
                    VerifyClient::Off
                } else {
                    VerifyClient::On
                },
                error_page: None,
                pass_cert: false,
                match_cn: None,
            }),
        }),
        problem,
    }
}

/// The diagnostic of a listener left unserved for want of a CA certificate.
fn refusal(key: &ObjectKey, listener: &Listener, field: &str, why: &str) -> Diagnostic {
    Diagnostic::error(
        Kind::Gateway,
        key,
        field.to_owned(),
        DiagnosticReason::CertificateRefInvalid,
        format!(
            "listener {:?}: {why} (NoValidCACertificate); the listener is not served and its hosts' TLS handshakes fail",
            listener.name
        ),
    )
}

fn unusable(
    key: &ObjectKey,
    field: &str,
    reason: &'static str,
    message: String,
) -> ListenerValidation {
    ListenerValidation::Unusable {
        frontend: Arc::new(FrontendAuth {
            gateway: key.clone(),
            auth: Arc::new(tls::ClientAuth::refusing_all()),
            policy: Arc::new(ClientCertPolicy {
                source: format!("Gateway {key} {field} (no usable CA certificate)").into(),
                verify: VerifyClient::On,
                error_page: None,
                pass_cert: false,
                match_cn: None,
            }),
        }),
        reason,
        message,
    }
}

/// A ConfigMap's `ca.crt`, checked on its own so a message names the bad one.
fn read_ca(store: &Store, cm: &ObjectKey) -> Result<Vec<u8>, String> {
    let map = store
        .config_maps
        .get(cm)
        .ok_or_else(|| format!("ConfigMap {cm} not found"))?;
    let pem = map
        .data
        .as_ref()
        .and_then(|d| d.get(CA_KEY))
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| {
            map.binary_data
                .as_ref()
                .and_then(|d| d.get(CA_KEY))
                .map(|b| b.0.clone())
        })
        .ok_or_else(|| format!("ConfigMap {cm} holds no {CA_KEY}"))?;
    tls::ClientAuth::from_pem(VerifyClient::On, FRONTEND_VERIFY_DEPTH, &pem, None)
        .map_err(|e| format!("ConfigMap {cm}: {e}"))?;
    Ok(pem)
}

/// Whether the Gateway lets clients through without a valid certificate somewhere
/// (`mode: AllowInsecureFallback`, by default or for a port): the spec's
/// `InsecureFrontendValidationMode` condition.
pub(super) fn insecure_fallback(gw: &Gateway) -> bool {
    let Some(frontend) = gw.spec.rest.get("tls").and_then(|t| t.get("frontend")) else {
        return false;
    };
    let mode = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.get("validation"))
            .and_then(|v| v.get("mode"))
            .and_then(|m| m.as_str())
            == Some(INSECURE_FALLBACK)
    };
    mode(frontend.get("default"))
        || frontend
            .get("perPort")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .any(|p| mode(p.get("tls")))
}

/// The hosts a listener's client certificate settings take by SNI: its hostname, or,
/// without one, the names of its certificates (the hosts its handshakes are for on
/// Portico's shared HTTPS listener).
pub(super) fn listener_hosts(
    hostname: Option<&str>,
    certs: &[tls::ParsedCert],
) -> Vec<HostPattern> {
    match hostname.and_then(|h| HostPattern::parse(h).ok()) {
        Some(h) => vec![h],
        None => {
            let mut out: Vec<HostPattern> = Vec::new();
            for name in certs.iter().flat_map(|c| c.names()) {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            out
        }
    }
}

/// A Gateway's backend client certificate (`spec.tls.backend.clientCertificateRef`).
#[derive(Debug)]
pub(super) enum BackendClient {
    /// None is set.
    None,
    /// `tls.crt` and `tls.key`, and the key routes through the Gateway name it by.
    Usable {
        id: Arc<str>,
        cert: Vec<u8>,
        key: Vec<u8>,
    },
    /// Set but unusable: the key its routes name, which has no settings (their
    /// requests to TLS backends fail), and the spec's reason and message.
    Unusable {
        id: Arc<str>,
        reason: &'static str,
        message: String,
    },
}

impl BackendClient {
    pub fn id(&self) -> Option<&Arc<str>> {
        match self {
            BackendClient::None => None,
            BackendClient::Usable { id, .. } | BackendClient::Unusable { id, .. } => Some(id),
        }
    }
}

/// Judges Gateway `key`'s backend client certificate; a problem is also a diagnostic.
pub(super) fn backend_client(
    store: &Store,
    key: &ObjectKey,
    gw: &Gateway,
    diags: &mut Vec<Diagnostic>,
) -> BackendClient {
    const FIELD: &str = "spec.tls.backend.clientCertificateRef";
    let Some(raw) = gw
        .spec
        .rest
        .get("tls")
        .and_then(|t| t.get("backend"))
        .and_then(|b| b.get("clientCertificateRef"))
        .filter(|r| !r.is_null())
    else {
        return BackendClient::None;
    };
    let judged = serde_json::from_value::<ObjectRef>(raw.clone())
        .map_err(|e| ("InvalidClientCertificateRef", format!("cannot be read: {e}")))
        .and_then(|r| {
            let kind = r.kind.as_deref().unwrap_or("Secret");
            let namespace = r.namespace.as_deref().unwrap_or(&key.namespace);
            if !r.group.is_empty() || kind != "Secret" {
                return Err((
                    "InvalidClientCertificateRef",
                    format!(
                        "kind {kind:?} of group {:?} is not supported, only Secrets",
                        r.group
                    ),
                ));
            }
            if namespace != key.namespace
                && !granted_to(store, "Gateway", &key.namespace, namespace, "Secret", &r.name)
            {
                return Err((
                    "RefNotPermitted",
                    format!(
                        "no ReferenceGrant in namespace {namespace:?} lets Gateways of {:?} use Secret {:?}",
                        key.namespace, r.name
                    ),
                ));
            }
            let secret_key = ObjectKey::new(namespace, &r.name);
            let secret = store.secrets.get(&secret_key).ok_or((
                "InvalidClientCertificateRef",
                format!("Secret {secret_key} not found"),
            ))?;
            let (Some(cert), Some(pem_key)) = (
                secret_field(secret, "tls.crt"),
                secret_field(secret, "tls.key"),
            ) else {
                return Err((
                    "InvalidClientCertificateRef",
                    format!("Secret {secret_key} does not hold both tls.crt and tls.key"),
                ));
            };
            tls::client_key_pair(&cert, &pem_key).map_err(|e| {
                (
                    "InvalidClientCertificateRef",
                    format!("Secret {secret_key}: {e}"),
                )
            })?;
            Ok((secret_key, cert, pem_key))
        });
    match judged {
        Ok((secret, cert, pem_key)) => {
            // The contents are part of the identity: connections made with an older
            // certificate are not reused once the Secret changes.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&cert, &pem_key).hash(&mut h);
            let id = format!(
                "Gateway {key} client certificate {secret} content={:016x}",
                h.finish()
            );
            BackendClient::Usable {
                id: id.into(),
                cert,
                key: pem_key,
            }
        }
        Err((reason, why)) => {
            diags.push(Diagnostic::error(
                Kind::Gateway,
                key,
                FIELD,
                DiagnosticReason::InvalidUpstreamTls,
                format!(
                    "{why} ({reason}); the Gateway's requests to backends reached over TLS fail"
                ),
            ));
            BackendClient::Unusable {
                id: format!("Gateway {key} client certificate (unusable)").into(),
                reason,
                message: why,
            }
        }
    }
}

/// Adds the listeners' client certificate settings (`frontend`, in order) to those of
/// the Ingresses (`hosts`, `table`): a host already claimed keeps its settings, and the
/// listener is told (its routes there answer 503, see `ClientCertAuth::owner`).
pub(super) fn merge_frontend(
    frontend: &[(HostPattern, Arc<FrontendAuth>)],
    hosts: &mut Vec<(HostPattern, Arc<tls::ClientAuth>)>,
    table: &mut proxy_core::pipeline::ClientAuthTable,
    diags: &mut Vec<Diagnostic>,
) {
    for (host, f) in frontend {
        if table.insert(host, f.policy.clone()) {
            hosts.push((host.clone(), f.auth.clone()));
            continue;
        }
        let Some(owner) = table.get_configured(host) else {
            continue;
        };
        if owner.source != f.policy.source {
            diags.push(Diagnostic::warning(
                Kind::Gateway,
                &f.gateway,
                "spec.tls.frontend",
                DiagnosticReason::CertificateRefInvalid,
                format!(
                    "host {host} already checks client certificates with the settings of {}; this Gateway's routes there answer 503",
                    owner.source
                ),
            ));
        }
    }
}
