//! `spec.tls` -> certificates for SNI, and the set of hosts that have TLS (for redirects).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use proxy_core::host::{wildcard_parent, HostName, HostPattern};
use proxy_core::routes::HostMatch;
use tls::{CertDiagnostic, CertProblem, CertSource, CertStore, ParsedCert};

use super::diagnostic::{Diagnostic, DiagnosticReason, Severity};
use super::syntax::parse_host;
use crate::store::{Kind, ObjectKey, Store};

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// Hosts named by any `spec.tls[].hosts` of our Ingresses, whatever became of the Secret:
/// a host whose Secret is broken is still served over TLS, with the default certificate.
#[derive(Debug, Default)]
pub struct TlsHosts {
    exact: HashSet<HostName>,
    /// `*.foo.com` held as `foo.com`.
    wildcard: HashSet<HostName>,
}

impl TlsHosts {
    /// Whether requests matched by a rule for `host` arrive on a TLS host: some TLS host
    /// [covers](HostPattern::covers) it. Only the host itself or the wildcard one label
    /// above it can, so those two are looked up rather than every TLS host tried.
    pub fn covers(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Host(HostPattern::Exact(h)) => {
                self.exact.contains(h)
                    || wildcard_parent(h).is_some_and(|p| self.wildcard.contains(p))
            }
            HostMatch::Host(HostPattern::Wildcard(suffix)) => self.wildcard.contains(suffix),
            HostMatch::Any => false,
        }
    }
}

/// A Secret's key pair, parsed by the tls crate (the only parse it gets: the certificate
/// store is built from it), or why it cannot be used.
pub(super) type Loaded = Result<(ParsedCert, Option<String>), (DiagnosticReason, String)>;

/// Secrets already parsed by an earlier compile. Parsing a key pair loads the private key
/// (an RSA parse costs about a millisecond), and a thousand TLS Secrets are read on every
/// compile; a Secret object that is still the same `Arc` in the store has the same
/// content, so its result stands. Key pairs are also remembered by content: one
/// certificate copied into many Secrets (a wildcard in every namespace) is parsed once.
#[derive(Default)]
pub struct SecretCache {
    checked: HashMap<ObjectKey, (Arc<Secret>, Arc<Loaded>)>,
    pairs: HashMap<(Vec<u8>, Vec<u8>), Result<ParsedCert, CertProblem>>,
}

impl SecretCache {
    /// The check of `key`'s Secret as the store holds it now.
    pub(super) fn load(&self, store: &Store, key: &ObjectKey, used: &mut Self) -> Arc<Loaded> {
        let Some(secret) = store.secrets.get(key) else {
            return Arc::new(Err((
                DiagnosticReason::SecretNotFound,
                format!("not found in namespace {:?}", key.namespace),
            )));
        };
        if let Some((s, loaded)) = used.checked.get(key) {
            if Arc::ptr_eq(s, secret) {
                return loaded.clone();
            }
        }
        let loaded = match self.checked.get(key) {
            Some((s, loaded)) if Arc::ptr_eq(s, secret) => loaded.clone(),
            _ => Arc::new(load_secret(secret, |cert, key_pem| {
                let pair = (cert.to_vec(), key_pem.to_vec());
                let checked = match used.pairs.get(&pair).or_else(|| self.pairs.get(&pair)) {
                    Some(r) => r.clone(),
                    None => ParsedCert::from_pem(cert, key_pem),
                };
                used.pairs.insert(pair, checked.clone());
                checked
            })),
        };

        used.checked
            .insert(key.clone(), (secret.clone(), loaded.clone()));
        loaded
    }
}

