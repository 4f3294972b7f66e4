//! An Ingress path's [`RoutePolicy`]: its annotations over the global defaults.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use ipnet::IpNet;
use proxy_core::config::Timeouts;
use proxy_core::pipeline::{
    AppRoot, BasicAuth, BodyLimit, ClientCertAuth, DigestAuth, ErrorPages, ExternalAuth, LimitRate,
    Rate, RateLimit, Refuse, RequestFilter, Rewrite, RoutePolicy, SatisfyAny, SourceRanges,
    SslRedirect, UpstreamHeaders, UrlRedirect, UserAuth,
};

use super::annotations::IngressAnnotations;
use super::security::Ranges;
use super::upstream::{self, UpstreamDefaults};

/// A ConfigMap source range list (`whitelist-source-range`, `denylist-source-range`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobalRanges {
    Ranges(Vec<IpNet>),
    /// The value could not be read: every path that would use it is refused, with this
    /// reason, rather than served without it.
    Broken(Arc<str>),
}

impl Default for GlobalRanges {
    fn default() -> Self {
        GlobalRanges::Ranges(Vec::new())
    }
}

/// The ConfigMap's `global-auth-url` and its companions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GlobalAuth {
    #[default]
    Off,
    On(Arc<ExternalAuth>),
    /// A key could not be read: every path it would guard is refused, with this reason.
    Broken(Arc<str>),
}

/// What a path gets when its Ingress's annotations say nothing: the global settings,
/// with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDefaults {
    pub timeouts: Timeouts,
    /// `proxy-body-size`; `None` is no limit.
    pub body_size: Option<u64>,
    /// `ssl-redirect`.
    pub ssl_redirect: bool,
    /// `proxy-request-buffering`.
    pub request_buffering: bool,
    /// `client-body-buffer-size`.
    pub body_buffer_size: u64,
    /// `preserve-trailing-slash`.
    pub preserve_trailing_slash: bool,
    /// `use-port-in-redirects`.
    pub use_port_in_redirects: bool,
    /// `http-redirect-code`: the code of HTTPS and `www` redirects.
    pub http_redirect_code: StatusCode,
    /// `custom-http-errors`: codes answered by the global default backend's error pages.
    pub custom_http_errors: Vec<u16>,
    /// `whitelist-source-range`: for paths without their own allowlist.
    pub allow_source_range: GlobalRanges,
    /// `denylist-source-range`: for paths without their own denylist.
    pub deny_source_range: GlobalRanges,
    /// ConfigMap security settings Portico does not implement: every path is refused.
    pub refused: Option<Arc<str>>,
    /// `limit-rate` and `limit-rate-after`, in KiB.
    pub limit_rate: u64,
    pub limit_rate_after: u64,
    /// `limit-req-status-code`.
    pub limit_req_status: StatusCode,
    /// `limit-conn-status-code`.
    pub limit_conn_status: StatusCode,
    /// `global-auth-url`: for every path of an Ingress without `auth-url` that does not
    /// set `enable-global-auth: "false"`, but those under `no_auth_locations`.
    pub global_auth: GlobalAuth,
    /// `no-auth-locations`: path prefixes the global auth leaves alone.
    pub no_auth_locations: Vec<String>,
    /// `load-balance`, `proxy-next-upstream*`, `disable-proxy-intercept-errors`.
    pub upstream: UpstreamDefaults,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            body_size: Some(1 << 20),
            ssl_redirect: true,
            request_buffering: true,
            body_buffer_size: 8 << 10,
            preserve_trailing_slash: false,
            use_port_in_redirects: false,
            http_redirect_code: StatusCode::PERMANENT_REDIRECT,
            custom_http_errors: Vec::new(),
            allow_source_range: GlobalRanges::default(),
            deny_source_range: GlobalRanges::default(),
            refused: None,
            limit_rate: 0,
            limit_rate_after: 0,
            limit_req_status: StatusCode::SERVICE_UNAVAILABLE,
            limit_conn_status: StatusCode::SERVICE_UNAVAILABLE,
            global_auth: GlobalAuth::Off,
            no_auth_locations: vec!["/.well-known/acme-challenge".to_owned()],
            upstream: UpstreamDefaults::default(),
        }
    }
}

