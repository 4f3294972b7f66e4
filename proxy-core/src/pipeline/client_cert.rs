//! Client certificates (`auth-tls-*`), judged as nginx judges them for a server with
//! `ssl_verify_client`: the TLS listener asks for a certificate when the client's SNI
//! names a host that wants one and records what the CA made of it ([`ClientCert`]); this
//! filter then answers at HTTP level, as nginx does after the handshake: 400 for a
//! missing or failed certificate (nginx's 496 and 495), a redirect to
//! `auth-tls-error-page` instead when one is set, 403 when `auth-tls-match-cn` does not
//! match, and otherwise passes `ssl-client-*` headers upstream.
//!
//! The settings are the host's (nginx's are per server: the oldest Ingress that sets
//! `auth-tls-secret` for the host decides), looked up in [`ClientAuthTable`] by the
//! request's host; a host missing there could not be set up and its routes answer 503.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Flow, RequestCtx};
use crate::host::{wildcard_parent, HostPattern};
use crate::http::{ProxyBody, ProxyError, Scheme};

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// No certificate is asked for; the headers still say `NONE`.
    Off,
    /// A certificate the CA signed is required.
    On,
    /// A certificate is asked for, not required; one that fails is refused.
    Optional,
    /// A certificate is asked for and passed on; one from an unknown CA is let through
    /// (with `FAILED:` upstream), other failures (expired, revoked) are refused.
    OptionalNoCa,
}

impl VerifyClient {
    /// The annotation's value; anything else is not a mode.
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "off" => Some(Self::Off),
            "on" => Some(Self::On),
            "optional" => Some(Self::Optional),
            "optional_no_ca" => Some(Self::OptionalNoCa),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Optional => "optional",
            Self::OptionalNoCa => "optional_no_ca",
        }
    }
}

/// What the CA made of the client's certificate: nginx's `$ssl_client_verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertVerify {
    /// No certificate was sent.
    None,
    Success,
    /// `reason` in OpenSSL's words where there is one. `issuer_unknown`: the only fault
    /// is that no configured CA issued it, which `optional_no_ca` lets through.
    Failed {
        reason: Arc<str>,
        issuer_unknown: bool,
    },
}

impl CertVerify {
    /// The `ssl-client-verify` value: `SUCCESS`, `FAILED:reason` or `NONE`.
    pub fn header_value(&self) -> String {
        match self {
            CertVerify::None => "NONE".to_owned(),
            CertVerify::Success => "SUCCESS".to_owned(),
            CertVerify::Failed { reason, .. } => format!("FAILED:{reason}"),
        }
    }
}

/// A TLS connection's client certificate as judged during its handshake, by the CA of
/// the host its SNI named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The host (as configured, `*.` for a wildcard) whose settings judged it.
    pub server: Arc<str>,
    pub verify: CertVerify,
    /// RFC 2253, as nginx's `$ssl_client_s_dn`; empty without a certificate.
    pub subject_dn: String,
    /// `$ssl_client_i_dn`.
    pub issuer_dn: String,
    /// The leaf certificate as URL-encoded PEM (`$ssl_client_escaped_cert`).
    pub escaped_pem: String,
}

/// One host's `auth-tls-*` settings (those the listener does not need).
#[derive(Clone, Debug)]
pub struct ClientCertPolicy {
    /// `namespace/name` of the Ingress they came from, for logs.
    pub source: Arc<str>,
    pub verify: VerifyClient,
    /// `auth-tls-error-page`: where a failed verification is redirected (302).
    pub error_page: Option<HeaderValue>,
    /// `auth-tls-pass-certificate-to-upstream`.
    pub pass_cert: bool,
    /// `auth-tls-match-cn`: matched against the subject DN, as nginx's `!~`.
    pub match_cn: Option<regex::Regex>,
}

impl PartialEq for ClientCertPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.verify == other.verify
            && self.error_page == other.error_page
            && self.pass_cert == other.pass_cert
            && self.match_cn.as_ref().map(regex::Regex::as_str)
                == other.match_cn.as_ref().map(regex::Regex::as_str)
    }
}

impl Eq for ClientCertPolicy {}

/// Values by host: exact names, then one-label wildcards, as certificates are chosen.
/// Each value is kept with the host it was configured for, which [`ClientCert::server`]
/// names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByHost<T> {
    exact: HashMap<Arc<str>, (Arc<str>, T)>,
    wildcard: HashMap<Arc<str>, (Arc<str>, T)>,
}

