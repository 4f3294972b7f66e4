//! The annotations that guard who may reach a path, read so that they fail closed: a
//! value Portico cannot read, a Secret it cannot use, or a key it does not implement
//! makes the Ingress's paths answer 503 (with an error diagnostic naming the Ingress, the
//! key and the reason), as ingress-nginx denies a location whose security annotations
//! fail. Never is such a path served as if the annotation were absent.
//!
//! [`GUARDS`] is the one list of the keys that ask for protection Portico does not give
//! yet: implementing one means taking it off that list and reading it here.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use proxy_core::host::HostPattern;
use proxy_core::pipeline::{
    parse_cache_duration, signin_url, AuthCache, AuthProxyHeaders, ClientAuthTable,
    ClientCertPolicy, Credentials, DigestCredentials, ExternalAuth, Htdigest, Htpasswd, Template,
    VerifyClient,
};
use proxy_core::routes::HostMatch;

use super::annotations::{NGINX_PREFIX, OWN_PREFIX};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::hosts::Fragment;
use crate::store::{Kind, ObjectKey, Store};

const ALLOWLIST: &str = "allowlist-source-range";
/// ingress-nginx's older name for [`ALLOWLIST`], read when that is absent.
const WHITELIST: &str = "whitelist-source-range";
const DENYLIST: &str = "denylist-source-range";
const AUTH_TYPE: &str = "auth-type";
const AUTH_SECRET: &str = "auth-secret";
const AUTH_SECRET_TYPE: &str = "auth-secret-type";
const AUTH_REALM: &str = "auth-realm";
/// `enable-global-auth: "false"` exempts an Ingress from the ConfigMap's
/// `global-auth-url`.
const ENABLE_GLOBAL_AUTH: &str = "enable-global-auth";
/// `satisfy: any` lets a client in when either the source ranges or the credentials pass.
const SATISFY: &str = "satisfy";
const LIMIT_RPS: &str = "limit-rps";
const LIMIT_RPM: &str = "limit-rpm";
const LIMIT_CONNECTIONS: &str = "limit-connections";
const LIMIT_BURST_MULTIPLIER: &str = "limit-burst-multiplier";
const LIMIT_ALLOWLIST: &str = "limit-allowlist";
/// ingress-nginx's older name for [`LIMIT_ALLOWLIST`], read when that is absent.
const LIMIT_WHITELIST: &str = "limit-whitelist";
/// `limit-burst-multiplier` when unset or unreadable, as in ingress-nginx.
const DEFAULT_BURST_MULTIPLIER: u32 = 5;
const AUTH_URL: &str = "auth-url";
const AUTH_METHOD: &str = "auth-method";
const AUTH_SIGNIN: &str = "auth-signin";
const AUTH_SIGNIN_REDIRECT_PARAM: &str = "auth-signin-redirect-param";
const AUTH_REQUEST_REDIRECT: &str = "auth-request-redirect";
const AUTH_RESPONSE_HEADERS: &str = "auth-response-headers";
const AUTH_ALWAYS_SET_COOKIE: &str = "auth-always-set-cookie";
const AUTH_CACHE_KEY: &str = "auth-cache-key";
const AUTH_CACHE_DURATION: &str = "auth-cache-duration";
const AUTH_PROXY_SET_HEADERS: &str = "auth-proxy-set-headers";
const AUTH_TLS_SECRET: &str = "auth-tls-secret";
const AUTH_TLS_VERIFY_CLIENT: &str = "auth-tls-verify-client";
const AUTH_TLS_VERIFY_DEPTH: &str = "auth-tls-verify-depth";
const AUTH_TLS_ERROR_PAGE: &str = "auth-tls-error-page";
const AUTH_TLS_PASS_CERT: &str = "auth-tls-pass-certificate-to-upstream";
const AUTH_TLS_MATCH_CN: &str = "auth-tls-match-cn";
/// The keys that modify `auth-tls-secret` and mean nothing without it.
const AUTH_TLS_MODIFIERS: &[&str] = &[
    AUTH_TLS_VERIFY_CLIENT,
    AUTH_TLS_VERIFY_DEPTH,
    AUTH_TLS_ERROR_PAGE,
    AUTH_TLS_PASS_CERT,
    AUTH_TLS_MATCH_CN,
];
/// The keys that modify `auth-url` and mean nothing without it.
const AUTH_URL_MODIFIERS: &[&str] = &[
    AUTH_METHOD,
    AUTH_SIGNIN,
    AUTH_SIGNIN_REDIRECT_PARAM,
    AUTH_REQUEST_REDIRECT,
    AUTH_RESPONSE_HEADERS,
    AUTH_ALWAYS_SET_COOKIE,
    AUTH_CACHE_KEY,
    AUTH_CACHE_DURATION,
    AUTH_PROXY_SET_HEADERS,
];

/// The security keys Portico reads here.
const IMPLEMENTED: &[&str] = &[
    ALLOWLIST,
    WHITELIST,
    DENYLIST,
    AUTH_TYPE,
    AUTH_SECRET,
    AUTH_SECRET_TYPE,
    AUTH_REALM,
    ENABLE_GLOBAL_AUTH,
    SATISFY,
    LIMIT_RPS,
    LIMIT_RPM,
    LIMIT_CONNECTIONS,
    LIMIT_BURST_MULTIPLIER,
    LIMIT_ALLOWLIST,
    LIMIT_WHITELIST,
    AUTH_URL,
    AUTH_METHOD,
    AUTH_SIGNIN,
    AUTH_SIGNIN_REDIRECT_PARAM,
    AUTH_REQUEST_REDIRECT,
    AUTH_RESPONSE_HEADERS,
    AUTH_ALWAYS_SET_COOKIE,
    AUTH_CACHE_KEY,
    AUTH_CACHE_DURATION,
    AUTH_PROXY_SET_HEADERS,
    AUTH_TLS_SECRET,
    AUTH_TLS_VERIFY_CLIENT,
    AUTH_TLS_VERIFY_DEPTH,
    AUTH_TLS_ERROR_PAGE,
    AUTH_TLS_PASS_CERT,
    AUTH_TLS_MATCH_CN,
];

/// When a key Portico does not implement asks for protection.
#[derive(Clone, Copy)]
pub enum Asks {
    /// Whatever its value.
    Always,
    /// Unless its value is one of these (which ask for nothing Portico does not do).
    Unless(&'static [&'static str]),
}

/// ingress-nginx's annotations that restrict access and that Portico does not implement
/// (yet): each refuses the Ingress's paths when it asks for protection. Keys that only
/// modify one of these (`auth-method`, ...) are not listed:
/// alone they ask for nothing, and beside one of these the paths are refused anyway.
const GUARDS: &[(&str, Asks)] = &[
    ("auth-snippet", Asks::Always),
    ("global-rate-limit", Asks::Always),
    (
        "enable-modsecurity",
        Asks::Unless(&["false", "False", "FALSE", "f", "F", "0"]),
    ),
    (
        "enable-owasp-core-rules",
        Asks::Unless(&["false", "False", "FALSE", "f", "F", "0"]),
    ),
];

/// The ConfigMap's settings that restrict access on every path and that Portico does not
/// implement (yet): each, when it asks for protection, refuses every path.
pub const GLOBAL_GUARDS: &[(&str, Asks)] = &[
    ("global-auth-snippet", Asks::Unless(&[""])),
    (
        "enable-modsecurity",
        Asks::Unless(&["false", "False", "FALSE", "f", "F", "0"]),
    ),
    (
        "enable-owasp-modsecurity-crs",
        Asks::Unless(&["false", "False", "FALSE", "f", "F", "0"]),
    ),
];

/// Why ConfigMap key `name` set to `value` refuses every path, if it does.
pub fn global_refusal(name: &str, value: &str) -> Option<String> {
    let (_, asks) = GLOBAL_GUARDS.iter().find(|(k, _)| *k == name)?;
    let asks = match asks {
        Asks::Always => true,
        Asks::Unless(values) => !values.contains(&value.trim()),
    };
    asks.then(|| format!("{name} is not implemented by Portico"))
}

/// Whether annotation suffix `name` is read here (so it is neither "unsupported" nor
/// a snippet merely reported).
pub fn is_security_key(name: &str) -> bool {
    IMPLEMENTED.contains(&name) || GUARDS.iter().any(|(k, _)| *k == name)
}

/// A source range list as an annotation sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Not set: the ConfigMap's list applies.
    Default,
    Set(Vec<IpNet>),
}

