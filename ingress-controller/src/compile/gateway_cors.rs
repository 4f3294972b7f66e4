//! HTTPRoute `CORS` filters (`HTTPCORSFilter`, extended feature `HTTPRouteCORS`): the
//! settings checked and formatted into proxy-core's one CORS filter
//! (`pipeline::cors`, under its Gateway API rules), which answers preflights and adds
//! the fields to the pod's answers.
//!
//! The CRD's validation normally keeps bad values out; a folder of manifests has no API
//! server, so each entry is checked again here. An entry that is not valid is reported
//! with its field and left out: a CORS filter with fewer entries allows less, never more.

use http::HeaderValue;
use proxy_core::pipeline::{Cors, CorsOrigins, CorsRules, OriginPattern};

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::gateway::RouteKey;
use crate::gateway_api::HTTPCORSFilter;

/// `maxAge` when the filter does not say.
const DEFAULT_MAX_AGE: i32 = 5;

/// The methods `allowMethods` may name (the CRD's enum), besides `*`.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The filter at `field` (`spec.rules[i].filters[j].cors`) as proxy-core's [`Cors`].
pub(super) fn cors_filter(
    route: RouteKey<'_>,
    field: &str,
    c: &HTTPCORSFilter,
    diags: &mut Vec<Diagnostic>,
) -> Cors {
    let mut bad = |suffix: String, message: String| {
        diags.push(Diagnostic::error(
            route.kind,
            route.key,
            format!("{field}{suffix}"),
            DiagnosticReason::GatewayUnsupported,
            message,
        ));
    };
    let credentials = c.allow_credentials.unwrap_or(false);

    let origins = if c.allow_origins == ["*"] {
        CorsOrigins::Any
    } else {
        let mut list = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            let at = format!(".allowOrigins[{i}]");
            if o == "*" {
                bad(at, alone_message("origin"));
                continue;
            }
            match OriginPattern::gateway(o) {
                Ok(p) => list.push(p),
                Err(e) => bad(at, format!("origin {o:?}: {e}; origin ignored")),
            }
        }
        CorsOrigins::List(list)
    };

    let methods = checked(&c.allow_methods, "allowMethods", "method", method, &mut bad);
    let headers = checked(
        &c.allow_headers,
        "allowHeaders",
        "header name",
        header_name,
        &mut bad,
    );
    let mut expose = checked(
        &c.expose_headers,
        "exposeHeaders",
        "header name",
        header_name,
        &mut bad,
    );
    // With credentials a `*` in Access-Control-Expose-Headers names a header called `*`
    // (Fetch), so the spec forbids sending it; the safelisted headers stay exposed.
    if credentials {
        expose.retain(|h| *h != "*");
    }

    let max_age = match c.max_age {
        None => DEFAULT_MAX_AGE,
        Some(n) if n >= 1 => n,
        Some(n) => {
            bad(
                ".maxAge".to_owned(),
                format!("maxAge {n} is less than 1; {DEFAULT_MAX_AGE} is used"),
            );
            DEFAULT_MAX_AGE
        }
    };

    Cors {
        rules: CorsRules::GatewayApi,
        origins,
        allow_methods: joined(&methods),
        allow_headers: joined(&headers),
        expose_headers: Some(joined(&expose)).filter(|v| !v.is_empty()),
        allow_credentials: credentials,
        max_age: HeaderValue::from(max_age),
    }
}

/// The valid items of the list at `.{name}`; the others reported. A `*` must be alone,
/// but in `exposeHeaders`, which the CRD lets hold it beside names.
fn checked<'a>(
    list: &'a [String],
    name: &str,
    what: &str,
    valid: fn(&str) -> bool,
    bad: &mut impl FnMut(String, String),
) -> Vec<&'a str> {
    let mut kept = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = format!(".{name}[{i}]");
        if item == "*" && list.len() > 1 && name != "exposeHeaders" {
            bad(at, alone_message(what));
        } else if item != "*" && !valid(item) {
            bad(at, format!("{item:?} is not a valid {what}; ignored"));
        } else {
            kept.push(item.as_str());
        }
    }
    kept
}

fn method(m: &str) -> bool {
    METHODS.contains(&m)
}

fn alone_message(what: &str) -> String {
    format!("`*` cannot be listed with other {what}s; the `*` is ignored, the others are kept")
}

/// An HTTP header name (a token), as the CRD's `HTTPHeaderName` pattern allows.
fn header_name(h: &str) -> bool {
    h.len() <= 256 && http::HeaderName::from_bytes(h.as_bytes()).is_ok()
}

