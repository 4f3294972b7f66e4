//! Strict per-key parsers for the Ingress annotations Portico honours. A value that does
//! not parse is a diagnostic and the annotation is ignored; no annotation text reaches the
//! config except as a validated value.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use proxy_core::balance::{AffinityMode, CookieAffinity, SameSite};
use proxy_core::config::{BackendId, BackendProtocol};
use proxy_core::host::HostName;
use proxy_core::pipeline::{
    ByHeader, CanaryRule, Cors, CorsOrigins, CorsRules, HeaderJudge, HeaderPattern, OriginPattern,
};
use proxy_core::routes::{HostMatch, HostPattern};
use tls::TlsVersion;

use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::security::{self, SecurityAnnotations};
use super::upstream::{
    parse_hash_by, parse_load_balance, parse_next_timeout, parse_next_upstream, parse_subset_size,
    parse_tries, LoadBalance, UpstreamAnnotations,
};
use crate::store::{Kind, ObjectKey};

/// Portico's own annotation prefix; it wins over the ingress-nginx name for the same key.
pub const OWN_PREFIX: &str = "portico.dev/";
/// ingress-nginx's prefix, honoured for the keys below so migrated Ingresses keep working.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

const AFFINITY: &str = "affinity";
const AFFINITY_MODE: &str = "affinity-mode";
const COOKIE_NAME: &str = "session-cookie-name";
const COOKIE_PATH: &str = "session-cookie-path";
const COOKIE_MAX_AGE: &str = "session-cookie-max-age";
const COOKIE_EXPIRES: &str = "session-cookie-expires";
const COOKIE_SECURE: &str = "session-cookie-secure";
const COOKIE_SAMESITE: &str = "session-cookie-samesite";
const COOKIE_CHANGE_ON_FAILURE: &str = "session-cookie-change-on-failure";
const SSL_REDIRECT: &str = "ssl-redirect";
const FORCE_SSL_REDIRECT: &str = "force-ssl-redirect";
const CONNECT_TIMEOUT: &str = "proxy-connect-timeout";
const READ_TIMEOUT: &str = "proxy-read-timeout";
const SEND_TIMEOUT: &str = "proxy-send-timeout";
const BODY_SIZE: &str = "proxy-body-size";
const REQUEST_BUFFERING: &str = "proxy-request-buffering";
const BODY_BUFFER_SIZE: &str = "client-body-buffer-size";
const LIMIT_RATE: &str = "limit-rate";
const LIMIT_RATE_AFTER: &str = "limit-rate-after";
const PERMANENT_REDIRECT: &str = "permanent-redirect";
const PERMANENT_REDIRECT_CODE: &str = "permanent-redirect-code";
const TEMPORAL_REDIRECT: &str = "temporal-redirect";
const TEMPORAL_REDIRECT_CODE: &str = "temporal-redirect-code";
const APP_ROOT: &str = "app-root";
const FROM_TO_WWW: &str = "from-to-www-redirect";
const PRESERVE_TRAILING_SLASH: &str = "preserve-trailing-slash";
const USE_PORT_IN_REDIRECTS: &str = "use-port-in-redirects";
const USE_REGEX: &str = "use-regex";
const REWRITE_TARGET: &str = "rewrite-target";
const CANARY: &str = "canary";
const CANARY_BY_HEADER: &str = "canary-by-header";
const CANARY_BY_HEADER_VALUE: &str = "canary-by-header-value";
const CANARY_BY_HEADER_PATTERN: &str = "canary-by-header-pattern";
const CANARY_BY_COOKIE: &str = "canary-by-cookie";
const CANARY_WEIGHT: &str = "canary-weight";
const CANARY_WEIGHT_TOTAL: &str = "canary-weight-total";
const AFFINITY_CANARY_BEHAVIOR: &str = "affinity-canary-behavior";
const UPSTREAM_VHOST: &str = "upstream-vhost";
const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";
const SERVER_ALIAS: &str = "server-alias";
const DEFAULT_BACKEND: &str = "default-backend";
const CUSTOM_HTTP_ERRORS: &str = "custom-http-errors";
const CUSTOM_HEADERS: &str = "custom-headers";
const BACKEND_PROTOCOL: &str = "backend-protocol";
const PROXY_SSL_SECRET: &str = "proxy-ssl-secret";
const PROXY_SSL_VERIFY: &str = "proxy-ssl-verify";
const PROXY_SSL_VERIFY_DEPTH: &str = "proxy-ssl-verify-depth";
const PROXY_SSL_NAME: &str = "proxy-ssl-name";
const PROXY_SSL_SERVER_NAME: &str = "proxy-ssl-server-name";
const PROXY_SSL_PROTOCOLS: &str = "proxy-ssl-protocols";
const PROXY_SSL_CIPHERS: &str = "proxy-ssl-ciphers";
const ENABLE_CORS: &str = "enable-cors";
const CORS_ALLOW_ORIGIN: &str = "cors-allow-origin";
const CORS_ALLOW_METHODS: &str = "cors-allow-methods";
const CORS_ALLOW_HEADERS: &str = "cors-allow-headers";
const CORS_EXPOSE_HEADERS: &str = "cors-expose-headers";
const CORS_ALLOW_CREDENTIALS: &str = "cors-allow-credentials";
const CORS_MAX_AGE: &str = "cors-max-age";
const SERVICE_UPSTREAM: &str = "service-upstream";
const LOAD_BALANCE: &str = "load-balance";
const UPSTREAM_HASH_BY: &str = "upstream-hash-by";
const UPSTREAM_HASH_BY_SUBSET: &str = "upstream-hash-by-subset";
const UPSTREAM_HASH_BY_SUBSET_SIZE: &str = "upstream-hash-by-subset-size";
const PROXY_NEXT_UPSTREAM: &str = "proxy-next-upstream";
const PROXY_NEXT_UPSTREAM_TRIES: &str = "proxy-next-upstream-tries";
const PROXY_NEXT_UPSTREAM_TIMEOUT: &str = "proxy-next-upstream-timeout";
const DISABLE_PROXY_INTERCEPT_ERRORS: &str = "disable-proxy-intercept-errors";
const SSL_PASSTHROUGH: &str = "ssl-passthrough";

/// The port a Service named without one is reached on: its first, as ingress-nginx
/// takes the first port of a `default-backend` Service (and of
/// `--default-backend-service`). Not a valid port name, so it names no other backend.
pub const FIRST_PORT: &str = "(first)";

/// Every key honoured under both prefixes.
const KNOWN: &[&str] = &[
    AFFINITY,
    AFFINITY_MODE,
    COOKIE_NAME,
    COOKIE_PATH,
    COOKIE_MAX_AGE,
    COOKIE_EXPIRES,
    COOKIE_SECURE,
    COOKIE_SAMESITE,
    COOKIE_CHANGE_ON_FAILURE,
    SSL_REDIRECT,
    FORCE_SSL_REDIRECT,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    SEND_TIMEOUT,
    BODY_SIZE,
    REQUEST_BUFFERING,
    BODY_BUFFER_SIZE,
    LIMIT_RATE,
    LIMIT_RATE_AFTER,
    PERMANENT_REDIRECT,
    PERMANENT_REDIRECT_CODE,
    TEMPORAL_REDIRECT,
    TEMPORAL_REDIRECT_CODE,
    APP_ROOT,
    FROM_TO_WWW,
    PRESERVE_TRAILING_SLASH,
    USE_PORT_IN_REDIRECTS,
    USE_REGEX,
    REWRITE_TARGET,
    CANARY,
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_VALUE,
    CANARY_BY_HEADER_PATTERN,
    CANARY_BY_COOKIE,
    CANARY_WEIGHT,
    CANARY_WEIGHT_TOTAL,
    AFFINITY_CANARY_BEHAVIOR,
    UPSTREAM_VHOST,
    X_FORWARDED_PREFIX,
    SERVER_ALIAS,
    DEFAULT_BACKEND,
    CUSTOM_HTTP_ERRORS,
    CUSTOM_HEADERS,
    BACKEND_PROTOCOL,
    PROXY_SSL_SECRET,
    PROXY_SSL_VERIFY,
    PROXY_SSL_VERIFY_DEPTH,
    PROXY_SSL_NAME,
    PROXY_SSL_SERVER_NAME,
    PROXY_SSL_PROTOCOLS,
    PROXY_SSL_CIPHERS,
    ENABLE_CORS,
    CORS_ALLOW_ORIGIN,
    CORS_ALLOW_METHODS,
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_ALLOW_CREDENTIALS,
    CORS_MAX_AGE,
    SERVICE_UPSTREAM,
    LOAD_BALANCE,
    UPSTREAM_HASH_BY,
    UPSTREAM_HASH_BY_SUBSET,
    UPSTREAM_HASH_BY_SUBSET_SIZE,
    PROXY_NEXT_UPSTREAM,
    PROXY_NEXT_UPSTREAM_TRIES,
    PROXY_NEXT_UPSTREAM_TIMEOUT,
    DISABLE_PROXY_INTERCEPT_ERRORS,
    SSL_PASSTHROUGH,
];

/// The keys that shape CORS, meaningless without `enable-cors: "true"`.
const CORS_KEYS: &[&str] = &[
    CORS_ALLOW_ORIGIN,
    CORS_ALLOW_METHODS,
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_ALLOW_CREDENTIALS,
    CORS_MAX_AGE,
];

/// The keys that shape a canary, meaningless without `canary: "true"`.
const CANARY_KEYS: &[&str] = &[
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_VALUE,
    CANARY_BY_HEADER_PATTERN,
    CANARY_BY_COOKIE,
    CANARY_WEIGHT,
    CANARY_WEIGHT_TOTAL,
];

/// ingress-nginx's annotations that paste raw nginx configuration. Portico never executes
/// them, under either prefix. (`auth-snippet` is one too, but it guards access, so it is
/// read with the security keys and refuses its Ingress's paths.)
const SNIPPETS: &[&str] = &[
    "configuration-snippet",
    "server-snippet",
    "stream-snippet",
    "modsecurity-snippet",
];

/// Where the diagnostics about a whole set of annotations point.
const ANNOTATIONS_FIELD: &str = "metadata.annotations";