/// The policy of the paths of one Ingress on one host. `covered`: TLS covers the host,
/// so `ssl-redirect` applies. `path`: the rule path, the affinity cookie's default
/// `Path` as ingress-nginx sets it (the location's path). `rewrite`: the path's
/// `rewrite-target`, built from its regex.
pub fn route_policy(
    ann: &IngressAnnotations,
    defaults: &PolicyDefaults,
    covered: bool,
    path: &str,
    rewrite: Option<Rewrite>,
) -> RoutePolicy {
    let timeouts = Timeouts {
        connect: ann.connect_timeout.unwrap_or(defaults.timeouts.connect),
        read: ann.read_timeout.unwrap_or(defaults.timeouts.read),
        send: ann.send_timeout.unwrap_or(defaults.timeouts.send),
    };
    let mut request = Vec::new();
    let ranges = source_ranges(ann, defaults);
    // A security setting that cannot be honoured: the path answers 503 and does nothing
    // else, as ingress-nginx's denied location.
    // ingress-nginx's `shouldApplyGlobalAuth` and `no-auth-locations` (by prefix).
    let global_auth = Some(&defaults.global_auth).filter(|_| {
        ann.security.global_auth
            && ann.security.external_auth.is_none()
            && !defaults
                .no_auth_locations
                .iter()
                .any(|l| path.starts_with(l.as_str()))
    });
    let refused = match &ranges {
        Err(why) => Some(why.clone()),
        Ok(_) if !ann.security.refused.is_empty() => Some(ann.security.refused.join("; ").into()),
        Ok(_) => defaults.refused.clone().or_else(|| match global_auth {
            Some(GlobalAuth::Broken(why)) => Some(why.clone()),
            _ => None,
        }),
    };
    if let Some(why) = refused {
        return RoutePolicy {
            timeouts,
            request: vec![RequestFilter::Refuse(Refuse(why))],
            ..RoutePolicy::default()
        };
    }
    let ssl_redirect = ann.ssl_redirect.unwrap_or(defaults.ssl_redirect);
    let http_redirects = (ssl_redirect && covered) || ann.force_ssl_redirect;
    // nginx judges a client certificate when the request arrives, before any phase.
    if ann.security.client_tls.is_some() {
        request.push(RequestFilter::ClientCert(ClientCertAuth {
            http_redirects,
            inherited: false,
            owner: None,
        }));
    }
    // nginx's phases: the location's rewrite-phase `return`s (app-root, the CORS
    // preflight, the fixed redirect), the Lua HTTPS redirect, then the access phase.
    if let Some(root) = &ann.app_root {
        request.push(RequestFilter::AppRoot(AppRoot(root.clone())));
    }
    if let Some(cors) = &ann.cors {
        request.push(RequestFilter::Cors(Box::new(cors.clone())));
    }
    if let Some(r) = &ann.redirect {
        // Both were validated by their parsers; a failure here leaves the route as is.
        if let (Ok(code), Ok(url)) = (StatusCode::from_u16(r.code), HeaderValue::from_str(&r.url)) {
            request.push(RequestFilter::UrlRedirect(UrlRedirect { code, url }));
        }
    }
    // ingress-nginx sets `X-Forwarded-Prefix` only beside a rewrite (its proxy_pass
    // template writes the header in the rewrite branch alone).
    let forwarded_prefix = ann
        .x_forwarded_prefix
        .as_deref()
        .filter(|_| rewrite.is_some())
        .and_then(|v| HeaderValue::from_str(v).ok());
    let upstream_headers = UpstreamHeaders {
        host: ann
            .upstream_vhost
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok()),
        forwarded_prefix,
        edits: None,
    };
    // Recorded here, applied once the filters are done: the HTTPS redirect keeps the
    // request's own URI, as ingress-nginx's does.
    if let Some(rewrite) = rewrite {
        request.push(RequestFilter::Rewrite(rewrite));
    }
    if http_redirects {
        request.push(RequestFilter::SslRedirect(SslRedirect {
            code: defaults.http_redirect_code,
            preserve_trailing_slash: ann
                .preserve_trailing_slash
                .unwrap_or(defaults.preserve_trailing_slash),
            use_port: ann
                .use_port_in_redirects
                .unwrap_or(defaults.use_port_in_redirects),
        }));
    }
    // nginx's preaccess phase: limit_req, then limit_conn.
    if let Some(l) = &ann.security.limits {
        let rate = |limit| Rate {
            limit,
            burst_multiplier: l.burst_multiplier,
        };
        request.push(RequestFilter::RateLimit(Box::new(RateLimit {
            zone: l.zone.clone(),
            rps: l.rps.map(rate),
            rpm: l.rpm.map(rate),
            connections: l.connections,
            allow: l.allow.clone(),
            req_status: defaults.limit_req_status,
            conn_status: defaults.limit_conn_status,
        })));
    }
    let ranges = ranges.ok().flatten();
    // The realm was validated by its parser.
    let auth = ann.security.basic_auth.as_ref().and_then(|a| {
        if a.digest {
            Some(UserAuth::Digest(DigestAuth {
                realm: a.realm.as_str().into(),
                users: a.users_key(),
            }))
        } else {
            BasicAuth::new(&a.realm, a.users_key())
                .ok()
                .map(UserAuth::Basic)
        }
    });
    match (ranges, auth) {
        (Some(ranges), Some(auth)) if ann.security.satisfy_any => {
            request.push(RequestFilter::SatisfyAny(Box::new(SatisfyAny {
                ranges,
                auth,
            })));
        }
        (ranges, auth) => {
            request.extend(ranges.map(RequestFilter::SourceRanges));
            request.extend(auth.map(|a| match a {
                UserAuth::Basic(f) => RequestFilter::BasicAuth(f),
                UserAuth::Digest(f) => RequestFilter::DigestAuth(f),
            }));
        }
    }
    // nginx's `auth_request` runs after `allow`/`deny` and `auth_basic` in the access
    // phase. With `satisfy: any` it is still required (stricter than nginx).
    let external_auth = ann.security.external_auth.clone().or(match global_auth {
        Some(GlobalAuth::On(auth)) => Some(auth.clone()),
        _ => None,
    });
    if let Some(auth) = external_auth {
        // nginx keeps cached answers per location: the rule path joins the scope.
        let auth = match &auth.cache {
            Some(c) => {
                let scope = format!("{} {path}", c.scope);
                super::security::with_cache_scope(auth.clone(), &scope)
            }
            None => auth,
        };
        request.push(RequestFilter::ExternalAuth(auth));
    }
    if let Some(limit) = ann.body_size.unwrap_or(defaults.body_size) {
        request.push(RequestFilter::BodyLimit(BodyLimit(limit)));
    }
    let affinity = ann.affinity.clone().map(|mut a| {
        if a.path.is_none() {
            a.path = Some(path.into());
        }
        a
    });
    let buffer_body = ann
        .request_buffering
        .unwrap_or(defaults.request_buffering)
        .then(|| ann.body_buffer_size.unwrap_or(defaults.body_buffer_size))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    RoutePolicy {
        timeouts,
        protocol: ann.backend_protocol,
        upstream_tls: ann.proxy_ssl.as_ref().map(|p| p.key().into()),
        backend_client_cert: None,
        affinity,
        balance: upstream::balance(&ann.upstream, &defaults.upstream),
        next_upstream: upstream::next_upstream(&ann.upstream, &defaults.upstream),
        request,
        buffer_body,
        canary: None,
        upstream_headers,
        errors: error_pages(ann, defaults),
        response_headers: ann
            .custom_headers
            .as_ref()
            .filter(|_| ann.canary.is_none())
            .map(|k| k.to_string().into()),
        limit_rate: limit_rate(ann, defaults),
        response_edits: None,
        weighted: None,
        mirrors: None,
    }
}

