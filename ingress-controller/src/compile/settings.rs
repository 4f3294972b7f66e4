//! Controller-wide settings: the `--configmap` ConfigMap, read with ingress-nginx's key
//! names and defaults so a migrated ConfigMap keeps meaning the same thing, and the
//! affinity cookie key Secret that replicas share.
//!
//! Every key has its own strict parser. A value that does not parse, or a key Portico does
//! not know, is a diagnostic and the key keeps its default: a typo in the ConfigMap never
//! stops the controller.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Secret;
use proxy_core::config::{
    server_with_version, ProxySettings, Timeouts, UpstreamKeepalive, SERVER_NAME,
};
use proxy_core::pipeline::{ClientAddressPolicy, Hsts};

use super::annotations::{
    parse_bool, parse_buffer_size, parse_configmap_ref, parse_int, parse_kib, parse_on_off,
    parse_seconds, parse_size, parse_timeout,
};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::policy::GlobalAuth;
use super::policy::{GlobalRanges, PolicyDefaults};
use super::security::{
    external_auth_from, global_refusal, parse_source_ranges, GLOBAL_AUTH_KEYS, GLOBAL_GUARDS,
};
use super::upstream::{
    parse_load_balance, parse_next_timeout, parse_next_upstream, parse_tries, UpstreamDefaults,
};
use crate::store::{Kind, ObjectKey, Store};

/// Name of the Secret holding the key that affinity cookies are keyed with, so that every
/// replica (and a restarted one) recognises the others' cookies. In a cluster it lives in
/// the controller's namespace and the leader creates it when missing; over a manifest
/// folder it may be in any namespace.
///
/// Type `Opaque` (or unset); data key [`AFFINITY_KEY_FIELD`] holds exactly 32 hexadecimal
/// digits (16 bytes, upper or lower case; surrounding whitespace, such as the newline of
/// `--from-file`, is ignored). Make one by hand with
/// `kubectl -n portico create secret generic portico-affinity-key --from-literal=key=$(openssl rand -hex 16)`.
pub const AFFINITY_KEY_SECRET: &str = "portico-affinity-key";
/// The data key of [`AFFINITY_KEY_SECRET`] that holds the key.
pub const AFFINITY_KEY_FIELD: &str = "key";
/// Length of the affinity cookie key, in bytes.
pub const AFFINITY_KEY_LEN: usize = 16;

