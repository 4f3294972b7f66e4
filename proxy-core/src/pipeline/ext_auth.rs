//! `auth-url` and its companions: every request of the route is first put to an
//! authentication service, as ingress-nginx's `auth_request` subrequest does. The
//! service gets the request's headers (no body) plus `X-Original-URL`,
//! `X-Original-Method`, `X-Auth-Request-Redirect` and friends; a 2xx answer lets the
//! request through (with `auth-response-headers` copied onto it), 401 and 403 go to the
//! client (401 as a redirect to `auth-signin` when set), anything else is a 500.
//!
//! The filter itself only marks the request (the access phase of nginx's order); the
//! exchange with the service happens in `http::forward` once the synchronous filters
//! are done, so routes without it pay nothing for the await.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::{plain_answer, Flow, RequestCtx};
use crate::balance::Target;
use crate::http::{ProxyBody, ProxyError, Scheme};

/// One route's external authentication, compiled from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    /// `auth-url`, variables and all.
    pub url: Template,
    /// `auth-method`; `None` is a `GET` without the headers an explicit method adds.
    pub method: Option<Method>,
    /// `auth-signin`, with the redirect parameter appended as ingress-nginx builds it.
    pub signin: Option<Template>,
    /// `auth-request-redirect`: `X-Auth-Request-Redirect` instead of the request URI.
    pub request_redirect: Option<HeaderValue>,
    /// `auth-response-headers`: copied from the service's answer onto the request sent
    /// upstream (removed from it when the answer has none).
    pub response_headers: Vec<HeaderName>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` goes on every answer, not
    /// only on the success codes nginx's `add_header` covers.
    pub always_set_cookie: bool,
    /// `auth-cache-key` with `auth-cache-duration`: answers kept and reused per key.
    pub cache: Option<AuthCache>,
    /// `auth-proxy-set-headers`: the `namespace/name` of the ConfigMap whose fields the
    /// auth request carries, a key of [`Config::auth_proxy_set_headers`]. Read there
    /// rather than held here, so an edit of the ConfigMap applies without the Ingress
    /// changing; a key missing there could not be read, and the request answers 503.
    ///
    /// [`Config::auth_proxy_set_headers`]: crate::config::Config::auth_proxy_set_headers
    pub proxy_set_headers: Option<Arc<str>>,
}

/// The fields an `auth-proxy-set-headers` ConfigMap sets on the auth request, in its
/// key order, each value an nginx-variable template (as nginx's `proxy_set_header`
/// expands them). One that expands to nothing is not sent, as nginx leaves out a
/// `proxy_set_header` whose value is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthProxyHeaders(pub Vec<(HeaderName, Template)>);

/// `auth-cache-key` and `auth-cache-duration`: the service's answers are kept, per
/// route host, `scope` and expanded key, for as long as their status's entry says (as
/// nginx's `proxy_cache_valid`), and reused instead of asking again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCache {
    pub key: Template,
    /// The Ingress and rule path (ingress-nginx keys on the server and the location).
    pub scope: Arc<str>,
    pub valid: Vec<CacheValid>,
}

/// One `proxy_cache_valid`: these codes (`None`: any) are kept this long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheValid {
    pub codes: Option<Vec<u16>>,
    pub ttl: Duration,
}

impl AuthCache {
    /// How long an answer is kept: the first entry naming its status, unless the answer
    /// forbids it (`Set-Cookie`, `Cache-Control: no-store`, `no-cache`, `private`) or
    /// says how long itself (`max-age`), as nginx's cache decides.
    pub fn ttl(&self, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
        if headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let code = status.as_u16();
        let mut ttl = self.valid.iter().find_map(|v| match &v.codes {
            None => Some(v.ttl),
            Some(codes) => codes.contains(&code).then_some(v.ttl),
        })?;
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for d in text.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                if matches!(d.as_str(), "no-store" | "no-cache" | "private") {
                    return None;
                }
                if let Some(secs) = d.strip_prefix("max-age=").and_then(|n| n.parse().ok()) {
                    ttl = Duration::from_secs(secs);
                }
            }
        }
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// ingress-nginx's `auth-cache-duration`: comma-separated entries, each status codes
/// then durations (`200 202 401 5m`, `1h 30m` adding up); no code means 200, 301 and
/// 302, `any` every code, as nginx's `proxy_cache_valid`. Empty: `200 202 401 5m`.
pub fn parse_cache_duration(v: &str) -> Result<Vec<CacheValid>, String> {
    let mut out = Vec::new();
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let items = if items.is_empty() {
        vec!["200 202 401 5m"]
    } else {
        items
    };
    for item in items {
        let mut codes = Vec::new();
        let mut any = false;
        let mut ttl = Duration::ZERO;
        let mut seen_time = false;
        for el in item.split(' ').filter(|e| !e.is_empty()) {
            if el.len() == 3 && el.bytes().all(|b| b.is_ascii_digit()) {
                if seen_time {
                    return Err(format!("{item:?}: a status code after a duration"));
                }
                codes.push(
                    el.parse()
                        .map_err(|_| format!("{item:?}: bad code {el:?}"))?,
                );
            } else if el == "any" {
                any = true;
            } else if let Some(d) = duration(el) {
                seen_time = true;
                ttl += d;
            } else {
                return Err(format!(
                    "{item:?}: {el:?} is neither a status code nor a duration such as 5m"
                ));
            }
        }
        if !seen_time {
            return Err(format!("{item:?} has no duration"));
        }
        let codes = if any {
            None
        } else if codes.is_empty() {
            Some(vec![200, 301, 302])
        } else {
            Some(codes)
        };
        out.push(CacheValid { codes, ttl });
    }
    Ok(out)
}

/// An nginx time value such as `1h`, `90s`, `1h 30m` or `1h30m` (its terms add up); a
/// bare number is seconds.
pub fn nginx_time(v: &str) -> Option<Duration> {
    let mut rest = v.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[digits..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |n| digits + n);
        let term = match &rest[..unit] {
            _ if digits == 0 => return None,
            t if unit == digits => Duration::from_secs(t.parse().ok()?),
            t => duration(t)?,
        };
        total = total.checked_add(term)?;
        rest = rest[unit..].trim_start();
    }
    Some(total)
}

/// nginx's time units: `ms`, `s`, `m`, `h`, `d`, `w`, `M` (30 days), `y` (365 days).
fn duration(el: &str) -> Option<Duration> {
    let split = el.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = el.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        "M" => secs(30 * 86_400),
        "y" => secs(365 * 86_400),
        _ => None,
    }
}

/// Kept answers of authentication services, shared by every route (each keys its own).
#[derive(Default)]
pub(crate) struct AuthDecisions(std::sync::Mutex<HashMap<String, Kept>>);

struct Kept {
    until: Instant,
    status: StatusCode,
    headers: HeaderMap,
}

/// Answers kept at most; past it, expired ones go, then all.
const MAX_KEPT: usize = 10_000;

impl AuthDecisions {
    pub(crate) fn get(&self, key: &str) -> Option<(StatusCode, HeaderMap)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let kept = map.get(key)?;
        (kept.until > Instant::now()).then(|| (kept.status, kept.headers.clone()))
    }

    pub(crate) fn put(&self, key: String, status: StatusCode, headers: HeaderMap, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEPT {
            map.retain(|_, k| k.until > now);
            if map.len() >= MAX_KEPT {
                map.clear();
            }
        }
        map.insert(
            key,
            Kept {
                until: now + ttl,
                status,
                headers,
            },
        );
    }
}

impl ExternalAuth {
    pub(super) fn on_request(
        self: &Arc<Self>,
        ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        ctx.external_auth = Some(self.clone());
        Ok(Flow::Continue)
    }

    /// Where the auth request goes and the request head it carries, for the request
    /// `parts` (as routed) with variables from `vars`, plus the `auth-proxy-set-headers`
    /// fields `extra`.
    pub fn request(
        &self,
        parts: &Parts,
        vars: &Vars<'_>,
        extra: Option<&AuthProxyHeaders>,
    ) -> Result<AuthRequest, ProxyError> {
        let url = self.url.expand(vars);
        let bad = |why: &str| ProxyError::ExternalAuth(format!("auth-url {url:?}: {why}"));
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(&url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(&url, "http://") {
            (false, rest)
        } else {
            return Err(bad("not an http or https URL"));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority: http::uri::Authority =
            authority.parse().map_err(|_| bad("not a host and port"))?;
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        let uri: http::Uri = path.parse().map_err(|_| bad("not a valid path"))?;
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => Target::Addr((ip, port).into()),
            Err(_) => Target::Name {
                host: host.as_str().into(),
                port,
            },
        };

        let mut headers = parts.headers.clone();
        crate::http::strip_hop_by_hop(&mut headers);
        // No body goes with it, and nothing a body would need (nginx's
        // `proxy_pass_request_body off`, `Content-Length ""`, its `Expect ""`).
        for name in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::EXPECT,
            header::CONTENT_ENCODING,
        ] {
            headers.remove(name);
        }
        headers.remove(X_FORWARDED_PROTO);
        headers.insert(
            HeaderName::from_static(X_REQUEST_ID),
            super::errors::request_id(&parts.headers),
        );
        let method = match &self.method {
            Some(m) => {
                // ingress-nginx's template adds these two only beside `auth-method`.
                set(
                    &mut headers,
                    HeaderName::from_static(X_ORIGINAL_URI),
                    vars.request_uri,
                );
                set(
                    &mut headers,
                    HeaderName::from_static(X_SCHEME),
                    vars.scheme_str(),
                );
                m.clone()
            }
            None => Method::GET,
        };
        // `Host` is the URL's host name without its port, as ingress-nginx writes it.
        set(&mut headers, header::HOST, &host);
        let original = format!(
            "{}://{}{}",
            vars.scheme_str(),
            vars.http_host(),
            vars.request_uri
        );
        set(
            &mut headers,
            HeaderName::from_static(X_ORIGINAL_URL),
            &original,
        );
        set(
            &mut headers,
            HeaderName::from_static(X_ORIGINAL_METHOD),
            vars.method.as_str(),
        );
        headers.insert(
            HeaderName::from_static(X_SENT_FROM),
            HeaderValue::from_static("nginx-ingress-controller"),
        );
        let client = vars.client.to_string();
        set(&mut headers, HeaderName::from_static(X_REAL_IP), &client);
        set(
            &mut headers,
            HeaderName::from_static(X_FORWARDED_FOR),
            vars.forwarded_for,
        );
        match &self.request_redirect {
            Some(v) => {
                headers.insert(HeaderName::from_static(X_AUTH_REQUEST_REDIRECT), v.clone());
            }
            None => set(
                &mut headers,
                HeaderName::from_static(X_AUTH_REQUEST_REDIRECT),
                vars.request_uri,
            ),
        }
        // Last, as ingress-nginx's template writes them after its own fields: a field
        // named in both is the ConfigMap's.
        for (name, value) in extra.map(|e| e.0.as_slice()).unwrap_or_default() {
            set(&mut headers, name.clone(), &value.expand(vars));
        }
        Ok(AuthRequest {
            target,
            tls,
            host,
            method,
            uri,
            headers,
        })
    }

    /// What the service's answer `status` with `headers` means for the request.
    pub fn judge(&self, status: StatusCode, headers: &HeaderMap, vars: &Vars<'_>) -> Verdict {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        if status.is_success() {
            let set = self
                .response_headers
                .iter()
                .map(|name| {
                    let value = super::errors::joined(headers, name)
                        .filter(|v| !v.is_empty())
                        .and_then(|v| HeaderValue::from_str(&v).ok());
                    (name.clone(), value)
                })
                .collect();
            return Verdict::Allow {
                headers: set,
                cookies: AuthCookies {
                    cookies,
                    always: self.always_set_cookie,
                },
            };
        }
        let mut resp = match status {
            StatusCode::UNAUTHORIZED => match &self.signin {
                Some(signin) => {
                    let location = signin.expand(vars);
                    match HeaderValue::from_str(&location) {
                        Ok(v) => {
                            let mut resp = Response::new(ProxyBody::full(""));
                            *resp.status_mut() = StatusCode::FOUND;
                            resp.headers_mut().insert(header::LOCATION, v);
                            // nginx's `add_header Set-Cookie` of the sign-in location: a
                            // 302 is among the codes it covers.
                            for c in &cookies {
                                resp.headers_mut().append(header::SET_COOKIE, c.clone());
                            }
                            return Verdict::Deny(Box::new(resp));
                        }
                        Err(_) => plain_answer(StatusCode::INTERNAL_SERVER_ERROR),
                    }
                }
                None => {
                    let mut resp = plain_answer(StatusCode::UNAUTHORIZED);
                    for v in headers.get_all(header::WWW_AUTHENTICATE) {
                        resp.headers_mut()
                            .append(header::WWW_AUTHENTICATE, v.clone());
                    }
                    resp
                }
            },
            StatusCode::FORBIDDEN => plain_answer(StatusCode::FORBIDDEN),
            _ => plain_answer(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // `add_header ... always`: on error answers only with `auth-always-set-cookie`.
        if self.always_set_cookie {
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        Verdict::Deny(Box::new(resp))
    }
}

/// The auth request to send: where, and its head.
#[derive(Debug)]
pub struct AuthRequest {
    pub target: Target,
    pub tls: bool,
    /// The URL's host, for SNI.
    pub host: String,
    pub method: Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

/// What the service's answer decided.
pub enum Verdict {
    /// Let the request through, with these fields set on (or, `None`, removed from) the
    /// request sent upstream, and these cookies for the client's answer.
    Allow {
        headers: Vec<(HeaderName, Option<HeaderValue>)>,
        cookies: AuthCookies,
    },
    /// Answer the client with this.
    Deny(Box<Response<ProxyBody>>),
}

/// The service's `Set-Cookie` fields, for the client's answer.
#[derive(Debug, Default)]
pub struct AuthCookies {
    pub cookies: Vec<HeaderValue>,
    /// Whatever the answer's status; otherwise only on the codes nginx's `add_header`
    /// covers (200, 201, 204, 206, 301, 302, 303, 304, 307, 308).
    pub always: bool,
}

impl AuthCookies {
    /// Adds the cookies to an answer with `status`, as nginx's `add_header` would.
    pub fn apply(&self, status: StatusCode, headers: &mut HeaderMap) {
        let covered = matches!(
            status.as_u16(),
            200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
        );
        if !(covered || self.always) {
            return;
        }
        for c in &self.cookies {
            headers.append(header::SET_COOKIE, c.clone());
        }
    }
}

const X_ORIGINAL_URI: &str = "x-original-uri";
const X_ORIGINAL_URL: &str = "x-original-url";
const X_ORIGINAL_METHOD: &str = "x-original-method";
const X_SCHEME: &str = "x-scheme";
const X_SENT_FROM: &str = "x-sent-from";
const X_REAL_IP: &str = "x-real-ip";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_REQUEST_ID: &str = "x-request-id";
const X_AUTH_REQUEST_REDIRECT: &str = "x-auth-request-redirect";

/// Sets `name` to `value`, or removes it when the value is empty or cannot be a header
/// (nginx sends no field whose value is empty).
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value).ok().filter(|v| !v.is_empty()) {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// What the variables of one request stand for.
pub struct Vars<'a> {
    pub scheme: Scheme,
    /// `$host`: the routing host, lower-case, without port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// `$request_uri`: the request target as the client sent it.
    pub request_uri: &'a str,
    /// `$uri`: the normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    /// `$remote_addr`.
    pub client: IpAddr,
    /// The `X-Forwarded-For` the auth service gets.
    pub forwarded_for: &'a str,
    /// `$server_port`.
    pub server_port: u16,
}

impl Vars<'_> {
    fn scheme_str(&self) -> &'static str {
        match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// `$http_host`: the `Host` field as sent.
    fn http_host(&self) -> &str {
        self.headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn value(&self, var: &Var, out: &mut String) {
        match var {
            Var::Host => out.push_str(self.host),
            Var::HttpHost => out.push_str(self.http_host()),
            Var::BestHttpHost => {
                let h = self.http_host();
                out.push_str(if h.is_empty() { self.host } else { h });
            }
            Var::RequestUri => out.push_str(self.request_uri),
            Var::EscapedRequestUri => out.extend(
                percent_encoding::utf8_percent_encode(self.request_uri, URI_COMPONENT)
                    .map(|s| s as &str),
            ),
            Var::Scheme => out.push_str(self.scheme_str()),
            Var::Uri => out.push_str(self.path),
            Var::Args => out.push_str(self.query.unwrap_or("")),
            Var::IsArgs => out.push_str(if self.query.is_some() { "?" } else { "" }),
            Var::RequestMethod => out.push_str(self.method.as_str()),
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.client);
            }
            Var::ServerPort => {
                let _ = write!(out, "{}", self.server_port);
            }
            Var::RemoteUser => out.push_str(&remote_user(self.headers).unwrap_or_default()),
            Var::Http(name) => {
                if let Some(v) = super::errors::joined(self.headers, name) {
                    out.push_str(&v);
                }
            }
            Var::Cookie(name) => {
                if let Some(v) = cookie(self.headers, name) {
                    out.push_str(v);
                }
            }
            Var::Arg(name) => {
                if let Some(v) = self.query.and_then(|q| arg(q, name)) {
                    out.push_str(v);
                }
            }
        }
    }
}

/// nginx's set-misc `set_escape_uri`: everything but letters, digits and `-._~`.
const URI_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `$remote_user`: the user name of a `Basic` `Authorization`.
fn remote_user(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(
        text.split_once(':')
            .map_or(text.as_str(), |(u, _)| u)
            .to_owned(),
    )
}

/// `$cookie_NAME`: the first cookie of that name (names compared without case, as
/// nginx does).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
}

/// `$arg_NAME`: the first query argument of that name.
fn arg<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// A string with nginx variables in it, from a fixed set: parsed once, filled in per
/// request. Nothing else is expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// The variables Portico fills in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Var {
    Host,
    HttpHost,
    BestHttpHost,
    RequestUri,
    EscapedRequestUri,
    /// `$scheme` and `$pass_access_scheme`.
    Scheme,
    Uri,
    /// `$args` and `$query_string`.
    Args,
    IsArgs,
    RequestMethod,
    RemoteAddr,
    RemoteUser,
    ServerPort,
    Http(HeaderName),
    Cookie(String),
    Arg(String),
}

/// A variable Portico does not fill in, or a `$` that starts none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("${0} is not a variable Portico expands (it knows $host, $http_host, $best_http_host, $request_uri, $escaped_request_uri, $scheme, $pass_access_scheme, $uri, $args, $query_string, $is_args, $request_method, $remote_addr, $remote_user, $server_port, $http_NAME, $cookie_NAME and $arg_NAME)")]
    Unknown(String),
    #[error("a $ that names no variable")]
    Empty,
}

impl Template {
    /// Reads `$name` and `${name}` as nginx does (a name is letters, digits and `_`).
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced.find('}').ok_or(TemplateError::Empty)?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                return Err(TemplateError::Empty);
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(Var::parse(name)?));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    /// A template of `s` as it is, `$` and all: for text known to hold none.
    pub fn literal(s: &str) -> Template {
        Template(vec![Piece::Lit(s.to_owned())])
    }

    /// Appends `other`.
    pub fn push(&mut self, other: Template) {
        self.0.extend(other.0);
    }

    pub fn has_vars(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Var(_)))
    }

    pub fn expand(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => vars.value(v, &mut out),
            }
        }
        out
    }
}

impl Var {
    fn parse(name: &str) -> Result<Var, TemplateError> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "host" => Var::Host,
            "http_host" => Var::HttpHost,
            "best_http_host" => Var::BestHttpHost,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            "scheme" | "pass_access_scheme" => Var::Scheme,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "request_method" => Var::RequestMethod,
            "remote_addr" => Var::RemoteAddr,
            "remote_user" => Var::RemoteUser,
            "server_port" => Var::ServerPort,
            _ => {
                if let Some(h) = lower.strip_prefix("http_").filter(|h| !h.is_empty()) {
                    let h = h.replace('_', "-");
                    let name = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| TemplateError::Unknown(name.to_owned()))?;
                    Var::Http(name)
                } else if let Some(c) = lower.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.to_owned())
                } else if let Some(a) = lower.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Var::Arg(a.to_owned())
                } else {
                    return Err(TemplateError::Unknown(name.to_owned()));
                }
            }
        })
    }
}

/// ingress-nginx's `buildAuthSignURL`: the sign-in URL, with
/// `PARAM=$pass_access_scheme://$http_host$escaped_request_uri` appended unless its
/// query already gives `PARAM` a value (`?` when it has no query argument, else `&`).
pub fn signin_url(signin: &str, param: Option<&str>) -> Result<Template, TemplateError> {
    let param = param.filter(|p| !p.is_empty()).unwrap_or("rd");
    let query = signin.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut pairs = query
        .split('&')
        .filter(|k| !k.is_empty() && !k.contains(';'))
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")));
    let mut any = false;
    let mut given = false;
    for (k, v) in pairs.by_ref() {
        any = true;
        let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        if key == param && !v.is_empty() {
            given = true;
        }
    }
    let mut t = Template::parse(signin)?;
    if given {
        return Ok(t);
    }
    let sep = if any { '&' } else { '?' };
    t.push(Template::literal(&format!("{sep}{param}=")));
    t.push(Template::parse(
        "$pass_access_scheme://$http_host$escaped_request_uri",
    )?);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn nginx_times_add_up_their_terms() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(nginx_time("1h"), secs(3600));
        assert_eq!(nginx_time("90"), secs(90));
        assert_eq!(nginx_time("1h 30m"), secs(5400));
        assert_eq!(nginx_time("1h30m5"), secs(5405));
        assert_eq!(nginx_time("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "h", "1x", "1h -1m", "1.5h", "99999999999999999999s"] {
            assert_eq!(nginx_time(bad), None, "{bad:?}");
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::post(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn vars<'a>(p: &'a Parts, request_uri: &'a str) -> Vars<'a> {
        Vars {
            scheme: Scheme::Https,
            host: "app.example.com",
            headers: &p.headers,
            request_uri,
            path: p.uri.path(),
            query: p.uri.query(),
            method: &p.method,
            client: "192.0.2.7".parse().unwrap(),
            forwarded_for: "192.0.2.7",
            server_port: 8443,
        }
    }

    fn auth(url: &str) -> ExternalAuth {
        ExternalAuth {
            url: Template::parse(url).unwrap(),
            method: None,
            signin: None,
            request_redirect: None,
            response_headers: vec![],
            always_set_cookie: false,
            cache: None,
            proxy_set_headers: None,
        }
    }

    #[test]
    fn auth_proxy_set_headers_come_last_expanded_and_empty_ones_are_left_out() {
        let p = parts(
            "/api?x=1",
            &[("host", "app.example.com"), ("x-drop", "client's")],
        );
        let v = vars(&p, "/api?x=1");
        let extra = AuthProxyHeaders(vec![
            (
                HeaderName::from_static("my-custom-header"),
                Template::literal("42"),
            ),
            (
                HeaderName::from_static("x-client"),
                Template::parse("ip=$remote_addr").unwrap(),
            ),
            // The ConfigMap's value replaces Portico's own.
            (
                HeaderName::from_static("x-sent-from"),
                Template::literal("portico"),
            ),
            (HeaderName::from_static("x-drop"), Template::literal("")),
        ]);
        let r = auth("http://a/check")
            .request(&p, &v, Some(&extra))
            .unwrap();
        let h = &r.headers;
        assert_eq!(h["my-custom-header"], "42");
        assert_eq!(h["x-client"], "ip=192.0.2.7");
        assert_eq!(h.get_all("x-sent-from").iter().count(), 1);
        assert_eq!(h["x-sent-from"], "portico");
        assert!(h.get("x-drop").is_none());
    }

    #[test]
    fn variables_expand_as_the_oauth2_proxy_example_uses_them() {
        let p = parts(
            "/a%20b/c?x=1&y=2",
            &[
                ("host", "App.example.com:8443"),
                ("cookie", "_oauth2_proxy=abc; o=1"),
            ],
        );
        let v = vars(&p, "/a%20b/c?x=1&y=2");
        let t = Template::parse("https://$host/oauth2/auth").unwrap();
        assert_eq!(t.expand(&v), "https://app.example.com/oauth2/auth");
        let t = Template::parse("https://$host/oauth2/start?rd=$escaped_request_uri").unwrap();
        assert_eq!(
            t.expand(&v),
            "https://app.example.com/oauth2/start?rd=%2Fa%2520b%2Fc%3Fx%3D1%26y%3D2"
        );
        let t = Template::parse(
            "${scheme}://$http_host$request_uri|$cookie__OAUTH2_PROXY|$arg_y|$http_cookie",
        )
        .unwrap();
        assert_eq!(
            t.expand(&v),
            "https://App.example.com:8443/a%20b/c?x=1&y=2|abc|2|_oauth2_proxy=abc; o=1"
        );
        assert_eq!(
            Template::parse("http://$hostname/x"),
            Err(TemplateError::Unknown("hostname".into()))
        );
        assert_eq!(Template::parse("http://a/$"), Err(TemplateError::Empty));
        assert!(!Template::parse("http://a/b").unwrap().has_vars());
    }

    #[test]
    fn signin_gets_the_redirect_parameter_as_ingress_nginx_builds_it() {
        let p = parts("/p?q=1", &[("host", "h.example")]);
        let v = vars(&p, "/p?q=1");
        let s = |url: &str, param: Option<&str>| signin_url(url, param).unwrap().expand(&v);
        assert_eq!(
            s("https://auth.example/start", None),
            "https://auth.example/start?rd=https://h.example%2Fp%3Fq%3D1"
        );
        assert_eq!(
            s("https://auth.example/start?a=b", Some("return_to")),
            "https://auth.example/start?a=b&return_to=https://h.example%2Fp%3Fq%3D1"
        );
        // The documented oauth2-proxy setup names rd itself.
        assert_eq!(
            s("https://$host/oauth2/start?rd=$escaped_request_uri", None),
            "https://app.example.com/oauth2/start?rd=%2Fp%3Fq%3D1"
        );
        // An empty rd is not a value: one more is appended.
        assert_eq!(
            s("https://a/s?rd=", None),
            "https://a/s?rd=&rd=https://h.example%2Fp%3Fq%3D1"
        );
    }

    #[test]
    fn the_auth_request_carries_the_headers_the_template_sets() {
        let p = parts(
            "/api?x=1",
            &[
                ("host", "app.example.com"),
                ("cookie", "session=1"),
                ("content-length", "5"),
                ("content-type", "text/plain"),
                ("x-forwarded-proto", "gopher"),
                ("x-request-id", "req-1"),
                ("connection", "keep-alive"),
            ],
        );
        let v = vars(&p, "/api?x=1");
        let a = auth("http://auth.example:9000/check?src=$host");
        let r = a.request(&p, &v, None).unwrap();
        assert_eq!(
            r.target,
            Target::Name {
                host: "auth.example".into(),
                port: 9000
            }
        );
        assert!(!r.tls);
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.uri, "/check?src=app.example.com");
        let h = &r.headers;
        assert_eq!(h["host"], "auth.example");
        assert_eq!(h["x-original-url"], "https://app.example.com/api?x=1");
        assert_eq!(h["x-original-method"], "POST");
        assert_eq!(h["x-sent-from"], "nginx-ingress-controller");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-auth-request-redirect"], "/api?x=1");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["cookie"], "session=1");
        assert_eq!(h["content-type"], "text/plain");
        for gone in [
            "content-length",
            "x-forwarded-proto",
            "connection",
            "x-original-uri",
            "x-scheme",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        // An explicit method adds X-Original-URI and X-Scheme.
        let mut a = auth("https://10.0.0.9/auth");
        a.method = Some(Method::POST);
        a.request_redirect = Some(HeaderValue::from_static("https://app.example.com/home"));
        let r = a.request(&p, &v, None).unwrap();
        assert_eq!(r.target, Target::Addr("10.0.0.9:443".parse().unwrap()));
        assert!(r.tls);
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.headers["x-original-uri"], "/api?x=1");
        assert_eq!(r.headers["x-scheme"], "https");
        assert_eq!(
            r.headers["x-auth-request-redirect"],
            "https://app.example.com/home"
        );
        assert!(auth("ftp://a/b").request(&p, &v, None).is_err());
    }

    #[test]
    fn the_answer_decides() {
        let p = parts("/x", &[("host", "h")]);
        let v = vars(&p, "/x");
        let mut a = auth("http://a/");
        a.response_headers = vec![
            HeaderName::from_static("x-auth-request-user"),
            HeaderName::from_static("x-auth-request-email"),
        ];
        let mut answer = HeaderMap::new();
        answer.insert("x-auth-request-user", HeaderValue::from_static("alice"));
        answer.insert("set-cookie", HeaderValue::from_static("s=1"));
        answer.insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"x\""),
        );
        match a.judge(StatusCode::ACCEPTED, &answer, &v) {
            Verdict::Allow { headers, cookies } => {
                assert_eq!(
                    headers,
                    vec![
                        (
                            HeaderName::from_static("x-auth-request-user"),
                            Some(HeaderValue::from_static("alice"))
                        ),
                        (HeaderName::from_static("x-auth-request-email"), None),
                    ]
                );
                let mut out = HeaderMap::new();
                cookies.apply(StatusCode::NOT_FOUND, &mut out);
                assert!(out.is_empty(), "not on a 404 without always");
                cookies.apply(StatusCode::OK, &mut out);
                assert_eq!(out["set-cookie"], "s=1");
            }
            Verdict::Deny(_) => panic!("2xx allows"),
        }
        let status =
            |a: &ExternalAuth, s: u16| match a.judge(StatusCode::from_u16(s).unwrap(), &answer, &v)
            {
                Verdict::Allow { .. } => (200, None, None),
                Verdict::Deny(r) => (
                    r.status().as_u16(),
                    r.headers().get("www-authenticate").cloned(),
                    r.headers().get("location").cloned(),
                ),
            };
        assert_eq!(status(&a, 401).0, 401);
        assert_eq!(status(&a, 401).1.unwrap(), "Basic realm=\"x\"");
        assert_eq!(status(&a, 403).0, 403);
        for other in [302, 404, 500, 503] {
            assert_eq!(status(&a, other).0, 500, "{other}");
        }
        a.signin = Some(signin_url("https://auth.example/start", None).unwrap());
        let (code, _, location) = status(&a, 401);
        assert_eq!(code, 302);
        assert_eq!(
            location.unwrap(),
            "https://auth.example/start?rd=https://h%2Fx"
        );
        // always: the cookie also rides on a refusal.
        a.always_set_cookie = true;
        match a.judge(StatusCode::FORBIDDEN, &answer, &v) {
            Verdict::Deny(r) => assert_eq!(r.headers()["set-cookie"], "s=1"),
            Verdict::Allow { .. } => panic!("403 refuses"),
        }
    }

    #[test]
    fn remote_user_is_the_basic_user() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic YWxpY2U6cHc="),
        );
        assert_eq!(remote_user(&h).as_deref(), Some("alice"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert_eq!(remote_user(&h), None);
    }

    #[test]
    fn cache_durations_as_proxy_cache_valid_reads_them() {
        let v = parse_cache_duration("200 202 401 5m").unwrap();
        assert_eq!(
            v,
            [CacheValid {
                codes: Some(vec![200, 202, 401]),
                ttl: Duration::from_secs(300)
            }]
        );
        assert_eq!(parse_cache_duration("").unwrap(), v, "the default");
        let v = parse_cache_duration("200 1h 30m, any 10s").unwrap();
        assert_eq!(v[0].ttl, Duration::from_secs(5400));
        assert_eq!(v[1].codes, None);
        assert_eq!(
            parse_cache_duration("5m").unwrap()[0].codes,
            Some(vec![200, 301, 302])
        );
        for bad in ["200", "5m 200", "200 5x", "200 five"] {
            assert!(parse_cache_duration(bad).is_err(), "{bad}");
        }
        let cache = AuthCache {
            key: Template::parse("$http_authorization").unwrap(),
            scope: "ns/web /".into(),
            valid: parse_cache_duration("200 202 401 5m").unwrap(),
        };
        let none = HeaderMap::new();
        assert_eq!(
            cache.ttl(StatusCode::OK, &none),
            Some(Duration::from_secs(300))
        );
        assert_eq!(cache.ttl(StatusCode::FORBIDDEN, &none), None);
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("max-age=7"));
        assert_eq!(cache.ttl(StatusCode::OK, &h), Some(Duration::from_secs(7)));
        h.insert("cache-control", HeaderValue::from_static("private"));
        assert_eq!(cache.ttl(StatusCode::OK, &h), None);
        let mut h = HeaderMap::new();
        h.insert("set-cookie", HeaderValue::from_static("a=1"));
        assert_eq!(cache.ttl(StatusCode::OK, &h), None);
    }
}
