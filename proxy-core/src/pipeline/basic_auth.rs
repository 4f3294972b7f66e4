//! `auth-type: basic`: the request's `Authorization: Basic` credentials are checked
//! against an htpasswd user list, as nginx's `auth_basic_user_file` checks them: 401 with
//! `WWW-Authenticate: Basic realm="..."` when they are missing or wrong, and on success
//! the `Authorization` field is not passed upstream (ingress-nginx clears it).
//!
//! The list lives in [`Config::credentials`](crate::config::Config), keyed by the Secret
//! it came from, so an edit of the Secret needs no new route policy; a key the config
//! does not hold (the Secret went missing) refuses the request, never lets it through.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::StatusCode;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::{plain_answer, Flow, RequestCtx};
use crate::http::ProxyError;

/// The user lists routes name, by the key in [`BasicAuth::users`].
pub type Credentials = HashMap<Arc<str>, Arc<Htpasswd>>;

/// One route's basic authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// The `WWW-Authenticate` value of a 401: `Basic realm="..."`.
    pub challenge: HeaderValue,
    /// Key of the user list in [`Credentials`].
    pub users: Arc<str>,
}

impl BasicAuth {
    /// `realm` is validated by the caller (no `"` or `\`, visible ASCII and spaces).
    pub fn new(realm: &str, users: Arc<str>) -> Result<Self, HtpasswdError> {
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| HtpasswdError::Realm)?;
        Ok(Self { challenge, users })
    }

    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let Some(list) = ctx.credentials.get(&self.users) else {
            return Err(ProxyError::Refused(
                format!(
                    "the user list {} for basic auth is not available",
                    self.users
                )
                .into(),
            ));
        };
        let granted = basic_credentials(parts).is_some_and(|(user, pass)| list.check(&user, &pass));
        if granted {
            ctx.strip_authorization = true;
            return Ok(Flow::Continue);
        }
        let mut resp = plain_answer(StatusCode::UNAUTHORIZED);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        Ok(Flow::Answer(Box::new(resp)))
    }
}

/// The user and password of an `Authorization: Basic` field (the scheme's name in any
/// case, as nginx reads it).
fn basic_credentials(parts: &Parts) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = rest.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let (user, pass) = decoded.split_at(colon);
    Some((user.to_vec(), pass[1..].to_vec()))
}

/// Why a user list or its use could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HtpasswdError {
    #[error("line {line}: no ':' between user and password hash")]
    NoSeparator { line: usize },
    #[error("user {user:?}: the password hash is in no format Portico can check (bcrypt $2y$, $apr1$, {{SHA}}, {{SSHA}}, {{PLAIN}}, $1$, $5$, $6$ or DES crypt)")]
    UnknownHash { user: String },
    #[error("the realm cannot be sent in a WWW-Authenticate field")]
    Realm,
}

/// Users and their password hashes, as an htpasswd file lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htpasswd {
    /// In file order; the first line for a user is the one nginx checks.
    users: Vec<(Box<[u8]>, Box<str>)>,
}

impl Htpasswd {
    /// An htpasswd file: `user:hash` lines; `#` starts a comment line; blank lines and a
    /// trailing `:comment` are ignored, as nginx reads the file. A line Portico cannot
    /// use is an error for that line: the others still count.
    pub fn parse(text: &str) -> (Self, Vec<HtpasswdError>) {
        let mut out = Self::default();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, rest)) = line.split_once(':') else {
                errors.push(HtpasswdError::NoSeparator { line: i + 1 });
                continue;
            };
            // nginx ends the hash at the next ':' too.
            let hash = rest.split(':').next().unwrap_or("");
            if let Err(e) = out.push(user, hash) {
                errors.push(e);
            }
        }
        (out, errors)
    }

    /// `auth-map`: each entry a user and a hash.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Self, Vec<HtpasswdError>) {
        let mut out = Self::default();
        let mut errors = Vec::new();
        for (user, hash) in pairs {
            if let Err(e) = out.push(user, hash.trim_end_matches(['\r', '\n'])) {
                errors.push(e);
            }
        }
        (out, errors)
    }

    fn push(&mut self, user: &str, hash: &str) -> Result<(), HtpasswdError> {
        if !known_format(hash) {
            return Err(HtpasswdError::UnknownHash { user: user.into() });
        }
        self.users.push((user.as_bytes().into(), hash.into()));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `pass` is `user`'s password.
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        match self.users.iter().find(|(u, _)| **u == *user) {
            Some((_, hash)) => verify(hash, pass),
            None => false,
        }
    }
}

/// Whether `hash` is in one of the formats [`verify`] checks.
fn known_format(hash: &str) -> bool {
    if let Some(rest) = hash
        .strip_prefix("{SHA}")
        .or_else(|| hash.strip_prefix("{SSHA}"))
    {
        return base64::engine::general_purpose::STANDARD
            .decode(rest)
            .is_ok();
    }
    hash.starts_with("{PLAIN}") || crypt3_rs::Hash::try_from(hash).is_ok()
}