/// `policy` with the client-certificate checks first, for a path of a host whose
/// client certificates another Ingress asked for. A refused policy, or one that checks
/// already, is kept as it is.
pub fn with_client_cert(policy: &Arc<RoutePolicy>) -> Arc<RoutePolicy> {
    let done = policy
        .request
        .iter()
        .any(|f| matches!(f, RequestFilter::ClientCert(_) | RequestFilter::Refuse(_)));
    if done {
        return policy.clone();
    }
    let http_redirects = policy
        .request
        .iter()
        .any(|f| matches!(f, RequestFilter::SslRedirect(_)));
    let mut p = RoutePolicy::clone(policy);
    p.request.insert(
        0,
        RequestFilter::ClientCert(ClientCertAuth {
            http_redirects,
            inherited: true,
            owner: None,
        }),
    );
    Arc::new(p)
}

/// `limit-rate` over `limit-rate-after` (the Ingress's, else the ConfigMap's), in bytes.
fn limit_rate(ann: &IngressAnnotations, defaults: &PolicyDefaults) -> Option<LimitRate> {
    let rate = ann.limit_rate.unwrap_or(defaults.limit_rate);
    let after = ann.limit_rate_after.unwrap_or(defaults.limit_rate_after);
    (rate > 0).then_some(LimitRate {
        rate: rate << 10,
        after: after << 10,
    })
}

