//! One request of an upstream test and what must come back, with the upstream suite's
//! comparison rules (its `ExpectedResponse`): the status, then for a 200 the backend pod
//! and namespace and the request the backend saw, or for a redirect the `Location`.

use http::Method;

use std::sync::Arc;

use crate::client::{Captured, ClientIdentity, Request};
use crate::echo::Echo;

/// The namespace most upstream backends live in.
pub const INFRA_NS: &str = "gateway-conformance-infra";

/// Where a redirect must point; `None` fields take the upstream defaults (the request's
/// scheme and path, any host, the scheme's well-known port or none).
#[derive(Clone, Debug, Default)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
}

/// What the backend must have received, where it differs from the request sent.
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub host: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    /// `None` means "the request's own headers".
    pub headers: Option<Vec<(String, String)>>,
    pub absent: Vec<String>,
    /// The SNI name the backend got over TLS (a BackendTLSPolicy's hostname).
    pub sni: Option<String>,
    /// A client certificate (PEM) among those the backend got over TLS.
    pub client_cert: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Exchange {
    pub scheme: &'static str,
    pub method: Method,
    pub host: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Headers the echo backend is asked to set on its answer.
    pub backend_sets: Vec<(String, String)>,
    pub statuses: Vec<u16>,
    pub backend: String,
    pub namespace: String,
    pub received: Received,
    pub response_headers: Vec<(String, String)>,
    /// Headers that must be one of several values (upstream `ValidHeaderValues`).
    pub response_one_of: Vec<(String, Vec<String>)>,
    /// Spaces do not count when response headers are compared (upstream
    /// `IgnoreWhitespace`).
    pub ignore_whitespace: bool,
    pub response_absent: Vec<String>,
    /// A 200 or 204 must be the gateway's own answer, not the backend's (upstream: an
    /// `ExpectedRequest` with an empty path, which only an answer without an echo meets).
    pub own_answer: bool,
    pub redirect: Option<Redirect>,
    /// The SNI name sent over TLS, when not the Host's (upstream's `ServerName`).
    pub sni: Option<String>,
    /// The client certificate offered when Portico asks for one.
    pub identity: Option<Arc<ClientIdentity>>,
}

/// `GET path`, expected to answer 200 from some backend in the infra namespace.
pub fn get(path: &str) -> Exchange {
    Exchange {
        scheme: "http",
        method: Method::GET,
        host: String::new(),
        path: path.to_owned(),
        headers: Vec::new(),
        backend_sets: Vec::new(),
        statuses: vec![200],
        backend: String::new(),
        namespace: INFRA_NS.to_owned(),
        received: Received::default(),
        response_headers: Vec::new(),
        response_one_of: Vec::new(),
        ignore_whitespace: false,
        response_absent: Vec::new(),
        own_answer: false,
        redirect: None,
        sni: None,
        identity: None,
    }
}