/// The settings of the `--configmap` ConfigMap, validated. Defaults are ingress-nginx's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSettings {
    /// `use-forwarded-headers` (false): trust `X-Forwarded-*` from clients in
    /// `proxy_real_ip_cidr`.
    pub use_forwarded_headers: bool,
    /// `compute-full-forwarded-for` (false): append the client address to the incoming
    /// forwarded-for header instead of replacing it.
    pub compute_full_forwarded_for: bool,
    /// `forwarded-for-header` (`X-Forwarded-For`), lower-cased as header names are.
    pub forwarded_for_header: HeaderName,
    /// `proxy-real-ip-cidr` (`0.0.0.0/0`): the peers whose forwarded headers or PROXY
    /// protocol header are trusted.
    pub proxy_real_ip_cidr: Vec<IpNet>,
    /// `use-proxy-protocol` (false): expect a PROXY protocol header on every connection.
    pub use_proxy_protocol: bool,
    /// `proxy-connect-timeout` (5 s).
    pub proxy_connect_timeout: Duration,
    /// `proxy-read-timeout` (60 s).
    pub proxy_read_timeout: Duration,
    /// `proxy-send-timeout` (60 s).
    pub proxy_send_timeout: Duration,
    /// `proxy-body-size` (`1m`): the largest request body, in bytes; `None` is unlimited
    /// (`0`).
    pub proxy_body_size: Option<u64>,
    /// `client-body-timeout` (60 s).
    pub client_body_timeout: Duration,
    /// `proxy-request-buffering` (on): read request bodies whole before sending them.
    pub proxy_request_buffering: bool,
    /// `client-body-buffer-size` (8k): how much of a buffered body stays in memory.
    pub client_body_buffer_size: u64,
    /// `keep-alive` (75 s): a client connection with nothing in flight this long is closed.
    pub keep_alive: Duration,
    /// `upstream-keepalive-connections`, `-timeout`, `-requests`, `-time`.
    pub upstream_keepalive: UpstreamKeepalive,
    /// `ssl-redirect` (true): redirect plain HTTP to HTTPS on hosts that have TLS.
    pub ssl_redirect: bool,
    /// `hsts` (true): send `Strict-Transport-Security` on HTTPS responses.
    pub hsts: bool,
    /// `hsts-max-age` (31536000 s).
    pub hsts_max_age: Duration,
    /// `hsts-include-subdomains` (true).
    pub hsts_include_subdomains: bool,
    /// `hsts-preload` (false).
    pub hsts_preload: bool,
    /// `server-tokens` (false): name Portico and its version in the `Server` header.
    pub server_tokens: bool,
    /// `preserve-trailing-slash` (false): keep a trailing `/` in HTTPS redirects.
    pub preserve_trailing_slash: bool,
    /// `use-port-in-redirects` (false): name the HTTPS port in HTTPS redirects, even 443.
    pub use_port_in_redirects: bool,
    /// `http-redirect-code` (308): the code of HTTPS and `www` redirects; 301, 302, 307
    /// or 308.
    pub http_redirect_code: u16,
    /// `custom-http-errors` (none): codes every path answers with the global default
    /// backend's error pages, unless its Ingress sets its own; sorted, each once.
    pub custom_http_errors: Vec<u16>,
    /// `global-allowed-response-headers` (none): the only field names a `custom-headers`
    /// ConfigMap may set, as written (compared case-sensitively, as ingress-nginx does).
    pub allowed_response_headers: Vec<String>,
    /// `proxy-set-headers` (none): the ConfigMap whose data are fields set on every
    /// request sent to a backend.
    pub proxy_set_headers: Option<ObjectKey>,
    /// `whitelist-source-range` (none): the allowlist of paths that set none.
    pub whitelist_source_range: GlobalRanges,
    /// `denylist-source-range` (none): the denylist of paths that set none.
    pub denylist_source_range: GlobalRanges,
    /// Security settings Portico does not implement that are set (`enable-modsecurity`,
    /// ...): why every path is refused; empty when none is.
    pub refused: Vec<String>,
    /// `global-auth-url` and its companions.
    pub global_auth: GlobalAuth,
    /// `no-auth-locations` (`/.well-known/acme-challenge`): comma-separated path
    /// prefixes the global auth leaves alone.
    pub no_auth_locations: Vec<String>,
    /// `ssl-protocols` (`TLSv1.2 TLSv1.3`) and `ssl-ciphers` (every AEAD suite): what
    /// the HTTPS listener offers.
    pub tls: tls::TlsPolicy,
    /// `limit-req-status-code` (503): the answer to a request over `limit-rps` or
    /// `limit-rpm`.
    pub limit_req_status_code: u16,
    /// `limit-conn-status-code` (503): the answer to a request over `limit-connections`.
    pub limit_conn_status_code: u16,
    /// `limit-rate` (0, none): KiB a second pods' answers are sent at.
    pub limit_rate: u64,
    /// `limit-rate-after` (0): KiB sent before `limit-rate` applies.
    pub limit_rate_after: u64,
    /// `load-balance`, `proxy-next-upstream` (`-tries`, `-timeout`),
    /// `retry-non-idempotent`, `disable-proxy-intercept-errors`.
    pub upstream: UpstreamDefaults,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        Self {
            use_forwarded_headers: false,
            compute_full_forwarded_for: false,
            forwarded_for_header: HeaderName::from_static("x-forwarded-for"),
            proxy_real_ip_cidr: vec![IpNet::V4(Ipv4Net::default())],
            use_proxy_protocol: false,
            proxy_connect_timeout: Duration::from_secs(5),
            proxy_read_timeout: Duration::from_secs(60),
            proxy_send_timeout: Duration::from_secs(60),
            proxy_body_size: Some(1024 * 1024),
            client_body_timeout: Duration::from_secs(60),
            proxy_request_buffering: true,
            client_body_buffer_size: 8 << 10,
            keep_alive: Duration::from_secs(75),
            upstream_keepalive: UpstreamKeepalive::default(),
            ssl_redirect: true,
            hsts: true,
            hsts_max_age: Duration::from_secs(31_536_000),
            hsts_include_subdomains: true,
            hsts_preload: false,
            server_tokens: false,
            preserve_trailing_slash: false,
            use_port_in_redirects: false,
            http_redirect_code: 308,
            custom_http_errors: Vec::new(),
            allowed_response_headers: Vec::new(),
            proxy_set_headers: None,
            whitelist_source_range: GlobalRanges::default(),
            denylist_source_range: GlobalRanges::default(),
            tls: tls::TlsPolicy::default(),
            limit_req_status_code: 503,
            limit_conn_status_code: 503,
            limit_rate: 0,
            limit_rate_after: 0,
            upstream: UpstreamDefaults::default(),
            refused: Vec::new(),
            global_auth: GlobalAuth::Off,
            no_auth_locations: vec!["/.well-known/acme-challenge".to_owned()],
        }
    }
}

