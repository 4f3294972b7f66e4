//! `proxy-ssl-*`: the TLS client configurations routes ask for, made from their
//! Secrets. A setting that cannot be made is left out of the configuration, so its
//! routes answer 503 instead of reaching the pods with less protection than asked.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use proxy_core::http::upstream_tls::UpstreamTls;

use super::annotations::ProxySsl;
use super::certs::secret_field;
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::Fragment;
use crate::store::{Kind, Store};

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// Every usable setting the Ingresses in `fragments` ask for, by [`ProxySsl::key`];
/// each Ingress whose setting cannot be made is told why.
pub fn upstream_tls(
    store: &Store,
    fragments: &[Arc<Fragment>],
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Arc<str>, Arc<UpstreamTls>> {
    let mut out = HashMap::new();
    let mut judged: HashMap<String, Result<Arc<UpstreamTls>, String>> = HashMap::new();
    for f in fragments {
        let Some(ssl) = &f.ann.proxy_ssl else {
            continue;
        };
        // Refused at parse time, with its diagnostic then.
        if ssl.refused.is_some() {
            continue;
        }
        let key = ssl.key();
        let verdict = judged
            .entry(key.clone())
            .or_insert_with(|| make(store, ssl, &key));
        match verdict {
            Ok(tls) => {
                out.insert(Arc::from(key), tls.clone());
            }
            Err(why) => diags.push(Diagnostic::error(
                Kind::Ingress,
                &f.key,
                annotation_field(f),
                DiagnosticReason::InvalidUpstreamTls,
                format!(
                    "proxy-ssl-secret {}: {why}; the Ingress's paths answer 503",
                    ssl.secret
                ),
            )),
        }
    }
    out
}

fn annotation_field(f: &Fragment) -> String {
    f.ingress
        .metadata
        .annotations
        .iter()
        .flatten()
        .find(|(k, _)| k.ends_with("/proxy-ssl-secret"))
        .map(|(k, _)| format!("metadata.annotations[{k:?}]"))
        .unwrap_or_else(|| "metadata.annotations".to_owned())
}

fn make(store: &Store, ssl: &ProxySsl, key: &str) -> Result<Arc<UpstreamTls>, String> {
    let secret = store
        .secrets
        .get(&ssl.secret)
        .ok_or_else(|| "Secret not found".to_owned())?;
    let field = |name| secret_field(secret, name);
    let ca = field(CA_KEY).ok_or_else(|| format!("the Secret holds no {CA_KEY}"))?;
    let (cert, pem_key) = (field(CERT_KEY), field(KEY_KEY));
    let client = match (&cert, &pem_key) {
        (Some(c), Some(k)) => Some((c.as_slice(), k.as_slice())),
        (None, None) => None,
        _ => {
            return Err(format!(
                "the Secret holds one of {CERT_KEY} and {KEY_KEY} without the other"
            ))
        }
    };
    let settings = tls::UpstreamTlsSettings {
        ca_pem: &ca,
        client,
        verify: ssl.verify,
        depth: ssl.depth,
        versions: &ssl.versions,
    };
    let config = tls::upstream_client_config(&settings).map_err(|e| e.to_string())?;
    // The contents are part of the identity: connections made with an older CA or
    // client certificate are not reused once the Secret changes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&ca, &cert, &pem_key).hash(&mut h);
    let id = format!("{key} content={:016x}", h.finish());
    Ok(Arc::new(UpstreamTls::new(
        id,
        config,
        ssl.name.as_deref(),
        ssl.server_name,
        ssl.verify,
    )))
}