/// One diagnostic per Ingress for each kind of annotation it carries that Portico does
/// not honour: snippets (never executed), other `nginx.ingress.kubernetes.io/` keys, and
/// `portico.dev/` keys that do not exist. Each names every such key.
fn report_unhonoured(
    key: &ObjectKey,
    snippets: &[&str],
    unsupported: &[&str],
    unknown_own: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    if !snippets.is_empty() {
        diags.push(Diagnostic::error(
            Kind::Ingress,
            key,
            ANNOTATIONS_FIELD,
            DiagnosticReason::SnippetNotExecuted,
            format!(
                "snippet {} never executed: Portico runs no proxy configuration from annotations; the rest of the Ingress is served",
                listed(snippets)
            ),
        ));
    }
    for (list, what) in [
        (unsupported, "not supported by Portico"),
        (unknown_own, "not a Portico annotation"),
    ] {
        if !list.is_empty() {
            diags.push(Diagnostic::warning(
                Kind::Ingress,
                key,
                ANNOTATIONS_FIELD,
                DiagnosticReason::UnsupportedAnnotation,
                format!("{} {what}, ignored", listed(list)),
            ));
        }
    }
}

/// `annotation a is` or `annotations a, b are`.
fn listed(names: &[&str]) -> String {
    match names {
        [one] => format!("annotation {one} is"),
        many => format!("annotations {} are", many.join(", ")),
    }
}

/// What one Ingress's annotations ask for, validated. `None` leaves a setting to the
/// global settings (the `--configmap`), as in ingress-nginx, where an annotation
/// overrides the ConfigMap value for its Ingress only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressAnnotations {
    /// Cookie affinity for the Ingress's paths.
    pub affinity: Option<CookieAffinity>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// `proxy-body-size`: `Some(None)` is unlimited (`0`).
    pub body_size: Option<Option<u64>>,
    /// `proxy-request-buffering`: `on` reads request bodies whole before sending.
    pub request_buffering: Option<bool>,
    /// `client-body-buffer-size`: how much of a buffered body stays in memory.
    pub body_buffer_size: Option<u64>,
    /// `limit-rate`: KiB a second a pod's answer is sent at; 0 is no limit.
    pub limit_rate: Option<u64>,
    /// `limit-rate-after`: KiB sent before `limit-rate` applies.
    pub limit_rate_after: Option<u64>,
    /// `ssl-redirect`: redirect plain HTTP on hosts that have TLS.
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`, default false: redirect plain HTTP even without TLS.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`: keep the request URI's last `/` in HTTPS redirects.
    pub preserve_trailing_slash: Option<bool>,
    /// `use-port-in-redirects`: name the HTTPS port in HTTPS redirects, even 443.
    pub use_port_in_redirects: Option<bool>,
    /// `temporal-redirect` or else `permanent-redirect`, with its code.
    pub redirect: Option<FixedRedirect>,
    /// `app-root`: where a request for `/` is sent.
    pub app_root: Option<String>,
    /// `from-to-www-redirect`: the `www.` twin of each host redirects to it.
    pub from_to_www: bool,
    /// `use-regex`: the Ingress's paths are regular expressions, and every path of its
    /// hosts is matched as one.
    pub use_regex: bool,
    /// `rewrite-target`: the path upstream gets, from the groups of the rule path's
    /// regex; implies regex paths (for paths other than the target itself).
    pub rewrite_target: Option<String>,
    /// `canary: "true"`: the Ingress is a canary of the Ingress that has its host and
    /// path, never a route of its own.
    pub canary: Option<CanaryAnnotations>,
    /// `upstream-vhost`: the `Host` the pods get.
    pub upstream_vhost: Option<String>,
    /// `x-forwarded-prefix`: the `X-Forwarded-Prefix` rewritten paths' pods get.
    pub x_forwarded_prefix: Option<String>,
    /// `server-alias`: more names for the Ingress's hosts, sorted, each once.
    pub server_alias: Vec<HostMatch>,
    /// `default-backend`: a Service of the Ingress's namespace, on its first port
    /// ([`FIRST_PORT`]), that answers the Ingress's paths while their Service has no
    /// ready endpoint, and serves their `custom-http-errors` pages.
    pub default_backend: Option<BackendId>,
    /// `custom-http-errors`: the codes the Ingress's paths answer with an error page
    /// instead of the upstream's answer (sorted, each once); `None` leaves it to the
    /// ConfigMap's.
    pub custom_http_errors: Option<Vec<u16>>,
    /// `custom-headers`: the ConfigMap (`namespace/name`) whose data are fields set on
    /// every answer of the Ingress's paths.
    pub custom_headers: Option<ObjectKey>,
    /// `backend-protocol`: how requests reach the pods; `None` leaves it to the Service
    /// port's `appProtocol`.
    pub backend_protocol: Option<BackendProtocol>,
    /// `proxy-ssl-secret` and its companions: TLS to the pods as the route asks for it.
    pub proxy_ssl: Option<ProxySsl>,
    /// `enable-cors` and the `cors-*` keys.
    pub cors: Option<Cors>,
    /// Source ranges, basic auth, and the security keys that refuse the paths.
    pub security: SecurityAnnotations,
    /// `service-upstream`, `load-balance`, `upstream-hash-by*`, `proxy-next-upstream*`,
    /// `disable-proxy-intercept-errors`.
    pub upstream: UpstreamAnnotations,
    /// `ssl-passthrough`: TLS connections for the Ingress's hosts go undecrypted to the
    /// backend of their `/` path (with `--enable-ssl-passthrough`).
    pub ssl_passthrough: bool,
}

/// `proxy-ssl-*`, in force only beside `proxy-ssl-secret`, as in ingress-nginx (whose
/// template writes none of them without it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySsl {
    /// `proxy-ssl-secret`: `ca.crt`, and optionally `tls.crt` and `tls.key` for a client
    /// certificate. Only the Ingress's own namespace, as ingress-nginx's default.
    pub secret: ObjectKey,
    /// `proxy-ssl-verify` (`off`).
    pub verify: bool,
    /// `proxy-ssl-verify-depth` (1).
    pub depth: u32,
    /// `proxy-ssl-name`: the name checked and, with SNI, sent.
    pub name: Option<String>,
    /// `proxy-ssl-server-name` (`off`): send SNI.
    pub server_name: bool,
    /// `proxy-ssl-protocols` (`TLSv1.2`), sorted.
    pub versions: Vec<TlsVersion>,
    /// Why the setting cannot be honoured as written; its paths answer 503 rather than
    /// reach the pods with less protection than asked.
    pub refused: Option<String>,
}

impl ProxySsl {
    /// Names the setting: the routes' key into the compiled configurations.
    pub fn key(&self) -> String {
        let versions: Vec<&str> = self
            .versions
            .iter()
            .map(|v| match v {
                TlsVersion::Tls12 => "TLSv1.2",
                TlsVersion::Tls13 => "TLSv1.3",
            })
            .collect();
        let mut key = format!(
            "secret={} verify={} depth={} name={} sni={} protocols={}",
            self.secret,
            if self.verify { "on" } else { "off" },
            self.depth,
            self.name.as_deref().unwrap_or(""),
            if self.server_name { "on" } else { "off" },
            versions.join(",")
        );
        if let Some(why) = &self.refused {
            key.push_str(" refused=");
            key.push_str(why);
        }
        key
    }
}

/// A canary Ingress's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryAnnotations {
    /// `canary-by-header`, `-value`, `-pattern`, `canary-by-cookie`, `canary-weight`,
    /// `canary-weight-total`.
    pub rule: CanaryRule,
    /// `affinity-canary-behavior: legacy`: the canary keeps its own affinity settings
    /// (none unless it sets them) instead of taking the main Ingress's.
    pub legacy_affinity: bool,
}

impl IngressAnnotations {
    /// Whether rule path `path` is a regular expression: `use-regex`, or a
    /// `rewrite-target` other than the path itself (ingress-nginx's `needsRewrite`).
    pub fn regex_path(&self, path: &str) -> bool {
        self.use_regex || self.rewrite_target.as_deref().is_some_and(|t| t != path)
    }
}

/// A `return CODE URL` for every request of the Ingress's paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedRedirect {
    pub url: String,
    /// 300 to 308 (307 for `temporal-redirect-code`).
    pub code: u16,
}