/// `allow-snippet-annotations`: accepted so a migrated ConfigMap is not noise, but
/// snippets are never honoured whatever it says.
const ALLOW_SNIPPETS: &str = "allow-snippet-annotations";
/// `global-allowed-response-headers`: read item by item, a bad one costing only itself.
const ALLOWED_RESPONSE_HEADERS: &str = "global-allowed-response-headers";
/// `custom-http-errors`: read item by item, a bad one costing only itself.
const CUSTOM_HTTP_ERRORS: &str = "custom-http-errors";
/// The source range lists: a bad one fails closed, never falls back to no list.
const WHITELIST_SOURCE_RANGE: &str = "whitelist-source-range";
const DENYLIST_SOURCE_RANGE: &str = "denylist-source-range";
/// The TLS policy: read item by item, a refused one costing only itself.
const SSL_PROTOCOLS: &str = "ssl-protocols";
const SSL_CIPHERS: &str = "ssl-ciphers";
const NO_AUTH_LOCATIONS: &str = "no-auth-locations";

impl GlobalSettings {
    /// What an Ingress path gets when its annotations say nothing.
    pub fn policy_defaults(&self) -> PolicyDefaults {
        PolicyDefaults {
            timeouts: Timeouts {
                connect: self.proxy_connect_timeout,
                read: self.proxy_read_timeout,
                send: self.proxy_send_timeout,
            },
            body_size: self.proxy_body_size,
            ssl_redirect: self.ssl_redirect,
            request_buffering: self.proxy_request_buffering,
            body_buffer_size: self.client_body_buffer_size,
            preserve_trailing_slash: self.preserve_trailing_slash,
            use_port_in_redirects: self.use_port_in_redirects,
            http_redirect_code: http::StatusCode::from_u16(self.http_redirect_code)
                .unwrap_or(http::StatusCode::PERMANENT_REDIRECT),
            custom_http_errors: self.custom_http_errors.clone(),
            allow_source_range: self.whitelist_source_range.clone(),
            deny_source_range: self.denylist_source_range.clone(),
            refused: (!self.refused.is_empty()).then(|| self.refused.join("; ").into()),
            limit_rate: self.limit_rate,
            limit_rate_after: self.limit_rate_after,
            limit_req_status: http::StatusCode::from_u16(self.limit_req_status_code)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            limit_conn_status: http::StatusCode::from_u16(self.limit_conn_status_code)
                .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            global_auth: self.global_auth.clone(),
            no_auth_locations: self.no_auth_locations.clone(),
            upstream: self.upstream.clone(),
        }
    }