/// Basic or digest authentication, as the annotations ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuthAnnotations {
    /// `auth-type: digest`: the list is htdigest (`user:realm:HA1`).
    pub digest: bool,
    /// The Secret, in the Ingress's namespace.
    pub secret: ObjectKey,
    /// `auth-secret-type: auth-map`: each data key a user, each value a hash; else an
    /// htpasswd file under `auth`.
    pub map: bool,
    /// `auth-realm`, empty when absent.
    pub realm: String,
    /// The full name of `auth-secret`, for diagnostics.
    pub field: String,
}

impl BasicAuthAnnotations {
    /// The key of the user list in [`Credentials`].
    pub fn users_key(&self) -> Arc<str> {
        let kind = if self.map { "auth-map" } else { "auth-file" };
        let scheme = if self.digest { "digest-" } else { "" };
        format!("{scheme}{kind}:{}", self.secret).into()
    }
}

/// What the security annotations of one Ingress ask for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityAnnotations {
    /// Why the Ingress's paths are refused, one line per key; empty when they are not.
    pub refused: Vec<String>,
    pub allow: Ranges,
    pub deny: Ranges,
    pub basic_auth: Option<BasicAuthAnnotations>,
    /// `enable-global-auth` (true): whether the ConfigMap's `global-auth-url` applies.
    pub global_auth: bool,
    /// `satisfy: any`: the source ranges or basic auth suffice; otherwise both must pass.
    pub satisfy_any: bool,
    /// `limit-rps`, `limit-rpm`, `limit-connections`; `None` when none is set above 0.
    pub limits: Option<LimitAnnotations>,
    /// `auth-url` and its companions.
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// `auth-tls-secret` and its companions.
    pub client_tls: Option<ClientTlsAnnotations>,
}

/// Client certificates as the `auth-tls-*` annotations ask for them, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsAnnotations {
    /// The Secret with `ca.crt` (and optionally `ca.crl`), in the Ingress's namespace.
    pub secret: ObjectKey,
    /// The full name of `auth-tls-secret`, for diagnostics.
    pub field: String,
    pub verify: VerifyClient,
    /// `auth-tls-verify-depth` (1).
    pub depth: u32,
    pub error_page: Option<String>,
    pub pass_cert: bool,
    /// `auth-tls-match-cn`, a valid regex starting with `CN=`.
    pub match_cn: Option<String>,
}

/// The rate and connection limits of one Ingress, before they are shared among replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitAnnotations {
    /// The zone: the Ingress's `namespace/name`.
    pub zone: Arc<str>,
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    pub connections: Option<u32>,
    /// `limit-burst-multiplier` (5).
    pub burst_multiplier: u32,
    /// `limit-allowlist` (alias `limit-whitelist`).
    pub allow: Vec<IpNet>,
}

impl Default for SecurityAnnotations {
    fn default() -> Self {
        Self {
            refused: Vec::new(),
            allow: Ranges::Default,
            deny: Ranges::Default,
            basic_auth: None,
            global_auth: true,
            satisfy_any: false,
            limits: None,
            external_auth: None,
            client_tls: None,
        }
    }
}