impl Exchange {
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }
    pub fn https(mut self) -> Self {
        self.scheme = "https";
        self
    }
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn backend_sets(mut self, name: &str, value: &str) -> Self {
        self.backend_sets.push((name.to_owned(), value.to_owned()));
        self
    }
    /// Answered by a pod of `backend` (a name prefix, as upstream), in the infra namespace.
    pub fn to(mut self, backend: &str) -> Self {
        self.backend = backend.to_owned();
        self
    }
    pub fn ns(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }
    pub fn status(mut self, status: u16) -> Self {
        self.statuses = vec![status];
        self
    }
    pub fn statuses(mut self, statuses: &[u16]) -> Self {
        self.statuses = statuses.to_vec();
        self
    }
    pub fn got_host(mut self, host: &str) -> Self {
        self.received.host = Some(host.to_owned());
        self
    }
    pub fn got_path(mut self, path: &str) -> Self {
        self.received.path = Some(path.to_owned());
        self
    }
    pub fn got_header(mut self, name: &str, value: &str) -> Self {
        self.received
            .headers
            .get_or_insert_with(Vec::new)
            .push((name.to_owned(), value.to_owned()));
        self
    }
    /// The backend's headers are not compared (an upstream `ExpectedRequest` without
    /// `Headers`).
    pub fn no_headers(mut self) -> Self {
        self.received.headers = Some(Vec::new());
        self
    }
    /// Sent with SNI `name` rather than the Host's host.
    pub fn sni(mut self, name: &str) -> Self {
        self.sni = Some(name.to_owned());
        self
    }
    /// Offers this client certificate when asked for one.
    pub fn identity(mut self, identity: &Arc<ClientIdentity>) -> Self {
        self.identity = Some(identity.clone());
        self
    }
    /// The backend got this client certificate (PEM) over TLS.
    pub fn got_client_cert(mut self, pem: &str) -> Self {
        self.received.client_cert = Some(pem.to_owned());
        self
    }
    pub fn got_sni(mut self, name: &str) -> Self {
        self.received.sni = Some(name.to_owned());
        self
    }

    pub fn got_method(mut self, method: &str) -> Self {
        self.received.method = Some(method.to_owned());
        self
    }
    pub fn got_absent(mut self, name: &str) -> Self {
        self.received.absent.push(name.to_owned());
        self
    }
    pub fn resp_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn resp_one_of(mut self, name: &str, values: &[&str]) -> Self {
        self.response_one_of.push((
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        ));
        self
    }
    pub fn ignore_whitespace(mut self) -> Self {
        self.ignore_whitespace = true;
        self
    }
    pub fn own_answer(mut self) -> Self {
        self.own_answer = true;
        self
    }
    pub fn resp_absent(mut self, name: &str) -> Self {
        self.response_absent.push(name.to_owned());
        self
    }
    pub fn redirect(mut self, status: u16, to: Redirect) -> Self {
        self.statuses = vec![status];
        self.redirect = Some(to);
        self
    }

    /// `GET host/path` for reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {}://{}{}",
            self.method, self.scheme, self.host, self.path
        );
        for (n, v) in &self.headers {
            s.push_str(&format!(" [{n}: {v}]"));
        }
        s
    }

    /// The request to send.
    pub fn request(&self) -> Request {
        let mut req = Request::new(self.method.clone(), self.scheme, &self.host, &self.path);
        req.sni.clone_from(&self.sni);
        req.identity.clone_from(&self.identity);
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        if !self.backend_sets.is_empty() {
            let list: Vec<String> = self
                .backend_sets
                .iter()
                .map(|(n, v)| format!("{n}:{v}"))
                .collect();
            req = req.header("X-Echo-Set-Header", &list.join(","));
        }
        req
    }

    /// Whether `got` is what the upstream test expects.
    pub fn check(&self, got: &Captured) -> Result<(), String> {
        let status = got.status.as_u16();
        if !self.statuses.contains(&status) {
            return Err(format!(
                "expected status {:?}, got {status} ({})",
                self.statuses,
                body_excerpt(got)
            ));
        }
        if self.own_answer && matches!(status, 200 | 204) {
            if got.echo().is_ok() {
                return Err(format!(
                    "answered {status} by the backend, expected the gateway's own answer"
                ));
            }
            self.check_response_headers(got)?;
        } else if status == 200 {
            let echo = got.echo().map_err(|e| e.to_string())?;
            self.check_backend(&echo)?;
            self.check_response_headers(got)?;
        } else if matches!(status, 301 | 302 | 303 | 307 | 308) {
            if let Some(want) = &self.redirect {
                self.check_redirect(got, want)?;
            }
        }
        Ok(())
    }

    fn check_backend(&self, echo: &Echo) -> Result<(), String> {
        let got_path = match &echo.query {
            Some(q) => format!("{}?{q}", echo.path),
            None => echo.path.clone(),
        };
        let want_path = self.received.path.as_deref().unwrap_or(&self.path);
        if got_path != want_path {
            return Err(format!(
                "backend got path {got_path:?}, expected {want_path:?}"
            ));
        }
        let want_method = self
            .received
            .method
            .clone()
            .unwrap_or_else(|| self.method.to_string());
        if echo.method != want_method {
            return Err(format!(
                "backend got method {}, expected {want_method}",
                echo.method
            ));
        }
        let want_host = self.received.host.as_deref().unwrap_or(&self.host);
        if !want_host.is_empty() && echo.host != want_host {
            return Err(format!(
                "backend got host {:?}, expected {want_host:?}",
                echo.host
            ));
        }
        if echo.namespace != self.namespace {
            return Err(format!(
                "answered from namespace {:?} (pod {}), expected {:?}",
                echo.namespace, echo.pod, self.namespace
            ));
        }
        let want_headers = self.received.headers.as_ref().unwrap_or(&self.headers);
        for (name, value) in want_headers {
            let got = echo.header(name).join(",");
            if echo.header(name).is_empty() {
                return Err(format!("backend did not get header {name}"));
            }
            if got != *value {
                return Err(format!("backend got {name}: {got:?}, expected {value:?}"));
            }
        }
        for name in &self.received.absent {
            if !echo.header(name).is_empty() {
                return Err(format!(
                    "backend got header {name}: {:?}, expected none",
                    echo.header(name)
                ));
            }
        }
        if let Some(want) = &self.received.sni {
            let got = echo.tls.as_ref().and_then(|t| t.sni.as_deref());
            if got != Some(want.as_str()) {
                return Err(format!(
                    "backend got SNI {got:?} (TLS: {}), expected {want:?}",
                    echo.tls.is_some()
                ));
            }
        }
        if let Some(want) = &self.received.client_cert {
            // Compared as DER: PEM line endings differ between encoders.
            let der = |pem: &str| -> Vec<Vec<u8>> {
                rustls_pemfile::certs(&mut pem.as_bytes())
                    .filter_map(Result::ok)
                    .map(|c| c.as_ref().to_vec())
                    .collect()
            };
            let got: Vec<Vec<u8>> = echo
                .tls
                .iter()
                .flat_map(|t| &t.peer_certificates)
                .flat_map(|p| der(p))
                .collect();
            if !der(want).iter().any(|w| got.contains(w)) {
                return Err(format!(
                    "backend did not get the client certificate expected ({} certificates, TLS: {})",
                    got.len(),
                    echo.tls.is_some()
                ));
            }
        }
        if !echo.pod.starts_with(&self.backend) {
            return Err(format!(
                "answered by pod {}, expected a pod of {}",
                echo.pod, self.backend
            ));
        }
        Ok(())
    }

    fn check_response_headers(&self, got: &Captured) -> Result<(), String> {
        let squeeze = |v: &str| {
            if self.ignore_whitespace {
                v.replace(' ', "")
            } else {
                v.to_owned()
            }
        };
        let joined = |name: &str| -> Result<String, String> {
            let values: Vec<&str> = got
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return Err(format!("response has no {name} header"));
            }
            Ok(values.join(","))
        };
        for (name, value) in &self.response_headers {
            let got = joined(name)?;
            if squeeze(&got) != squeeze(value) {
                return Err(format!("response has {name}: {got:?}, expected {value:?}"));
            }
        }
        for (name, values) in &self.response_one_of {
            let got = joined(name)?;
            if !values.iter().any(|v| squeeze(v) == squeeze(&got)) {
                return Err(format!(
                    "response has {name}: {got:?}, expected one of {values:?}"
                ));
            }
        }
        for name in &self.response_absent {
            if let Some(v) = got.headers.get(name.as_str()) {
                return Err(format!("response has {name}: {v:?}, expected none"));
            }
        }
        Ok(())
    }

    fn check_redirect(&self, got: &Captured, want: &Redirect) -> Result<(), String> {
        let location = got
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("redirect without a Location")?;
        let (req_path, _) = self.path.split_once('?').unwrap_or((&self.path, ""));
        let (scheme, host, port, path) = split_location(location, self.scheme, &self.host);
        let want_scheme = want.scheme.as_deref().unwrap_or(self.scheme);
        if scheme != want_scheme {
            return Err(format!(
                "redirect scheme {scheme:?} in {location:?}, expected {want_scheme:?}"
            ));
        }
        if let Some(want_host) = &want.host {
            if host != *want_host {
                return Err(format!(
                    "redirect host {host:?} in {location:?}, expected {want_host:?}"
                ));
            }
        }
        match &want.port {
            Some(p) if port != *p => {
                return Err(format!(
                    "redirect port {port:?} in {location:?}, expected {p:?}"
                ))
            }
            None => {
                let well_known = match scheme.as_str() {
                    "http" => "80",
                    "https" => "443",
                    _ => "",
                };
                if !port.is_empty() && port != well_known {
                    return Err(format!(
                        "redirect port {port:?} in {location:?}, expected {well_known} or none"
                    ));
                }
            }
            _ => {}
        }
        let want_path = want.path.as_deref().unwrap_or(req_path);
        if path != want_path {
            return Err(format!(
                "redirect path {path:?} in {location:?}, expected {want_path:?}"
            ));
        }
        Ok(())
    }
}