    /// The dataplane's share: the client address, PROXY protocol, `Server`, HSTS.
    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings {
            client: ClientAddressPolicy {
                use_forwarded_headers: self.use_forwarded_headers,
                compute_full_forwarded_for: self.compute_full_forwarded_for,
                forwarded_for_header: self.forwarded_for_header.clone(),
                trusted: self.proxy_real_ip_cidr.clone(),
            },
            proxy_protocol: self.use_proxy_protocol,
            server: if self.server_tokens {
                server_with_version()
            } else {
                HeaderValue::from_static(SERVER_NAME)
            },
            client_body_timeout: self.client_body_timeout,
            keep_alive: self.keep_alive,
            upstream_keepalive: self.upstream_keepalive,
            hsts: self.hsts.then(|| {
                Hsts::new(
                    self.hsts_max_age.as_secs(),
                    self.hsts_include_subdomains,
                    self.hsts_preload,
                )
            }),
            // nginx's send_timeout, which ingress-nginx does not expose either.
            send_timeout: ProxySettings::default().send_timeout,
            // Read from the ConfigMap it names, by the compile.
            proxy_set_headers: Default::default(),
        }
    }
}

/// The settings for `configmap` (`--configmap`), defaults when it is not set. A named
/// ConfigMap that does not exist is a warning, and the defaults apply.
pub fn global_settings(
    store: &Store,
    configmap: Option<&ObjectKey>,
    diags: &mut Vec<Diagnostic>,
) -> GlobalSettings {
    let Some(key) = configmap else {
        return GlobalSettings::default();
    };
    match store.config_maps.get(key) {
        Some(cm) => parse_settings(key, cm.data.as_ref(), diags),
        None => {
            diags.push(Diagnostic::warning(
                Kind::ConfigMap,
                key,
                "",
                DiagnosticReason::ConfigMapNotFound,
                format!("--configmap names ConfigMap {key}, which does not exist; default settings apply"),
            ));
            GlobalSettings::default()
        }
    }
}