/// nginx's schemes (`{PLAIN}`, `{SHA}`, `{SSHA}`, `$apr1$`) and, for anything else, the
/// crypt(3) formats its system `crypt()` takes. Compared in constant time.
fn verify(hash: &str, pass: &[u8]) -> bool {
    let b64 = &base64::engine::general_purpose::STANDARD;
    if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        return plain.as_bytes().ct_eq(pass).into();
    }
    if let Some(rest) = hash.strip_prefix("{SHA}") {
        let Ok(want) = b64.decode(rest) else {
            return false;
        };
        return want.as_slice().ct_eq(Sha1::digest(pass).as_slice()).into();
    }
    if let Some(rest) = hash.strip_prefix("{SSHA}") {
        let Ok(raw) = b64.decode(rest) else {
            return false;
        };
        let Some((want, salt)) = raw.split_at_checked(20) else {
            return false;
        };
        let got = Sha1::new().chain_update(pass).chain_update(salt).finalize();
        return want.ct_eq(got.as_slice()).into();
    }
    // bcrypt at a high cost takes tens to hundreds of milliseconds: on a multi-threaded
    // runtime the worker hands its other tasks over meanwhile.
    let check = || match crypt3_rs::unix::crypt(pass, hash) {
        Ok(got) => got.as_str().as_bytes().ct_eq(hash.as_bytes()).into(),
        Err(_) => false,
    };
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread && hash.starts_with("$2") {
        tokio::task::block_in_place(check)
    } else {
        check()
    }
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::ctx;
    use super::*;
    use crate::http::Scheme;
    use http::Request;

    // Made with `htpasswd -nbB`, `-nbs`, `-nbd`, `-nbm` and `openssl passwd -1`, all
    // for the password `secret`.
    const FILE: &str = "\
# team
alice:$2y$05$Te2M5Y02/vWA27rIpxbvQu0eWgZcTNsop3/HkUtRPEnY59iIbsp9.
bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
carol:mcJcV2t4Gv0c.
dave:$apr1$5A1O1BIA$ZmyaKAHRBTfgqQwV3p6uD.
erin:$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1:a comment
frank:{PLAIN}secret

dave:$apr1$5A1O1BIA$notthesamehashatall00.
";

    #[test]
    fn every_htpasswd_format_nginx_takes() {
        let (list, errors) = Htpasswd::parse(FILE);
        assert!(errors.is_empty(), "{errors:?}");
        for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
            assert!(list.check(user.as_bytes(), b"secret"), "{user}");
            assert!(!list.check(user.as_bytes(), b"Secret"), "{user}");
            assert!(!list.check(user.as_bytes(), b""), "{user}");
        }
        assert!(!list.check(b"mallory", b"secret"));
        // The `{SHA}` of `secret` under bcrypt's name does not pass.
        let (list, _) = Htpasswd::from_pairs([("x", "$2y$05$5en6G6MezRroT3XKqkdPOmY/BfQ=")]);
        assert!(!list.check(b"x", b"secret"));
    }

    #[test]
    fn unusable_lines_are_reported_and_skipped() {
        let (list, errors) = Htpasswd::parse("nocolon\nu:plaintext-is-no-hash!\nok:{PLAIN}x\n");
        assert_eq!(list.len(), 1);
        assert_eq!(
            errors,
            vec![
                HtpasswdError::NoSeparator { line: 1 },
                HtpasswdError::UnknownHash { user: "u".into() }
            ]
        );
    }

    fn request(auth: Option<&str>) -> Parts {
        let mut b = Request::get("/");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn challenges_checks_and_fails_closed() {
        let (list, _) = Htpasswd::parse(FILE);
        let mut creds = Credentials::new();
        creds.insert("default/basic-auth".into(), Arc::new(list));
        let f =
            BasicAuth::new("Authentication Required - foo", "default/basic-auth".into()).unwrap();
        let run = |auth: Option<&str>, creds: &Credentials| {
            let mut c = ctx(Scheme::Http, "a", 443);
            c.credentials = creds;
            let flow = f.on_request(&mut c, &request(auth));
            (flow, c.strip_authorization)
        };
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let (flow, strip) = run(Some(&format!("Basic {}", b64("dave:secret"))), &creds);
        assert!(matches!(flow, Ok(Flow::Continue)) && strip);
        let (flow, _) = run(Some(&format!("basic  {}", b64("alice:secret"))), &creds);
        assert!(matches!(flow, Ok(Flow::Continue)));
        for bad in [
            None,
            Some(format!("Basic {}", b64("dave:wrong"))),
            Some(format!("Bearer {}", b64("dave:secret"))),
            Some("Basic !!!".to_owned()),
            Some(format!("Basic {}", b64("dave"))),
        ] {
            let (flow, strip) = run(bad.as_deref(), &creds);
            let Ok(Flow::Answer(resp)) = flow else {
                panic!("{bad:?} let through")
            };
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                resp.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"Authentication Required - foo\""
            );
            assert!(!strip);
        }
        // The Secret is gone: 503, whatever the credentials.
        let (flow, _) = run(
            Some(&format!("Basic {}", b64("dave:secret"))),
            &Credentials::new(),
        );
        assert_eq!(
            flow.err().map(|e| e.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}
