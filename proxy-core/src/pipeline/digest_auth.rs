//! `auth-type: digest`: RFC 2617 Digest authentication (MD5, `qop=auth`) against an
//! htdigest user list (`user:realm:HA1`, as `htdigest` writes it), as ingress-nginx's
//! digest module checks it. Nonces carry their time and are signed with a key of this
//! process, so none is stored; one older than [`NONCE_LIFETIME`] gets a new challenge
//! with `stale=true`, which browsers answer without asking the user again.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::StatusCode;
use md5::{Digest, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{plain_answer, Flow, RequestCtx};
use crate::http::ProxyError;

/// The htdigest lists routes name, by the key in [`DigestAuth::users`].
pub type DigestCredentials = HashMap<Arc<str>, Arc<Htdigest>>;

/// How long a nonce is good for, as the digest module's `auth_digest_timeout`.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// Users of one realm and their `HA1 = MD5(user:realm:password)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htdigest {
    /// (user, realm, HA1 as 32 lower-case hex digits), in file order.
    users: Vec<(Box<str>, Box<str>, Box<str>)>,
}

impl Htdigest {
    /// An htdigest file: `user:realm:ha1` lines, `#` comments and blank lines skipped. A
    /// line that is not one is returned (its number) to be reported; the others count.
    pub fn parse(text: &str) -> (Self, Vec<usize>) {
        let mut out = Self::default();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if !out.push_line(line) {
                bad.push(i + 1);
            }
        }
        (out, bad)
    }

    /// `auth-map`: each user's value is `realm:ha1`. Returns the users that were not.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut bad = Vec::new();
        for (user, value) in pairs {
            if !out.push_line(&format!("{user}:{}", value.trim_end_matches(['\r', '\n']))) {
                bad.push(user.to_owned());
            }
        }
        (out, bad)
    }

    fn push_line(&mut self, line: &str) -> bool {
        let mut parts = line.splitn(3, ':');
        let (Some(user), Some(realm), Some(ha1)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if user.is_empty() || ha1.len() != 32 || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        self.users
            .push((user.into(), realm.into(), ha1.to_ascii_lowercase().into()));
        true
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn ha1(&self, user: &str, realm: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(u, r, _)| &**u == user && &**r == realm)
            .map(|(_, _, h)| &**h)
    }
}

/// One route's digest authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestAuth {
    /// Validated by the caller: no `"` or `\`.
    pub realm: Arc<str>,
    /// Key of the user list in [`DigestCredentials`].
    pub users: Arc<str>,
}

type HmacSha1 = Hmac<Sha1>;

/// This process's nonce key.
fn nonce_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `TIME-SIGNATURE`: the time in hex, signed with the process key and the realm.
fn make_nonce(realm: &str, at: u64) -> String {
    let stamp = format!("{at:x}");
    format!("{stamp}-{}", nonce_signature(realm, &stamp))
}