/// The settings in a ConfigMap's `data`.
pub fn parse_settings(
    key: &ObjectKey,
    data: Option<&BTreeMap<String, String>>,
    diags: &mut Vec<Diagnostic>,
) -> GlobalSettings {
    let mut s = GlobalSettings::default();
    for (name, raw) in data.into_iter().flatten() {
        let field = format!("data[{name:?}]");
        let v = raw.trim();
        if name == ALLOW_SNIPPETS {
            match parse_bool(v) {
                Ok(false) => {}
                Ok(true) => diags.push(Diagnostic::warning(
                    Kind::ConfigMap,
                    key,
                    field,
                    DiagnosticReason::UnsupportedSetting,
                    format!("{ALLOW_SNIPPETS} is true, but Portico never supports snippets: no annotation can inject proxy configuration"),
                )),
                Err(expected) => diags.push(invalid(key, field, name, raw, &expected)),
            }
            continue;
        }
        if name == ALLOWED_RESPONSE_HEADERS {
            let (names, refused): (Vec<&str>, Vec<&str>) = v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .partition(|n| valid_custom_header_name(n));
            s.allowed_response_headers = names.into_iter().map(str::to_owned).collect();
            diags.extend(partly_refused(
                key,
                field,
                name,
                &refused,
                "a header name of letters, digits, - and _",
                "names",
            ));
            continue;
        }
        if name == CUSTOM_HTTP_ERRORS {
            let (codes, refused) = parse_global_error_codes(v);
            s.custom_http_errors = codes;
            diags.extend(partly_refused(
                key,
                field,
                name,
                &refused,
                "a status code from 300 to 599",
                "codes",
            ));
            continue;
        }
        if name == WHITELIST_SOURCE_RANGE || name == DENYLIST_SOURCE_RANGE {
            let ranges = match parse_source_ranges(v) {
                Ok(nets) => GlobalRanges::Ranges(nets),
                Err(why) => {
                    diags.push(Diagnostic::error(
                        Kind::ConfigMap,
                        key,
                        field,
                        DiagnosticReason::SecurityRefused,
                        format!("key {name}: {why}; every path that sets no source range of its own answers 503 rather than be served without it"),
                    ));
                    GlobalRanges::Broken(format!("ConfigMap {key} key {name}: {why}").into())
                }
            };
            if name == WHITELIST_SOURCE_RANGE {
                s.whitelist_source_range = ranges;
            } else {
                s.denylist_source_range = ranges;
            }
            continue;
        }
        if GLOBAL_AUTH_KEYS.contains(&name.as_str()) {
            // Read together once the loop is done.
            continue;
        }
        if name == NO_AUTH_LOCATIONS {
            s.no_auth_locations = v
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            continue;
        }
        if GLOBAL_GUARDS.iter().any(|(k, _)| k == name) {
            if let Some(why) = global_refusal(name, v) {
                diags.push(Diagnostic::error(
                    Kind::ConfigMap,
                    key,
                    field,
                    DiagnosticReason::SecurityRefused,
                    format!("key {name}: {why}; every path answers 503 rather than be served without it"),
                ));
                s.refused.push(format!("ConfigMap {key} key {name}: {why}"));
            }
            continue;
        }
        if name == SSL_PROTOCOLS {
            let (versions, refused) = parse_ssl_protocols(v);
            match versions {
                Some((tls12, tls13)) => {
                    s.tls.tls12 = tls12;
                    s.tls.tls13 = tls13;
                    diags.extend(partly_refused(
                        key,
                        field,
                        name,
                        &refused,
                        "a protocol Portico offers (TLSv1.2, TLSv1.3; older ones are unsafe and refused)",
                        "protocols",
                    ));
                }
                None => diags.push(Diagnostic::warning(
                    Kind::ConfigMap,
                    key,
                    field,
                    DiagnosticReason::InvalidSetting,
                    format!("key {name}: {v:?} names neither TLSv1.2 nor TLSv1.3 (older protocols are unsafe and refused); TLSv1.2 TLSv1.3 apply"),
                )),
            }
            continue;
        }
        if name == SSL_CIPHERS {
            let (suites, refused) = parse_ssl_ciphers(v);
            if suites.is_empty() {
                diags.push(Diagnostic::warning(
                    Kind::ConfigMap,
                    key,
                    field,
                    DiagnosticReason::InvalidSetting,
                    format!("key {name}: {v:?} names no TLS 1.2 cipher suite Portico offers (ECDHE with AES-GCM or CHACHA20-POLY1305); every such suite applies"),
                ));
            } else {
                s.tls.tls12_suites = Some(suites);
                diags.extend(partly_refused(
                    key,
                    field,
                    name,
                    &refused,
                    "a cipher suite Portico offers (ECDHE with AES-GCM or CHACHA20-POLY1305)",
                    "suites",
                ));
            }
            continue;
        }
        match apply(&mut s, name, v) {
            Some(Ok(())) => {}
            Some(Err(expected)) => diags.push(invalid(key, field, name, raw, &expected)),
            None => diags.push(Diagnostic::warning(
                Kind::ConfigMap,
                key,
                field,
                DiagnosticReason::UnsupportedSetting,
                format!("key {name} is not supported by Portico, ignored"),
            )),
        }
    }
    s.global_auth = global_auth(key, data, diags);
    s
}

/// `global-auth-url` and its companions, read as the annotations are; a malformed key
/// refuses every path the global auth would guard.
fn global_auth(
    key: &ObjectKey,
    data: Option<&BTreeMap<String, String>>,
    diags: &mut Vec<Diagnostic>,
) -> GlobalAuth {
    let Some(data) = data else {
        return GlobalAuth::Off;
    };
    let get = |name: &str| {
        data.get_key_value(&format!("global-{name}"))
            .map(|(k, v)| (k.as_str(), v.trim()))
    };
    if get("auth-url").is_none_or(|(_, v)| v.is_empty()) {
        return GlobalAuth::Off;
    }
    let mut refusals = Vec::new();
    let auth = external_auth_from(get, |full, why| {
        refusals.push(format!("ConfigMap {key} key {full}: {why}"));
        diags.push(Diagnostic::error(
            Kind::ConfigMap,
            key,
            format!("data[{full:?}]"),
            DiagnosticReason::SecurityRefused,
            format!("key {full}: {why}; every path the global auth guards answers 503 rather than be served without it"),
        ));
    });
    match auth {
        Some(auth) if refusals.is_empty() => {
            GlobalAuth::On(super::security::with_cache_scope(auth, "(global)"))
        }
        _ => GlobalAuth::Broken(refusals.join("; ").into()),
    }
}