/// The value of annotation `name` and its full name: `portico.dev/` first.
fn lookup<'a>(annotations: &'a BTreeMap<String, String>, name: &str) -> Option<(&'a str, &'a str)> {
    [OWN_PREFIX, NGINX_PREFIX].iter().find_map(|prefix| {
        annotations
            .get_key_value(&format!("{prefix}{name}"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

struct Reader<'a> {
    key: &'a ObjectKey,
    annotations: &'a BTreeMap<String, String>,
    out: SecurityAnnotations,
    diags: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    /// Annotation `name` as `parse` reads it, `Ok(None)` when absent. A value it cannot
    /// read refuses the paths: `Err`, and the caller reads no further.
    fn parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ()> {
        match lookup(self.annotations, name) {
            None => Ok(None),
            Some((full, v)) => parse(v).map(Some).map_err(|why| self.refuse(full, &why)),
        }
    }

    /// Refuses the Ingress's paths because of annotation `full`.
    fn refuse(&mut self, full: &str, why: &str) {
        self.diags.push(Diagnostic::error(
            Kind::Ingress,
            self.key,
            format!("metadata.annotations[{full:?}]"),
            DiagnosticReason::SecurityRefused,
            format!("annotation {full}: {why}; the Ingress's paths answer 503 rather than be served without it"),
        ));
        self.out
            .refused
            .push(format!("Ingress {}: annotation {full}: {why}", self.key));
    }

    /// A source range list: the first of `names` set (under either prefix, own first).
    fn ranges(&mut self, names: &[&str]) -> Ranges {
        let found = [OWN_PREFIX, NGINX_PREFIX].iter().find_map(|prefix| {
            names.iter().find_map(|n| {
                self.annotations
                    .get_key_value(&format!("{prefix}{n}"))
                    .map(|(k, v)| (k.clone(), v.clone()))
            })
        });
        let Some((full, value)) = found else {
            return Ranges::Default;
        };
        match parse_source_ranges(&value) {
            Ok(nets) if !nets.is_empty() => Ranges::Set(nets),
            Ok(_) => {
                self.refuse(&full, "the value is empty, not a list of CIDRs");
                Ranges::Default
            }
            Err(why) => {
                self.refuse(&full, &why);
                Ranges::Default
            }
        }
    }

    fn basic_auth(&mut self) -> Option<BasicAuthAnnotations> {
        let Some((type_full, auth_type)) = lookup(self.annotations, AUTH_TYPE) else {
            for name in [AUTH_SECRET, AUTH_SECRET_TYPE, AUTH_REALM] {
                if let Some((full, _)) = lookup(self.annotations, name) {
                    self.diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        self.key,
                        format!("metadata.annotations[{full:?}]"),
                        DiagnosticReason::InvalidAnnotation,
                        format!("annotation {full} has no effect without auth-type"),
                    ));
                }
            }
            return None;
        };
        let digest = match auth_type.trim() {
            "basic" => false,
            "digest" => true,
            other => {
                self.refuse(
                    type_full,
                    &format!("{other:?} is not an authentication type (expected basic or digest)"),
                );
                return None;
            }
        };
        let map = match lookup(self.annotations, AUTH_SECRET_TYPE) {
            None => false,
            Some((_, v)) if v.trim() == "auth-file" => false,
            Some((_, v)) if v.trim() == "auth-map" => true,
            Some((full, v)) => {
                self.refuse(
                    full,
                    &format!("{v:?} is not a secret type (expected auth-file or auth-map)"),
                );
                return None;
            }
        };
        let Some((secret_full, secret)) = lookup(self.annotations, AUTH_SECRET) else {
            self.refuse(
                type_full,
                "auth-type basic needs auth-secret, which is not set",
            );
            return None;
        };
        let secret = match parse_secret_ref(secret.trim(), &self.key.namespace) {
            Ok(s) => s,
            Err(why) => {
                self.refuse(secret_full, &why);
                return None;
            }
        };
        let realm = self
            .parsed(AUTH_REALM, parse_realm)
            .ok()?
            .unwrap_or_default();
        Some(BasicAuthAnnotations {
            digest,
            secret,
            map,
            realm,
            field: secret_full.to_owned(),
        })
    }

    /// `limit-rps`, `limit-rpm`, `limit-connections` and what modifies them. A limit
    /// that cannot be read refuses the paths; 0 or less sets no limit, as in
    /// ingress-nginx (its template writes a limit only above 0).
    fn limits(&mut self) -> Option<LimitAnnotations> {
        let mut count = |name: &str| -> Result<Option<u32>, ()> {
            let Some((full, v)) = lookup(self.annotations, name) else {
                return Ok(None);
            };
            match super::annotations::parse_int(v.trim()) {
                Ok(n) if n <= 0 => Ok(None),
                Ok(n) => match u32::try_from(n) {
                    Ok(n) => Ok(Some(n)),
                    Err(_) => {
                        self.refuse(full, &format!("{v:?} is larger than {}", u32::MAX));
                        Err(())
                    }
                },
                Err(expected) => {
                    self.refuse(full, &format!("{v:?} is not {expected}"));
                    Err(())
                }
            }
        };
        let (rps, rpm, connections) =
            (count(LIMIT_RPS), count(LIMIT_RPM), count(LIMIT_CONNECTIONS));
        let (Ok(rps), Ok(rpm), Ok(connections)) = (rps, rpm, connections) else {
            return None;
        };
        let burst_multiplier = match lookup(self.annotations, LIMIT_BURST_MULTIPLIER) {
            None => DEFAULT_BURST_MULTIPLIER,
            Some((full, v)) => match super::annotations::parse_int(v.trim())
                .ok()
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) => n,
                None => {
                    self.diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        self.key,
                        format!("metadata.annotations[{full:?}]"),
                        DiagnosticReason::InvalidAnnotation,
                        format!("annotation {full} has invalid value {v:?} (expected an integer of 0 or more); {DEFAULT_BURST_MULTIPLIER} applies, as in ingress-nginx"),
                    ));
                    DEFAULT_BURST_MULTIPLIER
                }
            },
        };
        // The allowlist is read, and refuses when broken, even beside no limit, as
        // ingress-nginx's parser fails on it first.
        let listed = lookup(self.annotations, LIMIT_ALLOWLIST)
            .or_else(|| lookup(self.annotations, LIMIT_WHITELIST));
        let allow = match listed.map(|(full, v)| (full, parse_source_ranges(v))) {
            None => Vec::new(),
            // An empty list exempts nobody, as in ingress-nginx.
            Some((_, Ok(nets))) => nets,
            Some((full, Err(why))) => {
                self.refuse(full, &why);
                return None;
            }
        };
        if rps.is_none() && rpm.is_none() && connections.is_none() {
            return None;
        }
        Some(LimitAnnotations {
            zone: self.key.to_string().into(),
            rps,
            rpm,
            connections,
            burst_multiplier,
            allow,
        })
    }

    /// `auth-url` and the keys that modify it; any of them malformed refuses the paths.
    fn external_auth(&mut self) -> Option<Arc<ExternalAuth>> {
        let annotations = self.annotations;
        if lookup(annotations, AUTH_URL).is_none() {
            for name in AUTH_URL_MODIFIERS {
                if let Some((full, _)) = lookup(annotations, name) {
                    self.diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        self.key,
                        format!("metadata.annotations[{full:?}]"),
                        DiagnosticReason::InvalidAnnotation,
                        format!("annotation {full} has no effect without auth-url"),
                    ));
                }
            }
            return None;
        }
        let mut refusals = Vec::new();
        let auth = external_auth_from(
            |name| lookup(annotations, name),
            |full, why| refusals.push((full.to_owned(), why.to_owned())),
        );
        // As ingress-nginx without `allow-cross-namespace-resources` (its default).
        let namespace = format!("{}/", self.key.namespace);
        if let Some(key) = auth.as_ref().and_then(|a| a.proxy_set_headers.as_deref()) {
            if !key.starts_with(&namespace) {
                if let Some((full, _)) = lookup(annotations, AUTH_PROXY_SET_HEADERS) {
                    refusals.push((
                        full.to_owned(),
                        format!("ConfigMap {key} is in another namespace than the Ingress; only its own namespace's are used"),
                    ));
                }
            }
        }
        for (full, why) in refusals {
            self.refuse(&full, &why);
        }
        // Cached answers belong to the Ingress (and, in the policy, the rule path).
        auth.map(|a| with_cache_scope(a, &self.key.to_string()))
    }

    /// Warns about annotation `full` that is read but changes nothing.
    fn warn(&mut self, full: &str, why: &str) {
        self.diags.push(Diagnostic::warning(
            Kind::Ingress,
            self.key,
            format!("metadata.annotations[{full:?}]"),
            DiagnosticReason::InvalidAnnotation,
            format!("annotation {full} {why}"),
        ));
    }

    /// `auth-tls-*`, as ingress-nginx's `authtls` parser reads them: an unknown
    /// `auth-tls-verify-client` is `on` and an unreadable or zero depth is 1 (both with a
    /// warning, as they are no weaker); anything else malformed refuses the paths.
    fn client_tls(&mut self) -> Option<ClientTlsAnnotations> {
        let annotations = self.annotations;
        let Some((secret_full, secret)) = lookup(annotations, AUTH_TLS_SECRET) else {
            for name in AUTH_TLS_MODIFIERS {
                if let Some((full, _)) = lookup(annotations, name) {
                    self.warn(full, "has no effect without auth-tls-secret");
                }
            }
            return None;
        };
        let secret = match parse_secret_ref(secret.trim(), &self.key.namespace) {
            Ok(s) => s,
            Err(why) => {
                self.refuse(secret_full, &why);
                return None;
            }
        };
        let verify = match lookup(annotations, AUTH_TLS_VERIFY_CLIENT) {
            None => VerifyClient::On,
            Some((full, v)) => VerifyClient::parse(v).unwrap_or_else(|| {
                self.warn(full, &format!("has invalid value {v:?} (expected on, off, optional or optional_no_ca); on applies, as in ingress-nginx"));
                VerifyClient::On
            }),
        };
        let depth = match lookup(annotations, AUTH_TLS_VERIFY_DEPTH) {
            None => 1,
            Some((full, v)) => match super::annotations::parse_int(v.trim()) {
                Ok(0) => 1,
                Ok(n) => match u32::try_from(n) {
                    Ok(n) => n,
                    Err(_) => {
                        self.refuse(full, &format!("{v:?} is not a depth of 0 or more"));
                        return None;
                    }
                },
                Err(expected) => {
                    self.warn(full, &format!("has invalid value {v:?} (expected {expected}); 1 applies, as in ingress-nginx"));
                    1
                }
            },
        };
        let error_page = self
            .parsed(AUTH_TLS_ERROR_PAGE, parse_error_page)
            .ok()?
            .flatten();
        let pass_cert = self
            .parsed(AUTH_TLS_PASS_CERT, |v| {
                super::annotations::parse_bool(v.trim()).map_err(|e| format!("{v:?} is not {e}"))
            })
            .ok()?
            .unwrap_or(false);
        let match_cn = self
            .parsed(AUTH_TLS_MATCH_CN, parse_match_cn)
            .ok()?
            .flatten();
        Some(ClientTlsAnnotations {
            secret,
            field: secret_full.to_owned(),
            verify,
            depth,
            error_page,
            pass_cert,
            match_cn,
        })
    }

    fn guards(&mut self) {
        for (name, asks) in GUARDS {
            let Some((full, value)) = lookup(self.annotations, name) else {
                continue;
            };
            let asks = match asks {
                Asks::Always => true,
                Asks::Unless(values) => !values.contains(&value.trim()),
            };
            if asks {
                let why = if *name == "auth-snippet" {
                    "snippets are never executed, so the authentication it adds cannot be honoured"
                        .to_owned()
                } else {
                    format!("{name} is not implemented by Portico")
                };
                self.refuse(full, &why);
            }
        }
    }
}

/// Reads the security annotations of Ingress `key`.
pub fn parse(
    key: &ObjectKey,
    annotations: &BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) -> SecurityAnnotations {
    let mut r = Reader {
        key,
        annotations,
        out: SecurityAnnotations::default(),
        diags,
    };
    r.guards();
    // ingress-nginx reads `allowlist-source-range`, and its alias only without it.
    r.out.allow = r.ranges(&[ALLOWLIST, WHITELIST]);
    r.out.deny = r.ranges(&[DENYLIST]);
    r.out.basic_auth = r.basic_auth();
    r.out.limits = r.limits();
    r.out.external_auth = r.external_auth();
    r.out.client_tls = r.client_tls();
    if let Some((full, v)) = lookup(annotations, SATISFY) {
        match v.trim() {
            "any" => r.out.satisfy_any = true,
            "all" => {}
            // Anything else is `all` in ingress-nginx too: the stricter reading.
            other => r.diags.push(Diagnostic::warning(
                Kind::Ingress,
                key,
                format!("metadata.annotations[{full:?}]"),
                DiagnosticReason::InvalidAnnotation,
                format!("annotation {full} has invalid value {other:?} (expected any or all); all applies, as in ingress-nginx"),
            )),
        }
    }
    if let Some((full, v)) = lookup(annotations, ENABLE_GLOBAL_AUTH) {
        match super::annotations::parse_bool(v.trim()) {
            Ok(b) => r.out.global_auth = b,
            // Unreadable: the global auth stays in force, as it does in ingress-nginx.
            Err(expected) => r.diags.push(Diagnostic::warning(
                Kind::Ingress,
                key,
                format!("metadata.annotations[{full:?}]"),
                DiagnosticReason::InvalidAnnotation,
                format!("annotation {full} has invalid value {v:?} (expected {expected}); the global auth applies"),
            )),
        }
    }
    r.out
}

