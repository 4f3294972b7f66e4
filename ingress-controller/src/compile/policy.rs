//! An Ingress path's [`RoutePolicy`]: its annotations over the global defaults.

use proxy_core::config::Timeouts;
use proxy_core::pipeline::{BodyLimit, RequestFilter, RoutePolicy, SslRedirect};

use super::annotations::IngressAnnotations;

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
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            body_size: Some(1 << 20),
            ssl_redirect: true,
            request_buffering: true,
            body_buffer_size: 8 << 10,
        }
    }
}

/// The policy of the paths of one Ingress on one host. `covered`: TLS covers the host,
/// so `ssl-redirect` applies. `path`: the rule path, the affinity cookie's default
/// `Path` as ingress-nginx sets it (the location's path).
pub fn route_policy(
    ann: &IngressAnnotations,
    defaults: &PolicyDefaults,
    covered: bool,
    path: &str,
) -> RoutePolicy {
    let timeouts = Timeouts {
        connect: ann.connect_timeout.unwrap_or(defaults.timeouts.connect),
        read: ann.read_timeout.unwrap_or(defaults.timeouts.read),
        send: ann.send_timeout.unwrap_or(defaults.timeouts.send),
    };
    let mut request = Vec::new();
    let ssl_redirect = ann.ssl_redirect.unwrap_or(defaults.ssl_redirect);
    if (ssl_redirect && covered) || ann.force_ssl_redirect {
        request.push(RequestFilter::SslRedirect(SslRedirect::default()));
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
        affinity,
        request,
        buffer_body,
    }
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
        let plain = route_policy(&IngressAnnotations::default(), &defaults, false, "/");
        assert_eq!(plain.timeouts, Timeouts::default());
        assert_eq!(
            plain.request,
            vec![RequestFilter::BodyLimit(BodyLimit(1 << 20))]
        );
        assert_eq!(plain.affinity, None);
        assert_eq!(plain.buffer_body, Some(8192));

        let covered = route_policy(&IngressAnnotations::default(), &defaults, true, "/");
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
        let p = route_policy(&ann, &defaults, true, "/app");
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
        let p = route_policy(&forced, &defaults, false, "/");
        assert_eq!(
            p.request[0],
            RequestFilter::SslRedirect(SslRedirect::default())
        );
    }
}