/// A list setting some of whose entries were dropped: which, and that the rest apply.
fn partly_refused(
    key: &ObjectKey,
    field: String,
    name: &str,
    refused: &[&str],
    expected: &str,
    rest: &str,
) -> Option<Diagnostic> {
    (!refused.is_empty()).then(|| {
        Diagnostic::warning(
            Kind::ConfigMap,
            key,
            field,
            DiagnosticReason::InvalidSetting,
            format!(
                "key {name}: {} not {expected}, ignored; the other {rest} apply, as in ingress-nginx",
                refused.join(", ")
            ),
        )
    })
}

fn invalid(key: &ObjectKey, field: String, name: &str, raw: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(
        Kind::ConfigMap,
        key,
        field,
        DiagnosticReason::InvalidSetting,
        format!("key {name} has invalid value {raw:?} (expected {expected}); the default applies"),
    )
}

/// Set the field for `name` from `v`; `None` for a key Portico does not know.
fn apply(s: &mut GlobalSettings, name: &str, v: &str) -> Option<Result<(), String>> {
    let r = match name {
        "use-forwarded-headers" => parse_bool(v).map(|b| s.use_forwarded_headers = b),
        "compute-full-forwarded-for" => parse_bool(v).map(|b| s.compute_full_forwarded_for = b),
        "forwarded-for-header" => parse_header_name(v).map(|h| s.forwarded_for_header = h),
        "proxy-real-ip-cidr" => parse_cidrs(v).map(|c| s.proxy_real_ip_cidr = c),
        "use-proxy-protocol" => parse_bool(v).map(|b| s.use_proxy_protocol = b),
        "proxy-connect-timeout" => parse_timeout(v).map(|d| s.proxy_connect_timeout = d),
        "proxy-read-timeout" => parse_timeout(v).map(|d| s.proxy_read_timeout = d),
        "proxy-send-timeout" => parse_timeout(v).map(|d| s.proxy_send_timeout = d),
        "proxy-body-size" => parse_size(v).map(|n| s.proxy_body_size = n),
        "client-body-timeout" => parse_timeout(v).map(|d| s.client_body_timeout = d),
        "keep-alive" => parse_timeout(v).map(|d| s.keep_alive = d),
        "upstream-keepalive-connections" => parse_count(v)
            .map(|n| s.upstream_keepalive.connections = usize::try_from(n).unwrap_or(usize::MAX)),
        "upstream-keepalive-timeout" => parse_timeout(v).map(|d| s.upstream_keepalive.timeout = d),
        "upstream-keepalive-requests" => parse_count(v).map(|n| s.upstream_keepalive.requests = n),
        "upstream-keepalive-time" => parse_keepalive_time(v).map(|d| s.upstream_keepalive.time = d),
        "proxy-request-buffering" => parse_on_off(v).map(|b| s.proxy_request_buffering = b),
        "client-body-buffer-size" => parse_buffer_size(v).map(|n| s.client_body_buffer_size = n),
        "ssl-redirect" => parse_bool(v).map(|b| s.ssl_redirect = b),
        "hsts" => parse_bool(v).map(|b| s.hsts = b),
        "hsts-max-age" => parse_seconds(v).map(|d| s.hsts_max_age = d),
        "hsts-include-subdomains" => parse_bool(v).map(|b| s.hsts_include_subdomains = b),
        "hsts-preload" => parse_bool(v).map(|b| s.hsts_preload = b),
        "server-tokens" => parse_bool(v).map(|b| s.server_tokens = b),
        "preserve-trailing-slash" => parse_bool(v).map(|b| s.preserve_trailing_slash = b),
        "use-port-in-redirects" => parse_bool(v).map(|b| s.use_port_in_redirects = b),
        "http-redirect-code" => parse_redirect_code(v).map(|c| s.http_redirect_code = c),
        "limit-rate" => parse_kib(v).map(|n| s.limit_rate = n),
        "limit-rate-after" => parse_kib(v).map(|n| s.limit_rate_after = n),
        "limit-req-status-code" => parse_error_code(v).map(|c| s.limit_req_status_code = c),
        "limit-conn-status-code" => parse_error_code(v).map(|c| s.limit_conn_status_code = c),
        "proxy-set-headers" => parse_configmap_ref(v).map(|k| s.proxy_set_headers = Some(k)),
        "load-balance" => parse_load_balance(v).map(|l| s.upstream.load_balance = l),
        "proxy-next-upstream" => parse_next_upstream(v).map(|w| {
            s.upstream.next_upstream = w;
            s.upstream.next_upstream_set = true;
        }),
        "proxy-next-upstream-tries" => parse_tries(v).map(|n| {
            s.upstream.next_upstream_tries = n;
            s.upstream.next_upstream_set = true;
        }),
        "proxy-next-upstream-timeout" => parse_next_timeout(v).map(|n| {
            s.upstream.next_upstream_timeout = n;
            s.upstream.next_upstream_set = true;
        }),
        "retry-non-idempotent" => parse_bool(v).map(|b| {
            s.upstream.retry_non_idempotent = b;
            s.upstream.next_upstream_set |= b;
        }),
        "disable-proxy-intercept-errors" => parse_bool(v).map(|b| s.upstream.disable_intercept = b),
        _ => return None,
    };
    Some(r)
}

