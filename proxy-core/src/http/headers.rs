//! Header rewriting between the client and the upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Uri, Version};

use std::net::IpAddr;

use super::{Conn, Scheme};
use crate::pipeline::client::{Client, ClientAddressPolicy};

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), besides
/// those named by `Connection`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers a `Connection` header may name but never remove.
const END_TO_END: [HeaderName; 6] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::COOKIE,
    header::AUTHORIZATION,
    header::SET_COOKIE,
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_ORIGINAL_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-original-forwarded-for");
const X_ORIGINAL_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-original-forwarded-host");

/// The protocol the client asks to switch to (`Upgrade` with `Connection: upgrade`), for
/// tunnelling. `h2c` is not tunnelled: it would hand the upstream a protocol we never saw.
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"));
    if !wants {
        return None;
    }
    let proto = headers.get(header::UPGRADE)?;
    if proto.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some(proto.clone())
}

/// The client takes trailers (`TE: trailers`), as gRPC clients say.
pub(crate) fn asks_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v, "trailers"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names says which are present: removing an absent header still
    // hashes its name, and most requests carry none of these.
    let mut present = 0u16;
    for name in headers.keys() {
        // By the name's text: a string match is a length switch and one compare, where
        // comparing against each of the eight names costs eight.
        let i = match name.as_str() {
            "connection" => 0,
            "keep-alive" => 1,
            "proxy-connection" => 2,
            "proxy-authenticate" => 3,
            "te" => 4,
            "trailer" => 5,
            "transfer-encoding" => 6,
            "upgrade" => 7,
            _ => continue,
        };
        debug_assert_eq!(HOP_BY_HOP[i], name);
        present |= 1 << i;
    }
    if present == 0 {
        return;
    }
    strip_connection_named(headers);
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the fields a `Connection` header names as hop-by-hop, except those the
/// request's meaning and Portico's routing and affinity rest on.
fn strip_connection_named(headers: &mut HeaderMap) {
    // Other headers `Connection` names go too. The usual tokens are skipped without
    // parsing: `close` names no header, and the rest are hop-by-hop fields that go anyway.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim) {
            if !names_a_field(token.as_bytes()) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        // `Connection` names hop-by-hop headers; it cannot take away the ones the
        // request's meaning and Portico's routing and affinity rest on.
        if !END_TO_END.contains(&name) {
            headers.remove(name);
        }
    }
}

/// Whether a `Connection` token (trimmed) may name a field to remove: the usual tokens
/// are skipped without parsing, as `close` names no field and the rest are hop-by-hop
/// fields that go anyway.
pub(crate) fn names_a_field(token: &[u8]) -> bool {
    !token.is_empty()
        && !["close", "keep-alive", "upgrade", "te", "trailer"]
            .iter()
            .any(|t| token.eq_ignore_ascii_case(t.as_bytes()))
}

