//! Cookie session affinity: the policy, the opaque cookie value and its `Set-Cookie` line.
//!
//! The cookie never carries an address. It holds keyed SipHash values:
//! - `persistent`: `tag` (16 hex digits), the hash of the pinned endpoint's address. The
//!   session stays on that endpoint for as long as it is ready.
//! - `balanced`: `key` + `tag` (32 hex digits). `key` is a session key mapped onto the
//!   ready endpoints by rendezvous hashing, so when endpoints are added a fair share of
//!   sessions moves to them (as ingress-nginx's consistent hashing does) while removing an
//!   endpoint only moves the sessions it had. `tag` records where the key pointed when the
//!   cookie was issued; a mismatch means the session moved and the client gets a new cookie.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use siphasher::sip::SipHasher13;

/// `affinity-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AffinityMode {
    /// Re-balance pinned sessions when endpoints scale (cookies may move).
    #[default]
    Balanced,
    /// Keep sessions on their endpoint as long as it is ready.
    Persistent,
}

/// `session-cookie-samesite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Cookie session affinity settings, parsed and validated by the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieAffinity {
    pub mode: AffinityMode,
    /// `session-cookie-name`, default `INGRESSCOOKIE`.
    pub name: Arc<str>,
    /// `session-cookie-path`; `None` sets `Path=/`.
    pub path: Option<Arc<str>>,
    /// `session-cookie-max-age`.
    pub max_age: Option<Duration>,
    /// `session-cookie-expires`: the cookie expires this long after it is issued.
    pub expires: Option<Duration>,
    pub secure: bool,
    pub samesite: Option<SameSite>,
    /// `session-cookie-change-on-failure`: re-pin when the pinned endpoint fails.
    pub change_on_failure: bool,
}

impl Default for CookieAffinity {
    fn default() -> Self {
        Self {
            mode: AffinityMode::Balanced,
            name: "INGRESSCOOKIE".into(),
            path: None,
            max_age: None,
            expires: None,
            secure: false,
            samesite: None,
            change_on_failure: false,
        }
    }
}

impl CookieAffinity {
    /// The `Set-Cookie` header value carrying `value`.
    pub fn set_cookie(&self, value: &str) -> String {
        let mut out = format!(
            "{}={}; Path={}",
            self.name,
            value,
            self.path.as_deref().unwrap_or("/")
        );
        if let Some(max_age) = self.max_age {
            let _ = write!(out, "; Max-Age={}", max_age.as_secs());
        }
        if let Some(expires) = self.expires {
            let at = SystemTime::now() + expires;
            let _ = write!(out, "; Expires={}", httpdate::fmt_http_date(at));
        }
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; HttpOnly");
        if let Some(samesite) = self.samesite {
            let _ = write!(out, "; SameSite={}", samesite.as_str());
        }
        out
    }

    /// Finds this policy's cookie among the request's `Cookie` header values.
    pub fn find_cookie<'a>(&self, headers: impl Iterator<Item = &'a [u8]>) -> Option<&'a str> {
        for header in headers {
            let Ok(header) = std::str::from_utf8(header) else {
                continue;
            };
            for pair in header.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    if name == &*self.name {
                        return Some(value.trim_matches('"'));
                    }
                }
            }
        }
        None
    }
}

/// The keyed hash shared by cookie values and rendezvous scores. Replicas configured with
/// the same key agree on every cookie.
#[derive(Clone)]
pub struct AffinityKey {
    key: [u8; 16],
}

impl std::fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AffinityKey(..)")
    }
}

impl AffinityKey {
    pub fn new(key: [u8; 16]) -> Self {
        Self { key }
    }

    pub fn random() -> Self {
        Self::new(rand::random())
    }

    fn hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_key(&self.key)
    }

    /// The opaque tag naming an endpoint.
    pub fn tag(&self, addr: SocketAddr) -> u64 {
        let mut h = self.hasher();
        h.write_u8(0);
        write_addr(&mut h, addr);
        h.finish()
    }

    /// Rendezvous score of `endpoint` for session `key`: the highest score wins.
    pub fn score(&self, session: u64, addr: SocketAddr) -> u64 {
        let mut h = self.hasher();
        h.write_u8(1);
        h.write_u64(session);
        write_addr(&mut h, addr);
        h.finish()
    }

    /// The endpoint session `key` maps to among `candidates`.
    pub fn rendezvous(&self, session: u64, candidates: &[SocketAddr]) -> Option<SocketAddr> {
        candidates
            .iter()
            .copied()
            .max_by_key(|addr| (self.score(session, *addr), *addr))
    }
}

fn write_addr(h: &mut SipHasher13, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => h.write(&ip.octets()),
        IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write_u16(addr.port());
}

/// A parsed cookie value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieValue {
    Persistent { tag: u64 },
    Balanced { session: u64, tag: u64 },
}