/// Reads and checks a TLS Secret: type, keys, PEM, and that the key matches the
/// certificate. The `Option<String>` is a warning for an accepted but unusual Secret.
/// `parse` turns a certificate and key into a pair.
fn load_secret(
    secret: &Secret,
    parse: impl FnOnce(&[u8], &[u8]) -> Result<ParsedCert, CertProblem>,
) -> Loaded {
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    let mut warning = None;
    if type_ != TLS_SECRET_TYPE {
        if type_ != "Opaque" {
            return Err((
                DiagnosticReason::SecretWrongType,
                format!("has type {type_:?}, want {TLS_SECRET_TYPE:?}"),
            ));
        }
        warning = Some(format!(
            "has type \"Opaque\"; accepted because it holds {CERT_KEY} and {KEY_KEY}, \
             but it should be {TLS_SECRET_TYPE:?}"
        ));
    }
    let field = |name: &str| secret_field(secret, name);
    let (Some(cert), Some(key)) = (field(CERT_KEY), field(KEY_KEY)) else {
        return Err((
            DiagnosticReason::SecretMissingKey,
            format!("must hold both {CERT_KEY} and {KEY_KEY}"),
        ));
    };
    let parsed =
        parse(&cert, &key).map_err(|p| (DiagnosticReason::InvalidCertificate, p.to_string()))?;
    Ok((parsed, warning))
}

/// Certificates from the `spec.tls` of our Ingresses, given oldest first.
pub struct TlsOutcome {
    pub certs: Vec<CertSource>,
    pub hosts: TlsHosts,
}

/// `previous` holds the checks of the previous compile; `used` gathers those of this one
/// (so Secrets that went away are forgotten).
pub fn compile_tls(
    store: &Store,
    ingresses: &[(&ObjectKey, &Arc<Ingress>)],
    previous: &SecretCache,
    used: &mut SecretCache,
    diags: &mut Vec<Diagnostic>,
) -> TlsOutcome {
    let mut hosts = TlsHosts::default();
    let mut certs: BTreeMap<String, CertSource> = BTreeMap::new();
    // Which Secret serves a host: the first (oldest Ingress) to claim it.
    let mut owner: HashMap<HostPattern, String> = HashMap::new();

    for (key, ingress) in ingresses {
        let entries = ingress.spec.as_ref().and_then(|s| s.tls.as_deref());
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let mut entry_hosts = Vec::new();
            for (j, raw) in entry.hosts.iter().flatten().enumerate() {
                match parse_host(Some(raw)) {
                    Ok(HostMatch::Host(h)) => {
                        match &h {
                            HostPattern::Exact(name) => hosts.exact.insert(name.clone()),
                            HostPattern::Wildcard(suffix) => hosts.wildcard.insert(suffix.clone()),
                        };
                        entry_hosts.push(h);
                    }
                    Ok(HostMatch::Any) => {}
                    Err(msg) => diags.push(Diagnostic::error(
                        Kind::Ingress,
                        key,
                        format!("spec.tls[{i}].hosts[{j}]"),
                        DiagnosticReason::InvalidHost,
                        format!("{msg}, ignored"),
                    )),
                }
            }
            let Some(secret_name) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                // No Secret: these hosts are served with the default certificate.
                continue;
            };
            let field = format!("spec.tls[{i}].secretName");
            if entry_hosts.is_empty() {
                diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    key,
                    format!("spec.tls[{i}].hosts"),
                    DiagnosticReason::TlsNoHosts,
                    format!("TLS entry for secret {secret_name:?} lists no hosts, so its certificate serves none; list the hosts it is for"),
                ));
                continue;
            }
            let secret_key = ObjectKey::new(&key.namespace, secret_name);
            // Each Secret is checked once, however many Ingresses name it.
            let loaded = previous.load(store, &secret_key, used);
            let parsed = match &*loaded {
                Ok((parsed, warning)) => {
                    if let Some(w) = warning {
                        diags.push(Diagnostic::warning(
                            Kind::Ingress,
                            key,
                            field,
                            DiagnosticReason::SecretWrongType,
                            format!("secret {secret_name:?}: {w}"),
                        ));
                    }
                    parsed
                }
                Err((reason, msg)) => {
                    diags.push(Diagnostic {
                        severity: Severity::Error,
                        kind: Kind::Ingress,
                        object: (*key).clone(),
                        field,
                        reason: *reason,
                        message: format!(
                            "secret {secret_name:?}: {msg}; hosts {} fall back to the default certificate",
                            entry_hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                        ),
                    });
                    continue;
                }
            };
            let name = secret_key.to_string();
            for (j, host) in entry_hosts.into_iter().enumerate() {
                match owner.get(&host) {
                    Some(existing) if *existing != name => {
                        diags.push(Diagnostic::warning(
                            Kind::Ingress,
                            key,
                            format!("spec.tls[{i}].hosts[{j}]"),
                            DiagnosticReason::TlsHostConflict,
                            format!("host \"{host}\" is already served by secret {existing:?} of an older Ingress; secret {name:?} is not used for it"),
                        ));
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(host.clone(), name.clone());
                    }
                }
                let cert = certs.entry(name.clone()).or_insert_with(|| CertSource {
                    name: name.clone(),
                    hosts: Vec::new(),
                    cert: Ok(parsed.clone()),
                });
                if !cert.hosts.contains(&host) {
                    cert.hosts.push(host);
                }
            }
        }
    }
    let certs = certs
        .into_values()
        .map(|mut c| {
            c.hosts.sort();
            c
        })
        .collect();
    TlsOutcome { certs, hosts }
}