/// Turns the client's request head into the upstream's: HTTP/1.1, origin-form URI, the
/// original Host kept, hop-by-hop headers dropped and the forwarding headers set as
/// ingress-nginx sets them: `X-Real-IP` and `X-Forwarded-For` name the client (or, with
/// `compute-full-forwarded-for`, the incoming list plus the peer), `X-Forwarded-Host`,
/// `-Port`, `-Proto` and `-Scheme` say what the client asked for (a trusted peer's own
/// values stand), and the client's raw `X-Forwarded-For` / `-Host` travel on as
/// `X-Original-Forwarded-For` / `-Host`. The forwarding fields are returned, for the
/// caller to set ([`Forwarded::add_to`]) or write.
#[must_use]
pub(crate) fn prepare_upstream(
    parts: &mut Parts,
    conn: &Conn,
    fwd: &Forwarding<'_>,
    upgrade: Option<HeaderValue>,
) -> Forwarded {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    // The authority (HTTP/2's, or an absolute-form target's) is already the request's
    // `Host`: routing set it (`forward::one_authority`).
    // Most requests come in origin form already; only absolute-form (and HTTP/2's) are
    // cut down to path and query.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        if let Ok(uri) = origin.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;

    let headers = &parts.headers;
    let client_ip = if fwd.client.addr == conn.peer {
        conn.peer_ip.clone()
    } else {
        header_of(fwd.client.addr)
    };
    let trusted = fwd.client.forwarded;
    // Clients rarely send forwarding fields of their own: without any `x-` field none
    // of the lookups below is made (each hashes its name).
    let any_x = headers.keys().any(|n| n.as_str().starts_with('x'));
    // What the client sent, kept under other names; one lookup each, and none of the
    // string work when (as usual) it sent neither.
    let prior_xff = any_x.then(|| joined(headers, &X_FORWARDED_FOR)).flatten();
    let prior_xfh = any_x
        .then(|| headers.get(X_FORWARDED_HOST).cloned())
        .flatten();
    let xff = match &prior_xff {
        Some(prior) if trusted && fwd.policy.compute_full_forwarded_for => {
            HeaderValue::from_str(&format!("{prior}, {}", conn.peer)).ok()
        }
        _ if trusted && fwd.policy.compute_full_forwarded_for => Some(conn.peer_ip.clone()),
        _ => Some(client_ip.clone()),
    };
    let prior_proto = (any_x && trusted)
        .then(|| headers.get(X_FORWARDED_PROTO))
        .flatten();
    let own_proto = prior_proto.is_none().then(|| {
        HeaderValue::from_static(match conn.info.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    });
    let scheme = prior_proto.or(own_proto.as_ref()).cloned();
    let forwarded_host = match prior_xfh.as_ref().filter(|_| trusted) {
        // A list: the first is the host the client asked for.
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.split(',').next())
            .and_then(|f| HeaderValue::from_str(f.trim()).ok()),
        None => fwd.host.and_then(|h| HeaderValue::from_str(h).ok()),
    };
    let drop_host = forwarded_host.is_none() && prior_xfh.is_some() && !trusted;
    let port = (!trusted || !any_x || !headers.contains_key(X_FORWARDED_PORT))
        .then(|| conn.local_port.clone());
    Forwarded {
        values: [
            prior_xff.and_then(|v| HeaderValue::from_str(&v).ok()),
            xff,
            Some(client_ip),
            own_proto,
            scheme,
            forwarded_host,
            prior_xfh,
            port,
        ],
        drop_host,
        appendable: !any_x,
    }
}

/// The forwarding fields, in the order they are set.
const FORWARDING: [HeaderName; 8] = [
    X_ORIGINAL_FORWARDED_FOR,
    X_FORWARDED_FOR,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_SCHEME,
    X_FORWARDED_HOST,
    X_ORIGINAL_FORWARDED_HOST,
    X_FORWARDED_PORT,
];

/// Where `X-Forwarded-Host` is in [`FORWARDING`].
const FORWARDED_HOST_AT: usize = 5;

/// A request's forwarding fields, as [`prepare_upstream`] decides them: set in its map
/// ([`Forwarded::add_to`]), or, when the client sent none of these names and nothing
/// after sets them, written after its fields by Portico's own HTTP/1.1 client
/// ([`Forwarded::write`]), which spares the map six inserts.
#[derive(Clone)]
pub(crate) struct Forwarded {
    /// By [`FORWARDING`]: `Some` sets the field over the client's, `None` leaves the
    /// client's as it is.
    values: [Option<HeaderValue>; 8],
    /// An untrusted client's `X-Forwarded-Host` goes, with no host to set instead.
    drop_host: bool,
    /// The client sent no field of these names.
    pub appendable: bool,
}

impl Forwarded {
    /// Sets the fields in `headers`, each over any of its name.
    pub fn add_to(self, headers: &mut HeaderMap) {
        headers.reserve(FORWARDING.len());
        for (at, (name, value)) in FORWARDING.into_iter().zip(self.values).enumerate() {
            match value {
                Some(v) => {
                    headers.insert(name, v);
                }
                None if at == FORWARDED_HOST_AT && self.drop_host => {
                    headers.remove(name);
                }
                None => {}
            }
        }
    }

    /// Writes the fields as HTTP/1.1 field lines, for a request whose head holds none of
    /// their names ([`Forwarded::appendable`]).
    pub fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in FORWARDING.iter().zip(&self.values) {
            if let Some(v) = value {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Takes the fields back out of `headers`: a request read back from a head they were
    /// written into, on its way to be sent with them again.
    pub fn remove_from(headers: &mut HeaderMap) {
        for name in FORWARDING {
            headers.remove(name);
        }
    }
}

/// What the forwarding headers of one request say.
pub(crate) struct Forwarding<'a> {
    pub client: Client,
    pub policy: &'a ClientAddressPolicy,
    /// The routing host.
    pub host: Option<&'a str>,
}

/// Every value of `name`, joined as one list.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let mut out = first.to_owned();
    for v in values {
        out.push_str(", ");
        out.push_str(v);
    }
    Some(out)
}