/// The items as one field value: `a, b`. Every item was checked to be a token.
fn joined(items: &[&str]) -> HeaderValue {
    HeaderValue::from_str(&items.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::super::diagnostic::Severity;
    use super::*;
    use crate::store::{Kind, ObjectKey};

    fn compile(yaml: &str) -> (Cors, Vec<(String, Severity, String)>) {
        let c: HTTPCORSFilter = serde_yaml_ng::from_str(yaml).expect("yaml");
        let key = ObjectKey::new("infra", "r");
        let route = RouteKey {
            kind: Kind::HTTPRoute,
            key: &key,
        };
        let mut diags = Vec::new();
        let cors = cors_filter(route, "spec.rules[0].filters[0].cors", &c, &mut diags);
        let said = diags
            .into_iter()
            .map(|d| (d.field, d.severity, d.message))
            .collect();
        (cors, said)
    }

    #[test]
    fn the_conformance_filter_compiles_as_written() {
        let (c, said) = compile(
            r#"
allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
allowMethods: [GET, OPTIONS]
allowHeaders: [x-header-1, x-header-2]
exposeHeaders: [x-header-3, x-header-4]
allowCredentials: true
maxAge: 3600
"#,
        );
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(c.rules, CorsRules::GatewayApi);
        let CorsOrigins::List(list) = &c.origins else {
            panic!("{:?}", c.origins)
        };
        assert_eq!(list.len(), 2);
        assert!(list[1].matches(b"https://xpto.www.bar.com"));
        assert_eq!(c.allow_methods, "GET, OPTIONS");
        assert_eq!(c.allow_headers, "x-header-1, x-header-2");
        assert_eq!(c.expose_headers.as_ref().unwrap(), "x-header-3, x-header-4");
        assert!(c.allow_credentials);
        assert_eq!(c.max_age, "3600");
    }

    #[test]
    fn defaults_and_stars() {
        let (c, said) = compile(r#"{allowOrigins: ["*"]}"#);
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(c.origins, CorsOrigins::Any);
        assert_eq!(
            (c.allow_methods.is_empty(), c.allow_headers.is_empty()),
            (true, true)
        );
        assert_eq!(c.expose_headers, None);
        assert!(!c.allow_credentials);
        assert_eq!(c.max_age, "5");
        let (c, _) = compile(
            r#"{allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], exposeHeaders: ["*"]}"#,
        );
        assert_eq!(c.allow_methods, "*");
        assert_eq!(c.allow_headers, "*");
        assert_eq!(c.expose_headers.unwrap(), "*");
        // With credentials an exposed `*` is never sent.
        let (c, said) =
            compile(r#"{allowOrigins: ["*"], exposeHeaders: ["*", X-Id], allowCredentials: true}"#);
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(c.expose_headers.unwrap(), "X-Id");
        let (c, _) = compile(r#"{exposeHeaders: ["*"], allowCredentials: true}"#);
        assert_eq!(c.expose_headers, None);
        assert_eq!(c.origins, CorsOrigins::List(Vec::new()));
    }

    #[test]
    fn bad_entries_are_named_and_left_out() {
        let (c, said) = compile(
            r#"
allowOrigins: ["https://ok.com", "ok.com", "ftp://a.com", "https://a.com:99999", "*"]
allowMethods: [GET, get, FETCH]
allowHeaders: ["x-ok", "bad header", "*"]
exposeHeaders: ["x:y"]
maxAge: 0
"#,
        );
        let fields: Vec<&str> = said.iter().map(|(f, _, _)| f.as_str()).collect();
        let p = "spec.rules[0].filters[0].cors";
        assert_eq!(
            fields,
            [
                format!("{p}.allowOrigins[1]"),
                format!("{p}.allowOrigins[2]"),
                format!("{p}.allowOrigins[3]"),
                format!("{p}.allowOrigins[4]"),
                format!("{p}.allowMethods[1]"),
                format!("{p}.allowMethods[2]"),
                format!("{p}.allowHeaders[1]"),
                format!("{p}.allowHeaders[2]"),
                format!("{p}.exposeHeaders[0]"),
                format!("{p}.maxAge"),
            ]
        );
        assert!(said.iter().all(|(_, s, _)| *s == Severity::Error));
        assert!(said[0].2.contains("\"ok.com\""), "{}", said[0].2);
        assert!(said[1].2.contains("scheme \"ftp\""), "{}", said[1].2);
        assert!(said[2].2.contains("port \"99999\""), "{}", said[2].2);
        assert!(said[3].2.contains("other origins;"), "{}", said[3].2);
        assert_eq!(
            c.origins,
            CorsOrigins::List(vec![OriginPattern::gateway("https://ok.com").unwrap()])
        );
        assert_eq!(c.allow_methods, "GET");
        assert_eq!(c.allow_headers, "x-ok");
        assert_eq!(c.expose_headers, None);
        assert_eq!(c.max_age, "5");
    }
}