fn nonce_signature(realm: &str, stamp: &str) -> String {
    // HMAC keys of any length are accepted, so this cannot fail.
    let mut mac = match HmacSha1::new_from_slice(nonce_key()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(realm.as_bytes());
    mac.update(b"\0");
    mac.update(stamp.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `nonce` is ours: `Some(fresh)`, or `None` when it was never signed here.
fn check_nonce(realm: &str, nonce: &str, now: u64) -> Option<bool> {
    let (stamp, sig) = nonce.split_once('-')?;
    let want = nonce_signature(realm, stamp);
    if !bool::from(want.as_bytes().ct_eq(sig.as_bytes())) {
        return None;
    }
    let at = u64::from_str_radix(stamp, 16).ok()?;
    Some(at <= now && now - at <= NONCE_LIFETIME.as_secs())
}

/// The parameters of an `Authorization: Digest` field.
fn digest_params(value: &str) -> Option<HashMap<String, String>> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (name, after) = s.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; `\` escapes the next character.
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(name, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

impl DigestAuth {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let Some(list) = ctx.digest_credentials.get(&self.users) else {
            return Err(ProxyError::Refused(
                format!(
                    "the user list {} for digest auth is not available",
                    self.users
                )
                .into(),
            ));
        };
        let now = now_secs();
        let verdict = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(digest_params)
            .map(|p| self.judge(list, &p, parts, now));
        match verdict {
            Some(Verdict::Granted) => {
                ctx.strip_authorization = true;
                Ok(Flow::Continue)
            }
            Some(Verdict::Stale) => Ok(Flow::Answer(Box::new(self.challenge(now, true)))),
            Some(Verdict::Denied) | None => Ok(Flow::Answer(Box::new(self.challenge(now, false)))),
        }
    }

    fn judge(
        &self,
        list: &Htdigest,
        p: &HashMap<String, String>,
        parts: &Parts,
        now: u64,
    ) -> Verdict {
        let get = |k: &str| p.get(k).map(String::as_str);
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return Verdict::Denied;
        };
        if realm != &*self.realm || !matches!(get("algorithm"), None | Some("MD5" | "md5")) {
            return Verdict::Denied;
        }
        // The digest covers the URI the client names; it must be the one it asked for.
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        if uri != target {
            return Verdict::Denied;
        }
        let Some(fresh) = check_nonce(&self.realm, nonce, now) else {
            return Verdict::Denied;
        };
        let Some(ha1) = list.ha1(user, realm) else {
            return Verdict::Denied;
        };
        let ha2 = md5_hex(&[parts.method.as_str().as_bytes(), uri.as_bytes()]);
        let want = match get("qop") {
            None => md5_hex(&[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return Verdict::Denied;
                };
                md5_hex(&[
                    ha1.as_bytes(),
                    nonce.as_bytes(),
                    nc.as_bytes(),
                    cnonce.as_bytes(),
                    b"auth",
                    ha2.as_bytes(),
                ])
            }
            Some(_) => return Verdict::Denied,
        };
        let right: bool = want
            .as_bytes()
            .ct_eq(response.to_ascii_lowercase().as_bytes())
            .into();
        match (right, fresh) {
            (true, true) => Verdict::Granted,
            (true, false) => Verdict::Stale,
            (false, _) => Verdict::Denied,
        }
    }

    fn challenge(&self, now: u64, stale: bool) -> http::Response<crate::http::ProxyBody> {
        let mut value = format!(
            "Digest algorithm=\"MD5\", qop=\"auth\", realm=\"{}\", nonce=\"{}\"",
            self.realm,
            make_nonce(&self.realm, now)
        );
        if stale {
            value.push_str(", stale=\"true\"");
        }
        let mut resp = plain_answer(StatusCode::UNAUTHORIZED);
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

enum Verdict {
    Granted,
    Stale,
    Denied,
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::ctx;
    use super::*;
    use crate::http::Scheme;
    use http::Request;

    /// An HA1 alone, without the realm an htdigest line carries.
    const HA1: &str = "9f0d4e2a0e37e5d4b0b5a0f05c5b0e38";

    fn ha1(user: &str, realm: &str, pass: &str) -> String {
        md5_hex(&[user.as_bytes(), realm.as_bytes(), pass.as_bytes()])
    }

    #[test]
    fn odd_authorization_fields_never_panic() {
        for v in [
            "Digest",
            "Digest ",
            "Digest a",
            "Digest a=\"",
            "Digest a=\"\\",
            "Digest =,=,",
            "Digest a=\"é\", b=ü,",
            "digest username=\"x\"",
        ] {
            let _ = digest_params(v);
        }
        let p = digest_params("Digest username=\"a\\\"b\", nc=00000001 , qop=auth").unwrap();
        assert_eq!(p["username"], "a\"b");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert!(check_nonce("r", "zz-zz", 0).is_none());
        assert!(check_nonce("r", "nohyphen", 0).is_none());
    }

    #[test]
    fn htdigest_lines() {
        let line = format!("alice:Restricted:{}", ha1("alice", "Restricted", "secret"));
        let (list, bad) = Htdigest::parse(&format!("# users\n{line}\nbob:nohash\n\n"));
        assert_eq!((list.len(), bad), (1, vec![3]));
        assert!(list.ha1("alice", "Restricted").is_some());
        assert!(list.ha1("alice", "Other").is_none());
        let (_, bad) = Htdigest::from_pairs([("carol", HA1)]);
        assert_eq!(bad, ["carol"], "auth-map values are realm:ha1");
    }

    #[test]
    fn rfc_2617_responses_pass_and_others_get_a_challenge() {
        let realm = "Restricted";
        let mut creds = DigestCredentials::new();
        let line = format!("alice:{realm}:{}", ha1("alice", realm, "secret"));
        creds.insert("u".into(), Arc::new(Htdigest::parse(&line).0));
        let f = DigestAuth {
            realm: realm.into(),
            users: "u".into(),
        };
        let run = |auth: Option<String>, uri: &str| {
            let mut c = ctx(Scheme::Http, "h", 443);
            c.digest_credentials = &creds;
            let mut b = Request::get(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            let flow = f.on_request(&mut c, &b.body(()).unwrap().into_parts().0);
            match flow {
                Ok(Flow::Continue) => (200, String::new(), c.strip_authorization),
                Ok(Flow::Answer(r)) => (
                    r.status().as_u16(),
                    r.headers()[header::WWW_AUTHENTICATE]
                        .to_str()
                        .unwrap()
                        .to_owned(),
                    false,
                ),
                Err(e) => (e.status().as_u16(), String::new(), false),
            }
        };
        let (status, challenge, _) = run(None, "/a");
        assert_eq!(status, 401);
        assert!(
            challenge.starts_with(
                "Digest algorithm=\"MD5\", qop=\"auth\", realm=\"Restricted\", nonce=\""
            ),
            "{challenge}"
        );
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_owned();
        let answer = |pass: &str, uri: &str, nonce: &str| {
            let h1 = ha1("alice", realm, pass);
            let h2 = md5_hex(&[b"GET", uri.as_bytes()]);
            let resp = md5_hex(&[
                h1.as_bytes(),
                nonce.as_bytes(),
                b"00000001",
                b"xyz",
                b"auth",
                h2.as_bytes(),
            ]);
            format!("Digest username=\"alice\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc=00000001, cnonce=\"xyz\", response=\"{resp}\", algorithm=MD5")
        };
        assert_eq!(
            run(Some(answer("secret", "/a?b=1", &nonce)), "/a?b=1"),
            (200, String::new(), true)
        );
        assert_eq!(run(Some(answer("wrong", "/a", &nonce)), "/a").0, 401);
        // A digest made for another URI, or a nonce not signed here.
        assert_eq!(run(Some(answer("secret", "/other", &nonce)), "/a").0, 401);
        assert_eq!(
            run(Some(answer("secret", "/a", "5f5e100-abc")), "/a").0,
            401
        );
        // An old nonce: the right answer gets a fresh challenge marked stale.
        let old = make_nonce(realm, now_secs() - NONCE_LIFETIME.as_secs() - 5);
        let (status, challenge, _) = run(Some(answer("secret", "/a", &old)), "/a");
        assert_eq!(status, 401);
        assert!(challenge.ends_with("stale=\"true\""), "{challenge}");
        // Without the list: 503.
        let mut c = ctx(Scheme::Http, "h", 443);
        let flow = f.on_request(&mut c, &Request::get("/").body(()).unwrap().into_parts().0);
        assert_eq!(flow.err().map(|e| e.status().as_u16()), Some(503));
    }
}