pub(crate) fn header_of(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Cleans the upstream's response head for the client. A `101 Switching Protocols` keeps
/// its `Upgrade`/`Connection` pair: that is the handshake being relayed. For an HTTP/1
/// client the hop-by-hop fields are left in place for the response writer, which skips
/// them anyway (removing each costs a hash and a shift); only what `Connection` names
/// goes here, and only when `connection_names` says it may name something.
pub(crate) fn prepare_downstream(
    headers: &mut HeaderMap,
    switching: bool,
    h2: bool,
    connection_names: bool,
) {
    if !h2 {
        if connection_names {
            strip_connection_named(headers);
        }
        return;
    }
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if switching {
        if let Some(proto) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn prepare_and_set(
        parts: &mut Parts,
        conn: &Conn,
        fwd: &Forwarding<'_>,
        upgrade: Option<HeaderValue>,
    ) {
        prepare_upstream(parts, conn, fwd, upgrade).add_to(&mut parts.headers);
    }

    #[test]
    fn forwarding_fields_written_are_those_set() {
        let (mut parts, _) = Request::builder()
            .uri("/a")
            .header("host", "app.example.com")
            .header("accept", "*/*")
            .body(())
            .unwrap()
            .into_parts();
        let policy = ClientAddressPolicy::default();
        let fwd = plain(&policy, Some("app.example.com"));
        let forwarded = prepare_upstream(&mut parts, &info(), &fwd, None);
        assert!(forwarded.appendable, "the client sent no forwarding field");
        let mut written = Vec::new();
        forwarded.write(&mut written);
        let mut set = parts.headers.clone();
        prepare_upstream(&mut parts, &info(), &fwd, None).add_to(&mut set);
        let mut expected = Vec::new();
        for (name, value) in set.iter().filter(|(n, _)| n.as_str().starts_with("x-")) {
            expected.extend_from_slice(format!("{name}: ").as_bytes());
            expected.extend_from_slice(value.as_bytes());
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(written.split(|b| *b == b'\n').count(), 7, "six fields");
        Forwarded::remove_from(&mut set);
        assert!(!set.keys().any(|n| n.as_str().starts_with("x-")));
        // A client's own forwarding field: the fields are set in the map, not written.
        parts
            .headers
            .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        assert!(!prepare_upstream(&mut parts, &info(), &fwd, None).appendable);
    }

    fn info() -> Conn {
        Conn::for_tests()
    }

    fn plain<'a>(policy: &'a ClientAddressPolicy, host: Option<&'static str>) -> Forwarding<'a> {
        Forwarding {
            client: Client {
                addr: "192.0.2.7".parse().unwrap(),
                forwarded: false,
            },
            policy,
            host,
        }
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_and_sets_forwarded() {
        let (mut parts, _) = Request::builder()
            .uri("/a?b=1")
            .header("host", "App.example.com")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap()
            .into_parts();
        let policy = ClientAddressPolicy::default();
        prepare_and_set(
            &mut parts,
            &info(),
            &plain(&policy, Some("app.example.com")),
            None,
        );
        let h = &parts.headers;
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h["host"], "App.example.com");
        // An untrusted client's forwarded headers are replaced; its list travels on
        // under another name, as ingress-nginx sends it.
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-original-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(parts.uri, "/a?b=1");
    }

    #[test]
    fn upgrade_is_detected_and_kept() {
        let (mut parts, _) = Request::builder()
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap()
            .into_parts();
        let up = upgrade_protocol(&parts.headers);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        let policy = ClientAddressPolicy::default();
        prepare_and_set(&mut parts, &info(), &plain(&policy, None), up);
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
        let mut h2c = HeaderMap::new();
        h2c.insert("connection", HeaderValue::from_static("upgrade"));
        h2c.insert("upgrade", HeaderValue::from_static("h2c"));
        assert_eq!(upgrade_protocol(&h2c), None);
    }

    #[test]
    fn a_trusted_peer_keeps_its_forwarded_headers() {
        let (mut parts, _) = Request::builder()
            .uri("/")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "public.example, inner")
            .header("x-forwarded-port", "443")
            .body(())
            .unwrap()
            .into_parts();
        let policy = ClientAddressPolicy {
            use_forwarded_headers: true,
            compute_full_forwarded_for: true,
            ..ClientAddressPolicy::default()
        };
        let fwd = Forwarding {
            client: policy.client("192.0.2.7".parse().unwrap(), &parts.headers),
            policy: &policy,
            host: Some("app.example.com"),
        };
        prepare_and_set(&mut parts, &info(), &fwd, None);
        let h = &parts.headers;
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-scheme"], "https");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-forwarded-port"], "443");
    }
}