struct Reader<'a> {
    /// For each key of [`KNOWN`], its full annotation name and value, own prefix first.
    values: [Option<(&'a str, &'a str)>; KNOWN.len()],
    key: &'a ObjectKey,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> Reader<'a> {
    /// `proxy-ssl-*`, given `proxy-ssl-secret`. A secret reference or verification
    /// setting that cannot be read refuses the paths (ingress-nginx denies the location
    /// for the first and quietly turns verification off for the second; Portico fails
    /// closed for both).
    fn proxy_ssl(&mut self) -> ProxySsl {
        let mut refused = None;
        let secret = match self.get(PROXY_SSL_SECRET, parse_secret_ref) {
            Some(k) if k.namespace != self.key.namespace => {
                let why = format!(
                    "proxy-ssl-secret {k} is in another namespace than the Ingress; only its own namespace's Secrets are used"
                );
                self.refuse(PROXY_SSL_SECRET, &why);
                refused = Some(why);
                k
            }
            Some(k) => k,
            None => {
                refused = Some("proxy-ssl-secret is not namespace/name".to_owned());
                ObjectKey::new(&self.key.namespace, "")
            }
        };
        let verify = if self.present(PROXY_SSL_VERIFY) {
            self.get(PROXY_SSL_VERIFY, parse_on_off).unwrap_or_else(|| {
                refused.get_or_insert_with(|| "proxy-ssl-verify is neither on nor off".to_owned());
                true
            })
        } else {
            false
        };
        let versions = self
            .get(PROXY_SSL_PROTOCOLS, parse_tls_versions)
            .unwrap_or_else(|| vec![TlsVersion::Tls12]);
        if self.present(PROXY_SSL_CIPHERS) {
            self.diags.push(Diagnostic::warning(
                Kind::Ingress,
                self.key,
                ANNOTATIONS_FIELD,
                DiagnosticReason::UnsupportedAnnotation,
                "proxy-ssl-ciphers is not applied: TLS to pods uses rustls's cipher suites, all of them forward-secret AEADs".to_owned(),
            ));
        }
        ProxySsl {
            secret,
            verify,
            depth: self
                .get(PROXY_SSL_VERIFY_DEPTH, parse_verify_depth)
                .unwrap_or(1),
            name: self.get(PROXY_SSL_NAME, parse_ssl_name),
            server_name: self
                .get(PROXY_SSL_SERVER_NAME, parse_on_off)
                .unwrap_or(false),
            versions,
            refused,
        }
    }

    /// An error naming annotation `name` (under the prefix it was given with) and why
    /// its paths are refused.
    fn refuse(&mut self, name: &str, why: &str) {
        let Some(i) = KNOWN.iter().position(|k| *k == name) else {
            return;
        };
        let Some((full, _)) = self.values[i] else {
            return;
        };
        self.diags.push(Diagnostic::error(
            Kind::Ingress,
            self.key,
            format!("metadata.annotations[{full:?}]"),
            DiagnosticReason::InvalidAnnotation,
            format!("{why}; the Ingress's paths answer 503"),
        ));
    }

    /// Whether `name` is set under either prefix.
    fn present(&self, name: &str) -> bool {
        KNOWN
            .iter()
            .position(|k| *k == name)
            .is_some_and(|i| self.values[i].is_some())
    }

    /// A redirect code: an integer as Go's `strconv.Atoi` reads it; outside `allowed` it
    /// falls back to `default`, as ingress-nginx does, with a warning. Absent or not an
    /// integer: `default`.
    fn code(&mut self, name: &str, allowed: std::ops::RangeInclusive<u16>, default: u16) -> u16 {
        let Some(n) = self.get(name, parse_int) else {
            return default;
        };
        match u16::try_from(n) {
            Ok(code) if allowed.contains(&code) => code,
            _ => {
                if let Some(i) = KNOWN.iter().position(|k| *k == name) {
                    if let Some((full, _)) = self.values[i] {
                        self.diags.push(Diagnostic::warning(
                            Kind::Ingress,
                            self.key,
                            format!("metadata.annotations[{full:?}]"),
                            DiagnosticReason::InvalidAnnotation,
                            format!(
                                "annotation {full} is {n}, not a code from {} to {}; {default} is used, as ingress-nginx does",
                                allowed.start(),
                                allowed.end()
                            ),
                        ));
                    }
                }
                default
            }
        }
    }

    /// The full annotation name `name` is set under, if it is.
    fn full(&self, name: &str) -> Option<&'a str> {
        let i = KNOWN.iter().position(|k| *k == name)?;
        self.values[i].map(|(full, _)| full)
    }

    /// A warning about annotation `name`, when it is set.
    fn warn(&mut self, name: &str, message: impl FnOnce(&str) -> String) {
        if let Some(full) = self.full(name) {
            let message = message(full);
            self.diags.push(Diagnostic::warning(
                Kind::Ingress,
                self.key,
                format!("metadata.annotations[{full:?}]"),
                DiagnosticReason::InvalidAnnotation,
                message,
            ));
        }
    }

    /// The canary's annotations, as ingress-nginx's canary parser and Lua balancer read
    /// them, when `canary` is `"true"`. Canary keys without it are reported and ignored.
    fn canary(&mut self) -> Option<CanaryAnnotations> {
        if !self.get(CANARY, parse_bool).unwrap_or(false) {
            let set: Vec<&str> = CANARY_KEYS.iter().filter_map(|k| self.full(k)).collect();
            if !set.is_empty() {
                let list = set.join(", ");
                self.diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    self.key,
                    ANNOTATIONS_FIELD,
                    DiagnosticReason::InvalidAnnotation,
                    format!("{list} ignored: the Ingress does not set canary: \"true\""),
                ));
            }
            return None;
        }
        let header = self.get(CANARY_BY_HEADER, parse_canary_header);
        // An empty value or pattern counts as none, as in the balancer.
        let value = self
            .get(CANARY_BY_HEADER_VALUE, parse_header_value)
            .filter(|v| !v.is_empty());
        let pattern = self
            .get(CANARY_BY_HEADER_PATTERN, |v| Ok(v.to_owned()))
            .filter(|v| !v.is_empty());
        let header = match header {
            Some(name) => {
                let judge = if let Some(v) = value {
                    if pattern.is_some() {
                        self.warn(CANARY_BY_HEADER_PATTERN, |full| {
                            format!("annotation {full} is ignored: canary-by-header-value is set, as in ingress-nginx")
                        });
                    }
                    HeaderJudge::Value(v.into_bytes().into())
                } else if let Some(p) = pattern {
                    match HeaderPattern::new(&p) {
                        Ok(p) => HeaderJudge::Pattern(p),
                        Err(e) => {
                            if let Some(full) = self.full(CANARY_BY_HEADER_PATTERN) {
                                self.diags.push(Diagnostic::error(
                                    Kind::Ingress,
                                    self.key,
                                    format!("metadata.annotations[{full:?}]"),
                                    DiagnosticReason::InvalidAnnotation,
                                    format!("annotation {full} {p:?} is not a regular expression Portico can match ({e}); requests carrying the header go to the main backend, as ingress-nginx sends them when its match fails"),
                                ));
                            }
                            HeaderJudge::Broken
                        }
                    }
                } else {
                    HeaderJudge::AlwaysNever
                };
                Some(ByHeader { name, judge })
            }
            None => {
                for key in [CANARY_BY_HEADER_VALUE, CANARY_BY_HEADER_PATTERN] {
                    self.warn(key, |full| {
                        format!("annotation {full} has no effect without canary-by-header")
                    });
                }
                None
            }
        };
        let cookie = self
            .get(CANARY_BY_COOKIE, parse_cookie_name)
            .map(Into::into);
        let weight = self.get(CANARY_WEIGHT, parse_int).unwrap_or(0);
        let weight_total = self.get(CANARY_WEIGHT_TOTAL, parse_int).unwrap_or(100);
        if weight_total < 100 {
            self.warn(CANARY_WEIGHT_TOTAL, |full| {
                format!("annotation {full} is {weight_total}; a total under 100 counts as 100, as in ingress-nginx")
            });
        }
        let legacy_affinity = self
            .get(AFFINITY_CANARY_BEHAVIOR, parse_canary_behavior)
            .unwrap_or(false);
        Some(CanaryAnnotations {
            rule: CanaryRule {
                header,
                cookie,
                weight,
                weight_total,
            },
            legacy_affinity,
        })
    }

    /// CORS, as ingress-nginx's parser reads it when `enable-cors` is true: a value it
    /// would not take gets that key's default (with a warning naming the key), an
    /// origin it would not take is skipped.
    fn cors(&mut self) -> Option<Cors> {
        if !self.get(ENABLE_CORS, parse_bool).unwrap_or(false) {
            let set: Vec<&str> = CORS_KEYS.iter().filter_map(|k| self.full(k)).collect();
            if !set.is_empty() {
                self.diags.push(Diagnostic::warning(
                    Kind::Ingress,
                    self.key,
                    ANNOTATIONS_FIELD,
                    DiagnosticReason::InvalidAnnotation,
                    format!(
                        "{} ignored: the Ingress does not set enable-cors: \"true\"",
                        set.join(", ")
                    ),
                ));
            }
            return None;
        }
        let origins = match self
            .full(CORS_ALLOW_ORIGIN)
            .zip(self.raw(CORS_ALLOW_ORIGIN))
        {
            None => CorsOrigins::Any,
            Some((full, raw)) => {
                let (origins, skipped) = parse_cors_origins(raw);
                if !skipped.is_empty() {
                    self.warn(CORS_ALLOW_ORIGIN, |_| {
                        format!("annotation {full}: {} not an origin such as https://example.com or https://*.example.com, skipped, as in ingress-nginx", skipped.join(", "))
                    });
                }
                origins
            }
        };
        let value = |r: &mut Self, name: &str, ok: fn(&str) -> bool, default: &str| {
            match r.raw(name).map(str::trim) {
                Some(v) if ok(v) => HeaderValue::from_str(v).ok(),
                Some(v) => {
                    r.warn(name, |full| {
                        format!("annotation {full} has invalid value {v:?}; {default:?} is used, as in ingress-nginx")
                    });
                    None
                }
                None => None,
            }
            .unwrap_or_else(|| HeaderValue::from_str(default).unwrap_or(HeaderValue::from_static("")))
        };
        let allow_methods = value(
            self,
            CORS_ALLOW_METHODS,
            cors_methods_ok,
            CORS_DEFAULT_METHODS,
        );
        let allow_headers = value(
            self,
            CORS_ALLOW_HEADERS,
            cors_headers_ok,
            CORS_DEFAULT_HEADERS,
        );
        let expose_headers =
            Some(value(self, CORS_EXPOSE_HEADERS, cors_expose_ok, "")).filter(|v| !v.is_empty());
        let allow_credentials = match self.raw(CORS_ALLOW_CREDENTIALS).map(str::trim) {
            None => true,
            Some(v) => parse_bool(v).unwrap_or_else(|_| {
                self.warn(CORS_ALLOW_CREDENTIALS, |full| {
                    format!("annotation {full} has invalid value {v:?}; true is used, as in ingress-nginx")
                });
                true
            }),
        };
        let max_age = match self.raw(CORS_MAX_AGE).map(str::trim) {
            None => CORS_DEFAULT_MAX_AGE,
            Some(v) => parse_int(v).unwrap_or_else(|_| {
                self.warn(CORS_MAX_AGE, |full| {
                    format!("annotation {full} has invalid value {v:?}; {CORS_DEFAULT_MAX_AGE} is used, as in ingress-nginx")
                });
                CORS_DEFAULT_MAX_AGE
            }),
        };
        Some(Cors {
            rules: CorsRules::IngressNginx,
            origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age: HeaderValue::from(max_age),
        })
    }

    /// `service-upstream`, `load-balance`, `upstream-hash-by*`, `proxy-next-upstream*`
    /// and `disable-proxy-intercept-errors`, as ingress-nginx's parsers read them.
    fn upstream(&mut self) -> UpstreamAnnotations {
        let mut u = UpstreamAnnotations {
            service_upstream: self.get(SERVICE_UPSTREAM, parse_bool).unwrap_or(false),
            load_balance: self.get(LOAD_BALANCE, parse_load_balance),
            hash_by: self.get(UPSTREAM_HASH_BY, parse_hash_by),
            hash_by_subset: self
                .get(UPSTREAM_HASH_BY_SUBSET, parse_bool)
                .unwrap_or(false),
            hash_by_subset_size: self.get(UPSTREAM_HASH_BY_SUBSET_SIZE, parse_subset_size),
            next_upstream: self.get(PROXY_NEXT_UPSTREAM, parse_next_upstream),
            next_upstream_tries: self.get(PROXY_NEXT_UPSTREAM_TRIES, parse_tries),
            next_upstream_timeout: self.get(PROXY_NEXT_UPSTREAM_TIMEOUT, parse_next_timeout),
            disable_intercept: self.get(DISABLE_PROXY_INTERCEPT_ERRORS, parse_bool),
        };
        if u.hash_by.is_none() {
            for key in [UPSTREAM_HASH_BY_SUBSET, UPSTREAM_HASH_BY_SUBSET_SIZE] {
                self.warn(key, |full| {
                    format!("annotation {full} has no effect without upstream-hash-by")
                });
            }
            u.hash_by_subset = false;
            u.hash_by_subset_size = None;
            if matches!(
                u.load_balance,
                Some(LoadBalance::Chash | LoadBalance::ChashSubset)
            ) {
                self.warn(LOAD_BALANCE, |full| {
                    format!("annotation {full} asks for consistent hashing without upstream-hash-by; round robin is used")
                });
            }
        }
        if u.load_balance == Some(LoadBalance::Sticky) && !self.present(AFFINITY) {
            self.warn(LOAD_BALANCE, |full| {
                format!("annotation {full} asks for sticky sessions without affinity: cookie; round robin is used")
            });
        }
        u
    }

    /// The raw value of `name`, if set.
    fn raw(&self, name: &str) -> Option<&'a str> {
        let i = KNOWN.iter().position(|k| *k == name)?;
        self.values[i].map(|(_, v)| v)
    }

    /// The value of `name`, parsed by `parse`. A parse error is reported and the
    /// annotation treated as absent.
    fn get<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let i = KNOWN.iter().position(|k| *k == name)?;
        let (full, raw) = self.values[i]?;
        match parse(raw.trim()) {
            Ok(v) => Some(v),
            Err(expected) => {
                self.diags.push(Diagnostic::error(
                    Kind::Ingress,
                    self.key,
                    format!("metadata.annotations[{full:?}]"),
                    DiagnosticReason::InvalidAnnotation,
                    format!("annotation {full} has invalid value {raw:?} (expected {expected}), ignored"),
                ));
                None
            }
        }
    }
}

