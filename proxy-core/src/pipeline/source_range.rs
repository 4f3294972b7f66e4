//! `denylist-source-range` and `allowlist-source-range` (alias `whitelist-source-range`),
//! and their ConfigMap defaults: nginx's `deny` lines, then `allow` lines and `deny all`,
//! judged on the client address [`ClientAddressPolicy`](super::ClientAddressPolicy)
//! decided. As in nginx the first line that matches decides, so a client in both lists
//! is denied.

use http::request::Parts;
use http::StatusCode;
use ipnet::IpNet;

use super::{plain_answer, Flow, RequestCtx};
use crate::http::ProxyError;

/// The ranges of one route. An empty `allow` lets every client the denylist spares in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRanges {
    pub deny: Vec<IpNet>,
    pub allow: Vec<IpNet>,
}

impl SourceRanges {
    /// Whether `ip` may pass. An IPv4-mapped IPv6 address counts as its IPv4 address,
    /// as nginx sees a client of a dual-stack socket.
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        let ip = super::client::canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }

    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        if self.permits(ctx.client) {
            return Ok(Flow::Continue);
        }
        tracing::debug!(client = %ctx.client, "client outside the route's source ranges");
        Ok(Flow::Answer(Box::new(plain_answer(StatusCode::FORBIDDEN))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;
    use crate::http::Scheme;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn status(f: &SourceRanges, client: &str) -> Option<StatusCode> {
        let mut c = ctx(Scheme::Http, "a", 443);
        c.client = client.parse().unwrap();
        match f.on_request(&mut c, &head("/")).unwrap() {
            Flow::Answer(r) => Some(r.status()),
            Flow::Continue => None,
        }
    }

    #[test]
    fn allowlist_lets_only_its_ranges_in() {
        // The ingress-nginx documentation's example value.
        let f = SourceRanges {
            deny: vec![],
            allow: nets(&["10.0.0.0/24", "172.10.0.1/32"]),
        };
        assert_eq!(status(&f, "10.0.0.7"), None);
        assert_eq!(status(&f, "172.10.0.1"), None);
        assert_eq!(status(&f, "172.10.0.2"), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(&f, "::ffff:10.0.0.9"), None, "mapped IPv4");
        assert_eq!(status(&f, "2001:db8::1"), Some(StatusCode::FORBIDDEN));
    }

    #[test]
    fn denylist_is_judged_first() {
        let f = SourceRanges {
            deny: nets(&["127.0.0.2/32", "2001:db8::/32"]),
            allow: nets(&["127.0.0.0/8"]),
        };
        assert_eq!(status(&f, "127.0.0.1"), None);
        assert_eq!(status(&f, "127.0.0.2"), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(&f, "192.0.2.1"), Some(StatusCode::FORBIDDEN));
        let deny_only = SourceRanges {
            deny: nets(&["2001:db8::/32"]),
            allow: vec![],
        };
        assert_eq!(
            status(&deny_only, "2001:db8::5"),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&deny_only, "2001:db9::5"), None);
        assert_eq!(status(&deny_only, "192.0.2.1"), None);
    }
}
