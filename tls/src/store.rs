//! The certificate store: every configured certificate, indexed by the hosts it serves,
//! and [`ParsedCert`], the one place a PEM pair is parsed and checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use proxy_core::host::{normalize_request_host, wildcard_parent, HostName, HostPattern};

use crate::diagnostic::{CertDiagnostic, CertProblem};
use crate::CertSource;

/// Parsed certificates by host: exact names, one-label wildcards, and an optional default.
/// Immutable once built; rotation builds a new one and swaps it into the resolver.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<HostName, Entry>,
    /// Keyed by the wildcard's suffix: `*.foo.com` is stored under `foo.com`.
    wildcard: HashMap<HostName, Entry>,
    default: Option<Arc<CertifiedKey>>,
    /// Every loaded certificate once, for expiry monitoring.
    served: Vec<ServedCert>,
}

/// A certificate the store serves, as monitoring sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCert {
    /// `CertSource.name`.
    pub source: String,
    /// End of validity of the server certificate, unix seconds.
    pub not_after: i64,
    /// Whether this is the configured default certificate.
    pub default: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    source: Arc<str>,
    key: Arc<CertifiedKey>,
}

/// A PEM pair that passed every check that would make it unusable: the signing key,
/// the hosts the certificate names and its validity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ParsedCert(Arc<Loaded>);

/// Two parses are the same certificate when their chains are: a key matched its
/// certificate, so the same chain means the same key pair.
impl PartialEq for ParsedCert {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.key.cert == other.0.key.cert
    }
}

impl Eq for ParsedCert {}

impl ParsedCert {
    /// Parses a certificate chain (server certificate first) and its private key, and
    /// checks that they can be served: PEM, X.509, a supported unencrypted key that
    /// matches the first certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ParsedCert, CertProblem> {
        parse(cert_pem, key_pem, &proxy_core::crypto_provider()).map(ParsedCert)
    }

    /// The hosts the certificate itself names (subjectAltName, else Common Name).
    pub fn names(&self) -> &[HostPattern] {
        &self.0.names
    }

    /// Start of validity, unix seconds.
    pub fn not_before(&self) -> i64 {
        self.0.not_before
    }

    /// End of validity, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.0.not_after
    }

    /// The Common Name that names the certificate's host when it has no subjectAltName
    /// DNS name (served, but rejected by browsers and Go clients).
    pub fn common_name_only(&self) -> Option<&str> {
        self.0.cn_only.as_deref()
    }
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Hosts the certificate itself covers (subjectAltName, else Common Name); names
    /// that are not valid hosts are left out, as they can cover none.
    names: Vec<HostPattern>,
    /// The Common Name its hosts come from, when it has no subjectAltName DNS name.
    cn_only: Option<String>,
    not_before: i64,
    not_after: i64,
}

impl CertStore {
    /// Builds the store from configured sources, in precedence order: when two sources
    /// claim one host, the earlier keeps it. `default` (e.g. `--default-certificate`) is
    /// served for unknown or missing SNI; its hosts are not consulted.
    ///
    /// Never fails: a broken source yields an error diagnostic and is left out, so its
    /// hosts get the default certificate while every other source keeps serving. Parses
    /// nothing: the sources hold parsed pairs, so a rebuild costs only the indexing.
    pub fn build(
        sources: &[CertSource],
        default: Option<&CertSource>,
    ) -> (CertStore, Vec<CertDiagnostic>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self::build_at(sources, default, now)
    }

    /// [`CertStore::build`] with an explicit clock (unix seconds) for validity checks.
    pub fn build_at(
        sources: &[CertSource],
        default: Option<&CertSource>,
        now: i64,
    ) -> (CertStore, Vec<CertDiagnostic>) {
        let mut diags = Vec::new();
        let mut store = CertStore::default();
        let load = |source: &CertSource, diags: &mut Vec<CertDiagnostic>| check(source, now, diags);

        let default_loaded = default.and_then(|source| load(source, &mut diags));
        let loaded: Vec<_> = sources
            .iter()
            .map(|source| load(source, &mut diags))
            .collect();
        if let (Some(source), Some(l)) = (default, &default_loaded) {
            store.default = Some(l.key.clone());
            store.served.push(ServedCert {
                source: source.name.clone(),
                not_after: l.not_after,
                default: true,
            });
        }

        for (source, loaded) in sources.iter().zip(loaded) {
            let Some(loaded) = loaded else {
                continue;
            };
            if !store
                .served
                .iter()
                .any(|c| !c.default && c.source == source.name)
            {
                store.served.push(ServedCert {
                    source: source.name.clone(),
                    not_after: loaded.not_after,
                    default: false,
                });
            }
            let entry = Entry {
                source: Arc::from(source.name.as_str()),
                key: loaded.key.clone(),
            };
            let hosts: &[HostPattern] = if source.hosts.is_empty() {
                // No hosts in the TLS entry: serve the names the certificate itself names.
                if loaded.names.is_empty() {
                    diags.push(CertDiagnostic::new(&source.name, CertProblem::NoHosts));
                }
                &loaded.names
            } else {
                for host in &source.hosts {
                    if !loaded.names.iter().any(|n| n.covers(host)) {
                        diags.push(CertDiagnostic::new(
                            &source.name,
                            CertProblem::HostNotCovered {
                                host: host.to_string(),
                            },
                        ));
                    }
                }
                &source.hosts
            };
            for host in hosts {
                store.insert(host, &entry, &mut diags);
            }
        }
        (store, diags)
    }