/// Parses the annotations of Ingress `key`, pushing a diagnostic for every malformed value,
/// and one for all the `nginx.ingress.kubernetes.io/` keys Portico does not honour (one
/// more for snippets, and one for unknown `portico.dev/` keys).
pub fn parse(
    key: &ObjectKey,
    annotations: Option<&BTreeMap<String, String>>,
    diags: &mut Vec<Diagnostic>,
) -> IngressAnnotations {
    let mut out = IngressAnnotations::default();
    let Some(annotations) = annotations else {
        return out;
    };
    // One pass over the map, no allocation unless something is wrong: this runs for
    // every Ingress on every compile.
    let mut values = [None; KNOWN.len()];
    // What is not honoured, by full name, each reported once per Ingress.
    let mut snippets: Vec<&str> = Vec::new();
    let mut unsupported: Vec<&str> = Vec::new();
    let mut unknown_own: Vec<&str> = Vec::new();
    for (name, value) in annotations {
        let (suffix, own) = if let Some(s) = name.strip_prefix(OWN_PREFIX) {
            (s, true)
        } else if let Some(s) = name.strip_prefix(NGINX_PREFIX) {
            (s, false)
        } else {
            continue;
        };
        match KNOWN.iter().position(|k| *k == suffix) {
            Some(i) => {
                if own || values[i].is_none() {
                    values[i] = Some((name.as_str(), value.as_str()));
                }
            }
            None if security::is_security_key(suffix) => {}
            None if SNIPPETS.contains(&suffix) => snippets.push(name),
            None if own => unknown_own.push(name),
            None => unsupported.push(name),
        }
    }
    report_unhonoured(key, &snippets, &unsupported, &unknown_own, diags);
    // Held back until it is known whether the Ingress is a canary.
    let mut security_diags = Vec::new();
    out.security = security::parse(key, annotations, &mut security_diags);
    let mut r = Reader { values, key, diags };

    out.ssl_redirect = r.get(SSL_REDIRECT, parse_bool);
    if let Some(v) = r.get(FORCE_SSL_REDIRECT, parse_bool) {
        out.force_ssl_redirect = v;
    }
    out.connect_timeout = r.get(CONNECT_TIMEOUT, parse_timeout);
    out.read_timeout = r.get(READ_TIMEOUT, parse_timeout);
    out.send_timeout = r.get(SEND_TIMEOUT, parse_timeout);
    out.body_size = r.get(BODY_SIZE, parse_size);
    out.request_buffering = r.get(REQUEST_BUFFERING, parse_on_off);
    out.body_buffer_size = r.get(BODY_BUFFER_SIZE, parse_buffer_size);
    out.limit_rate = r.get(LIMIT_RATE, parse_kib);
    out.limit_rate_after = r.get(LIMIT_RATE_AFTER, parse_kib);
    out.preserve_trailing_slash = r.get(PRESERVE_TRAILING_SLASH, parse_bool);
    out.use_port_in_redirects = r.get(USE_PORT_IN_REDIRECTS, parse_bool);
    out.app_root = r.get(APP_ROOT, parse_app_root);
    out.from_to_www = r.get(FROM_TO_WWW, parse_bool).unwrap_or(false);
    out.use_regex = r.get(USE_REGEX, parse_bool).unwrap_or(false);
    out.rewrite_target = r.get(REWRITE_TARGET, parse_rewrite_target);
    // Temporal wins over permanent; an invalid temporal one leaves no redirect at all,
    // as in ingress-nginx (its parser gives up before reading the permanent one).
    out.redirect = if r.present(TEMPORAL_REDIRECT) {
        r.get(TEMPORAL_REDIRECT, parse_redirect_url)
            .map(|url| FixedRedirect {
                url,
                code: r.code(TEMPORAL_REDIRECT_CODE, 300..=307, 302),
            })
    } else {
        r.get(PERMANENT_REDIRECT, parse_redirect_url)
            .map(|url| FixedRedirect {
                url,
                code: r.code(PERMANENT_REDIRECT_CODE, 300..=308, 301),
            })
    };

    out.canary = r.canary();
    if out.canary.is_some() && out.security != SecurityAnnotations::default() {
        // A canary's requests go through its main Ingress's checks, as ingress-nginx
        // ignores a canary's other annotations: its own neither refuse nor guard.
        r.diags.push(Diagnostic::warning(
            Kind::Ingress,
            key,
            ANNOTATIONS_FIELD,
            DiagnosticReason::InvalidAnnotation,
            "the security annotations of a canary Ingress play no part: its requests go through the main Ingress's checks",
        ));
        out.security = SecurityAnnotations::default();
    } else {
        r.diags.append(&mut security_diags);
    }
    out.upstream_vhost = r.get(UPSTREAM_VHOST, parse_upstream_vhost);
    out.x_forwarded_prefix = r.get(X_FORWARDED_PREFIX, parse_forwarded_prefix);
    out.server_alias = r.get(SERVER_ALIAS, parse_server_alias).unwrap_or_default();
    out.default_backend = r
        .get(DEFAULT_BACKEND, parse_service_name)
        .map(|name| BackendId::new(&key.namespace, &name, FIRST_PORT));
    // A list of no codes (`","`) leaves the ConfigMap's in force, as in ingress-nginx,
    // where a location without `error_page` inherits the server's.
    out.custom_http_errors = r
        .get(CUSTOM_HTTP_ERRORS, parse_error_codes)
        .filter(|codes| !codes.is_empty());
    out.custom_headers = r.get(CUSTOM_HEADERS, parse_configmap_ref);
    out.backend_protocol = r.get(BACKEND_PROTOCOL, parse_backend_protocol);
    if r.present(PROXY_SSL_SECRET) {
        out.proxy_ssl = Some(r.proxy_ssl());
    }
    out.cors = r.cors();
    out.upstream = r.upstream();
    out.ssl_passthrough = r.get(SSL_PASSTHROUGH, parse_bool).unwrap_or(false);
    if r.get(AFFINITY, parse_affinity).is_some() {
        let mut a = CookieAffinity::default();
        if let Some(v) = r.get(AFFINITY_MODE, parse_mode) {
            a.mode = v;
        }
        if let Some(v) = r.get(COOKIE_NAME, parse_cookie_name) {
            a.name = v.into();
        }
        if let Some(v) = r.get(COOKIE_PATH, parse_cookie_path) {
            a.path = Some(v.into());
        }
        a.max_age = r.get(COOKIE_MAX_AGE, parse_seconds);
        a.expires = r.get(COOKIE_EXPIRES, parse_seconds);
        if let Some(v) = r.get(COOKIE_SECURE, parse_bool) {
            a.secure = v;
        }
        a.samesite = r.get(COOKIE_SAMESITE, parse_samesite);
        if let Some(v) = r.get(COOKIE_CHANGE_ON_FAILURE, parse_bool) {
            a.change_on_failure = v;
        }
        out.affinity = Some(a);
    }
    out
}

/// ingress-nginx's CORS defaults.
const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const CORS_DEFAULT_MAX_AGE: i64 = 1_728_000;