impl<T> Default for ByHost<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> ByHost<T> {
    /// Adds `value` for `host` unless the host has one already (the first wins, as
    /// the oldest Ingress does in ingress-nginx). Returns whether it was added.
    pub fn insert(&mut self, host: &HostPattern, value: T) -> bool {
        let map = if host.is_wildcard() {
            &mut self.wildcard
        } else {
            &mut self.exact
        };
        let key: Arc<str> = host.key().as_str().into();
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, (host.to_string().into(), value));
        true
    }

    /// The value for a normalised host, and the host it was configured for.
    pub fn get(&self, host: &str) -> Option<(&Arc<str>, &T)> {
        self.exact
            .get(host)
            .or_else(|| wildcard_parent(host).and_then(|p| self.wildcard.get(p)))
            .map(|(k, v)| (k, v))
    }

    /// The value configured for `host` itself (not one a request's host falls under).
    pub fn get_configured(&self, host: &HostPattern) -> Option<&T> {
        let map = if host.is_wildcard() {
            &self.wildcard
        } else {
            &self.exact
        };
        map.get(host.key().as_str()).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Every host and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .map(|(k, v)| (k, v))
    }
}

/// The client-certificate settings of every host that has usable ones.
pub type ClientAuthTable = ByHost<Arc<ClientCertPolicy>>;

const VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
const SUBJECT: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
const ISSUER: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
const CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// The route's requests go through their host's client-certificate checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertAuth {
    /// The route redirects plain HTTP to HTTPS: such requests are left to that redirect,
    /// as nginx checks certificates on TLS connections only.
    pub http_redirects: bool,
    /// The route's own Ingress did not ask for client certificates; another Ingress of
    /// the host did. When that one's Secret is unusable, its own paths answer 503 and
    /// this route is served without checks, as ingress-nginx then leaves the server
    /// without `ssl_verify_client`.
    pub inherited: bool,
    /// Only the settings of this source ([`ClientCertPolicy::source`]) serve the route:
    /// a Gateway listener's routes, whose host another Ingress or listener with other
    /// settings claimed first, answer 503 rather than be served under those.
    pub owner: Option<Arc<str>>,
}

impl ClientCertAuth {
    pub(super) fn on_request(
        &self,
        ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
    ) -> Result<Flow, ProxyError> {
        let Some((server, policy)) = ctx.client_auth.get(ctx.host) else {
            if self.inherited {
                return Ok(Flow::Continue);
            }
            return Err(ProxyError::Refused(
                format!(
                    "client certificates for host {:?} could not be set up (see the Ingress's auth-tls-secret or the Gateway's tls.frontend diagnostics)",
                    ctx.host
                )
                .into(),
            ));
        };
        if let Some(owner) = &self.owner {
            if *owner != policy.source {
                return Err(ProxyError::Refused(
                    format!(
                        "host {:?} checks client certificates with the settings of {}, not those of {owner}",
                        ctx.host, policy.source
                    )
                    .into(),
                ));
            }
        }
        let checks = policy.verify != VerifyClient::Off;
        let cert = if ctx.scheme == Scheme::Http {
            if self.http_redirects {
                return Ok(Flow::Continue);
            }
            // nginx checks nothing on plain HTTP; Portico treats it as a connection
            // without a certificate, so `on` refuses it rather than serve it open.
            None
        } else {
            match ctx.client_cert {
                Some(c) if c.server == *server => Some(c),
                // The handshake was for another host (SNI and Host differ): nginx answers
                // 421 when the Host's server verifies clients.
                Some(_) if checks => return Ok(Flow::Answer(Box::new(misdirected()))),
                None if checks && ctx.sni.is_some() => {
                    return Ok(Flow::Answer(Box::new(misdirected())))
                }
                _ => None,
            }
        };
        let verify = cert.map_or(&CertVerify::None, |c| &c.verify);
        if checks {
            let refusal = match verify {
                CertVerify::Failed {
                    issuer_unknown: true,
                    ..
                } if policy.verify == VerifyClient::OptionalNoCa => None,
                CertVerify::Failed { reason, .. } => {
                    tracing::info!(host = ctx.host, client = %ctx.client, %reason, ingress = %policy.source, "client certificate verify error");
                    Some("The SSL certificate error")
                }
                CertVerify::None if policy.verify == VerifyClient::On => {
                    tracing::info!(host = ctx.host, client = %ctx.client, ingress = %policy.source, "client sent no required SSL certificate");
                    Some("No required SSL certificate was sent")
                }
                _ => None,
            };
            if let Some(why) = refusal {
                let resp = match &policy.error_page {
                    Some(page) => redirect(page.clone()),
                    None => bad_certificate(why),
                };
                return Ok(Flow::Answer(Box::new(resp)));
            }
        }
        if let Some(re) = &policy.match_cn {
            let dn = cert.map_or("", |c| c.subject_dn.as_str());
            if !re.is_match(dn) {
                tracing::info!(host = ctx.host, subject = dn, ingress = %policy.source, "client certificate subject does not match auth-tls-match-cn");
                return Ok(Flow::Answer(Box::new(text(
                    StatusCode::FORBIDDEN,
                    "client certificate unauthorized",
                ))));
            }
        }
        // Set or removed whatever the client sent under these names: only Portico speaks
        // for the certificate.
        let value = |s: &str| {
            (!s.is_empty())
                .then(|| HeaderValue::from_str(s).ok())
                .flatten()
        };
        ctx.upstream_set
            .push((VERIFY, HeaderValue::from_str(&verify.header_value()).ok()));
        ctx.upstream_set
            .push((SUBJECT, cert.and_then(|c| value(&c.subject_dn))));
        ctx.upstream_set
            .push((ISSUER, cert.and_then(|c| value(&c.issuer_dn))));
        let pem = cert
            .filter(|_| policy.pass_cert)
            .and_then(|c| value(&c.escaped_pem));
        ctx.upstream_set.push((CERT, pem));
        Ok(Flow::Continue)
    }
}