/// The path's source ranges: the Ingress's lists, else the ConfigMap's. `None` when both
/// are empty; `Err` when a ConfigMap list it would use is broken.
fn source_ranges(
    ann: &IngressAnnotations,
    defaults: &PolicyDefaults,
) -> Result<Option<SourceRanges>, Arc<str>> {
    let pick = |own: &Ranges, global: &GlobalRanges| match (own, global) {
        (Ranges::Set(nets), _) => Ok(nets.clone()),
        (Ranges::Default, GlobalRanges::Ranges(nets)) => Ok(nets.clone()),
        (Ranges::Default, GlobalRanges::Broken(why)) => Err(why.clone()),
    };
    let allow = pick(&ann.security.allow, &defaults.allow_source_range)?;
    let deny = pick(&ann.security.deny, &defaults.deny_source_range)?;
    if allow.is_empty() && deny.is_empty() {
        return Ok(None);
    }
    Ok(Some(SourceRanges { deny, allow }))
}

/// `custom-http-errors` (the Ingress's codes, else the ConfigMap's: an annotation
/// replaces the global list, as a location's `error_page` replaces the server's in
/// nginx) and `default-backend`. `None` when neither asks for anything.
pub fn error_pages(ann: &IngressAnnotations, defaults: &PolicyDefaults) -> Option<ErrorPages> {
    let codes = ann
        .custom_http_errors
        .as_deref()
        .unwrap_or(&defaults.custom_http_errors);
    if codes.is_empty() && ann.default_backend.is_none() {
        return None;
    }
    let mut pages = ErrorPages::new(codes.iter().copied(), ann.default_backend.clone());
    // ingress-nginx writes the location's `proxy_intercept_errors` only beside its own
    // `custom-http-errors`; a location without them inherits the server's, which only
    // the ConfigMap's key turns off.
    pages.pass_upstream = match ann.custom_http_errors {
        Some(_) => ann
            .upstream
            .disable_intercept
            .unwrap_or(defaults.upstream.disable_intercept),
        None => defaults.upstream.disable_intercept,
    };
    Some(pages)
}

/// `policy`, made by [`route_policy`] without a rewrite, with `rewrite` where
/// [`route_policy`] puts one (after the rewrite-phase returns, before the HTTPS redirect)
/// and the `X-Forwarded-Prefix` that comes with it. For a location that only ingress-nginx's
/// path normalization makes a rewrite of, after canaries and the host's app-root were
/// added to `policy`. A refused route stays refused.
pub fn with_rewrite(
    policy: &RoutePolicy,
    ann: &IngressAnnotations,
    rewrite: Rewrite,
) -> RoutePolicy {
    let mut p = policy.clone();
    if p.request
        .iter()
        .any(|f| matches!(f, RequestFilter::Refuse(_)))
    {
        return p;
    }
    let at = p
        .request
        .iter()
        .position(|f| {
            !matches!(
                f,
                RequestFilter::AppRoot(_) | RequestFilter::Cors(_) | RequestFilter::UrlRedirect(_)
            )
        })
        .unwrap_or(p.request.len());
    p.request.insert(at, RequestFilter::Rewrite(rewrite));
    p.upstream_headers.forwarded_prefix = ann
        .x_forwarded_prefix
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok());
    p
}