/// `cors-allow-origin`: comma-separated origins, as ingress-nginx's parser takes them
/// one by one: `*` anywhere allows every origin; `null`, or `scheme://host[:port]` whose
/// host may start with `*.`, is kept; anything else is returned to be reported.
fn parse_cors_origins(v: &str) -> (CorsOrigins, Vec<&str>) {
    let mut list = Vec::new();
    let mut skipped = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "*" {
            return (CorsOrigins::Any, skipped);
        }
        if cors_origin_ok(item) {
            list.push(OriginPattern::new(item));
        } else {
            skipped.push(item);
        }
    }
    (CorsOrigins::List(list), skipped)
}

/// `null`, or `[a-z]+://(\*\.)?[A-Za-z0-9.-]*(:\d+)?`.
fn cors_origin_ok(item: &str) -> bool {
    if item == "null" {
        return true;
    }
    let Some((scheme, rest)) = item.split_once("://") else {
        return false;
    };
    let host_port = rest.strip_prefix("*.").unwrap_or(rest);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_lowercase())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Items of `item` separated by a `,`, one whitespace, or both, as ingress-nginx's
/// `^(ITEM,?\s?)+$`.
fn separated_list(v: &str, item: fn(u8) -> bool) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return false;
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && item(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if b.get(i) == Some(&b',') {
            i += 1;
        }
        if b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
    }
    true
}

/// `cors-allow-methods`: `^([A-Za-z]+,?\s?)+$`.
fn cors_methods_ok(v: &str) -> bool {
    separated_list(v, |b| b.is_ascii_alphabetic())
}

/// `cors-allow-headers`: `^[A-Za-z0-9-_, ]*$`.
fn cors_headers_ok(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
}

/// `cors-expose-headers`: `^(([A-Za-z0-9\-\_]+|\*),?\s?)+$`.
fn cors_expose_ok(v: &str) -> bool {
    separated_list(v, |b| b.is_ascii_alphanumeric() || b"-_*".contains(&b))
}

/// nginx's size syntax as ingress-nginx passes it on (`^\d+[kKmMgG]?$`): bytes, or
/// KiB/MiB/GiB with a suffix; `0` is no limit.
pub(super) fn parse_size(v: &str) -> Result<Option<u64>, String> {
    const EXPECTED: &str = "a size in bytes, optionally with a k, m or g suffix, or 0 for no limit";
    let (digits, unit) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EXPECTED.into());
    }
    let n: u64 = digits.parse().map_err(|_| EXPECTED.to_owned())?;
    match n.checked_mul(unit) {
        Some(0) => Ok(None),
        Some(bytes) => Ok(Some(bytes)),
        None => Err(EXPECTED.into()),
    }
}

/// An integer as Go's `strconv.Atoi` reads one (an optional sign, decimal digits).
pub(super) fn parse_int(v: &str) -> Result<i64, String> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("an integer".into());
    }
    v.parse::<i64>().map_err(|_| "an integer".into())
}

/// `limit-rate`, `limit-rate-after`: an integer of KiB, as ingress-nginx writes it into
/// nginx's `limit_rate {N}k`; 0 or less is none (its template writes only values above 0).
pub(super) fn parse_kib(v: &str) -> Result<u64, String> {
    let n = parse_int(v)?;
    // Bytes must fit: past that the pace would be no limit anyway.
    Ok(u64::try_from(n).unwrap_or(0).min(u64::MAX >> 10))
}

/// The characters ingress-nginx lets through in a redirect URL (`URLIsValidRegex`).
fn url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/:,?&=".contains(&b)
}

/// `permanent-redirect` / `temporal-redirect`: an absolute URL whose scheme starts with
/// `http`, of the characters ingress-nginx allows (no `$`: nothing is expanded).
fn parse_redirect_url(v: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "an http or https URL of letters, digits and -._~/:,?&= such as https://example.com/path";
    let scheme = v.split_once(':').map(|(s, _)| s).unwrap_or("");
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && scheme.to_ascii_lowercase().starts_with("http");
    if scheme_ok && v.len() <= 2048 && v.bytes().all(url_char) {
        Ok(v.to_owned())
    } else {
        Err(EXPECTED.into())
    }
}

/// `app-root`: an absolute path, as ingress-nginx requires (`url.ParseRequestURI`, not an
/// absolute URL), of the characters it allows, but without `$`: nginx would expand a
/// variable there, Portico never does.
fn parse_app_root(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && v.len() <= 1024
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/:".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err("an absolute path of letters, digits and -._~/: such as /app1".into())
    }
}

/// `rewrite-target`: the characters ingress-nginx allows there (`RegexPathWithCapture`),
/// with `$` only in `$1`..`$9`: nginx would expand any other `$name` as a variable,
/// Portico expands nothing else.
fn parse_rewrite_target(v: &str) -> Result<String, String> {
    const EXPECTED: &str = "a path of letters, digits, -._~/: and $1 to $9, such as /$2";
    let chars_ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:$".contains(&b));
    let dollars_ok = v
        .match_indices('$')
        .all(|(at, _)| matches!(v.as_bytes().get(at + 1), Some(b'1'..=b'9')));
    if !v.is_empty() && v.len() <= 1024 && chars_ok && dollars_ok {
        Ok(v.to_owned())
    } else {
        Err(EXPECTED.into())
    }
}

/// `canary-by-header`: a header name, which the balancer reads as nginx's
/// `$http_NAME`, so case does not matter and `_` stands for `-`.
fn parse_canary_header(v: &str) -> Result<HeaderName, String> {
    let name = v.replace('_', "-").to_ascii_lowercase();
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if !name.is_empty() => Ok(h),
        _ => Err("an HTTP header name".into()),
    }
}

/// `canary-by-header-value`: what a header value can hold (visible ASCII and spaces).
fn parse_header_value(v: &str) -> Result<String, String> {
    if v.len() <= 1024 && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        Ok(v.to_owned())
    } else {
        Err("a header value of visible ASCII characters and spaces".into())
    }
}

/// `backend-protocol`, in any case, as ingress-nginx takes it; `H2C` is Portico's own.
/// ingress-nginx falls back to HTTP for a value it does not know, and so does Portico
/// (the diagnostic says so). `FCGI` is refused: Portico speaks no FastCGI.
fn parse_backend_protocol(v: &str) -> Result<BackendProtocol, String> {
    match v.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Ok(BackendProtocol::Http),
        "HTTPS" => Ok(BackendProtocol::Https),
        "AUTO_HTTP" => Ok(BackendProtocol::AutoHttp),
        "GRPC" => Ok(BackendProtocol::Grpc),
        "GRPCS" => Ok(BackendProtocol::Grpcs),
        "H2C" => Ok(BackendProtocol::H2c),
        "FCGI" => {
            Err("one of HTTP, HTTPS, AUTO_HTTP, GRPC, GRPCS, H2C: Portico speaks no FastCGI".into())
        }
        _ => Err(
            "one of HTTP, HTTPS, AUTO_HTTP, GRPC, GRPCS, H2C; requests are sent as HTTP/1.1".into(),
        ),
    }
}

/// A Secret as `namespace/name`.
fn parse_secret_ref(v: &str) -> Result<ObjectKey, String> {
    parse_configmap_ref(v).map_err(|_| "a Secret as namespace/name, such as default/pod-ca".into())
}

/// `proxy-ssl-verify-depth`: a count, as nginx's `proxy_ssl_verify_depth`.
fn parse_verify_depth(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|d| *d <= 100)
        .ok_or_else(|| "a whole number from 0 to 100".into())
}

/// `proxy-ssl-name`: a host name or address to check the pod's certificate against.
fn parse_ssl_name(v: &str) -> Result<String, String> {
    if HostName::parse(v).is_ok() || v.parse::<std::net::IpAddr>().is_ok() {
        Ok(v.to_owned())
    } else {
        Err("a host name or IP address, such as pod.internal".into())
    }
}

/// `proxy-ssl-protocols`: space-separated `TLSv1.2` and `TLSv1.3`, the only values
/// ingress-nginx accepts.
fn parse_tls_versions(v: &str) -> Result<Vec<TlsVersion>, String> {
    let mut out = Vec::new();
    for word in v.split_whitespace() {
        match word {
            "TLSv1.2" => out.push(TlsVersion::Tls12),
            "TLSv1.3" => out.push(TlsVersion::Tls13),
            _ => return Err("TLSv1.2, TLSv1.3 or both, separated by spaces".into()),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("TLSv1.2, TLSv1.3 or both, separated by spaces".into());
    }
    Ok(out)
}

/// `upstream-vhost`: a host name or address, with an optional port. ingress-nginx takes
/// nginx server-name syntax; a `Host` header only ever holds a name.
fn parse_upstream_vhost(v: &str) -> Result<String, String> {
    limited_to(v, 261, b"-._:[]")
        .ok_or_else(|| "a host name with an optional port, such as internal.myservice.com".into())
}

/// `x-forwarded-prefix`: a path of the characters ingress-nginx allows there, without
/// `$`: nginx would expand a variable, Portico sends the value as written.
fn parse_forwarded_prefix(v: &str) -> Result<String, String> {
    limited_to(v, 1024, b"-._~/")
        .ok_or_else(|| "a path of letters, digits and -._~/ such as /path".into())
}

/// `v` when it is non-empty, at most `max` bytes, and only letters, digits and `extra`.
fn limited_to(v: &str, max: usize, extra: &[u8]) -> Option<String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    ok.then(|| v.to_owned())
}

/// `server-alias`: comma-separated host names (exact, or one `*.` wildcard label), each
/// once, sorted, as ingress-nginx lists them. ingress-nginx also takes nginx's regex
/// server names (`~^www\d+`); Portico takes host names only, and a value with any other
/// name is refused whole, as ingress-nginx refuses a value that fails its check.
fn parse_server_alias(v: &str) -> Result<Vec<HostMatch>, String> {
    const EXPECTED: &str = "comma-separated host names such as www.example.com or *.example.com";
    let mut out: Vec<HostMatch> = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let host = HostPattern::parse(name).map_err(|_| EXPECTED.to_owned())?;
        out.push(HostMatch::Host(host));
    }
    if out.is_empty() {
        return Err(EXPECTED.into());
    }
    out.sort_by_key(|h| h.to_string());
    out.dedup();
    Ok(out)
}