/// Comma-separated CIDRs or single addresses, IPv4 or IPv6, as ingress-nginx's
/// `ParseIPNets` reads them: items trimmed, host bits dropped (`192.0.2.3/24` is
/// `192.0.2.0/24`), empty items refused, and any item that is neither makes the whole
/// list fail.
pub fn parse_source_ranges(v: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    if v.trim().is_empty() {
        return Ok(out);
    }
    for item in v.split(',') {
        let item = item.trim();
        let net = match item.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{item:?} is not an IP address or CIDR (expected a list such as 10.0.0.0/24,172.10.0.1)"
                    ))
                }
            },
        };
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// `auth-url` and the keys that modify it, validated as ingress-nginx's `authreq`
/// parser does, from `get` (a key's full name and value); each malformed key is passed
/// to `refuse` with the reason, and then there is no auth to use.
pub fn external_auth_from<'a>(
    get: impl Fn(&str) -> Option<(&'a str, &'a str)>,
    mut refuse: impl FnMut(&str, &str),
) -> Option<Arc<ExternalAuth>> {
    let (url_full, url) = get(AUTH_URL)?;
    let mut ok = true;
    let url = match parse_auth_url(url) {
        Ok(t) => Some(t),
        Err(why) => {
            refuse(url_full, &why);
            None
        }
    };
    let method = match get(AUTH_METHOD) {
        None => None,
        Some((full, v)) => match parse_auth_method(v) {
            Ok(m) => Some(m),
            Err(why) => {
                refuse(full, &why);
                ok = false;
                None
            }
        },
    };
    let param = match get(AUTH_SIGNIN_REDIRECT_PARAM) {
        None => None,
        Some((full, v)) => match url_chars(v) {
            Ok(()) => Some(v),
            Err(why) => {
                refuse(full, &why);
                ok = false;
                None
            }
        },
    };
    let signin = match get(AUTH_SIGNIN) {
        None => None,
        Some((_, "")) => None,
        Some((full, v)) => match url_with_variables(v)
            .and_then(|()| signin_url(v, param).map_err(|e| e.to_string()))
        {
            Ok(t) => Some(t),
            Err(why) => {
                refuse(full, &why);
                ok = false;
                None
            }
        },
    };
    let request_redirect = match get(AUTH_REQUEST_REDIRECT) {
        None => None,
        Some((_, "")) => None,
        Some((full, v)) => match url_chars(v).and_then(|()| {
            HeaderValue::from_str(v).map_err(|_| format!("{v:?} cannot be a header value"))
        }) {
            Ok(h) => Some(h),
            Err(why) => {
                refuse(full, &why);
                ok = false;
                None
            }
        },
    };
    let response_headers = match get(AUTH_RESPONSE_HEADERS) {
        None => Vec::new(),
        Some((full, v)) => match parse_header_list(v) {
            Ok(list) => list,
            Err(why) => {
                refuse(full, &why);
                ok = false;
                Vec::new()
            }
        },
    };
    let always_set_cookie = match get(AUTH_ALWAYS_SET_COOKIE) {
        None => false,
        Some((full, v)) => match super::annotations::parse_bool(v.trim()) {
            Ok(b) => b,
            Err(expected) => {
                refuse(full, &format!("{v:?} is not {expected}"));
                ok = false;
                false
            }
        },
    };
    // `auth-cache-duration` means something only beside `auth-cache-key`.
    let cache = match get(AUTH_CACHE_KEY) {
        None | Some((_, "")) => None,
        Some((full, key)) => {
            let key = if key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b))
            {
                Template::parse(key).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "{key:?} holds characters a cache key may not (letters, digits, -, _, $, {{ and }})"
                ))
            };
            let valid = match get(AUTH_CACHE_DURATION) {
                None => parse_cache_duration(""),
                Some((dfull, d)) => parse_cache_duration(d).inspect_err(|why| {
                    refuse(dfull, why);
                    ok = false;
                }),
            };
            match (key, valid) {
                (Ok(key), Ok(valid)) => Some(AuthCache {
                    key,
                    scope: "".into(),
                    valid,
                }),
                (Err(why), _) => {
                    refuse(full, &why);
                    ok = false;
                    None
                }
                (_, Err(_)) => None,
            }
        }
    };
    // A ConfigMap as `namespace/name`: ingress-nginx looks the value up as a store key,
    // so a bare name finds nothing there and the location is denied; so here.
    let proxy_set_headers = match get(AUTH_PROXY_SET_HEADERS) {
        None | Some((_, "")) => None,
        Some((full, v)) => match super::annotations::parse_configmap_ref(v.trim()) {
            Ok(k) => Some(Arc::from(k.to_string())),
            Err(expected) => {
                refuse(full, &format!("{v:?} is not {expected}"));
                ok = false;
                None
            }
        },
    };
    let url = url.filter(|_| ok)?;
    Some(Arc::new(ExternalAuth {
        url,
        method,
        signin,
        request_redirect,
        response_headers,
        always_set_cookie,
        cache,
        proxy_set_headers,
    }))
}

/// `auth` with its cache (if any) scoped to `scope`.
pub fn with_cache_scope(auth: Arc<ExternalAuth>, scope: &str) -> Arc<ExternalAuth> {
    if auth.cache.is_none() {
        return auth;
    }
    let mut a = (*auth).clone();
    if let Some(c) = &mut a.cache {
        c.scope = scope.into();
    }
    Arc::new(a)
}

/// The ConfigMap's `global-auth-*` keys, ingress-nginx's names for the annotations of
/// [`external_auth_from`] with `global-` in front.
pub const GLOBAL_AUTH_KEYS: &[&str] = &[
    "global-auth-url",
    "global-auth-method",
    "global-auth-signin",
    "global-auth-signin-redirect-param",
    "global-auth-request-redirect",
    "global-auth-response-headers",
    "global-auth-always-set-cookie",
    "global-auth-cache-key",
    "global-auth-cache-duration",
    "global-auth-proxy-set-headers",
];

/// ingress-nginx's `URLIsValidRegex`: letters, digits and `-._~/:,?&=`.
fn url_chars(v: &str) -> Result<(), String> {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} holds characters a URL here may not (letters, digits and -._~/:,?&= only)"
        ))
    }
}

/// ingress-nginx's `URLWithNginxVariableRegex`: [`url_chars`] plus spaces and `$`.
fn url_with_variables(v: &str) -> Result<(), String> {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&= $".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} holds characters a URL here may not (letters, digits, $ and -._~/:,?&= only)"
        ))
    }
}

/// `auth-url`: an `http` or `https` URL with a host, as ingress-nginx's `StringToURL`
/// checks it, whose variables Portico can fill in. A host without variables is checked
/// now; one with them, per request.
fn parse_auth_url(v: &str) -> Result<Template, String> {
    url_with_variables(v)?;
    let lower = v.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| format!("{v:?} is not an http:// or https:// URL"))?;
    let host = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if host.is_empty() {
        return Err(format!("{v:?} has no host"));
    }
    if host.contains("..") {
        return Err(format!("{v:?} has an invalid host"));
    }
    if !host.contains('$') && host.parse::<http::uri::Authority>().is_err() {
        return Err(format!("{v:?} has an invalid host"));
    }
    Template::parse(v).map_err(|e| e.to_string())
}