/// Whether paths of one Ingress can share one policy: only the affinity cookie's path
/// and the global auth's `no-auth-locations` differ between them, and only when the
/// annotations leave the cookie's to the rule path or the global auth is in force.
pub fn shared_across_paths(ann: &IngressAnnotations, defaults: &PolicyDefaults) -> bool {
    let cached = |a: &ExternalAuth| a.cache.is_some();
    ann.affinity.as_ref().is_none_or(|a| a.path.is_some())
        && (defaults.global_auth == GlobalAuth::Off || defaults.no_auth_locations.is_empty())
        && !ann.security.external_auth.as_deref().is_some_and(cached)
        && !matches!(&defaults.global_auth, GlobalAuth::On(a) if cached(a))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proxy_core::balance::CookieAffinity;

    use super::*;

    #[test]
    fn a_rewrite_added_later_lands_where_route_policy_puts_it() {
        let defaults = PolicyDefaults::default();
        let ann = IngressAnnotations {
            app_root: Some("/app".into()),
            x_forwarded_prefix: Some("/prefix".into()),
            upstream_vhost: Some("internal".into()),
            ..IngressAnnotations::default()
        };
        let rewrite = Rewrite::new("/keep/", "/keep").unwrap();
        for covered in [false, true] {
            let plain = route_policy(&ann, &defaults, covered, "/keep", None);
            let direct = route_policy(&ann, &defaults, covered, "/keep", Some(rewrite.clone()));
            assert_ne!(plain, direct);
            assert_eq!(with_rewrite(&plain, &ann, rewrite.clone()), direct);
        }
    }

    #[test]
    fn annotations_override_defaults_and_redirect_follows_tls() {
        let defaults = PolicyDefaults::default();
        let plain = route_policy(&IngressAnnotations::default(), &defaults, false, "/", None);
        assert_eq!(plain.timeouts, Timeouts::default());
        assert_eq!(
            plain.request,
            vec![RequestFilter::BodyLimit(BodyLimit(1 << 20))]
        );
        assert_eq!(plain.affinity, None);
        assert_eq!(plain.buffer_body, Some(8192));

        let covered = route_policy(&IngressAnnotations::default(), &defaults, true, "/", None);
        assert_eq!(
            covered.request[0],
            RequestFilter::SslRedirect(SslRedirect::default())
        );

        let ann = IngressAnnotations {
            read_timeout: Some(Duration::from_secs(5)),
            body_size: Some(None),
            ssl_redirect: Some(false),
            affinity: Some(CookieAffinity::default()),
            request_buffering: Some(false),
            ..IngressAnnotations::default()
        };
        let p = route_policy(&ann, &defaults, true, "/app", None);
        assert_eq!(p.buffer_body, None);
        assert_eq!(p.timeouts.read, Duration::from_secs(5));
        assert_eq!(p.timeouts.send, Duration::from_secs(60));
        assert!(p.request.is_empty());
        assert_eq!(p.affinity.unwrap().path.as_deref(), Some("/app"));
        assert!(!shared_across_paths(&ann, &defaults));
        let forced = IngressAnnotations {
            force_ssl_redirect: true,
            ..IngressAnnotations::default()
        };
        let p = route_policy(&forced, &defaults, false, "/", None);
        assert_eq!(
            p.request[0],
            RequestFilter::SslRedirect(SslRedirect::default())
        );
    }

    #[test]
    fn limit_rate_in_kib_over_the_configmap_default() {
        let defaults = PolicyDefaults::default();
        let none = route_policy(&IngressAnnotations::default(), &defaults, false, "/", None);
        assert_eq!(none.limit_rate, None);
        let ann = IngressAnnotations {
            limit_rate: Some(100),
            ..IngressAnnotations::default()
        };
        let global = PolicyDefaults {
            limit_rate_after: 1024,
            ..PolicyDefaults::default()
        };
        assert_eq!(
            route_policy(&ann, &global, false, "/", None).limit_rate,
            Some(LimitRate {
                rate: 100 << 10,
                after: 1 << 20
            })
        );
        // `limit-rate: 0` on the Ingress turns a global one off; `after` alone is nothing.
        let off = IngressAnnotations {
            limit_rate: Some(0),
            ..IngressAnnotations::default()
        };
        let global = PolicyDefaults {
            limit_rate: 8,
            ..PolicyDefaults::default()
        };
        assert_eq!(
            route_policy(&off, &global, false, "/", None).limit_rate,
            None
        );
        assert!(
            route_policy(&IngressAnnotations::default(), &global, false, "/", None)
                .limit_rate
                .is_some()
        );
        assert_eq!(super::super::annotations::parse_kib("-5"), Ok(0));
        assert!(super::super::annotations::parse_kib("5k").is_err());
    }

    #[test]
    fn forwarded_prefix_only_beside_a_rewrite() {
        let ann = IngressAnnotations {
            upstream_vhost: Some("internal.myservice.com".into()),
            x_forwarded_prefix: Some("/path".into()),
            ..IngressAnnotations::default()
        };
        let defaults = PolicyDefaults::default();
        let plain = route_policy(&ann, &defaults, false, "/", None);
        assert_eq!(
            plain.upstream_headers,
            UpstreamHeaders {
                host: Some(HeaderValue::from_static("internal.myservice.com")),
                forwarded_prefix: None,
                edits: None,
            }
        );
        let rewrite = Rewrite::new("/something(/|$)(.*)", "/$2").unwrap();
        let rewritten = route_policy(&ann, &defaults, false, "/", Some(rewrite));
        assert_eq!(
            rewritten.upstream_headers.forwarded_prefix,
            Some(HeaderValue::from_static("/path"))
        );
    }

    #[test]
    fn redirects_come_in_ingress_nginx_order_with_their_settings() {
        let defaults = PolicyDefaults {
            use_port_in_redirects: true,
            http_redirect_code: StatusCode::MOVED_PERMANENTLY,
            ..PolicyDefaults::default()
        };
        let ann = IngressAnnotations {
            app_root: Some("/app1".into()),
            redirect: Some(super::super::annotations::FixedRedirect {
                url: "https://www.google.com".into(),
                code: 308,
            }),
            preserve_trailing_slash: Some(true),
            ..IngressAnnotations::default()
        };
        let p = route_policy(&ann, &defaults, true, "/", None);
        assert_eq!(
            p.request[..3],
            [
                RequestFilter::AppRoot(AppRoot("/app1".into())),
                RequestFilter::UrlRedirect(UrlRedirect {
                    code: StatusCode::PERMANENT_REDIRECT,
                    url: HeaderValue::from_static("https://www.google.com"),
                }),
                RequestFilter::SslRedirect(SslRedirect {
                    code: StatusCode::MOVED_PERMANENTLY,
                    preserve_trailing_slash: true,
                    use_port: true,
                }),
            ]
        );
        // The annotation overrides the ConfigMap for its Ingress only.
        let off = IngressAnnotations {
            use_port_in_redirects: Some(false),
            ..IngressAnnotations::default()
        };
        let p = route_policy(&off, &defaults, true, "/", None);
        assert_eq!(
            p.request[0],
            RequestFilter::SslRedirect(SslRedirect {
                code: StatusCode::MOVED_PERMANENTLY,
                preserve_trailing_slash: false,
                use_port: false,
            })
        );
    }

    #[test]
    fn error_pages_take_the_annotation_over_the_configmap() {
        let defaults = PolicyDefaults {
            custom_http_errors: vec![404, 503],
            ..PolicyDefaults::default()
        };
        let none = route_policy(
            &IngressAnnotations::default(),
            &PolicyDefaults::default(),
            false,
            "/",
            None,
        );
        assert_eq!(none.errors, None, "nothing asked, nothing to do");
        let global = route_policy(&IngressAnnotations::default(), &defaults, false, "/", None);
        assert_eq!(global.errors, Some(ErrorPages::new([404, 503], None)));
        let own = proxy_core::config::BackendId::new("ns", "errors", "(first)");
        let ann = IngressAnnotations {
            custom_http_errors: Some(vec![500]),
            default_backend: Some(own.clone()),
            ..IngressAnnotations::default()
        };
        let p = route_policy(&ann, &defaults, false, "/", None);
        assert_eq!(p.errors, Some(ErrorPages::new([500], Some(own.clone()))));
        // A default backend alone still takes requests while the Service has no endpoint.
        let ann = IngressAnnotations {
            default_backend: Some(own.clone()),
            ..IngressAnnotations::default()
        };
        let p = route_policy(&ann, &PolicyDefaults::default(), false, "/", None);
        assert_eq!(p.errors, Some(ErrorPages::new([], Some(own))));
    }

    #[test]
    fn security_filters_in_nginx_phase_order_and_refusal_replaces_everything() {
        use super::super::security::{BasicAuthAnnotations, Ranges, SecurityAnnotations};
        use crate::store::ObjectKey;
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let ann = IngressAnnotations {
            app_root: Some("/app".into()),
            security: SecurityAnnotations {
                allow: Ranges::Set(vec![net("10.0.0.0/8")]),
                basic_auth: Some(BasicAuthAnnotations {
                    digest: false,
                    secret: ObjectKey::new("ns", "users"),
                    map: false,
                    realm: "r".into(),
                    field: "x".into(),
                }),
                ..SecurityAnnotations::default()
            },
            ..IngressAnnotations::default()
        };
        let defaults = PolicyDefaults {
            deny_source_range: GlobalRanges::Ranges(vec![net("10.1.0.0/16")]),
            ..PolicyDefaults::default()
        };
        let p = route_policy(&ann, &defaults, true, "/", None);
        let kinds: Vec<&str> = p
            .request
            .iter()
            .map(|f| match f {
                RequestFilter::AppRoot(_) => "app-root",
                RequestFilter::SslRedirect(_) => "ssl-redirect",
                RequestFilter::SourceRanges(_) => "ranges",
                RequestFilter::BasicAuth(_) => "basic",
                RequestFilter::BodyLimit(_) => "body",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["app-root", "ssl-redirect", "ranges", "basic", "body"]
        );
        assert_eq!(
            p.request[2],
            RequestFilter::SourceRanges(SourceRanges {
                deny: vec![net("10.1.0.0/16")],
                allow: vec![net("10.0.0.0/8")],
            })
        );
        // `auth-url` last in the access phase, before the body-size check.
        let mut ext = ann.clone();
        ext.security.external_auth = Some(Arc::new(proxy_core::pipeline::ExternalAuth {
            url: proxy_core::pipeline::Template::parse("http://auth/check").unwrap(),
            method: None,
            signin: None,
            request_redirect: None,
            response_headers: vec![],
            always_set_cookie: false,
            cache: None,
            proxy_set_headers: None,
        }));
        let p = route_policy(&ext, &defaults, false, "/", None);
        assert!(
            matches!(
                &p.request[..],
                [
                    RequestFilter::AppRoot(_),
                    RequestFilter::SourceRanges(_),
                    RequestFilter::BasicAuth(_),
                    RequestFilter::ExternalAuth(_),
                    RequestFilter::BodyLimit(_)
                ]
            ),
            "{:?}",
            p.request
        );
        // `satisfy: any`: one filter for both.
        let mut any = ann.clone();
        any.security.satisfy_any = true;
        let p = route_policy(&any, &defaults, false, "/", None);
        assert!(
            matches!(p.request[1], RequestFilter::SatisfyAny(_)),
            "{:?}",
            p.request
        );
        assert_eq!(p.request.len(), 3);
        // The Ingress's own list replaces the ConfigMap's.
        let own_deny = IngressAnnotations {
            security: SecurityAnnotations {
                deny: Ranges::Set(vec![net("192.0.2.0/24")]),
                ..SecurityAnnotations::default()
            },
            ..IngressAnnotations::default()
        };
        let p = route_policy(&own_deny, &defaults, false, "/", None);
        assert!(p
            .request
            .contains(&RequestFilter::SourceRanges(SourceRanges {
                deny: vec![net("192.0.2.0/24")],
                allow: vec![],
            })));
        // Refused: one filter, nothing else.
        let refused = IngressAnnotations {
            security: SecurityAnnotations {
                refused: vec!["Ingress ns/a: annotation auth-url: not implemented".into()],
                ..SecurityAnnotations::default()
            },
            ..ann.clone()
        };
        let p = route_policy(&refused, &defaults, true, "/", None);
        assert_eq!(p.request.len(), 1);
        assert!(matches!(&p.request[0], RequestFilter::Refuse(r) if r.0.contains("auth-url")));
        // A broken ConfigMap list refuses the paths that would use it, and only those.
        let broken = PolicyDefaults {
            allow_source_range: GlobalRanges::Broken(
                "ConfigMap x key whitelist-source-range: bad".into(),
            ),
            ..PolicyDefaults::default()
        };
        let p = route_policy(&IngressAnnotations::default(), &broken, false, "/", None);
        assert!(matches!(&p.request[..], [RequestFilter::Refuse(_)]));
        let p = route_policy(&ann, &broken, false, "/", None);
        assert!(!p
            .request
            .iter()
            .any(|f| matches!(f, RequestFilter::Refuse(_))));
    }

    #[test]
    fn global_auth_guards_paths_without_their_own_but_the_opted_out_and_the_exempt() {
        use super::super::security::SecurityAnnotations;
        let global = Arc::new(ExternalAuth {
            url: proxy_core::pipeline::Template::parse("http://global/check").unwrap(),
            method: None,
            signin: None,
            request_redirect: None,
            response_headers: vec![],
            always_set_cookie: false,
            cache: None,
            proxy_set_headers: None,
        });
        let defaults = PolicyDefaults {
            global_auth: GlobalAuth::On(global.clone()),
            ..PolicyDefaults::default()
        };
        let auth_of = |ann: &IngressAnnotations, d: &PolicyDefaults, path: &str| {
            route_policy(ann, d, false, path, None)
                .request
                .iter()
                .find_map(|f| match f {
                    RequestFilter::ExternalAuth(a) => Some(a.clone()),
                    _ => None,
                })
        };
        let plain = IngressAnnotations::default();
        assert_eq!(auth_of(&plain, &defaults, "/app"), Some(global.clone()));
        assert_eq!(
            auth_of(&plain, &defaults, "/.well-known/acme-challenge/x"),
            None,
            "no-auth-locations"
        );
        assert!(!shared_across_paths(&plain, &defaults));
        let opted_out = IngressAnnotations {
            security: SecurityAnnotations {
                global_auth: false,
                ..SecurityAnnotations::default()
            },
            ..IngressAnnotations::default()
        };
        assert_eq!(auth_of(&opted_out, &defaults, "/app"), None);
        // An Ingress's own auth-url wins.
        let own = Arc::new(ExternalAuth {
            url: proxy_core::pipeline::Template::parse("http://own/check").unwrap(),
            ..(*global).clone()
        });
        let with_own = IngressAnnotations {
            security: SecurityAnnotations {
                external_auth: Some(own.clone()),
                ..SecurityAnnotations::default()
            },
            ..IngressAnnotations::default()
        };
        assert_eq!(auth_of(&with_own, &defaults, "/app"), Some(own));
        // Broken: refused, but not where it would not apply.
        let broken = PolicyDefaults {
            global_auth: GlobalAuth::Broken("ConfigMap x key global-auth-url: bad".into()),
            ..PolicyDefaults::default()
        };
        let p = route_policy(&plain, &broken, false, "/", None);
        assert!(matches!(&p.request[..], [RequestFilter::Refuse(_)]));
        let p = route_policy(&opted_out, &broken, false, "/", None);
        assert!(!matches!(&p.request[..], [RequestFilter::Refuse(_)]));
    }
}