    fn insert(&mut self, host: &HostPattern, entry: &Entry, diags: &mut Vec<CertDiagnostic>) {
        let map = match host {
            HostPattern::Exact(_) => &mut self.exact,
            HostPattern::Wildcard(_) => &mut self.wildcard,
        };
        match map.get(host.key()) {
            None => {
                map.insert(host.key().clone(), entry.clone());
            }
            // The same Secret named by several Ingresses is not a conflict.
            Some(winner) if winner.source == entry.source => {}
            Some(winner) => diags.push(CertDiagnostic::new(
                &entry.source,
                CertProblem::DuplicateHost {
                    host: host.to_string(),
                    winner: winner.source.to_string(),
                },
            )),
        }
    }

    /// The certificate for a client's SNI: exact name, then one-label wildcard, then the
    /// configured default. `None` means the caller's fallback (the self-signed one).
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|name| self.entry(name))
            .map(|e| e.key.clone())
            .or_else(|| self.default.clone())
    }

    /// Which source serves `host` by name (not counting the default), for diagnostics and tests.
    pub fn source_for(&self, host: &str) -> Option<&str> {
        self.entry(host).map(|e| &*e.source)
    }

    /// The entry for a client's name, normalised as request hosts are: exact, then the
    /// wildcard one label up.
    fn entry(&self, name: &str) -> Option<&Entry> {
        let name = normalize_request_host(name)?;
        self.exact
            .get(name.as_ref())
            .or_else(|| self.wildcard.get(wildcard_parent(&name)?))
    }

    /// Every certificate loaded from the sources and the default, each source once.
    pub fn certificates(&self) -> &[ServedCert] {
        &self.served
    }

    /// Whether a configured default certificate loaded.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Number of host names (exact and wildcard) with a certificate.
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// Reports a parse failure or the validity warnings for one source; `None` if it cannot
/// be served.
fn check(source: &CertSource, now: i64, diags: &mut Vec<CertDiagnostic>) -> Option<Arc<Loaded>> {
    let loaded = match &source.cert {
        Ok(l) => l.0.clone(),
        Err(problem) => {
            diags.push(CertDiagnostic::new(&source.name, problem.clone()));
            return None;
        }
    };
    if now > loaded.not_after {
        diags.push(CertDiagnostic::new(
            &source.name,
            CertProblem::Expired {
                not_after: loaded.not_after,
            },
        ));
    } else if now < loaded.not_before {
        diags.push(CertDiagnostic::new(
            &source.name,
            CertProblem::NotYetValid {
                not_before: loaded.not_before,
            },
        ));
    }
    if let Some(cn) = &loaded.cn_only {
        diags.push(CertDiagnostic::new(
            &source.name,
            CertProblem::NoSubjectAltName {
                common_name: cn.clone(),
            },
        ));
    }
    Some(loaded)
}

/// Parses one PEM pair and checks everything that would make it unusable.
fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<Loaded>, CertProblem> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertProblem::CertificatePem(pem_error(&e)))?;
    if chain.is_empty() {
        return Err(CertProblem::NoCertificate);
    }

    let mut names = Vec::new();
    let mut cn_only = None;
    let mut validity = (i64::MIN, i64::MAX);
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            CertProblem::CertificateParse {
                index,
                reason: e.to_string(),
            }
        })?;
        if index == 0 {
            let v = cert.validity();
            validity = (v.not_before.timestamp(), v.not_after.timestamp());
            let (found, from_cn) = cert_names(&cert);
            names = found
                .iter()
                .filter_map(|n| HostPattern::parse(n).ok())
                .collect();
            // Only when the Common Name stands for a host: a certificate whose CN is not
            // a host name names no hosts, which is reported on its own.
            if from_cn && !names.is_empty() {
                cn_only = found.into_iter().next();
            }
        }
    }

    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            let encrypted = contains(key_pem, b"ENCRYPTED PRIVATE KEY")
                || contains(key_pem, b"Proc-Type: 4,ENCRYPTED");
            return Err(if encrypted {
                CertProblem::EncryptedKey
            } else {
                CertProblem::NoKey
            });
        }
        Err(e) => return Err(CertProblem::KeyPem(pem_error(&e))),
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertProblem::UnsupportedKey(e.to_string()))?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            // Name the common mistake precisely: the chain is in the wrong order.
            let leaf_at = (1..certified.cert.len()).find(|&i| {
                CertifiedKey::new(vec![certified.cert[i].clone()], certified.key.clone())
                    .keys_match()
                    .is_ok()
            });
            return Err(leaf_at.map_or(CertProblem::KeyMismatch, |index| {
                CertProblem::LeafNotFirst { index }
            }));
        }
        Err(e) => {
            return Err(CertProblem::CertificateParse {
                index: 0,
                reason: e.to_string(),
            })
        }
    }

    let (not_before, not_after) = validity;
    Ok(Arc::new(Loaded {
        key: Arc::new(certified),
        names,
        cn_only,
        not_before,
        not_after,
    }))
}

/// DNS names a certificate covers: its subjectAltName DNS entries, else its Common Names
/// (legacy, but what `openssl req -subj /CN=...` produces and nginx accepts); and whether
/// they are Common Names.
fn cert_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> (Vec<String>, bool) {
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return (sans, false);
    }
    let cns = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    (cns, true)
}

fn pem_error(e: &pem::Error) -> String {
    // pem::Error's Display prints byte vectors as numbers; show the text instead.
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "the {} section has no END line",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