/// `auth-method`: one of the methods ingress-nginx accepts, as written.
fn parse_auth_method(v: &str) -> Result<Method, String> {
    const METHODS: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    if !METHODS.contains(&v) {
        return Err(format!(
            "{v:?} is not an HTTP method (expected one of {})",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(v.as_bytes()).map_err(|_| format!("{v:?} is not an HTTP method"))
}

/// `auth-response-headers`: comma-separated names of letters, digits, `-` and `_`.
fn parse_header_list(v: &str) -> Result<Vec<HeaderName>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let valid = item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let name = valid
            .then(|| HeaderName::from_bytes(item.as_bytes()).ok())
            .flatten()
            .ok_or_else(|| format!("{item:?} is not a header name (letters, digits, - and _)"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `auth-secret`: `name` or `namespace/name`; a Secret of another namespace is refused,
/// as ingress-nginx refuses it by default.
fn parse_secret_ref(v: &str, namespace: &str) -> Result<ObjectKey, String> {
    let name_ok = |n: &str| {
        (1..=253).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let (ns, name) = match v.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, v),
    };
    if !name_ok(ns) || !name_ok(name) {
        return Err(format!("{v:?} is not a Secret name or namespace/name"));
    }
    if ns != namespace {
        return Err(format!(
            "Secret {ns}/{name} is in another namespace than the Ingress, which is not allowed"
        ));
    }
    Ok(ObjectKey::new(ns, name))
}

/// `auth-tls-error-page`, as ingress-nginx's check lets it through: a URL, a host and
/// path, or a path. Empty is none. nginx's named locations (`@name`) cannot exist here.
fn parse_error_page(v: &str) -> Result<Option<String>, String> {
    static PAGE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^(((https?://)?[A-Za-z0-9\-.]+(:\d+)?)?(/[A-Za-z0-9\-_.]+)*/?)$").ok()
    });
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with('@') {
        return Err(format!(
            "{v:?} names an nginx location, which Portico does not have (expected a URL or path)"
        ));
    }
    match PAGE.as_ref() {
        Some(re) if re.is_match(v) => Ok(Some(v.to_owned())),
        _ => Err(format!("{v:?} is not a URL or path")),
    }
}

/// `auth-tls-match-cn`: `CN=` and a regex, matched whole against the subject DN as
/// nginx's `!~` matches it (unanchored).
fn parse_match_cn(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if !v.starts_with("CN=") {
        return Err(format!("{v:?} does not start with CN="));
    }
    regex::Regex::new(v)
        .map_err(|e| format!("{v:?} is not a regular expression Portico can match: {e}"))?;
    Ok(Some(v.to_owned()))
}

/// `auth-realm`: letters, digits, spaces and the punctuation a quoted realm can hold
/// (no `"` or `\`), as ingress-nginx's character check lets through.
fn parse_realm(v: &str) -> Result<String, String> {
    let ok = v.len() <= 256
        && v.bytes()
            .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not a realm of visible ASCII characters and spaces without \" or \\"
        ))
    }
}

/// The `auth-proxy-set-headers` ConfigMaps that Ingresses of ours (canaries and refused
/// ones aside) and the global auth (`global`, from the settings ConfigMap `settings_key`)
/// name, by `namespace/name`, as ingress-nginx's parser accepts them: the ConfigMap
/// exists and every field name is of letters, digits, `-` and `_`. Portico also needs
/// each value to be a header value whose `$` variables it expands, and refuses the
/// framing fields (`Host`, `Content-Length`, ...). A ConfigMap that fails is reported on
/// each object naming it and left out, so their auth requests answer 503 (ingress-nginx
/// denies the location).
pub fn auth_proxy_set_headers(
    store: &Store,
    fragments: &[Arc<Fragment>],
    global: Option<(&ExternalAuth, &ObjectKey)>,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<Arc<str>, Arc<AuthProxyHeaders>> {
    let mut out = HashMap::new();
    let mut judged: HashMap<Arc<str>, Result<(), String>> = HashMap::new();
    let mut judge = |key: &Arc<str>, out: &mut HashMap<Arc<str>, Arc<AuthProxyHeaders>>| {
        judged
            .entry(key.clone())
            .or_insert_with(|| {
                let headers = read_auth_headers(store, key)?;
                out.insert(key.clone(), Arc::new(headers));
                Ok(())
            })
            .clone()
    };
    for f in fragments {
        if f.ann.canary.is_some() || !f.ann.security.refused.is_empty() {
            continue;
        }
        let Some(key) = f
            .ann
            .security
            .external_auth
            .as_ref()
            .and_then(|a| a.proxy_set_headers.as_ref())
        else {
            continue;
        };
        if let Err(why) = judge(key, &mut out) {
            let full = lookup(
                f.ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .unwrap_or(&BTreeMap::new()),
                AUTH_PROXY_SET_HEADERS,
            )
            .map(|(k, _)| k.to_owned())
            .unwrap_or_else(|| AUTH_PROXY_SET_HEADERS.to_owned());
            diags.push(Diagnostic::error(
                Kind::Ingress,
                &f.key,
                format!("metadata.annotations[{full:?}]"),
                DiagnosticReason::SecurityRefused,
                format!("annotation {full}: ConfigMap {key}: {why}; the Ingress's paths answer 503 until it is fixed"),
            ));
        }
    }
    if let Some((auth, settings_key)) = global {
        if let Some(key) = &auth.proxy_set_headers {
            if let Err(why) = judge(key, &mut out) {
                diags.push(Diagnostic::error(
                    Kind::ConfigMap,
                    settings_key,
                    "data[\"global-auth-proxy-set-headers\"]",
                    DiagnosticReason::SecurityRefused,
                    format!("key global-auth-proxy-set-headers: ConfigMap {key}: {why}; every path the global auth guards answers 503 until it is fixed"),
                ));
            }
        }
    }
    out
}

/// One `auth-proxy-set-headers` ConfigMap, judged whole.
fn read_auth_headers(store: &Store, key: &str) -> Result<AuthProxyHeaders, String> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let cm = store
        .config_maps
        .get(&ObjectKey::new(ns, name))
        .ok_or_else(|| "it does not exist".to_owned())?;
    let mut out = Vec::new();
    for (name, value) in cm.data.iter().flatten() {
        // ingress-nginx's `^[a-zA-Z\d\-_]+$`.
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|_| valid)
            .ok_or_else(|| format!("{name:?} is not a header name of letters, digits, - and _"))?;
        if super::headers::RESERVED.contains(&header) {
            return Err(format!(
                "{name} frames the request or belongs to one hop; Portico sets it itself"
            ));
        }
        // Control characters cannot be sent; `$` variables are expanded per request.
        HeaderValue::from_str(value)
            .map_err(|_| format!("header {name} has a value that cannot be a header value"))?;
        let value = Template::parse(value).map_err(|e| format!("header {name}: {e}"))?;
        out.push((header, value));
    }
    Ok(AuthProxyHeaders(out))
}

/// The user lists of the auth Secrets that Ingresses of ours name (canaries aside:
/// their own annotations play no part), read from the store at every compile, so a
/// Secret edit applies at once. A Secret that is missing, or lacks what its type needs,
/// is reported on each Ingress naming it and gives no list: those paths answer 503.
pub fn credentials(
    store: &Store,
    fragments: &[Arc<Fragment>],
    diags: &mut Vec<Diagnostic>,
) -> (Credentials, DigestCredentials) {
    let mut basic = Credentials::new();
    let mut digest = DigestCredentials::new();
    let mut judged: HashMap<Arc<str>, Result<(), String>> = HashMap::new();
    for f in fragments {
        if f.ann.canary.is_some() || !f.ann.security.refused.is_empty() {
            continue;
        }
        let Some(auth) = &f.ann.security.basic_auth else {
            continue;
        };
        let users = auth.users_key();
        let verdict = judged.entry(users.clone()).or_insert_with(|| {
            let problems = match read_users(store, auth)? {
                Users::Basic(list, problems) => {
                    basic.insert(users.clone(), Arc::new(list));
                    problems
                }
                Users::Digest(list, problems) => {
                    digest.insert(users.clone(), Arc::new(list));
                    problems
                }
            };
            for p in problems {
                diags.push(Diagnostic::warning(
                    Kind::Secret,
                    &auth.secret,
                    "data",
                    DiagnosticReason::AuthSecretInvalid,
                    format!("auth user list: {p}; that entry is ignored"),
                ));
            }
            Ok(())
        });
        if let Err(why) = verdict {
            diags.push(Diagnostic::error(
                Kind::Ingress,
                &f.key,
                format!("metadata.annotations[{:?}]", auth.field),
                DiagnosticReason::AuthSecretInvalid,
                format!(
                    "annotation {}: {why}; the Ingress's paths answer 503 until it is fixed",
                    auth.field
                ),
            ));
        }
    }
    (basic, digest)
}

/// The client-certificate settings of every host an Ingress asks them for: per host,
/// as nginx's are per server, the oldest Ingress that sets `auth-tls-secret` for the
/// host decides (ingress-nginx's order too). The CA is read from the Secret on every
/// compile, so a rotated Secret applies to new handshakes without a restart. A host
/// whose Secret cannot be used is left out: its client-certificate routes answer 503.
pub fn client_auth(
    store: &Store,
    fragments: &[Arc<Fragment>],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<(HostPattern, Arc<tls::ClientAuth>)>, ClientAuthTable) {
    let mut hosts = Vec::new();
    let mut table = ClientAuthTable::default();
    let mut claimed: HashMap<HostPattern, Arc<str>> = HashMap::new();
    let mut judged: HashMap<(ObjectKey, VerifyClient, u32), Result<Arc<tls::ClientAuth>, String>> =
        HashMap::new();
    for f in fragments {
        if f.ann.canary.is_some() || !f.ann.security.refused.is_empty() {
            continue;
        }
        let Some(c) = &f.ann.security.client_tls else {
            continue;
        };
        let field = format!("metadata.annotations[{:?}]", c.field);
        let mut verdict = None;
        for host in &f.hosts {
            let HostMatch::Host(host) = host else {
                diags.push(Diagnostic::error(
                    Kind::Ingress,
                    &f.key,
                    field.clone(),
                    DiagnosticReason::SecurityRefused,
                    format!("annotation {}: client certificates are chosen by the host the client names (SNI); the rules without a host answer 503", c.field),
                ));
                continue;
            };
            if let Some(owner) = claimed.get(host) {
                if **owner != *f.source {
                    diags.push(Diagnostic::warning(
                        Kind::Ingress,
                        &f.key,
                        field.clone(),
                        DiagnosticReason::InvalidAnnotation,
                        format!("annotation {}: host {host} already has client certificates from the older Ingress {owner}, whose settings apply to it (as in ingress-nginx)", c.field),
                    ));
                }
                continue;
            }
            claimed.insert(host.clone(), f.source.clone());
            let auth = verdict.get_or_insert_with(|| {
                judged
                    .entry((c.secret.clone(), c.verify, c.depth))
                    .or_insert_with(|| read_client_ca(store, c).map(Arc::new))
                    .clone()
            });
            let auth = match auth {
                Ok(a) => a.clone(),
                Err(why) => {
                    diags.push(Diagnostic::error(
                        Kind::Ingress,
                        &f.key,
                        field.clone(),
                        DiagnosticReason::AuthSecretInvalid,
                        format!("annotation {}: {why}; the Ingress's paths on host {host} answer 503 until it is fixed", c.field),
                    ));
                    continue;
                }
            };
            let policy = ClientCertPolicy {
                source: f.source.clone(),
                verify: c.verify,
                error_page: c
                    .error_page
                    .as_deref()
                    .and_then(|p| HeaderValue::from_str(p).ok()),
                pass_cert: c.pass_cert,
                // Validated when read.
                match_cn: c
                    .match_cn
                    .as_deref()
                    .and_then(|re| regex::Regex::new(re).ok()),
            };
            table.insert(host, Arc::new(policy));
            hosts.push((host.clone(), auth));
        }
    }
    (hosts, table)
}

/// The CA bundle (`ca.crt`) and CRL (`ca.crl`, optional) of `auth-tls-secret`.
fn read_client_ca(store: &Store, c: &ClientTlsAnnotations) -> Result<tls::ClientAuth, String> {
    let secret = store
        .secrets
        .get(&c.secret)
        .ok_or_else(|| format!("Secret {} does not exist", c.secret))?;
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice());
    let ca = get("ca.crt").ok_or_else(|| format!("Secret {} has no ca.crt", c.secret))?;
    tls::ClientAuth::from_pem(c.verify, c.depth, ca, get("ca.crl"))
        .map_err(|e| format!("Secret {}: {e}", c.secret))
}

