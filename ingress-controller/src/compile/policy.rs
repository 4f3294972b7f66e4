//! An Ingress path's [`RoutePolicy`]: its annotations over the global defaults.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use ipnet::IpNet;
use proxy_core::config::Timeouts;
use proxy_core::pipeline::{
    AppRoot, BasicAuth, BodyLimit, DigestAuth, ErrorPages, Refuse, RequestFilter, Rewrite,
    RoutePolicy, SatisfyAny, SourceRanges, SslRedirect, UpstreamHeaders, UrlRedirect, UserAuth,
};

use super::annotations::IngressAnnotations;
use super::security::Ranges;

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
    /// `global-auth-url`, not implemented: every path of an Ingress that does not set
    /// `enable-global-auth: "false"` is refused.
    pub global_auth_refused: Option<Arc<str>>,
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
            global_auth_refused: None,
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
    let global_auth = defaults
        .global_auth_refused
        .as_ref()
        .filter(|_| ann.security.global_auth);
    let refused = match &ranges {
        Err(why) => Some(why.clone()),
        Ok(_) if !ann.security.refused.is_empty() => Some(ann.security.refused.join("; ").into()),
        Ok(_) => defaults.refused.clone().or_else(|| global_auth.cloned()),
    };
    if let Some(why) = refused {
        return RoutePolicy {
            timeouts,
            request: vec![RequestFilter::Refuse(Refuse(why))],
            ..RoutePolicy::default()
        };
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
    let ssl_redirect = ann.ssl_redirect.unwrap_or(defaults.ssl_redirect);
    if (ssl_redirect && covered) || ann.force_ssl_redirect {
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
        affinity,
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
        response_edits: None,
    }
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
    Some(ErrorPages::new(
        codes.iter().copied(),
        ann.default_backend.clone(),
    ))
}

/// Whether paths of one Ingress can share one policy: only the affinity cookie's path
/// differs between them, and only when the annotations leave it to the rule path.
pub fn shared_across_paths(ann: &IngressAnnotations) -> bool {
    ann.affinity.as_ref().is_none_or(|a| a.path.is_some())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proxy_core::balance::CookieAffinity;

    use super::*;

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
        assert!(!shared_across_paths(&ann));
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
}