/// `default-backend`: a Service name (an RFC 1035 label: lower-case letters, digits and
/// `-`, starting with a letter, at most 63), as ingress-nginx's `ValidateServiceName`.
fn parse_service_name(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err("the name of a Service in the Ingress's namespace, such as error-pages".into())
    }
}

/// `custom-http-errors`: comma-separated codes from 400 to 599 (ingress-nginx's
/// `^(?:[4,5]\d{2},?)*$`; spaces around a code and empty items are let through, as its
/// parser trims them), sorted, each once. A value with anything else, or an empty one,
/// is refused whole.
pub(super) fn parse_error_codes(v: &str) -> Result<Vec<u16>, String> {
    const EXPECTED: &str = "comma-separated HTTP status codes from 400 to 599, such as 404,503";
    if v.is_empty() {
        return Err(EXPECTED.into());
    }
    let mut codes = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.parse::<u16>() {
            Ok(code) if item.len() == 3 && (400..=599).contains(&code) => codes.push(code),
            _ => return Err(EXPECTED.into()),
        }
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// A ConfigMap as `namespace/name` (`custom-headers`, and the ConfigMap's
/// `proxy-set-headers`): two Kubernetes object names (lower-case letters, digits, `-`
/// and `.`).
pub(super) fn parse_configmap_ref(v: &str) -> Result<ObjectKey, String> {
    let name_ok = |n: &str| {
        (1..=253).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    match v.split_once('/') {
        Some((ns, name)) if name_ok(ns) && name_ok(name) => Ok(ObjectKey::new(ns, name)),
        _ => Err("a ConfigMap as namespace/name, such as default/custom-headers".into()),
    }
}

/// `affinity-canary-behavior`: whether it is `legacy`.
fn parse_canary_behavior(v: &str) -> Result<bool, String> {
    match v {
        "sticky" => Ok(false),
        "legacy" => Ok(true),
        _ => Err("sticky or legacy".into()),
    }
}

/// `on` or `off`, as nginx's switches (`proxy-request-buffering`).
pub(super) fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".into()),
    }
}

/// A size as [`parse_size`], but never unlimited: a memory buffer needs a bound.
pub(super) fn parse_buffer_size(v: &str) -> Result<u64, String> {
    match parse_size(v) {
        Ok(Some(n)) => Ok(n),
        _ => Err("a size in bytes above 0, optionally with a k, m or g suffix".into()),
    }
}

/// Go's `strconv.ParseBool` set, which ingress-nginx uses: migrated values keep meaning
/// the same thing.
pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err("true or false".into()),
    }
}

fn parse_affinity(v: &str) -> Result<(), String> {
    match v {
        "cookie" => Ok(()),
        _ => Err("cookie".into()),
    }
}

fn parse_mode(v: &str) -> Result<AffinityMode, String> {
    match v {
        "balanced" => Ok(AffinityMode::Balanced),
        "persistent" => Ok(AffinityMode::Persistent),
        _ => Err("balanced or persistent".into()),
    }
}

fn parse_samesite(v: &str) -> Result<SameSite, String> {
    match v.to_ascii_lowercase().as_str() {
        "strict" => Ok(SameSite::Strict),
        "lax" => Ok(SameSite::Lax),
        "none" => Ok(SameSite::None),
        _ => Err("Strict, Lax or None".into()),
    }
}

/// A whole number of seconds (cookie lifetimes, HSTS max-age; zero is meaningful there).
pub(super) fn parse_seconds(v: &str) -> Result<Duration, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a whole number of seconds".into());
    }
    v.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "a whole number of seconds".into())
}

