//! Header fields from ConfigMaps: the ConfigMap's `proxy-set-headers` (request fields for
//! every backend) and an Ingress's `custom-headers` (answer fields for its paths), read
//! from the store at every compile, so an edit of either ConfigMap applies at once.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use proxy_core::pipeline::SetHeaders;

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::Fragment;
use super::settings::{valid_custom_header_name, GlobalSettings};
use crate::store::{Kind, ObjectKey, Store};

/// Request fields `proxy-set-headers` may not set: they frame the request or belong to
/// one hop, and Portico sets them itself.
pub(super) const RESERVED: [HeaderName; 9] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The fields of the `proxy-set-headers` ConfigMap (named in the `--configmap` one,
/// `settings_key`). A missing ConfigMap is a warning and sets nothing, as in
/// ingress-nginx; an entry Portico cannot send as written (a `$` nginx would expand, a
/// name that is no field name, a framing field) is reported and the others apply.
pub fn proxy_set_headers(
    store: &Store,
    settings: &GlobalSettings,
    settings_key: Option<&ObjectKey>,
    diags: &mut Vec<Diagnostic>,
) -> SetHeaders {
    let Some(key) = &settings.proxy_set_headers else {
        return SetHeaders::default();
    };
    let Some(cm) = store.config_maps.get(key) else {
        if let Some(settings_key) = settings_key {
            diags.push(Diagnostic::warning(
                Kind::ConfigMap,
                settings_key,
                "data[\"proxy-set-headers\"]",
                DiagnosticReason::ConfigMapNotFound,
                format!("proxy-set-headers names ConfigMap {key}, which does not exist; no fields are set"),
            ));
        }
        return SetHeaders::default();
    };
    let mut out = Vec::new();
    for (name, value) in cm.data.iter().flatten() {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|n| !RESERVED.contains(n))
            .zip(
                (!value.contains('$'))
                    .then(|| HeaderValue::from_str(value).ok())
                    .flatten(),
            );
        match parsed {
            Some(field) => out.push(field),
            None => diags.push(Diagnostic::warning(
                Kind::ConfigMap,
                key,
                format!("data[{name:?}]"),
                DiagnosticReason::InvalidSetting,
                format!(
                    "proxy-set-headers field {name:?}: {value:?} cannot be sent as written (a field name other than Host and the framing fields, and a value without $, which nginx would expand and Portico does not); ignored"
                ),
            )),
        }
    }
    SetHeaders(out)
}

/// The `custom-headers` ConfigMaps of the Ingresses of ours (canaries aside), keyed by
/// `namespace/name`, as ingress-nginx's parser accepts them: the ConfigMap exists, every
/// field name is of letters, digits, `-` and `_` and listed in
/// `global-allowed-response-headers`, and every value is of the characters it allows. A
/// ConfigMap that fails is reported on each Ingress naming it and sets nothing (where
/// ingress-nginx answers the Ingress's paths with 503).
pub fn custom_headers(
    store: &Store,
    fragments: &[Arc<Fragment>],
    settings: &GlobalSettings,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Arc<str>, Arc<SetHeaders>> {
    let mut out = HashMap::new();
    // Each ConfigMap judged once; each Ingress naming a bad one told.
    let mut judged: HashMap<&ObjectKey, Result<Arc<SetHeaders>, String>> = HashMap::new();
    for f in fragments {
        let Some(key) = f
            .ann
            .custom_headers
            .as_ref()
            .filter(|_| f.ann.canary.is_none())
        else {
            continue;
        };
        let verdict = judged
            .entry(key)
            .or_insert_with(|| read(store, key, &settings.allowed_response_headers));
        match verdict {
            Ok(set) => {
                out.insert(Arc::from(key.to_string()), set.clone());
            }
            Err(why) => {
                let field = f
                    .ingress
                    .metadata
                    .annotations
                    .iter()
                    .flatten()
                    .find(|(k, _)| k.ends_with("/custom-headers"))
                    .map(|(k, _)| format!("metadata.annotations[{k:?}]"))
                    .unwrap_or_else(|| "metadata.annotations".to_owned());
                diags.push(Diagnostic::error(
                    Kind::Ingress,
                    &f.key,
                    field,
                    DiagnosticReason::InvalidAnnotation,
                    format!("custom-headers ConfigMap {key}: {why}; no fields are set"),
                ));
            }
        }
    }
    out
}

/// One `custom-headers` ConfigMap, judged.
fn read(store: &Store, key: &ObjectKey, allowed: &[String]) -> Result<Arc<SetHeaders>, String> {
    let cm = store
        .config_maps
        .get(key)
        .ok_or_else(|| "it does not exist".to_owned())?;
    let mut out = Vec::new();
    for (name, value) in cm.data.iter().flatten() {
        if !valid_custom_header_name(name) {
            return Err(format!(
                "{name:?} is not a header name of letters, digits, - and _"
            ));
        }
        if !allowed.iter().any(|a| a == name) {
            return Err(format!(
                "header {name} is not allowed: list it in the ConfigMap's global-allowed-response-headers"
            ));
        }
        let value = Some(value.as_str())
            .filter(|v| valid_custom_header_value(v))
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                format!("header {name} has a value with characters ingress-nginx refuses")
            })?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        out.push((name, value));
    }
    Ok(Arc::new(SetHeaders(out)))
}

/// ingress-nginx's `^[a-zA-Z\d_ :;.,\\/"'?!(){}\[\]@<>=\-+*#$&\x60|~^%]+$`.
fn valid_custom_header_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b" _:;.,\\/\"'?!(){}[]@<>=-+*#$&`|~^%".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_header_values_as_ingress_nginx_allows_them() {
        for ok in [
            "DENY",
            "max-age=31536000; includeSubDomains",
            "a$b",
            "\"x\", 'y'",
        ] {
            assert!(valid_custom_header_value(ok), "{ok:?}");
        }
        for bad in ["", "tab\there", "new\nline", "é"] {
            assert!(!valid_custom_header_value(bad), "{bad:?}");
        }
    }
}