/// `--default-certificate NS/NAME`: the certificate for connections no SNI host matches.
pub fn default_cert(
    store: &Store,
    key: &ObjectKey,
    previous: &SecretCache,
    used: &mut SecretCache,
    diags: &mut Vec<Diagnostic>,
) -> Option<CertSource> {
    let loaded = previous.load(store, key, used);
    match &*loaded {
        Ok((parsed, warning)) => {
            if let Some(w) = warning {
                diags.push(Diagnostic::warning(
                    Kind::Secret,
                    key,
                    "type",
                    DiagnosticReason::SecretWrongType,
                    w.clone(),
                ));
            }
            Some(CertSource {
                name: key.to_string(),
                hosts: Vec::new(),
                cert: Ok(parsed.clone()),
            })
        }
        Err((reason, msg)) => {
            diags.push(Diagnostic::error(
                Kind::Secret,
                key,
                "",
                *reason,
                format!("default certificate: {msg}; a generated self-signed certificate is used instead"),
            ));
            None
        }
    }
}

/// The certificate store for SNI, from this compile's parsed pairs (nothing is parsed
/// again), and what it finds (expired, host not covered, ...) as diagnostics, so they are
/// logged, counted and sent as Events like every other.
pub fn cert_store(
    certs: &[CertSource],
    default: Option<&CertSource>,
    diags: &mut Vec<Diagnostic>,
) -> CertStore {
    let (store, found) = CertStore::build(certs, default);
    diags.extend(found.iter().map(store_diagnostic));
    store
}

/// A certificate store finding as a diagnostic on the Secret it came from (`ns/name`).
fn store_diagnostic(d: &CertDiagnostic) -> Diagnostic {
    let object = match d.source.split_once('/') {
        Some((ns, name)) => ObjectKey::new(ns, name),
        None => ObjectKey::new("", &d.source),
    };
    let (reason, field) = match &d.problem {
        CertProblem::NoCertificate
        | CertProblem::CertificatePem(_)
        | CertProblem::CertificateParse { .. }
        | CertProblem::LeafNotFirst { .. } => {
            (DiagnosticReason::InvalidCertificate, "data.tls.crt")
        }
        CertProblem::NoKey
        | CertProblem::EncryptedKey
        | CertProblem::KeyPem(_)
        | CertProblem::UnsupportedKey(_) => (DiagnosticReason::InvalidCertificate, "data.tls.key"),
        CertProblem::KeyMismatch => (DiagnosticReason::InvalidCertificate, "data"),
        CertProblem::Expired { .. } | CertProblem::NotYetValid { .. } => {
            (DiagnosticReason::CertificateNotValidNow, "data.tls.crt")
        }
        CertProblem::HostNotCovered { .. } => {
            (DiagnosticReason::CertificateHostMismatch, "data.tls.crt")
        }
        CertProblem::DuplicateHost { .. } => (DiagnosticReason::TlsHostConflict, ""),
        CertProblem::NoHosts => (DiagnosticReason::TlsNoHosts, ""),
        CertProblem::NoSubjectAltName { .. } => {
            (DiagnosticReason::CertificateWithoutSan, "data.tls.crt")
        }
    };
    let severity = match d.severity() {
        tls::Severity::Warning => Severity::Warning,
        tls::Severity::Error => Severity::Error,
    };
    let mut message = d.problem.to_string();
    if severity == Severity::Error {
        message.push_str("; its hosts get the default certificate");
    }
    Diagnostic {
        severity,
        kind: Kind::Secret,
        object,
        field: field.to_owned(),
        reason,
        message,
    }
}