/// `upstream-keepalive-connections`, `-requests`: a whole number, 0 or more.
fn parse_count(v: &str) -> Result<u64, String> {
    const EXPECTED: &str = "a whole number, 0 or more";
    match parse_int(v) {
        Ok(n) => u64::try_from(n).map_err(|_| EXPECTED.into()),
        Err(_) => Err(EXPECTED.into()),
    }
}

/// `upstream-keepalive-time`: an nginx time (`1h`, `30m`, `1h 30m`; a bare number is
/// seconds), more than nothing.
fn parse_keepalive_time(v: &str) -> Result<Duration, String> {
    match proxy_core::pipeline::nginx_time(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err("an nginx time such as 1h or 30m".into()),
    }
}

/// `ssl-protocols`: nginx's space-separated protocol names. TLS 1.2 and 1.3 are taken;
/// anything else (the unsafe `TLSv1`, `TLSv1.1`, `SSLv3`, or a typo) is returned to be
/// reported. `None` when neither is named.
fn parse_ssl_protocols(v: &str) -> (Option<(bool, bool)>, Vec<&str>) {
    let (mut tls12, mut tls13) = (false, false);
    let mut refused = Vec::new();
    for item in v.split_whitespace() {
        match item {
            "TLSv1.2" => tls12 = true,
            "TLSv1.3" => tls13 = true,
            other => refused.push(other),
        }
    }
    ((tls12 || tls13).then_some((tls12, tls13)), refused)
}

/// `ssl-ciphers`: an OpenSSL cipher list (`:`, `,` or space separated). Suite names
/// Portico offers are taken in order; `!`/`-` items remove one; other names and
/// keywords are returned to be reported.
fn parse_ssl_ciphers(v: &str) -> (Vec<tls::CipherSuite>, Vec<&str>) {
    let mut suites = Vec::new();
    let mut refused = Vec::new();
    for item in v
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        if let Some(removed) = item.strip_prefix(['!', '-']) {
            if let Some(suite) = tls::cipher_suite(removed) {
                suites.retain(|s| *s != suite);
            }
            continue;
        }
        match tls::cipher_suite(item.trim_start_matches('+')) {
            Some(suite) if !suites.contains(&suite) => suites.push(suite),
            Some(_) => {}
            None => refused.push(item),
        }
    }
    (suites, refused)
}

/// `custom-http-errors`: comma-separated codes, read as ingress-nginx's ConfigMap reader
/// does: an item that is not an integer, or not from 300 to 599, is left out (and
/// returned, to be reported) and the others apply. Sorted, each once.
fn parse_global_error_codes(v: &str) -> (Vec<u16>, Vec<&str>) {
    let (mut codes, mut refused) = (Vec::new(), Vec::new());
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match parse_int(item).ok().and_then(|n| u16::try_from(n).ok()) {
            Some(code) if (300..=599).contains(&code) => codes.push(code),
            _ => refused.push(item),
        }
    }
    codes.sort_unstable();
    codes.dedup();
    (codes, refused)
}