/// A positive whole number of seconds, at most a day.
pub(super) fn parse_timeout(v: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "a whole number of seconds from 1 to 86400";
    match parse_seconds(v) {
        Ok(d) if (1..=86_400).contains(&d.as_secs()) => Ok(d),
        _ => Err(EXPECTED.into()),
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn parse_cookie_name(v: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !v.is_empty() && v.len() <= 256 && v.bytes().all(token) {
        Ok(v.to_owned())
    } else {
        Err("a cookie name token (letters, digits, !#$%&'*+-.^_`|~)".into())
    }
}

/// RFC 6265 path-value, stricter: absolute, visible ASCII, no `;`.
fn parse_cookie_path(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && v.len() <= 1024
        && v.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if ok {
        Ok(v.to_owned())
    } else {
        Err("an absolute path without spaces or ';'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::diagnostic::Severity;
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (IngressAnnotations, Vec<Diagnostic>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut diags = Vec::new();
        let ann = parse(&ObjectKey::new("default", "web"), Some(&map), &mut diags);
        (ann, diags)
    }

    fn redirect(url: &str, code: u16) -> Option<FixedRedirect> {
        Some(FixedRedirect {
            url: url.into(),
            code,
        })
    }

    #[test]
    fn permanent_redirect_codes_as_ingress_nginx_reads_them() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let url = "https://www.google.com";
        let (a, d) = read(&[(&n("permanent-redirect"), url)]);
        assert_eq!((a.redirect, d.len()), (redirect(url, 301), 0));
        // The documentation's example: code 308.
        let (a, d) = read(&[
            (&n("permanent-redirect"), url),
            (&n("permanent-redirect-code"), "308"),
        ]);
        assert_eq!((a.redirect, d.len()), (redirect(url, 308), 0));
        // Out of 300..=308: back to 301, as ingress-nginx, with a warning.
        for code in ["309", "200", "-301", "99999999999"] {
            let (a, d) = read(&[
                (&n("permanent-redirect"), url),
                (&n("permanent-redirect-code"), code),
            ]);
            assert_eq!(a.redirect, redirect(url, 301), "{code}");
            assert_eq!(d.len(), 1, "{code}");
            assert_eq!(d[0].severity, Severity::Warning);
            assert!(d[0].message.contains("permanent-redirect-code"), "{}", d[0]);
        }
        // Not an integer: the default, and an error naming the key.
        let (a, d) = read(&[
            (&n("permanent-redirect"), url),
            (&n("permanent-redirect-code"), "moved"),
        ]);
        assert_eq!(a.redirect, redirect(url, 301));
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
        assert_eq!(
            d[0].field,
            "metadata.annotations[\"nginx.ingress.kubernetes.io/permanent-redirect-code\"]"
        );
        // Atoi's sign.
        let (a, _) = read(&[
            (&n("permanent-redirect"), url),
            (&n("permanent-redirect-code"), "+302"),
        ]);
        assert_eq!(a.redirect, redirect(url, 302));
    }

    #[test]
    fn temporal_redirect_wins_and_has_its_own_range() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let (a, d) = read(&[
            (&n("permanent-redirect"), "https://p.example.com"),
            (&n("temporal-redirect"), "https://www.google.com"),
        ]);
        assert_eq!(
            (a.redirect, d.len()),
            (redirect("https://www.google.com", 302), 0)
        );
        let (a, _) = read(&[
            (&n("temporal-redirect"), "https://www.google.com"),
            (&n("temporal-redirect-code"), "307"),
        ]);
        assert_eq!(a.redirect, redirect("https://www.google.com", 307));
        // 308 is permanent: a temporal redirect falls back to 302.
        let (a, d) = read(&[
            (&n("temporal-redirect"), "https://www.google.com"),
            (&n("temporal-redirect-code"), "308"),
        ]);
        assert_eq!(a.redirect, redirect("https://www.google.com", 302));
        assert_eq!(d.len(), 1);
        // An invalid temporal URL leaves no redirect, not the permanent one.
        let (a, d) = read(&[
            (&n("permanent-redirect"), "https://p.example.com"),
            (&n("temporal-redirect"), "ftp://files.example.com"),
        ]);
        assert_eq!(a.redirect, None);
        assert!(d[0].message.contains("temporal-redirect"), "{}", d[0]);
    }

    #[test]
    fn redirect_urls_and_app_roots_are_strict() {
        for ok in [
            "https://www.google.com",
            "http://redirect.example.com",
            "https://example.com:8443/a/b?x=1&y=2",
            "HTTPS://Example.com",
        ] {
            assert_eq!(parse_redirect_url(ok), Ok(ok.to_owned()));
        }
        for bad in [
            "",
            "/relative",
            "www.google.com",
            "ftp://x",
            "https://x/$request_uri",
            "https://x/a b",
            "https://x/\r\nSet-Cookie:a=b",
            "https://x/%2e",
        ] {
            assert!(parse_redirect_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_app_root("/app1"), Ok("/app1".to_owned()));
        assert_eq!(
            parse_app_root("/a/b-c_d.e~f"),
            Ok("/a/b-c_d.e~f".to_owned())
        );
        for bad in ["", "app1", "http://x/app1", "/$host", "/a?b=c", "/a b"] {
            assert!(parse_app_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn snippets_and_unhonoured_keys_are_reported_once_each() {
        let (_, d) = read(&[
            ("nginx.ingress.kubernetes.io/server-snippet", "return 200;"),
            ("portico.dev/auth-snippet", "x"),
            ("nginx.ingress.kubernetes.io/stream-snippet", "x"),
            ("nginx.ingress.kubernetes.io/modsecurity-snippet", "x"),
            ("nginx.ingress.kubernetes.io/configuration-snippet", "x"),
            (
                "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
                "default/h",
            ),
            ("nginx.ingress.kubernetes.io/auth-keepalive", "10"),
            ("nginx.ingress.kubernetes.io/relative-redirects", "true"),
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8",
            ),
            ("portico.dev/no-such-key", "1"),
            ("kubernetes.io/ingress.class", "portico"),
        ]);
        let got: Vec<(DiagnosticReason, Severity, &str)> = d
            .iter()
            .map(|d| (d.reason, d.severity, d.field.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    DiagnosticReason::SnippetNotExecuted,
                    Severity::Error,
                    "metadata.annotations"
                ),
                (
                    DiagnosticReason::UnsupportedAnnotation,
                    Severity::Warning,
                    "metadata.annotations"
                ),
                (
                    DiagnosticReason::UnsupportedAnnotation,
                    Severity::Warning,
                    "metadata.annotations"
                ),
                // Security keys fail closed instead: the auth-snippet's authentication
                // cannot be honoured. auth-proxy-set-headers does nothing without
                // auth-url, and says so.
                (
                    DiagnosticReason::SecurityRefused,
                    Severity::Error,
                    "metadata.annotations[\"portico.dev/auth-snippet\"]"
                ),
                (
                    DiagnosticReason::InvalidAnnotation,
                    Severity::Warning,
                    "metadata.annotations[\"nginx.ingress.kubernetes.io/auth-proxy-set-headers\"]"
                ),
            ]
        );
        assert_eq!(
            d[0].message,
            "snippet annotations nginx.ingress.kubernetes.io/configuration-snippet, \
             nginx.ingress.kubernetes.io/modsecurity-snippet, nginx.ingress.kubernetes.io/server-snippet, \
             nginx.ingress.kubernetes.io/stream-snippet are never executed: \
             Portico runs no proxy configuration from annotations; the rest of the Ingress is served"
        );
        assert_eq!(
            d[1].message,
            "annotations nginx.ingress.kubernetes.io/auth-keepalive, \
             nginx.ingress.kubernetes.io/relative-redirects are not supported by Portico, ignored"
        );
        assert_eq!(
            d[2].message,
            "annotation portico.dev/no-such-key is not a Portico annotation, ignored"
        );
        // Honoured keys and other prefixes say nothing.
        let (_, d) = read(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("cert-manager.io/cluster-issuer", "x"),
        ]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn rewrite_targets_and_use_regex() {
        assert_eq!(parse_rewrite_target("/$2"), Ok("/$2".to_owned()));
        assert_eq!(parse_rewrite_target("/"), Ok("/".to_owned()));
        assert_eq!(
            parse_rewrite_target("/internal/$1/x-$2"),
            Ok("/internal/$1/x-$2".to_owned())
        );
        for bad in [
            "",
            "/$host",
            "/$request_uri",
            "/$0",
            "/$",
            "/a?b=1",
            "/a b",
            "/${1}",
        ] {
            assert!(parse_rewrite_target(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/use-regex", "false"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert!(!a.use_regex);
        // The rewrite makes regex paths, but not of the path equal to the target.
        assert!(a.regex_path("/something(/|$)(.*)"));
        assert!(!a.regex_path("/$2"));
        let (a, _) = read(&[("portico.dev/use-regex", "true")]);
        assert!(a.use_regex && a.regex_path("/"));
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/rewrite-target", "/$host")]);
        assert_eq!(a.rewrite_target, None);
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
        assert!(!a.regex_path("/x"));
    }

    #[test]
    fn redirect_keys_read_under_both_prefixes_own_first() {
        let (a, d) = read(&[
            ("portico.dev/app-root", "/own"),
            ("nginx.ingress.kubernetes.io/app-root", "/nginx"),
            ("portico.dev/from-to-www-redirect", "true"),
            (
                "nginx.ingress.kubernetes.io/preserve-trailing-slash",
                "true",
            ),
            ("portico.dev/use-port-in-redirects", "1"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.app_root.as_deref(), Some("/own"));
        assert!(a.from_to_www);
        assert_eq!(a.preserve_trailing_slash, Some(true));
        assert_eq!(a.use_port_in_redirects, Some(true));
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/app-root", "app1")]);
        assert_eq!(a.app_root, None);
        assert_eq!(d.len(), 1);
        assert!(d[0]
            .message
            .contains("nginx.ingress.kubernetes.io/app-root"));
    }

    #[test]
    fn canary_keys_as_ingress_nginx_reads_them() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        let (a, d) = read(&[
            (&n("canary"), "true"),
            (&n("canary-by-header"), "Canary_By_Header"),
            (&n("canary-by-header-value"), "DoCanary"),
            (&n("canary-by-header-pattern"), "^Do"),
            ("portico.dev/canary-by-cookie", "Canary-By-Cookie"),
            (&n("canary-weight"), "30"),
        ]);
        let c = a.canary.expect("a canary");
        let header = c.rule.header.expect("by header");
        // nginx's `$http_canary_by_header`: `_` is `-`, case does not matter.
        assert_eq!(header.name.as_str(), "canary-by-header");
        assert_eq!(
            header.judge,
            HeaderJudge::Value(b"DoCanary".to_vec().into())
        );
        assert_eq!(c.rule.cookie.as_deref(), Some("Canary-By-Cookie"));
        assert_eq!((c.rule.weight, c.rule.weight_total), (30, 100));
        assert!(!c.legacy_affinity);
        // The value wins over the pattern, which is said to be ignored.
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message.contains("canary-by-header-pattern"),
            "{}",
            d[0]
        );

        let (a, d) = read(&[
            (&n("canary"), "true"),
            (&n("canary-by-header"), "X-Canary"),
            (&n("canary-by-header-pattern"), "^Do[A-Z][a-z]+y$"),
            (&n("canary-weight-total"), "200"),
            (&n("affinity-canary-behavior"), "legacy"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let c = a.canary.expect("a canary");
        assert!(matches!(
            c.rule.header.map(|h| h.judge),
            Some(HeaderJudge::Pattern(_))
        ));
        assert_eq!(c.rule.weight_total, 200);
        assert!(c.legacy_affinity);

        // The e2e test's broken pattern: reported, and kept as a pattern that fails.
        let (a, d) = read(&[
            (&n("canary"), "true"),
            (&n("canary-by-header"), "CanaryByHeader"),
            (&n("canary-by-header-pattern"), "[][**da?$&*"),
        ]);
        assert_eq!(
            a.canary.and_then(|c| c.rule.header).map(|h| h.judge),
            Some(HeaderJudge::Broken)
        );
        assert_eq!(d[0].severity, Severity::Error);
        assert_eq!(
            d[0].field,
            "metadata.annotations[\"nginx.ingress.kubernetes.io/canary-by-header-pattern\"]"
        );

        // Bad values: reported, and the defaults apply (weight 0, total 100).
        let (a, d) = read(&[
            (&n("canary"), "true"),
            (&n("canary-weight"), "ten"),
            (&n("canary-weight-total"), "50"),
            (&n("canary-by-header"), "bad header"),
            (&n("canary-by-cookie"), "a;b"),
        ]);
        let c = a.canary.expect("still a canary");
        assert_eq!(
            c.rule,
            CanaryRule {
                weight_total: 50,
                ..CanaryRule::default()
            }
        );
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        for key in [
            "canary-weight\"",
            "canary-weight-total",
            "canary-by-header\"",
            "canary-by-cookie",
        ] {
            assert!(fields.iter().any(|f| f.contains(key)), "{key}: {fields:?}");
        }

        // Canary keys without canary: "true" are reported and the Ingress is no canary.
        for canary in [None, Some("false"), Some("yes")] {
            let mut pairs = vec![(n("canary-weight"), "50".to_owned())];
            if let Some(v) = canary {
                pairs.push((n("canary"), v.to_owned()));
            }
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (a, d) = read(&pairs);
            assert_eq!(a.canary, None);
            assert!(
                d.iter().any(|d| d.message.contains("canary-weight")),
                "{d:?}"
            );
        }
        let (a, d) = read(&[(&n("canary"), "false")]);
        assert_eq!((a.canary, d.len()), (None, 0));
    }

    #[test]
    fn backend_protocol_values_as_ingress_nginx_takes_them() {
        for (v, want) in [
            ("HTTP", BackendProtocol::Http),
            ("https", BackendProtocol::Https),
            ("Auto_Http", BackendProtocol::AutoHttp),
            ("GRPC", BackendProtocol::Grpc),
            ("grpcs", BackendProtocol::Grpcs),
            ("H2C", BackendProtocol::H2c),
        ] {
            assert_eq!(parse_backend_protocol(v), Ok(want), "{v}");
        }
        for bad in ["FCGI", "fcgi", "HTTP2", ""] {
            assert!(parse_backend_protocol(bad).is_err(), "{bad:?}");
        }
        // An unknown value is reported and leaves HTTP (or appProtocol) in force.
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/backend-protocol", "FCGI")]);
        assert_eq!(a.backend_protocol, None);
        assert!(d[0].message.contains("Portico speaks no FastCGI"), "{d:?}");
    }

    #[test]
    fn proxy_ssl_settings_need_the_secret_and_fail_closed() {
        // Without proxy-ssl-secret the others do nothing, as in ingress-nginx.
        let (a, _) = read(&[("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on")]);
        assert_eq!(a.proxy_ssl, None);

        let (a, d) = read(&[
            (
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "default/pod-ca",
            ),
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify-depth", "2"),
            (
                "nginx.ingress.kubernetes.io/proxy-ssl-protocols",
                "TLSv1.3 TLSv1.2",
            ),
            ("nginx.ingress.kubernetes.io/proxy-ssl-name", "pod.internal"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let ssl = a.proxy_ssl.unwrap();
        assert_eq!(
            (
                ssl.verify,
                ssl.depth,
                ssl.server_name,
                ssl.refused.as_deref()
            ),
            (true, 2, false, None)
        );
        assert_eq!(ssl.versions, [TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(ssl.name.as_deref(), Some("pod.internal"));

        // Defaults: verification off, TLSv1.2, depth 1.
        let (a, _) = read(&[("portico.dev/proxy-ssl-secret", "default/pod-ca")]);
        let ssl = a.proxy_ssl.unwrap();
        assert_eq!((ssl.verify, ssl.depth), (false, 1));
        assert_eq!(ssl.versions, [TlsVersion::Tls12]);

        // Another namespace's Secret, a verification value that is neither on nor off:
        // refused, never served unverified.
        for (k, v) in [
            ("proxy-ssl-secret", "other/pod-ca"),
            ("proxy-ssl-verify", "true"),
        ] {
            let mut pairs = vec![(
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "default/pod-ca",
            )];
            let full = format!("nginx.ingress.kubernetes.io/{k}");
            pairs.retain(|(n, _)| *n != full);
            pairs.push((full.as_str(), v));
            let (a, d) = read(&pairs);
            assert!(a.proxy_ssl.unwrap().refused.is_some(), "{k}: {v}");
            assert!(!d.is_empty(), "{k}: {v}");
        }
        assert!(parse_tls_versions("TLSv1 TLSv1.1").is_err());
        assert!(parse_tls_versions("").is_err());
        assert!(parse_verify_depth("-1").is_err());
    }

    #[test]
    fn upstream_vhost_and_forwarded_prefix() {
        let (a, d) = read(&[
            (
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "internal.myservice.com",
            ),
            ("portico.dev/x-forwarded-prefix", "/path"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.upstream_vhost.as_deref(), Some("internal.myservice.com"));
        assert_eq!(a.x_forwarded_prefix.as_deref(), Some("/path"));
        for ok in [
            "svc.ns.svc.cluster.local:8080",
            "10.0.0.1",
            "[::1]:80",
            "a_b",
        ] {
            assert_eq!(parse_upstream_vhost(ok), Ok(ok.to_owned()));
        }
        for bad in ["", "$host", "a b", "a\r\nX: y", "a/b", "a;b"] {
            assert!(parse_upstream_vhost(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "/$1", "/a b", "/a?b", "/a\nb"] {
            assert!(parse_forwarded_prefix(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/upstream-vhost", "$host")]);
        assert_eq!(a.upstream_vhost, None);
        assert!(d[0]
            .field
            .contains("nginx.ingress.kubernetes.io/upstream-vhost"));
    }

    #[test]
    fn default_backend_names_a_service_of_the_ingress_namespace() {
        for prefix in [NGINX_PREFIX, OWN_PREFIX] {
            let (a, d) = read(&[(&format!("{prefix}default-backend"), " error-pages ")]);
            assert!(d.is_empty(), "{d:?}");
            assert_eq!(
                a.default_backend,
                Some(BackendId::new("default", "error-pages", FIRST_PORT))
            );
        }
        for bad in [
            "",
            "Error-Pages",
            "ns/svc",
            "1abc",
            "abc-",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(parse_service_name(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/default-backend", "other/svc")]);
        assert_eq!(a.default_backend, None);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].field,
            "metadata.annotations[\"nginx.ingress.kubernetes.io/default-backend\"]"
        );
    }

    #[test]
    fn custom_headers_name_a_configmap() {
        let (a, d) = read(&[(
            "nginx.ingress.kubernetes.io/custom-headers",
            "default/custom-headers-configmap",
        )]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            a.custom_headers,
            Some(ObjectKey::new("default", "custom-headers-configmap"))
        );
        for bad in ["custom-headers", "/x", "x/", "a/b/c", "A/b", "a/$b", "a/-b"] {
            assert!(parse_configmap_ref(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[("portico.dev/custom-headers", "only-a-name")]);
        assert_eq!((a.custom_headers, d.len()), (None, 1));
    }

    #[test]
    fn custom_http_errors_as_ingress_nginx_reads_them() {
        // The documentation's example, and its e2e test's spaced list.
        assert_eq!(parse_error_codes("404,415"), Ok(vec![404, 415]));
        assert_eq!(parse_error_codes("404, 503"), Ok(vec![404, 503]));
        assert_eq!(parse_error_codes("503,404,503,"), Ok(vec![404, 503]));
        assert_eq!(parse_error_codes(","), Ok(vec![]));
        assert!(parse_error_codes("").is_err());
        // Its unit test's bad list, and codes outside 400 to 599.
        for bad in [
            "400,404,abc,502",
            "399",
            "600",
            "200",
            "4040",
            "+404",
            "40 4",
        ] {
            assert!(parse_error_codes(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[
            ("nginx.ingress.kubernetes.io/custom-http-errors", "404,500"),
            ("portico.dev/custom-http-errors", "503"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.custom_http_errors, Some(vec![503]), "portico.dev/ wins");
        let (a, d) = read(&[("nginx.ingress.kubernetes.io/custom-http-errors", "404,abc")]);
        assert_eq!(a.custom_http_errors, None);
        assert_eq!(d[0].reason, DiagnosticReason::InvalidAnnotation);
        assert!(
            d[0].message.contains("custom-http-errors"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn server_aliases_are_host_names() {
        let h = |s: &str| HostMatch::parse(Some(s)).unwrap();
        let (a, d) = read(&[(
            "nginx.ingress.kubernetes.io/server-alias",
            " www.foo.com, foo.org ,,*.foo.net, www.foo.com",
        )]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            a.server_alias,
            vec![h("*.foo.net"), h("foo.org"), h("www.foo.com")]
        );
        for bad in [
            "",
            " , ",
            "~^www\\d+\\.foo\\.com$",
            "foo.com, a b",
            "foo.com;",
            "*.*.foo.com",
        ] {
            assert!(parse_server_alias(bad).is_err(), "{bad:?}");
        }
        let (a, d) = read(&[("portico.dev/server-alias", "foo.com, $host")]);
        assert!(a.server_alias.is_empty());
        assert!(d[0].field.contains("portico.dev/server-alias"));
    }

    #[test]
    fn a_canarys_security_annotations_play_no_part() {
        let (a, d) = read(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/auth-url", "http://auth"),
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8",
            ),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "maybe"),
        ]);
        assert_eq!(a.security, SecurityAnnotations::default());
        // The other keys' findings stay.
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].field.contains("ssl-redirect"));
        assert_eq!(d[1].severity, Severity::Warning);
        assert!(d[1].message.contains("canary"));
    }

    #[test]
    fn cors_as_ingress_nginx_reads_it() {
        let n = |k: &str| format!("{NGINX_PREFIX}{k}");
        // Enabled with nothing else: ingress-nginx's defaults.
        let (a, d) = read(&[(&n("enable-cors"), "true")]);
        assert!(d.is_empty(), "{d:?}");
        let c = a.cors.expect("cors");
        assert_eq!(c.origins, CorsOrigins::Any);
        assert_eq!(c.allow_methods, CORS_DEFAULT_METHODS);
        assert_eq!(c.allow_headers, CORS_DEFAULT_HEADERS);
        assert_eq!(c.expose_headers, None);
        assert!(c.allow_credentials);
        assert_eq!(c.max_age, "1728000");
        // The documentation's example values.
        let (a, d) = read(&[
            (&n("enable-cors"), "true"),
            (&n("cors-allow-origin"), "https://origin-site.com:4443, http://origin-site.com, myapp://origin-site.com, https://*.origin-site.com"),
            (&n("cors-allow-methods"), "PUT, GET, POST, OPTIONS"),
            (&n("cors-allow-headers"), "X-Forwarded-For, X-app123-XPTO"),
            (&n("cors-expose-headers"), "*, X-CustomResponseHeader"),
            (&n("cors-allow-credentials"), "false"),
            ("portico.dev/cors-max-age", "600"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let c = a.cors.expect("cors");
        let CorsOrigins::List(list) = &c.origins else {
            panic!("{:?}", c.origins)
        };
        assert_eq!(list.len(), 4);
        assert!(list.iter().any(|p| p.matches(b"https://a.origin-site.com")));
        assert_eq!(c.allow_methods, "PUT, GET, POST, OPTIONS");
        assert_eq!(c.allow_headers, "X-Forwarded-For, X-app123-XPTO");
        assert_eq!(c.expose_headers.unwrap(), "*, X-CustomResponseHeader");
        assert!(!c.allow_credentials);
        assert_eq!(c.max_age, "600");
        // `*` anywhere in the list allows everything; a bad origin is skipped, with a
        // warning naming the key; bad values take the defaults, each with a warning.
        let (a, _) = read(&[
            (&n("enable-cors"), "true"),
            (&n("cors-allow-origin"), "https://a.com, *"),
        ]);
        assert_eq!(a.cors.unwrap().origins, CorsOrigins::Any);
        let (a, d) = read(&[
            (&n("enable-cors"), "true"),
            (
                &n("cors-allow-origin"),
                "https://a.com, a.com, https://b.com/path",
            ),
            (&n("cors-allow-methods"), "GET;rm"),
            (&n("cors-allow-headers"), "X-$x"),
            (&n("cors-max-age"), "ten"),
            (&n("cors-allow-credentials"), "maybe"),
        ]);
        let c = a.cors.unwrap();
        assert_eq!(
            c.origins,
            CorsOrigins::List(vec![OriginPattern::new("https://a.com")])
        );
        assert_eq!(c.allow_methods, CORS_DEFAULT_METHODS);
        assert_eq!(c.allow_headers, CORS_DEFAULT_HEADERS);
        assert_eq!(c.max_age, "1728000");
        assert!(c.allow_credentials);
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        for key in [
            "cors-allow-origin",
            "cors-allow-methods",
            "cors-allow-headers",
            "cors-max-age",
            "cors-allow-credentials",
        ] {
            assert!(fields.iter().any(|f| f.contains(key)), "{key}: {fields:?}");
        }
        assert!(d.iter().all(|d| d.severity == Severity::Warning));
        // Off, or CORS keys without enable-cors: nothing, and the keys are reported.
        let (a, d) = read(&[(&n("cors-allow-origin"), "https://a.com")]);
        assert_eq!(a.cors, None);
        assert!(d[0].message.contains("cors-allow-origin"), "{d:?}");
        let (a, d) = read(&[(&n("enable-cors"), "false")]);
        assert_eq!((a.cors, d.len()), (None, 0));
    }

    #[test]
    fn scalar_parsers_are_strict() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("1.5").is_err());
        assert!(parse_seconds("+3").is_err());
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_samesite("lax"), Ok(SameSite::Lax));
        assert!(parse_samesite("sometimes").is_err());
        assert_eq!(parse_cookie_name("route_1"), Ok("route_1".to_owned()));
        assert!(parse_cookie_name("a b").is_err());
        assert!(parse_cookie_name("a;b=c").is_err());
        assert!(parse_cookie_name("").is_err());
        assert!(parse_cookie_path("app").is_err());
        assert!(parse_cookie_path("/a;HttpOnly").is_err());
        assert_eq!(parse_cookie_path("/app"), Ok("/app".to_owned()));
        assert_eq!(parse_size("1m"), Ok(Some(1 << 20)));
        assert_eq!(parse_size("8K"), Ok(Some(8192)));
        assert_eq!(parse_size("100"), Ok(Some(100)));
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size("2g"), Ok(Some(2 << 30)));
        for bad in ["", "m", "1.5m", "10b", "-1", "1 m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
