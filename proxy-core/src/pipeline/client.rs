//! Who the client is. By default the TCP peer (or the PROXY protocol's source, when the
//! listener reads one), and every `X-Forwarded-*` / `X-Real-IP` a client sends is
//! replaced. With `use-forwarded-headers`, a peer inside the trusted ranges
//! (`proxy-real-ip-cidr`) may tell who it forwarded for, as nginx's realip module with
//! `real_ip_recursive on` reads it: the right-most address in the forwarded-for header
//! that is not itself trusted (the left-most when all are).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// `use-forwarded-headers`, `compute-full-forwarded-for`, `forwarded-for-header`,
/// `proxy-real-ip-cidr`, with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddressPolicy {
    /// Honour the forwarded headers of trusted peers.
    pub use_forwarded_headers: bool,
    /// Send upstream the incoming `X-Forwarded-For` with the peer appended, rather than
    /// only the client (with forwarded headers honoured).
    pub compute_full_forwarded_for: bool,
    /// Where a trusted peer puts the client address.
    pub forwarded_for_header: HeaderName,
    /// Peers whose forwarded headers are believed.
    pub trusted: Vec<IpNet>,
}

impl Default for ClientAddressPolicy {
    fn default() -> Self {
        Self {
            use_forwarded_headers: false,
            compute_full_forwarded_for: false,
            forwarded_for_header: HeaderName::from_static("x-forwarded-for"),
            trusted: vec![IpNet::V4(ipnet::Ipv4Net::default())],
        }
    }
}

/// The client of one request, as decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    /// The peer is trusted and forwarded headers are on: its `X-Forwarded-*` stand.
    pub forwarded: bool,
}

impl ClientAddressPolicy {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that `peer` sent with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        if !self.use_forwarded_headers || !self.trusts(peer) {
            return Client {
                addr: peer,
                forwarded: false,
            };
        }
        // Every value of the header, in order, as one list; walked from the right.
        let mut addr = peer;
        let values: Vec<&str> = headers
            .get_all(&self.forwarded_for_header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for item in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = parse_item(item) else {
                // Garbage ends the walk: what was found so far stands.
                break;
            };
            addr = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Client {
            addr,
            forwarded: true,
        }
    }
}

/// One forwarded-for entry: an address, optionally with a port (`1.2.3.4:5`,
/// `[::1]:5`), as load balancers write them.
fn parse_item(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(ip);
    }
    item.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

/// IPv4-mapped IPv6 peers (a dual-stack listener) are matched as the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn by_default_the_peer_is_the_client_whatever_it_claims() {
        let p = ClientAddressPolicy::default();
        let c = p.client(ip("192.0.2.9"), &headers(&["203.0.113.5"]));
        assert_eq!(
            c,
            Client {
                addr: ip("192.0.2.9"),
                forwarded: false
            }
        );
    }

    #[test]
    fn trusted_peers_are_walked_right_to_left() {
        let p = ClientAddressPolicy {
            use_forwarded_headers: true,
            trusted: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..ClientAddressPolicy::default()
        };
        // Untrusted peer: ignored.
        let c = p.client(ip("192.0.2.9"), &headers(&["203.0.113.5"]));
        assert_eq!(c.addr, ip("192.0.2.9"));
        assert!(!c.forwarded);
        // Trusted peer: the right-most untrusted entry, across several header lines.
        let h = headers(&["198.51.100.1, 203.0.113.5", "10.1.1.1:4000"]);
        let c = p.client(ip("10.0.0.2"), &h);
        assert_eq!(
            c,
            Client {
                addr: ip("203.0.113.5"),
                forwarded: true
            }
        );
        // All trusted: the left-most.
        let c = p.client(ip("10.0.0.2"), &headers(&["10.9.9.9, 10.8.8.8"]));
        assert_eq!(c.addr, ip("10.9.9.9"));
        // Garbage stops the walk.
        let c = p.client(ip("10.0.0.2"), &headers(&["203.0.113.7, junk, 10.3.3.3"]));
        assert_eq!(c.addr, ip("10.3.3.3"));
        // IPv6 and a mapped IPv4 peer.
        let c = p.client(ip("fd00::1"), &headers(&["2001:db8::5"]));
        assert_eq!(c.addr, ip("2001:db8::5"));
        let c = p.client(ip("::ffff:10.0.0.3"), &headers(&["203.0.113.8"]));
        assert_eq!(c.addr, ip("203.0.113.8"));
        // No header from a trusted peer: the peer.
        assert_eq!(
            p.client(ip("10.0.0.2"), &HeaderMap::new()).addr,
            ip("10.0.0.2")
        );
    }

    #[test]
    fn another_header_name_can_carry_the_client() {
        let p = ClientAddressPolicy {
            use_forwarded_headers: true,
            forwarded_for_header: HeaderName::from_static("cf-connecting-ip"),
            ..ClientAddressPolicy::default()
        };
        let mut h = headers(&["203.0.113.1"]);
        h.insert("cf-connecting-ip", HeaderValue::from_static("198.51.100.4"));
        assert_eq!(p.client(ip("192.0.2.1"), &h).addr, ip("198.51.100.4"));
    }
}