/// A field name a `custom-headers` ConfigMap may set, as ingress-nginx's
/// `^[a-zA-Z\d\-_]+$`.
pub fn valid_custom_header_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `http-redirect-code`: one of the codes ingress-nginx accepts there.
fn parse_redirect_code(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(c @ (301 | 302 | 307 | 308)) => Ok(c),
        _ => Err("301, 302, 307 or 308".into()),
    }
}

/// `limit-req-status-code`, `limit-conn-status-code`: what nginx's `limit_req_status`
/// and `limit_conn_status` accept, 400 to 599.
fn parse_error_code(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(c @ 400..=599) => Ok(c),
        _ => Err("a status code from 400 to 599".into()),
    }
}

/// An RFC 9110 field name (a token).
fn parse_header_name(v: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(v.as_bytes()).map_err(|_| "an HTTP header name".into())
}

/// Comma-separated CIDRs or single addresses, IPv4 or IPv6; at least one. Host bits are
/// dropped, as nginx's `set_real_ip_from` does.
fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    const EXPECTED: &str = "comma-separated CIDRs such as 10.0.0.0/8,fd00::/8";
    let nets: Result<Vec<IpNet>, _> = v
        .split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<IpNet>() {
                Ok(net) => Ok(net.trunc()),
                Err(_) => item.parse::<IpAddr>().map(IpNet::from),
            }
        })
        .collect();
    nets.map_err(|_| EXPECTED.to_owned())
}

/// The affinity cookie key from the [`AFFINITY_KEY_SECRET`] Secret: the first one in
/// namespace order when several exist (over a manifest folder; in a cluster only the
/// controller's namespace is watched), with a warning for the others. Secrets of a type
/// other than `Opaque` are not candidates: a `kubernetes.io/tls` Secret of that name in an
/// application's namespace (TLS Secrets are watched everywhere) never sets the key.
/// A malformed Secret is an error and gives `None`, as does no Secret at all.
pub fn affinity_key(store: &Store, diags: &mut Vec<Diagnostic>) -> Option<[u8; AFFINITY_KEY_LEN]> {
    let mut candidates = store
        .secrets
        .iter()
        .filter(|(k, s)| k.name == AFFINITY_KEY_SECRET && is_opaque(s));
    let (key, secret) = candidates.next()?;
    for (other, _) in candidates {
        diags.push(Diagnostic::warning(
            Kind::Secret,
            other,
            "",
            DiagnosticReason::DuplicateAffinityKey,
            format!("the affinity cookie key comes from Secret {key}; this one is ignored"),
        ));
    }
    let field = format!("data[{AFFINITY_KEY_FIELD:?}]");
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(AFFINITY_KEY_FIELD)) else {
        diags.push(Diagnostic::error(
            Kind::Secret,
            key,
            field,
            DiagnosticReason::InvalidAffinityKey,
            format!("affinity cookie key Secret has no {AFFINITY_KEY_FIELD:?} key"),
        ));
        return None;
    };
    match decode_key(&value.0) {
        Some(k) => Some(k),
        None => {
            diags.push(Diagnostic::error(
                Kind::Secret,
                key,
                field,
                DiagnosticReason::InvalidAffinityKey,
                format!(
                    "affinity cookie key must be {} hexadecimal digits ({AFFINITY_KEY_LEN} bytes)",
                    AFFINITY_KEY_LEN * 2
                ),
            ));
            None
        }
    }
}

fn is_opaque(s: &Secret) -> bool {
    matches!(s.type_.as_deref(), None | Some("") | Some("Opaque"))
}

/// Exactly 32 hex digits, with surrounding whitespace ignored.
pub fn decode_key(raw: &[u8]) -> Option<[u8; AFFINITY_KEY_LEN]> {
    let hex = raw.trim_ascii();
    if hex.len() != AFFINITY_KEY_LEN * 2 {
        return None;
    }
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; AFFINITY_KEY_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// `key` as the Secret holds it: lower-case hex.
pub fn encode_key(key: &[u8; AFFINITY_KEY_LEN]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