/// nginx's page for its 495 and 496, which go out as 400.
fn bad_certificate(why: &str) -> Response<ProxyBody> {
    let body = format!(
        "<html>\r\n<head><title>400 {why}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{why}</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

fn redirect(location: HeaderValue) -> Response<ProxyBody> {
    let mut resp = text(StatusCode::FOUND, "302 Found");
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

fn misdirected() -> Response<ProxyBody> {
    text(StatusCode::MISDIRECTED_REQUEST, "421 Misdirected Request")
}

/// 421, as for a client certificate judged for another host, when the connection's
/// handshake (SNI) was not for the Gateway listener whose rule the request matched.
/// Without SNI there is nothing to compare: served.
pub(super) fn misdirected_unless(ctx: &RequestCtx<'_>, scope: &crate::routes::SniScope) -> Flow {
    match ctx.sni {
        Some(sni) if ctx.scheme == Scheme::Https && !scope.admits(sni) => {
            tracing::info!(host = ctx.host, sni, client = %ctx.client, "request misdirected: its connection was made for another listener");
            Flow::Answer(Box::new(misdirected()))
        }
        _ => Flow::Continue,
    }
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::super::redirect::tests::{ctx, head};
    use super::*;

    fn table(verify: VerifyClient, error_page: Option<&str>, cn: Option<&str>) -> ClientAuthTable {
        let mut t = ClientAuthTable::default();
        t.insert(
            &HostPattern::parse("a.test").unwrap(),
            Arc::new(ClientCertPolicy {
                source: "default/web".into(),
                verify,
                error_page: error_page.map(|p| HeaderValue::from_str(p).unwrap()),
                pass_cert: true,
                match_cn: cn.map(|c| regex::Regex::new(c).unwrap()),
            }),
        );
        t
    }

    fn cert(server: &str, verify: CertVerify) -> ClientCert {
        ClientCert {
            server: server.into(),
            verify,
            subject_dn: "CN=client,O=Test".into(),
            issuer_dn: "CN=Test CA".into(),
            escaped_pem: "-----BEGIN%20CERTIFICATE-----%0A".into(),
        }
    }

    /// The status of the answer (None: passed) and the headers set upstream.
    fn run(
        t: &ClientAuthTable,
        scheme: Scheme,
        c: Option<&ClientCert>,
    ) -> (Option<StatusCode>, Vec<(HeaderName, Option<HeaderValue>)>) {
        let mut x = ctx(scheme, "a.test", 443);
        x.client_auth = t;
        x.client_cert = c;
        x.sni = Some("a.test");
        let f = ClientCertAuth {
            http_redirects: false,
            inherited: false,
            owner: None,
        };
        let status = match f.on_request(&mut x, &head("/")) {
            Ok(Flow::Answer(r)) => Some(r.status()),
            Ok(Flow::Continue) => None,
            Err(e) => Some(e.status()),
        };
        (status, x.upstream_set)
    }

    fn failed(issuer_unknown: bool) -> CertVerify {
        CertVerify::Failed {
            reason: "certificate has expired".into(),
            issuer_unknown,
        }
    }

    #[test]
    fn on_requires_a_good_certificate() {
        let t = table(VerifyClient::On, None, None);
        let good = cert("a.test", CertVerify::Success);
        let (status, headers) = run(&t, Scheme::Https, Some(&good));
        assert_eq!(status, None);
        assert_eq!(headers[0].1.as_ref().unwrap(), "SUCCESS");
        assert_eq!(headers[1].1.as_ref().unwrap(), "CN=client,O=Test");
        assert!(headers[3].1.is_some(), "pass_cert");
        let none = cert("a.test", CertVerify::None);
        assert_eq!(
            run(&t, Scheme::Https, Some(&none)).0,
            Some(StatusCode::BAD_REQUEST)
        );
        let bad = cert("a.test", failed(true));
        assert_eq!(
            run(&t, Scheme::Https, Some(&bad)).0,
            Some(StatusCode::BAD_REQUEST)
        );
        // Plain HTTP has no certificate: refused, not served open.
        assert_eq!(run(&t, Scheme::Http, None).0, Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn optional_modes_differ_on_unknown_issuers() {
        let t = table(VerifyClient::Optional, None, None);
        let (status, headers) = run(&t, Scheme::Https, Some(&cert("a.test", CertVerify::None)));
        assert_eq!(status, None);
        assert_eq!(headers[0].1.as_ref().unwrap(), "NONE");
        let unknown = cert("a.test", failed(true));
        assert_eq!(
            run(&t, Scheme::Https, Some(&unknown)).0,
            Some(StatusCode::BAD_REQUEST)
        );
        let t = table(VerifyClient::OptionalNoCa, None, None);
        let (status, headers) = run(&t, Scheme::Https, Some(&unknown));
        assert_eq!(status, None);
        assert_eq!(
            headers[0].1.as_ref().unwrap(),
            "FAILED:certificate has expired"
        );
        let expired = cert("a.test", failed(false));
        assert_eq!(
            run(&t, Scheme::Https, Some(&expired)).0,
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn error_page_redirects_and_match_cn_forbids() {
        let t = table(VerifyClient::On, Some("https://e.test/cert"), None);
        assert_eq!(
            run(&t, Scheme::Https, None).0,
            Some(StatusCode::MISDIRECTED_REQUEST),
            "SNI named a host without client certificates"
        );
        let none = cert("a.test", CertVerify::None);
        assert_eq!(
            run(&t, Scheme::Https, Some(&none)).0,
            Some(StatusCode::FOUND)
        );
        let t = table(VerifyClient::On, None, Some("CN=(admin|root)"));
        let good = cert("a.test", CertVerify::Success);
        assert_eq!(
            run(&t, Scheme::Https, Some(&good)).0,
            Some(StatusCode::FORBIDDEN)
        );
        let t = table(VerifyClient::On, None, Some("CN=client"));
        assert_eq!(run(&t, Scheme::Https, Some(&good)).0, None);
    }

    #[test]
    fn another_hosts_handshake_is_misdirected_and_unknown_hosts_refused() {
        let t = table(VerifyClient::On, None, None);
        let other = cert("b.test", CertVerify::Success);
        assert_eq!(
            run(&t, Scheme::Https, Some(&other)).0,
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        let empty = ClientAuthTable::default();
        assert_eq!(
            run(&empty, Scheme::Https, None).0,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        let mut x = ctx(Scheme::Https, "a.test", 443);
        let inherited = ClientCertAuth {
            http_redirects: false,
            inherited: true,
            owner: None,
        };
        assert!(matches!(
            inherited.on_request(&mut x, &head("/")),
            Ok(Flow::Continue)
        ));
        // A Gateway listener's route is served only under its own settings.
        let mut x = ctx(Scheme::Https, "a.test", 443);
        x.client_auth = &t;
        let good = cert("a.test", CertVerify::Success);
        x.client_cert = Some(&good);
        x.sni = Some("a.test");
        let owned = |owner: &str| ClientCertAuth {
            http_redirects: false,
            inherited: false,
            owner: Some(owner.into()),
        };
        assert!(matches!(
            owned("default/web").on_request(&mut x, &head("/")),
            Ok(Flow::Continue)
        ));
        assert!(matches!(
            owned("Gateway default/gw").on_request(&mut x, &head("/")),
            Err(ProxyError::Refused(_))
        ));
    }

    #[test]
    fn hosts_match_exact_then_wildcard() {
        let mut t: ByHost<u8> = ByHost::default();
        assert!(t.insert(&HostPattern::parse("*.x.test").unwrap(), 1));
        assert!(t.insert(&HostPattern::parse("a.x.test").unwrap(), 2));
        assert!(!t.insert(&HostPattern::parse("a.x.test").unwrap(), 3));
        assert_eq!(
            t.get("a.x.test").map(|(k, v)| (&**k, *v)),
            Some(("a.x.test", 2))
        );
        assert_eq!(
            t.get("b.x.test").map(|(k, v)| (&**k, *v)),
            Some(("*.x.test", 1))
        );
        assert_eq!(t.get("x.test"), None);
        assert_eq!(
            t.get_configured(&HostPattern::parse("*.x.test").unwrap()),
            Some(&1)
        );
        assert_eq!(
            VerifyClient::parse("optional_no_ca"),
            Some(VerifyClient::OptionalNoCa)
        );
        assert_eq!(VerifyClient::parse("ON"), None);
    }
}