/// Scheme, host, port and path of a `Location`, relative ones resolved against the
/// request.
fn split_location(location: &str, scheme: &str, host: &str) -> (String, String, String, String) {
    let strip_query = |p: &str| p.split('?').next().unwrap_or_default().to_owned();
    if location.starts_with('/') {
        let (h, p) = host.rsplit_once(':').unwrap_or((host, ""));
        return (
            scheme.to_owned(),
            h.to_owned(),
            p.to_owned(),
            strip_query(location),
        );
    }
    let (scheme, rest) = location.split_once("://").unwrap_or(("", location));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (h, p) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
        _ => (authority, ""),
    };
    (
        scheme.to_owned(),
        h.to_owned(),
        p.to_owned(),
        strip_query(path),
    )
}

fn body_excerpt(got: &Captured) -> String {
    String::from_utf8_lossy(&got.body)
        .chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_like_a_url_parser() {
        assert_eq!(
            split_location("https://example.org:8443/a?b", "http", "x"),
            (
                "https".into(),
                "example.org".into(),
                "8443".into(),
                "/a".into()
            )
        );
        assert_eq!(
            split_location("http://example.org", "http", "x"),
            ("http".into(), "example.org".into(), "".into(), "/".into())
        );
        assert_eq!(
            split_location("/p", "http", "h:1"),
            ("http".into(), "h".into(), "1".into(), "/p".into())
        );
    }
}
