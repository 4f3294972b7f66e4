//! `hsts`: `Strict-Transport-Security` on every HTTPS answer, proxied or not, as
//! ingress-nginx sends it (its per-host certificate check never takes effect).

use http::header::{self, HeaderName, HeaderValue};

use crate::http::Scheme;

/// The header value, formatted once at compile time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hsts(pub HeaderValue);

impl Hsts {
    /// `max-age=N[; includeSubDomains][; preload]`, as ingress-nginx writes it.
    pub fn new(max_age: u64, include_subdomains: bool, preload: bool) -> Self {
        let mut v = format!("max-age={max_age}");
        if include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if preload {
            v.push_str("; preload");
        }
        // Digits and fixed ASCII only.
        Self(HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("max-age=0")))
    }

    /// The field for an answer over `scheme`: browsers ignore it over plain HTTP, so it
    /// is only sent over HTTPS. It is set over one the upstream sent, as ingress-nginx's
    /// `more_set_headers` does.
    pub(crate) fn field(&self, scheme: Scheme) -> Option<(HeaderName, HeaderValue)> {
        (scheme == Scheme::Https).then(|| (header::STRICT_TRANSPORT_SECURITY, self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_applies_only_over_https() {
        let h = Hsts::new(31_536_000, true, false);
        assert_eq!(h.0, "max-age=31536000; includeSubDomains");
        assert_eq!(Hsts::new(5, false, true).0, "max-age=5; preload");
        assert_eq!(h.field(Scheme::Http), None);
        assert_eq!(
            h.field(Scheme::Https),
            Some((
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains")
            ))
        );
    }
}
