//! `upstream-hash-by`: a request key made of nginx variables, and the consistent-hash
//! ring it is looked up on.
//!
//! The ring is ketama-style: every endpoint owns [`POINTS_PER_NODE`] points placed by a
//! hash of its address, so an endpoint that leaves hands only its own keys to its ring
//! neighbours (about 1/N of them) and every other key stays put. Points and keys are
//! hashed with fixed keys, so every replica, and every restart, maps a key alike.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::request::Parts;
use siphasher::sip::SipHasher13;

/// Points each endpoint (or subset) owns on the ring, as nginx's ketama-style `chash`
/// (160 per unit of weight).
pub const POINTS_PER_NODE: usize = 160;

/// Fixed, so that replicas agree; the keys are not secret (a client can already choose
/// its request URI, and a bad spread only costs balance).
const RING_KEY: [u8; 16] = *b"portico-chash-v1";

/// One piece of an `upstream-hash-by` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(Box<str>),
    /// `$remote_addr`: the client address, as the client-address settings decide it.
    RemoteAddr,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri` / `$document_uri`: the normalized path.
    Uri,
    /// `$args` / `$query_string`.
    Args,
    /// `$arg_NAME`: one query parameter.
    Arg(Box<str>),
    /// `$host`: the routing host.
    Host,
    /// `$scheme`.
    Scheme,
    /// `$request_method`.
    Method,
    /// `$http_NAME`: a request header (`_` read as `-`).
    Header(HeaderName),
    /// `$cookie_NAME`: one cookie's value.
    Cookie(Box<str>),
}

/// Why an `upstream-hash-by` value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashKeyError {
    #[error("{0:?} has a character other than letters, digits, -, _, $, {{ and }} (what ingress-nginx accepts)")]
    Character(String),
    #[error("variable ${0} is not one Portico can hash by (remote_addr, request_uri, uri, args, arg_*, host, scheme, request_method, http_*, cookie_*)")]
    Unknown(String),
    #[error("{0:?} has an unclosed or empty ${{...}}")]
    Syntax(String),
    #[error("the value is empty")]
    Empty,
}

/// An `upstream-hash-by` value: text and variables, expanded per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashKey(Arc<[Part]>);

impl HashKey {
    /// Reads a value as nginx's complex values: `$name` runs over letters, digits and
    /// `_`; `${name}` ends at `}`; everything else is text.
    pub fn parse(v: &str) -> Result<Self, HashKeyError> {
        if v.is_empty() {
            return Err(HashKeyError::Empty);
        }
        if !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b))
        {
            return Err(HashKeyError::Character(v.to_owned()));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = v;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let name = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| HashKeyError::Syntax(v.to_owned()))?;
                let name = &braced[..end];
                rest = &braced[end + 1..];
                name
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                rest = &rest[end..];
                name
            };
            if name.is_empty() {
                return Err(HashKeyError::Syntax(v.to_owned()));
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text).into()));
            }
            parts.push(variable(name)?);
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        Ok(Self(parts.into()))
    }

    /// The request's key: the parts' values one after another (a missing one is empty,
    /// as nginx expands it).
    pub fn expand(&self, req: &KeyVars<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for part in self.0.iter() {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::RemoteAddr => out.extend_from_slice(req.client.to_string().as_bytes()),
                Part::RequestUri => out.extend_from_slice(req.request_uri.as_bytes()),
                Part::Uri => out.extend_from_slice(req.parts.uri.path().as_bytes()),
                Part::Args => out.extend_from_slice(req.parts.uri.query().unwrap_or("").as_bytes()),
                Part::Arg(name) => {
                    let query = req.parts.uri.query().unwrap_or("");
                    if let Some(v) = query.split('&').find_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        k.eq_ignore_ascii_case(name).then_some(v)
                    }) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Part::Host => out.extend_from_slice(req.host.as_bytes()),
                Part::Scheme => out.extend_from_slice(req.scheme.as_bytes()),
                Part::Method => out.extend_from_slice(req.parts.method.as_str().as_bytes()),
                Part::Header(name) => {
                    // nginx's `$http_` gives the first field of that name.
                    if let Some(v) = req.parts.headers.get(name) {
                        out.extend_from_slice(v.as_bytes());
                    }
                }
                Part::Cookie(name) => {
                    if let Some(v) = cookie(&req.parts.headers, name) {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out
    }
}

/// What a key's variables are read from.
pub struct KeyVars<'a> {
    pub parts: &'a Parts,
    /// The request target as the client sent it.
    pub request_uri: &'a str,
    pub host: &'a str,
    pub client: IpAddr,
    pub scheme: &'a str,
}

fn variable(name: &str) -> Result<Part, HashKeyError> {
    let unknown = || HashKeyError::Unknown(name.to_owned());
    Ok(match name {
        "remote_addr" => Part::RemoteAddr,
        "request_uri" => Part::RequestUri,
        "uri" | "document_uri" => Part::Uri,
        "args" | "query_string" => Part::Args,
        "host" => Part::Host,
        "scheme" => Part::Scheme,
        "request_method" => Part::Method,
        _ => {
            if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                Part::Arg(arg.into())
            } else if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                let h = h.replace('_', "-").to_ascii_lowercase();
                Part::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| unknown())?)
            } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                Part::Cookie(c.into())
            } else {
                return Err(unknown());
            }
        }
    })
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// A route's `upstream-hash-by` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashBy {
    pub key: HashKey,
    /// `upstream-hash-by-subset`: a key maps to a subset of this many endpoints, one of
    /// which is picked at random (`upstream-hash-by-subset-size`).
    pub subset: Option<usize>,
}

/// Which ring a route needs: its backend and its subset size (0 for none). Rings are
/// built at publish for these alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingKey {
    pub backend: crate::model::BackendId,
    pub subset: usize,
}

/// A consistent-hash ring over a backend's ready endpoints (or subsets of them).
#[derive(Debug)]
pub struct Ring {
    /// The endpoints it was built over, sorted: an unchanged set keeps its ring.
    members: Vec<SocketAddr>,
    /// Each node: one endpoint, or a subset of them.
    nodes: Vec<Vec<SocketAddr>>,
    /// (point, node index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// A ring over `members`; with `subset` > 0 its nodes are groups of that many
    /// endpoints, as ingress-nginx's `chashsubset` (the last group filled up from the
    /// first endpoints).
    pub fn new(mut members: Vec<SocketAddr>, subset: usize) -> Self {
        members.sort_unstable();
        members.dedup();
        let nodes: Vec<Vec<SocketAddr>> = if subset == 0 || members.is_empty() {
            members.iter().map(|m| vec![*m]).collect()
        } else {
            let count = members.len().div_ceil(subset);
            (0..count)
                .map(|i| {
                    (0..subset.min(members.len()))
                        .map(|j| members[(i * subset + j) % members.len()])
                        .collect()
                })
                .collect()
        };
        let mut points = Vec::with_capacity(nodes.len() * POINTS_PER_NODE);
        for (i, node) in nodes.iter().enumerate() {
            // A subset is placed by its first endpoint, so it keeps its place while the
            // rest of the ring changes.
            let anchor = node[0];
            for n in 0..POINTS_PER_NODE {
                let mut h = SipHasher13::new_with_key(&RING_KEY);
                write_addr(&mut h, anchor);
                h.write_u32(n as u32);
                points.push((h.finish(), i as u32));
            }
        }
        points.sort_unstable();
        Self {
            members,
            nodes,
            points,
        }
    }

    /// Whether the ring was built over exactly `members` (sorted).
    pub fn same_members(&self, sorted: &[SocketAddr]) -> bool {
        self.members == sorted
    }

    /// The nodes in ring order from where `key` falls: the first is its home, the rest
    /// where it goes while the home cannot take it.
    pub fn walk(&self, key: &[u8]) -> impl Iterator<Item = &[SocketAddr]> + '_ {
        let mut h = SipHasher13::new_with_key(&RING_KEY);
        h.write(key);
        let at = h.finish();
        let start = self.points.partition_point(|(p, _)| *p < at);
        let len = self.points.len();
        (0..len).map(move |i| {
            let (_, node) = self.points[(start + i) % len];
            self.nodes[node as usize].as_slice()
        })
    }
}

fn write_addr(h: &mut SipHasher13, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => h.write(&ip.octets()),
        IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write_u16(addr.port());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| format!("10.0.0.{i}:8080").parse().unwrap())
            .collect()
    }

    fn home(ring: &Ring, key: &str) -> SocketAddr {
        ring.walk(key.as_bytes()).next().unwrap()[0]
    }

    #[test]
    fn values_parse_as_nginx_complex_values() {
        let k = HashKey::parse("$request_uri").unwrap();
        assert_eq!(&*k.0, &[Part::RequestUri]);
        let k = HashKey::parse("${request_uri}-text$host").unwrap();
        assert_eq!(
            &*k.0,
            &[Part::RequestUri, Part::Text("-text".into()), Part::Host]
        );
        let k = HashKey::parse("$http_x_user_id$cookie_session").unwrap();
        assert_eq!(
            &*k.0,
            &[
                Part::Header(HeaderName::from_static("x-user-id")),
                Part::Cookie("session".into())
            ]
        );
        assert_eq!(
            &*HashKey::parse("fixed").unwrap().0,
            &[Part::Text("fixed".into())]
        );
        assert!(matches!(
            HashKey::parse("$request_uri/x"),
            Err(HashKeyError::Character(_))
        ));
        assert!(matches!(
            HashKey::parse("$binary_remote_addr"),
            Err(HashKeyError::Unknown(_))
        ));
        assert!(matches!(
            HashKey::parse("${uri"),
            Err(HashKeyError::Syntax(_))
        ));
        assert!(matches!(HashKey::parse("$"), Err(HashKeyError::Syntax(_))));
        assert!(matches!(
            HashKey::parse("$http_"),
            Err(HashKeyError::Unknown(_))
        ));
        assert_eq!(HashKey::parse(""), Err(HashKeyError::Empty));
    }

    #[test]
    fn keys_expand_from_the_request() {
        let req = http::Request::builder()
            .uri("/a/b?x=1&user=bob")
            .header("x-user-id", "42")
            .header("cookie", "a=1; session=s3cr3t")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        let vars = KeyVars {
            parts: &parts,
            request_uri: "/a/b?x=1&user=bob",
            host: "app.example.com",
            client: "192.0.2.7".parse().unwrap(),
            scheme: "http",
        };
        let expand = |v: &str| String::from_utf8(HashKey::parse(v).unwrap().expand(&vars)).unwrap();
        assert_eq!(expand("$request_uri"), "/a/b?x=1&user=bob");
        assert_eq!(expand("$remote_addr-$host"), "192.0.2.7-app.example.com");
        assert_eq!(expand("$http_x_user_id$cookie_session"), "42s3cr3t");
        assert_eq!(expand("$arg_user$uri"), "bob/a/b");
        assert_eq!(expand("$http_absent$cookie_absent"), "");
    }

    #[test]
    fn the_same_key_finds_the_same_endpoint() {
        let ring = Ring::new(addrs(5), 0);
        let again = Ring::new(addrs(5).into_iter().rev().collect(), 0);
        for i in 0..200 {
            let key = format!("/item/{i}");
            assert_eq!(home(&ring, &key), home(&again, &key));
        }
    }

    #[test]
    fn keys_spread_and_removing_one_of_n_moves_about_one_nth() {
        let n = 10u8;
        let ring = Ring::new(addrs(n), 0);
        let keys: Vec<String> = (0..10_000).map(|i| format!("/k/{i}")).collect();
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for k in &keys {
            *counts.entry(home(&ring, k)).or_default() += 1;
        }
        assert_eq!(counts.len(), n as usize);
        assert!(
            counts.values().all(|c| (500..1600).contains(c)),
            "{counts:?}"
        );
        let gone: SocketAddr = "10.0.0.4:8080".parse().unwrap();
        let smaller = Ring::new(addrs(n).into_iter().filter(|a| *a != gone).collect(), 0);
        let mut moved = 0;
        for k in &keys {
            let before = home(&ring, k);
            let after = home(&smaller, k);
            if before != gone {
                assert_eq!(before, after, "a key whose endpoint stayed moved");
            } else {
                moved += 1;
            }
        }
        // About 1/N of the keys, and only those of the endpoint that left.
        assert!((600..1500).contains(&moved), "moved {moved}");
        // Adding one back moves about 1/(N) of the keys, all onto the new endpoint.
        let onto_new = keys
            .iter()
            .filter(|k| home(&smaller, k) != home(&ring, k))
            .inspect(|k| assert_eq!(home(&ring, k), gone))
            .count();
        assert_eq!(onto_new, moved);
    }

    #[test]
    fn subsets_group_endpoints_and_keep_their_place() {
        let ring = Ring::new(addrs(7), 3);
        assert_eq!(ring.nodes.len(), 3);
        assert!(ring.nodes.iter().all(|n| n.len() == 3));
        let subset = ring.walk(b"/x").next().unwrap().to_vec();
        assert_eq!(ring.walk(b"/x").next().unwrap(), subset.as_slice());
        // Fewer endpoints than the subset size: one subset of them all.
        let small = Ring::new(addrs(2), 3);
        assert_eq!(small.nodes, vec![addrs(2)]);
    }
}