/// One Secret's users, and what was wrong with some of its entries.
enum Users {
    Basic(Htpasswd, Vec<String>),
    Digest(Htdigest, Vec<String>),
}

fn read_users(store: &Store, auth: &BasicAuthAnnotations) -> Result<Users, String> {
    let secret = store
        .secrets
        .get(&auth.secret)
        .ok_or_else(|| format!("Secret {} does not exist", auth.secret))?;
    let data = secret.data.as_ref();
    if auth.map {
        let mut pairs = Vec::new();
        let mut problems = Vec::new();
        for (user, hash) in data.into_iter().flatten() {
            match std::str::from_utf8(&hash.0) {
                Ok(h) => pairs.push((user.as_str(), h)),
                Err(_) => problems.push(format!("user {user:?}: the value is not text")),
            }
        }
        if auth.digest {
            let (list, bad) = Htdigest::from_pairs(pairs);
            problems.extend(
                bad.iter()
                    .map(|u| format!("user {u:?}: the value is not realm:HA1 (32 hex digits)")),
            );
            return Ok(Users::Digest(list, problems));
        }
        let (list, errors) = Htpasswd::from_pairs(pairs);
        problems.extend(errors.iter().map(ToString::to_string));
        return Ok(Users::Basic(list, problems));
    }
    let file = data.and_then(|d| d.get("auth")).ok_or_else(|| {
        format!(
            "Secret {} has no key \"auth\" (an {} file)",
            auth.secret,
            if auth.digest { "htdigest" } else { "htpasswd" }
        )
    })?;
    let text = std::str::from_utf8(&file.0)
        .map_err(|_| format!("Secret {} key \"auth\" is not text", auth.secret))?;
    if auth.digest {
        let (list, bad) = Htdigest::parse(text);
        let problems = bad
            .iter()
            .map(|line| format!("line {line}: not user:realm:HA1 (32 hex digits)"))
            .collect();
        return Ok(Users::Digest(list, problems));
    }
    let (list, errors) = Htpasswd::parse(text);
    Ok(Users::Basic(
        list,
        errors.iter().map(ToString::to_string).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (SecurityAnnotations, Vec<Diagnostic>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut diags = Vec::new();
        let s = parse(&ObjectKey::new("default", "web"), &map, &mut diags);
        (s, diags)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn source_ranges_as_ingress_nginx_parses_them() {
        assert_eq!(
            parse_source_ranges("10.0.0.0/24,172.10.0.1"),
            Ok(nets(&["10.0.0.0/24", "172.10.0.1/32"]))
        );
        assert_eq!(
            parse_source_ranges(" 192.0.2.3/24 , 2001:db8::1/64,::1"),
            Ok(nets(&["192.0.2.0/24", "2001:db8::/64", "::1/128"]))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/24,",
            "example.com",
            "10.0.0.0/24;10.1.0.0/24",
            "1.2.3",
        ] {
            assert!(parse_source_ranges(bad).is_err(), "{bad}");
        }
        let (s, d) = read(&[(
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "10.0.0.0/24,172.10.0.1",
        )]);
        assert!(d.is_empty() && s.refused.is_empty(), "{d:?}");
        assert_eq!(
            s.allow,
            Ranges::Set(nets(&["10.0.0.0/24", "172.10.0.1/32"]))
        );
        assert_eq!(s.deny, Ranges::Default);
        // allowlist- wins over its alias; portico.dev/ over the nginx prefix.
        let (s, _) = read(&[
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.1",
            ),
            (
                "nginx.ingress.kubernetes.io/allowlist-source-range",
                "10.0.0.2",
            ),
            ("portico.dev/denylist-source-range", "10.0.0.3"),
            (
                "nginx.ingress.kubernetes.io/denylist-source-range",
                "10.0.0.4",
            ),
        ]);
        assert_eq!(s.allow, Ranges::Set(nets(&["10.0.0.2/32"])));
        assert_eq!(s.deny, Ranges::Set(nets(&["10.0.0.3/32"])));
    }

    #[test]
    fn a_bad_or_empty_range_refuses_the_paths() {
        for (key, value) in [
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/24,nope",
            ),
            ("portico.dev/denylist-source-range", "300.0.0.1"),
            ("nginx.ingress.kubernetes.io/allowlist-source-range", "  "),
        ] {
            let (s, d) = read(&[(key, value)]);
            assert_eq!(s.refused.len(), 1, "{key}");
            assert!(s.refused[0].contains("Ingress default/web") && s.refused[0].contains(key));
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].reason, DiagnosticReason::SecurityRefused);
            assert_eq!(d[0].field, format!("metadata.annotations[{key:?}]"));
        }
    }

    #[test]
    fn auth_tls_keys_read_under_both_prefixes_and_fail_closed() {
        for prefix in ["nginx.ingress.kubernetes.io/", "portico.dev/"] {
            let k = |n: &str| format!("{prefix}{n}");
            let (s, d) = read(&[
                (k("auth-tls-secret").as_str(), "default/ca"),
                (k("auth-tls-verify-client").as_str(), "optional_no_ca"),
                (k("auth-tls-verify-depth").as_str(), "2"),
                (
                    k("auth-tls-error-page").as_str(),
                    "https://e.test/cert-error",
                ),
                (k("auth-tls-pass-certificate-to-upstream").as_str(), "true"),
                (k("auth-tls-match-cn").as_str(), "CN=(alice|bob)"),
            ]);
            assert!(s.refused.is_empty() && d.is_empty(), "{d:?}");
            let c = s.client_tls.expect("read");
            assert_eq!(c.secret, ObjectKey::new("default", "ca"));
            assert_eq!(c.verify, VerifyClient::OptionalNoCa);
            assert_eq!(c.depth, 2);
            assert_eq!(c.error_page.as_deref(), Some("https://e.test/cert-error"));
            assert!(c.pass_cert);
            assert_eq!(c.match_cn.as_deref(), Some("CN=(alice|bob)"));
        }
        // The defaults, and ingress-nginx's lenient readings (no weaker than the default).
        let (s, d) = read(&[
            ("nginx.ingress.kubernetes.io/auth-tls-secret", "ca"),
            (
                "nginx.ingress.kubernetes.io/auth-tls-verify-client",
                "maybe",
            ),
            ("nginx.ingress.kubernetes.io/auth-tls-verify-depth", "deep"),
        ]);
        let c = s.client_tls.expect("read");
        assert_eq!(
            (c.verify, c.depth, c.pass_cert),
            (VerifyClient::On, 1, false)
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(s.refused.is_empty());
        // Malformed values refuse the paths.
        for (key, value) in [
            ("auth-tls-secret", "other/ca"),
            ("auth-tls-secret", "Bad_Name"),
            ("auth-tls-verify-depth", "-1"),
            ("auth-tls-error-page", "@named"),
            ("auth-tls-error-page", "https://e.test/a b"),
            ("auth-tls-pass-certificate-to-upstream", "yes please"),
            ("auth-tls-match-cn", "O=client"),
            ("auth-tls-match-cn", "CN=(unclosed"),
        ] {
            let full = format!("nginx.ingress.kubernetes.io/{key}");
            let mut pairs = vec![("nginx.ingress.kubernetes.io/auth-tls-secret", "ca")];
            if key == "auth-tls-secret" {
                pairs.clear();
            }
            pairs.push((full.as_str(), value));
            let (s, d) = read(&pairs);
            assert_eq!(s.refused.len(), 1, "{key}: {value}");
            assert!(s.client_tls.is_none(), "{key}: {value}");
            assert!(d[0].message.contains(key), "{}", d[0].message);
        }
        // Alone, a companion key does nothing, and says so.
        let (s, d) = read(&[("nginx.ingress.kubernetes.io/auth-tls-verify-client", "off")]);
        assert!(s.refused.is_empty() && s.client_tls.is_none());
        assert_eq!(d[0].severity, crate::compile::Severity::Warning);
    }

    #[test]
    fn unimplemented_guards_refuse_unless_they_ask_for_nothing() {
        for (key, value) in [
            ("nginx.ingress.kubernetes.io/auth-snippet", "return 200;"),
            ("nginx.ingress.kubernetes.io/global-rate-limit", "5"),
            ("nginx.ingress.kubernetes.io/enable-modsecurity", "true"),
        ] {
            let (s, d) = read(&[(key, value)]);
            assert_eq!(s.refused.len(), 1, "{key}");
            assert_eq!(d[0].reason, DiagnosticReason::SecurityRefused, "{key}");
            assert!(d[0].message.contains(key), "{}", d[0].message);
        }
        for (key, value) in [
            ("nginx.ingress.kubernetes.io/satisfy", "all"),
            ("nginx.ingress.kubernetes.io/enable-modsecurity", "false"),
        ] {
            let (s, d) = read(&[(key, value)]);
            assert!(s.refused.is_empty() && d.is_empty(), "{key}: {d:?}");
        }
        assert!(is_security_key("auth-url") && is_security_key("whitelist-source-range"));
        assert!(is_security_key("auth-method") && is_security_key("auth-signin"));
        assert_eq!(
            global_refusal("global-auth-snippet", "return 200;").as_deref(),
            Some("global-auth-snippet is not implemented by Portico")
        );
        assert_eq!(global_refusal("global-auth-url", "http://a/b"), None);
        assert_eq!(global_refusal("enable-modsecurity", "false"), None);
        assert!(global_refusal("enable-modsecurity", "true").is_some());
        assert_eq!(global_refusal("proxy-body-size", "1m"), None);
        let (s, d) = read(&[("nginx.ingress.kubernetes.io/satisfy", "any")]);
        assert!(s.satisfy_any && s.refused.is_empty() && d.is_empty());
        let (s, d) = read(&[("nginx.ingress.kubernetes.io/satisfy", "some")]);
        assert!(!s.satisfy_any && s.refused.is_empty());
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
        let (s, d) = read(&[("nginx.ingress.kubernetes.io/enable-global-auth", "false")]);
        assert!(!s.global_auth && d.is_empty());
        assert!(SecurityAnnotations::default().global_auth);
        assert!(!is_security_key("auth-keepalive"));
    }

    #[test]
    fn limits_as_ingress_nginx_reads_them() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let (s, d) = read(&[
            (&n("limit-rps"), "5"),
            (&n("limit-rpm"), "300"),
            (&n("limit-connections"), "2"),
            (&n("limit-burst-multiplier"), "3"),
            (&n("limit-whitelist"), "10.0.0.0/24, 172.10.0.1"),
        ]);
        assert!(s.refused.is_empty() && d.is_empty(), "{d:?}");
        assert_eq!(
            s.limits,
            Some(LimitAnnotations {
                zone: "default/web".into(),
                rps: Some(5),
                rpm: Some(300),
                connections: Some(2),
                burst_multiplier: 3,
                allow: nets(&["10.0.0.0/24", "172.10.0.1/32"]),
            })
        );
        // The multiplier defaults to 5; 0 and less set no limit.
        let (s, d) = read(&[(&n("limit-rpm"), "10"), (&n("limit-rps"), "0")]);
        let l = s.limits.unwrap();
        assert_eq!((l.rps, l.rpm, l.burst_multiplier), (None, Some(10), 5));
        assert!(d.is_empty());
        let (s, _) = read(&[(&n("limit-connections"), "-1")]);
        assert_eq!(s.limits, None);
        // Modifiers alone ask for nothing.
        let (s, d) = read(&[
            (&n("limit-burst-multiplier"), "2"),
            (&n("limit-allowlist"), ""),
        ]);
        assert!(s.limits.is_none() && s.refused.is_empty() && d.is_empty());
        // An unreadable multiplier falls back to 5 with a warning.
        let (s, d) = read(&[(&n("limit-rps"), "1"), (&n("limit-burst-multiplier"), "x")]);
        assert_eq!(s.limits.unwrap().burst_multiplier, 5);
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
    }

    #[test]
    fn unreadable_limits_refuse_the_paths() {
        for (key, value) in [
            ("nginx.ingress.kubernetes.io/limit-rps", "five"),
            ("portico.dev/limit-rpm", "1.5"),
            (
                "nginx.ingress.kubernetes.io/limit-connections",
                "99999999999",
            ),
            ("nginx.ingress.kubernetes.io/limit-allowlist", "10.0.0.0/33"),
        ] {
            let (s, d) = read(&[(key, value), ("nginx.ingress.kubernetes.io/limit-rpm", "5")]);
            assert_eq!(s.refused.len(), 1, "{key}");
            assert!(s.limits.is_none(), "{key}");
            assert_eq!(d[0].reason, DiagnosticReason::SecurityRefused, "{key}");
            assert!(d[0].message.contains(key), "{}", d[0].message);
        }
        assert!(is_security_key("limit-rps") && is_security_key("limit-whitelist"));
        assert!(!is_security_key("limit-rate"));
    }

    #[test]
    fn basic_auth_as_the_documentation_sets_it() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let (s, d) = read(&[
            (&n("auth-type"), "basic"),
            (&n("auth-secret"), "basic-auth"),
            (&n("auth-realm"), "Authentication Required - foo"),
        ]);
        assert!(d.is_empty() && s.refused.is_empty(), "{d:?}");
        let a = s.basic_auth.expect("basic auth");
        assert_eq!(a.secret, ObjectKey::new("default", "basic-auth"));
        assert!(!a.map);
        assert_eq!(a.realm, "Authentication Required - foo");
        assert_eq!(&*a.users_key(), "auth-file:default/basic-auth");

        let (s, d) = read(&[
            ("portico.dev/auth-type", "basic"),
            (&n("auth-secret"), "default/basic-auth"),
            (&n("auth-secret-type"), "auth-map"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert!(s.basic_auth.expect("basic auth").map);

        for (pairs, what) in [
            (
                vec![(n("auth-type"), "ntlm"), (n("auth-secret"), "x")],
                "ntlm",
            ),
            (vec![(n("auth-type"), "basic")], "auth-secret"),
            (
                vec![(n("auth-type"), "basic"), (n("auth-secret"), "other/x")],
                "another namespace",
            ),
            (
                vec![
                    (n("auth-type"), "basic"),
                    (n("auth-secret"), "x"),
                    (n("auth-secret-type"), "file"),
                ],
                "secret type",
            ),
            (
                vec![
                    (n("auth-type"), "basic"),
                    (n("auth-secret"), "x"),
                    (n("auth-realm"), "a\"b"),
                ],
                "realm",
            ),
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let (s, d) = read(&pairs);
            assert!(s.basic_auth.is_none(), "{what}");
            assert_eq!(s.refused.len(), 1, "{what}");
            assert!(d[0].message.contains(what), "{what}: {}", d[0].message);
        }
        let (s, d) = read(&[(&n("auth-type"), "digest"), (&n("auth-secret"), "users")]);
        assert!(d.is_empty(), "{d:?}");
        let a = s.basic_auth.expect("digest auth");
        assert!(a.digest);
        assert_eq!(&*a.users_key(), "digest-auth-file:default/users");
        // Without auth-type the secret does nothing, and says so.
        let (s, d) = read(&[(&n("auth-secret"), "basic-auth")]);
        assert!(s.basic_auth.is_none() && s.refused.is_empty());
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
    }

    #[test]
    fn auth_proxy_set_headers_names_a_configmap_of_the_ingress_namespace() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let url = (n("auth-url"), "http://auth/check");
        let (s, d) = read(&[
            (&url.0, url.1),
            (&n("auth-proxy-set-headers"), "default/auth-headers"),
        ]);
        assert!(d.is_empty() && s.refused.is_empty(), "{d:?}");
        let a = s.external_auth.expect("external auth");
        assert_eq!(a.proxy_set_headers.as_deref(), Some("default/auth-headers"));
        // A bare name (ingress-nginx finds no ConfigMap by it), another namespace, or
        // garbage: the paths are refused.
        for bad in ["auth-headers", "other/auth-headers", "default/Bad_Name"] {
            let (s, d) = read(&[(&url.0, url.1), (&n("auth-proxy-set-headers"), bad)]);
            assert_eq!(s.refused.len(), 1, "{bad}: {d:?}");
            assert_eq!(d[0].reason, DiagnosticReason::SecurityRefused, "{bad}");
            assert!(
                d[0].field.contains("auth-proxy-set-headers"),
                "{bad}: {}",
                d[0].field
            );
        }
    }

    #[test]
    fn auth_proxy_set_headers_configmaps_are_read_whole_or_not_at_all() {
        let mut store = Store::default();
        let cm = |name: &str, data: &[(&str, &str)]| {
            let mut c = k8s_openapi::api::core::v1::ConfigMap::default();
            c.metadata.namespace = Some("default".into());
            c.metadata.name = Some(name.into());
            c.data = Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            crate::store::Object::ConfigMap(c)
        };
        store.apply(cm(
            "good",
            &[("My-Custom-Header", "42"), ("X_Client", "$remote_addr")],
        ));
        store.apply(cm("spaced", &[("Bad Header", "1")]));
        store.apply(cm("framing", &[("Content-Length", "1")]));
        store.apply(cm("unknown-var", &[("X-Start", "t=${msec}")]));
        store.apply(cm("newline", &[("X-A", "a\nb")]));
        let h = read_auth_headers(&store, "default/good").unwrap();
        assert_eq!(h.0.len(), 2);
        assert_eq!(h.0[0].0, "my-custom-header");
        assert_eq!(h.0[1].1, Template::parse("$remote_addr").unwrap());
        for (key, why) in [
            ("default/missing", "does not exist"),
            ("default/spaced", "not a header name"),
            ("default/framing", "Portico sets it itself"),
            ("default/unknown-var", "$msec"),
            ("default/newline", "cannot be a header value"),
        ] {
            let err = read_auth_headers(&store, key).unwrap_err();
            assert!(err.contains(why), "{key}: {err}");
        }
    }

    #[test]
    fn external_auth_as_the_documentation_sets_it() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        // ingress-nginx's "External OAUTH Authentication" example, for oauth2-proxy.
        let (s, d) = read(&[
            (&n("auth-url"), "https://$host/oauth2/auth"),
            (
                &n("auth-signin"),
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
            (
                &n("auth-response-headers"),
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
        ]);
        assert!(d.is_empty() && s.refused.is_empty(), "{d:?}");
        let a = s.external_auth.expect("external auth");
        assert_eq!(a.url, Template::parse("https://$host/oauth2/auth").unwrap());
        assert!(a.url.has_vars());
        assert_eq!(a.method, None);
        assert_eq!(
            a.signin,
            Some(Template::parse("https://$host/oauth2/start?rd=$escaped_request_uri").unwrap())
        );
        assert_eq!(
            a.response_headers,
            [
                HeaderName::from_static("x-auth-request-user"),
                HeaderName::from_static("x-auth-request-email")
            ]
        );
        assert!(!a.always_set_cookie);

        // "External Basic Authentication": a plain URL, and the other keys.
        let (s, d) = read(&[
            (
                &n("auth-url"),
                "http://auth.example.com:8080/basic-auth/user/passwd",
            ),
            ("portico.dev/auth-method", "POST"),
            (&n("auth-signin"), "https://login.example.com/start"),
            (&n("auth-signin-redirect-param"), "return_to"),
            (&n("auth-request-redirect"), "https://app.example.com/home"),
            (&n("auth-always-set-cookie"), "true"),
        ]);
        assert!(d.is_empty() && s.refused.is_empty(), "{d:?}");
        let a = s.external_auth.expect("external auth");
        assert_eq!(a.method, Some(Method::POST));
        assert_eq!(
            a.signin,
            Some(signin_url("https://login.example.com/start", Some("return_to")).unwrap())
        );
        assert_eq!(
            a.request_redirect,
            Some(HeaderValue::from_static("https://app.example.com/home"))
        );
        assert!(a.always_set_cookie);

        // Malformed: the paths are refused, naming the key.
        for (pairs, key) in [
            (vec![(n("auth-url"), "ftp://auth/x")], "auth-url"),
            (vec![(n("auth-url"), "http:///x")], "auth-url"),
            (vec![(n("auth-url"), "http://a..b/x")], "auth-url"),
            (vec![(n("auth-url"), "http://auth/x\"y")], "auth-url"),
            (vec![(n("auth-url"), "http://$hostname/x")], "auth-url"),
            (
                vec![(n("auth-url"), "http://a/x"), (n("auth-method"), "get")],
                "auth-method",
            ),
            (
                vec![
                    (n("auth-url"), "http://a/x"),
                    (n("auth-signin"), "https://l/$nope"),
                ],
                "auth-signin",
            ),
            (
                vec![
                    (n("auth-url"), "http://a/x"),
                    (n("auth-signin-redirect-param"), "r$d"),
                ],
                "auth-signin-redirect-param",
            ),
            (
                vec![
                    (n("auth-url"), "http://a/x"),
                    (n("auth-request-redirect"), "$uri"),
                ],
                "auth-request-redirect",
            ),
            (
                vec![
                    (n("auth-url"), "http://a/x"),
                    (n("auth-response-headers"), "X-A;B"),
                ],
                "auth-response-headers",
            ),
            (
                vec![
                    (n("auth-url"), "http://a/x"),
                    (n("auth-always-set-cookie"), "yes"),
                ],
                "auth-always-set-cookie",
            ),
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let (s, d) = read(&pairs);
            assert!(s.external_auth.is_none(), "{key}");
            assert_eq!(s.refused.len(), 1, "{key}: {:?}", s.refused);
            assert_eq!(d[0].reason, DiagnosticReason::SecurityRefused, "{key}");
            assert!(d[0].message.contains(&n(key)), "{key}: {}", d[0].message);
        }
        // The cache, scoped to the Ingress; its duration refused when malformed.
        let (s, d) = read(&[
            (&n("auth-url"), "http://a/x"),
            (&n("auth-cache-key"), "$remote_user$http_authorization"),
            (&n("auth-cache-duration"), "200 202 401 5m"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let c = s.external_auth.unwrap().cache.clone().expect("cache");
        assert_eq!(&*c.scope, "default/web");
        assert_eq!(c.valid, parse_cache_duration("").unwrap());
        for (key, value) in [
            ("auth-cache-duration", "5m 200"),
            ("auth-cache-key", "$a b"),
        ] {
            let mut pairs = vec![
                (n("auth-url"), "http://a/x"),
                (n("auth-cache-key"), "$remote_user"),
            ];
            pairs.retain(|(k, _)| *k != n(key));
            pairs.push((n(key), value));
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let (s, d) = read(&pairs);
            assert!(s.external_auth.is_none(), "{key}");
            assert!(d[0].message.contains(&n(key)), "{}", d[0].message);
        }
        // A modifier alone does nothing, and says so.
        let (s, d) = read(&[(&n("auth-signin"), "https://l/start")]);
        assert!(s.external_auth.is_none() && s.refused.is_empty());
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
        assert!(d[0].message.contains("without auth-url"));
    }
}
