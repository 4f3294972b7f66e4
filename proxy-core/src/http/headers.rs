//! Header rewriting between the client and the upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Uri, Version};

use super::{Conn, Scheme};

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

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

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
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Turns the client's request head into the upstream's: HTTP/1.1, origin-form URI, the
/// original Host kept, hop-by-hop headers dropped and X-Forwarded-* set.
pub(crate) fn prepare_upstream(
    parts: &mut Parts,
    conn: &Conn,
    host: Option<&str>,
    upgrade: Option<HeaderValue>,
) {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need it as Host.
    let authority = parts.uri.authority().cloned();
    if !parts.headers.contains_key(header::HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            parts.headers.insert(header::HOST, value);
        }
    }
    let origin = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    if let Ok(uri) = origin.parse::<Uri>() {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;

    let xff = {
        let prior: Vec<&str> = parts
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            Some(conn.client_ip.clone())
        } else {
            let ip = conn.info.remote.ip();
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", "))).ok()
        }
    };
    let headers = &mut parts.headers;
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_REAL_IP, conn.client_ip.clone());
    let proto = match conn.info.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    headers.insert(X_FORWARDED_PORT, conn.local_port.clone());
}

/// Cleans the upstream's response head for the client. A `101 Switching Protocols` keeps
/// its `Upgrade`/`Connection` pair: that is the handshake being relayed.
pub(crate) fn prepare_downstream(headers: &mut HeaderMap, switching: bool) {
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

    fn info() -> Conn {
        Conn::new(super::super::ConnInfo {
            remote: "192.0.2.7:5555".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            scheme: Scheme::Http,
            sni: None,
            alpn_h2: false,
        })
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
        prepare_upstream(&mut parts, &info(), Some("app.example.com"), None);
        let h = &parts.headers;
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h["host"], "App.example.com");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
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
        prepare_upstream(&mut parts, &info(), None, up);
        assert_eq!(parts.headers["connection"], "upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
        let mut h2c = HeaderMap::new();
        h2c.insert("connection", HeaderValue::from_static("upgrade"));
        h2c.insert("upgrade", HeaderValue::from_static("h2c"));
        assert_eq!(upgrade_protocol(&h2c), None);
    }
}