/// A Secret's value under `name`, if not empty. `data` is what the API server holds;
/// `stringData` is what a hand-written manifest in the file source may carry instead.
pub(super) fn secret_field(secret: &Secret, name: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|s| s.clone().into_bytes())
        })
        .filter(|b| !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(host: &str) -> (Vec<u8>, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
        (
            c.cert.pem().into_bytes(),
            c.signing_key.serialize_pem().into_bytes(),
        )
    }

    fn host(h: &str) -> HostPattern {
        HostPattern::parse(h).unwrap()
    }

    #[test]
    fn store_findings_name_the_secret_field_and_reason() {
        let (cert, _) = pair("a.test");
        let (_, other_key) = pair("a.test");
        let (good_cert, good_key) = pair("b.test");
        let certs = [
            CertSource::from_pem("shop/mismatch", vec![host("a.test")], &cert, &other_key),
            CertSource::from_pem(
                "shop/good",
                vec![host("b.test"), host("c.test")],
                &good_cert,
                &good_key,
            ),
        ];
        let mut diags = Vec::new();
        let store = cert_store(&certs, None, &mut diags);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert_eq!(diags[0].object, ObjectKey::new("shop", "mismatch"));
        assert_eq!(diags[0].kind, Kind::Secret);
        assert_eq!(diags[0].severity, Severity::Error);
        assert_eq!(diags[0].reason, DiagnosticReason::InvalidCertificate);
        assert!(
            diags[0].message.contains("does not match"),
            "{}",
            diags[0].message
        );
        assert_eq!(diags[1].object, ObjectKey::new("shop", "good"));
        assert_eq!(diags[1].severity, Severity::Warning);
        assert_eq!(diags[1].reason, DiagnosticReason::CertificateHostMismatch);
        assert!(diags[1].message.contains("c.test"));
        assert_eq!(store.source_for("b.test"), Some("shop/good"));
        assert_eq!(store.source_for("a.test"), None);
    }

    #[test]
    fn a_cn_only_certificate_is_served_with_a_warning_and_the_fix() {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubia.example.com");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let certs = [CertSource::from_pem(
            "default/tls-secret",
            vec![host("kubia.example.com")],
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )];
        let mut diags = Vec::new();
        let store = cert_store(&certs, None, &mut diags);
        assert_eq!(
            store.source_for("kubia.example.com"),
            Some("default/tls-secret")
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(
            (d.severity, d.reason, d.kind, d.field.as_str()),
            (
                Severity::Warning,
                DiagnosticReason::CertificateWithoutSan,
                Kind::Secret,
                "data.tls.crt"
            )
        );
        assert_eq!(d.object, ObjectKey::new("default", "tls-secret"));
        for want in [
            "no subjectAltName",
            "browsers and Go clients reject CN-only certificates",
            "-addext \"subjectAltName=DNS:kubia.example.com\"",
        ] {
            assert!(d.message.contains(want), "missing {want} in {}", d.message);
        }
        // With a subjectAltName there is nothing to say.
        let (good_cert, good_key) = pair("kubia.example.com");
        let certs = [CertSource::from_pem(
            "default/tls-secret",
            vec![host("kubia.example.com")],
            &good_cert,
            &good_key,
        )];
        let mut diags = Vec::new();
        cert_store(&certs, None, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
    }
}