impl CookieValue {
    /// Parses a value of the shape `mode` issues; anything else is treated as no cookie.
    pub fn parse(mode: AffinityMode, value: &str) -> Option<Self> {
        let hex = |s: &str| {
            if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                u64::from_str_radix(s, 16).ok()
            } else {
                None
            }
        };
        match mode {
            AffinityMode::Persistent => Some(CookieValue::Persistent { tag: hex(value)? }),
            AffinityMode::Balanced => {
                if value.len() != 32 || !value.is_ascii() {
                    return None;
                }
                let (session, tag) = value.split_at(16);
                Some(CookieValue::Balanced {
                    session: hex(session)?,
                    tag: hex(tag)?,
                })
            }
        }
    }

    pub fn tag(&self) -> u64 {
        match *self {
            CookieValue::Persistent { tag } | CookieValue::Balanced { tag, .. } => tag,
        }
    }

    pub fn encode(&self) -> String {
        match *self {
            CookieValue::Persistent { tag } => format!("{tag:016x}"),
            CookieValue::Balanced { session, tag } => format!("{session:016x}{tag:016x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cookie_values_round_trip_and_reject_garbage() {
        let p = CookieValue::Persistent { tag: 0xdead_beef };
        assert_eq!(
            CookieValue::parse(AffinityMode::Persistent, &p.encode()),
            Some(p)
        );
        let b = CookieValue::Balanced {
            session: 7,
            tag: u64::MAX,
        };
        assert_eq!(
            CookieValue::parse(AffinityMode::Balanced, &b.encode()),
            Some(b)
        );
        assert_eq!(
            CookieValue::parse(AffinityMode::Balanced, &p.encode()),
            None
        );
        assert_eq!(
            CookieValue::parse(AffinityMode::Persistent, "10.0.0.1:80"),
            None
        );
        assert_eq!(
            CookieValue::parse(AffinityMode::Persistent, "+000000000000001"),
            None
        );
        assert_eq!(
            CookieValue::parse(AffinityMode::Balanced, "ééééééééééééééééé"),
            None
        );
    }

    #[test]
    fn tag_is_keyed_and_does_not_leak_the_address() {
        let a = addr("10.1.2.3:8080");
        let k1 = AffinityKey::new([1; 16]);
        let k2 = AffinityKey::new([2; 16]);
        assert_eq!(k1.tag(a), AffinityKey::new([1; 16]).tag(a));
        assert_ne!(k1.tag(a), k2.tag(a));
        let value = CookieValue::Persistent { tag: k1.tag(a) }.encode();
        assert!(!value.contains("10.1.2.3") && !value.contains("8080"));
    }

    #[test]
    fn rendezvous_moves_only_a_share_when_endpoints_are_added() {
        let key = AffinityKey::new([9; 16]);
        let three: Vec<SocketAddr> = (1..=3).map(|i| addr(&format!("10.0.0.{i}:80"))).collect();
        let mut four = three.clone();
        four.push(addr("10.0.0.4:80"));
        let mut moved = 0;
        for session in 0..4000u64 {
            let before = key.rendezvous(session, &three).unwrap();
            let after = key.rendezvous(session, &four).unwrap();
            if before != after {
                // A session only ever moves to the new endpoint.
                assert_eq!(after, four[3]);
                moved += 1;
            }
            // Removing an endpoint a session is not on never moves it.
            let without_other: Vec<_> = three.iter().copied().filter(|a| *a != before).collect();
            if let Some(first_other) = without_other.first() {
                let fewer: Vec<_> = three.iter().copied().filter(|a| a != first_other).collect();
                assert_eq!(key.rendezvous(session, &fewer), Some(before));
            }
        }
        // About a quarter of the sessions move.
        assert!((800..1200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn set_cookie_carries_every_option() {
        let policy = CookieAffinity {
            name: "route".into(),
            path: Some("/app".into()),
            max_age: Some(Duration::from_secs(3600)),
            expires: Some(Duration::from_secs(60)),
            secure: true,
            samesite: Some(SameSite::Strict),
            ..CookieAffinity::default()
        };
        let line = policy.set_cookie("abc");
        assert!(
            line.starts_with("route=abc; Path=/app; Max-Age=3600; Expires="),
            "{line}"
        );
        assert!(
            line.contains(" GMT; Secure; HttpOnly; SameSite=Strict"),
            "{line}"
        );
        let plain = CookieAffinity::default().set_cookie("x");
        assert_eq!(plain, "INGRESSCOOKIE=x; Path=/; HttpOnly");
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let policy = CookieAffinity::default();
        let headers: Vec<&[u8]> = vec![b"a=1; b=2", b"x=y;  INGRESSCOOKIE=\"v1\"; z=3"];
        assert_eq!(policy.find_cookie(headers.into_iter()), Some("v1"));
        let none: Vec<&[u8]> = vec![b"INGRESSCOOKIEX=1"];
        assert_eq!(policy.find_cookie(none.into_iter()), None);
    }
}
